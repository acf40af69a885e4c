"""The teacher's review workbook (review.xlsx), written with XlsxWriter in constant-memory mode.

Layout is a contract with `grader.review.importing`: the import finds columns by their header text
(`Teacher: <criterion id>`, ...), matches the run through the hidden metadata sheet, and reads
there the values every teacher cell had when the workbook was written (its *base*), so an import
applies only what the teacher changed (see `grader.review.merge`).

Readable in Excel and LibreOffice alike: a "How to review" sheet first; a header row tall enough
for its wrapped titles; one-line flag summaries with the full text in a cell note; every formula
written with its cached value (previews, phones and `openpyxl` with `data_only=True` see numbers,
not blanks); landscape, fit-to-width printing with the header row repeated. Only the header row
is locked: every data cell is unlocked, so sorting and filtering work on the protected sheets in
both programs (a sort range holding a locked cell is refused under protection), while the
headers the import relies on cannot be renamed and columns cannot be inserted or deleted.
AI columns are grey and ignored by the import. Every text cell goes through `_escape.escape_text`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import xlsxwriter
from xlsxwriter.utility import xl_col_to_name
from xlsxwriter.worksheet import Worksheet

from grader.escape import escape_text, unescape_text
from grader.grading.records import Run
from grader.prompting.rubric import Criterion, Rubric
from grader.reports.stats import CriterionStats, run_cost
from grader.review.final import FinalCriterion, FinalStudent
from grader.store import Store

HOWTO, SUMMARY, FEEDBACK, CRITERIA, RUN, META = (
    "How to review", "Summary", "Feedback", "Criteria", "Run", "_grader_meta")
FORMAT_VERSION = "2"
MAX_CELL = 32000  # Excel holds at most 32,767 characters in a cell
MAX_ROW_PT = 409.0  # Excel's tallest row
LINE_PT = 15.0

# Header names the import relies on (and older names it still accepts).
ID_HEADER, NAME_HEADER = "Student ID", "Name"
COMMENT_HEADER = "Feedback to the student"
NOTE_HEADER = "Private note (never shown to the student)"
APPROVED_HEADER = "Approved"
CRIT_ID_HEADER = "Criterion ID"
TEACHER_FEEDBACK_HEADER = "Teacher feedback to the student"
SHOWN_HEADER = "Shown to the student"  # read only: which feedback a student reads
HELD = ("nothing yet: you changed the score; keep the AI feedback (copy it into the column on "
        "the left, as it is or edited) or write your own")
ALIASES = {COMMENT_HEADER: ("Teacher comment",), TEACHER_FEEDBACK_HEADER: ("Teacher feedback",)}
BASE_HEADER = ("student_id", "submission_id", "base")  # first row of the base table in META
# The Groups sheet (`excel_groups`): its label column, and the groups' base table in META
GROUPS, GROUP_HEADER, GROUP_BASE_HEADER = "Groups", "Group", ("group", "members", "base")
# the largest spread of the model's samples on a criterion, as a share of its maximum
UNCERTAINTY_HEADER = "Uncertainty"
NO_SCORE, INCOMPLETE, DASH = "no score", "incomplete", "—"


def ai_header(cid: str) -> str:
    return f"AI: {cid}"


def teacher_header(cid: str) -> str:
    return f"Teacher: {cid}"


def final_header(cid: str) -> str:
    return f"Final: {cid}"


def run_token(run: Run) -> str:
    """A fingerprint of the run a workbook was written for (id alone repeats across stores)."""
    raw = "|".join(str(getattr(run, k)) for k in (
        "id", "started_at", "class_dir", "rubric_hash", "prompt_hash", "schema_hash", "model"))
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


# --- text as a cell holds it, and the base recorded for each teacher cell ----------------------

def cell_text(value: str | None) -> str | None:
    """Text as written to a cell: formula-escaped, XML-safe, within Excel's length limit."""
    if not value:
        return None
    text = escape_text(value)
    return text if len(text) <= MAX_CELL else text[:MAX_CELL] + "…"


_OOXML_ESCAPE = re.compile("_x([0-9A-Fa-f]{4})_")


def unescape_ooxml(text: str) -> str:
    """`_x000D_` -> the character it stands for, as Excel reads a cell (what openpyxl's
    `utils.escape.unescape` does; written here so that writing a report does not load
    openpyxl, about 15 MB, in every run)."""
    return _OOXML_ESCAPE.sub(lambda m: chr(int(m[1], 16)), text) if "_x" in text else text


def read_text(value: Any) -> str | None:
    """Text as the import reads a cell back (the inverse of `cell_text` for what it keeps;
    `_x000D_`-style escapes of control characters are decoded, as Excel does)."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = unescape_text(unescape_ooxml(str(value))).replace("\r\n", "\n").strip()
    return text or None


def token(field: str, value: Any) -> Any:
    """What the base records for a teacher value: the number or yes/no itself, a hash of text
    (the metadata sheet never holds a student's or teacher's words). None means empty."""
    if value is None:
        return None
    if field == "score":
        return float(value)
    if field == "approved":
        return bool(value)
    text = read_text(cell_text(str(value)))
    if text is None:
        return None
    return "h:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def base_key(criterion_id: str, field: str) -> str:
    return f"{field}:{criterion_id}" if criterion_id else field


def student_base(s: FinalStudent) -> dict[str, Any]:
    """The base of one student's row: the AI scores shown and every non-empty teacher value."""
    teacher: dict[str, Any] = {}
    for c in s.criteria:
        for fld, value in (("score", c.teacher_score), ("feedback", c.teacher_feedback)):
            if (t := token(fld, value)) is not None:
                teacher[base_key(c.criterion.id, fld)] = t
    for fld, value in (("comment", s.teacher_comment), ("note", s.private_note),
                       ("approved", s.approved)):
        if (t := token(fld, value)) is not None:
            teacher[fld] = t
    ai = {c.criterion.id: float(c.ai_score) for c in s.criteria if c.ai_score is not None}
    return {"ai": ai, "t": teacher}


# --- layout helpers --------------------------------------------------------------------------

def _lines(text: str | None, width: float) -> int:
    """Lines a wrapped cell of `width` characters needs for `text` (an estimate that errs tall)."""
    if not text:
        return 1
    per = max(int(width * 1.15), 1)
    if len(text) <= per and "\n" not in text:
        return 1
    return sum(max(1, math.ceil(len(line) / per)) for line in text.split("\n"))


def _height(lines: int, cap: float = MAX_ROW_PT) -> float:
    return min(cap, LINE_PT * lines + 2)


class _Sheet(Worksheet):
    """A worksheet whose formulas skip XlsxWriter's expansion of newer Excel functions (about 30
    regex passes per formula, a third of the workbook's time for a large class): ours use only
    IF, COUNT, SUM, ROUND, ISNUMBER and LEN, which need none."""

    def _prepare_formula(self, formula: str, expand_future_functions: bool = False) -> str:
        return formula[1:] if formula.startswith("=") else formula


class _Formats:
    def __init__(self, wb: Any):
        base = {"valign": "top", "locked": False}
        # Column formats: an empty cell takes its column's format, so blank cells need not be
        # written and stay unlocked (a locked cell anywhere in a sort range blocks sorting).
        self.unlocked = wb.add_format(base)
        self.unlocked_wrap = wb.add_format({**base, "text_wrap": True})
        self.yellow = wb.add_format({"bg_color": "#FFF8DC"})
        self.header = wb.add_format({"bold": True, "text_wrap": True, "valign": "top",
                                     "bg_color": "#DDE4EE", "border": 1, "locked": True})
        self.plain = wb.add_format(base)
        self.ai = wb.add_format({**base, "bg_color": "#F2F2F2", "font_color": "#333333"})
        self.ai_wrap = wb.add_format({**base, "bg_color": "#F2F2F2", "text_wrap": True})
        self.wrap = wb.add_format({**base, "text_wrap": True})
        self.edit = wb.add_format({**base, "bg_color": "#FFF8DC"})
        self.edit_wrap = wb.add_format({**base, "bg_color": "#FFF8DC", "text_wrap": True})
        self.link = wb.add_format({**base, "font_color": "#1F5FA8", "underline": 1})
        self.final = wb.add_format({**base, "bold": True})
        self.red = wb.add_format({"bg_color": "#F8D7DA"})
        self.amber = wb.add_format({"bg_color": "#FFE5B4"})
        self.held = wb.add_format({**base, "bg_color": "#FFE5B4", "text_wrap": True,
                                   "bold": True})
        self.title = wb.add_format({"bold": True, "font_size": 14})
        self.bold = wb.add_format({"bold": True, "text_wrap": True, "valign": "top"})
        self.locked_wrap = wb.add_format({"text_wrap": True, "valign": "top"})


def _put(ws: Any, row: int, col: int, value: Any, fmt: Any) -> None:
    """Numbers as numbers, text always as a string cell (never a formula); an empty cell is
    not written (it takes its column's format)."""
    if value is None:
        return
    if isinstance(value, bool):
        ws.write_string(row, col, "yes" if value else "no", fmt)
    elif isinstance(value, int | float):
        ws.write_number(row, col, value, fmt)
    else:
        ws.write_string(row, col, value, fmt)


def _protect(ws: Any) -> None:
    """No password; only locked cells (the header row) are protected. Sorting, filtering,
    resizing and formatting stay allowed."""
    ws.protect("", {"sort": True, "autofilter": True, "format_cells": True,
                    "format_columns": True, "format_rows": True,
                    "select_locked_cells": True, "select_unlocked_cells": True})


def _print_setup(ws: Any) -> None:
    ws.set_landscape()
    ws.fit_to_pages(1, 0)
    ws.repeat_rows(0)


def _header(ws: Any, f: _Formats, headers: Sequence[str], widths: Sequence[float],
            wrap: Sequence[int] = ()) -> None:
    for i, w in enumerate(widths):
        ws.set_column(i, i, w, f.unlocked_wrap if i in wrap else f.unlocked)
    tall = max(_lines(h, w) for h, w in zip(headers, widths, strict=True))
    ws.set_row(0, _height(tall, 6 * LINE_PT))
    for i, h in enumerate(headers):
        ws.write_string(0, i, h, f.header)


# --- sheets ----------------------------------------------------------------------------------

def _howto(wb: Any, f: _Formats, rubric: Rubric, run: Run) -> None:
    ws = wb.add_worksheet(HOWTO)
    ws.set_column(0, 0, 80)  # fits a portrait page at 100%
    ws.fit_to_pages(1, 0)
    lines = [
        ("title", f"How to review: {rubric.title}"),
        ("", f"Run {run.id} of {run.class_dir}, graded by {run.model}. "
             "Save this file as .xlsx (Excel or LibreOffice), then run "
             "`grade review import review.xlsx` to store your decisions."),
        ("bold", "Summary sheet: one row per student"),
        ("", "Grey columns (AI: …, AI total, AI %, Flags) are the model's and are ignored when "
             "you import; the Name links to the student's page with the submission and the "
             "evidence highlighted. Flags shows the reasons in one line; point at the cell to "
             "read the full note."),
        ("", "Yellow columns are yours. Teacher: <criterion> replaces the AI's score (leave it "
             "empty to keep the AI's; clear it to go back to the AI's). Approved: yes when the "
             "row is right as it stands (a flagged student is exported only once approved or "
             "scored on every criterion)."),
        ("bold", "What the student sees"),
        ("", f"“{COMMENT_HEADER}” (Summary) and “{TEACHER_FEEDBACK_HEADER}” (Feedback sheet, "
             "one per criterion) reach the student: on their page and in the Moodle feedback "
             f"column. “{NOTE_HEADER}” is yours alone: it is never on a student page or in an "
             "export, and it does not mark the row reviewed."),
        ("", "When you change a criterion's score, the AI's feedback for it was written for "
             "the AI's score: it is no longer shown to the student until you decide. To keep "
             f"it, copy it into “{TEACHER_FEEDBACK_HEADER}” (as it is or edited); or write your "
             f"own there. “{SHOWN_HEADER}” says what the student reads (as of when this file "
             "was written); the import lists every criterion still waiting. The AI's overall "
             f"comment waits too once you change any of the student's scores: write to them in "
             f"“{COMMENT_HEADER}” (the student's page for you shows what the AI said)."),
        ("", "Handouts (the students' pages) are written once a grade is reviewed or approved "
             "and may leave; `--handouts all` writes the others too, stamped “not yet "
             "reviewed”."),
        ("", "Final columns show what counts: your value where you gave one, else the AI's."),
        ("bold", "Sorting, filtering, several reviewers"),
        ("", "Sort and filter freely (Data > Sort, or the filter arrows): the sheets are "
             "protected only so the header row the import relies on is not renamed. Several "
             "people may review copies of this file at the same time: each import applies "
             "only the cells that copy changed, and a cell also changed by someone else since "
             "the file was written is reported as a conflict instead of being overwritten."),
        ("bold", "Groups sheet (there when two or more answers are alike): similar answers, "
                 "decided once"),
        ("", "Answers that say the same thing (byte-identical, or close in wording) form a "
             "group: one row each, with its representative answer, the range of the AI's "
             "scores inside it and a link to each member's Summary row. A score, feedback or "
             "Approved entered for a group applies to every member without a value of their "
             "own in that column; a member's own value (Summary sheet) always wins. "
             "Inconsistent counts members whose AI score is far from the group's "
             "(flag inconsistent_with_group): look at those first; the group's Approved "
             "does not approve them while their scores are the AI's."),
        ("bold", "Criteria sheet"),
        ("", "Per-criterion statistics of the final scores when this file was written."),
    ]
    for i, (kind, text) in enumerate(lines):
        fmt = {"title": f.title, "bold": f.bold}.get(kind, f.locked_wrap)
        ws.write_string(i, 0, text, fmt)
        if kind == "":
            ws.set_row(i, _height(_lines(text, 80)))
    ws.activate()


def _band_formula(rubric: Rubric, pct_ref: str) -> str:
    bands = sorted(rubric.grade_bands.items(), key=lambda kv: -kv[1])
    expr = f'"{DASH}"'
    for name, minimum in reversed(bands):
        quoted = name.replace('"', '""')
        expr = f'IF({pct_ref}>={minimum:g},"{quoted}",{expr})'
    return f'=IF(ISNUMBER({pct_ref}),{expr},"{DASH}")'


def _validation(ws: Any, crit: Criterion, col: int, last: int) -> None:
    if crit.allowed_points is not None:
        allowed = [f"{p:g}" for p in crit.allowed_points]
        opts: dict[str, Any] = {"validate": "list", "source": allowed,
                                "error_message": f"{crit.id}: choose one of "
                                                 + ", ".join(allowed)}
    else:
        top = crit.max_points
        opts = {"validate": "decimal", "criteria": "between", "minimum": 0,
                "maximum": int(top) if top.is_integer() else top,
                "error_message": f"{crit.id}: enter a number from 0 to {crit.max_points:g}"}
    opts.update(ignore_blank=True, error_title="Score out of range")
    ws.data_validation(1, col, last, col, opts)


def _flag_summary(s: FinalStudent) -> tuple[str | None, str | None]:
    """One line for the Flags cell (the reasons) and the full text for its note."""
    flags = s.result.flags
    if not flags:
        return None, None
    line = "; ".join(dict.fromkeys(f.reason for f in flags))
    full = "\n\n".join(f"{f.reason}: {f.message}" for f in flags)
    return line, full


def _summary(wb: Any, f: _Formats, rubric: Rubric, students: Sequence[FinalStudent],
             pages: dict[str, str]) -> None:
    ws = wb.add_worksheet(SUMMARY, worksheet_class=_Sheet)
    crits = rubric.all_criteria
    k = len(crits)
    headers = ([ID_HEADER, NAME_HEADER] + [ai_header(c.id) for c in crits]
               + ["AI total", "AI %", "AI band", "Flags", "Review status"]
               + [teacher_header(c.id) for c in crits]
               + [COMMENT_HEADER, NOTE_HEADER, APPROVED_HEADER]
               + [final_header(c.id) for c in crits] + ["Final total", "Final %", "Final band"]
               + [UNCERTAINTY_HEADER])
    col = {h: i for i, h in enumerate(headers)}
    letter = {h: xl_col_to_name(i) for h, i in col.items()}
    fixed = {ID_HEADER: 14, NAME_HEADER: 22, "Flags": 24, "Review status": 13,
             COMMENT_HEADER: 36, NOTE_HEADER: 28, APPROVED_HEADER: 10, "Final total": 11}
    # wide enough for the longest word of the header (a wrapped header never splits a word)
    widths = [fixed.get(h, min(max(9.0, max(len(w) for w in h.split()) + 2.0), 18))
              for h in headers]
    _header(ws, f, headers, widths, wrap=(col[COMMENT_HEADER], col[NOTE_HEADER]))
    ws.freeze_panes(1, 2)
    last = len(students)
    ws.autofilter(0, 0, max(last, 1), len(headers) - 1)
    max_total = rubric.max_total
    first_f, last_f = letter[final_header(crits[0].id)], letter[final_header(crits[-1].id)]
    for r, s in enumerate(students, start=1):
        res = s.result
        n = r + 1  # the spreadsheet's row number
        _put(ws, r, 0, cell_text(res.student_id), f.plain)
        page = pages.get(res.student_id)
        name = cell_text(res.name) or cell_text(res.student_id)
        if page:
            ws.write_url(r, 1, "external:students/" + page, f.link, name,
                         "Open the student's page")
        else:
            _put(ws, r, 1, name, f.plain)
        c0 = 2
        for i, c in enumerate(s.criteria):
            _put(ws, r, c0 + i, c.ai_score, f.ai)
        band = rubric.band(res.percent) if res.percent is not None else None
        _put(ws, r, col["AI total"], res.total, f.ai)
        _put(ws, r, col["AI %"], res.percent, f.ai)
        _put(ws, r, col["AI band"], cell_text(band), f.ai)
        line, full = _flag_summary(s)
        _put(ws, r, col["Flags"], cell_text(line), f.ai)
        if full:
            ws.write_comment(r, col["Flags"], cell_text(full) or "",
                             {"x_scale": 3, "y_scale": 2.5, "author": "grader"})
        _put(ws, r, col["Review status"], s.review_status, f.plain)
        for c in s.criteria:
            _put(ws, r, col[teacher_header(c.criterion.id)], c.teacher_score, f.edit)
        comment, note = cell_text(s.teacher_comment), cell_text(s.private_note)
        _put(ws, r, col[COMMENT_HEADER], comment, f.edit_wrap)
        _put(ws, r, col[NOTE_HEADER], note, f.edit_wrap)
        _put(ws, r, col[APPROVED_HEADER], s.approved, f.edit)
        tall = max(_lines(comment, 36), _lines(note, 28))
        if tall > 1:
            ws.set_row(r, _height(tall, 4 * LINE_PT))
        for c in s.criteria:
            cid = c.criterion.id
            ai, te = f"{letter[ai_header(cid)]}{n}", f"{letter[teacher_header(cid)]}{n}"
            ws.write_formula(r, col[final_header(cid)],
                             f'=IF({te}="",IF({ai}="","{NO_SCORE}",{ai}),{te})', f.final,
                             c.final if c.final is not None else NO_SCORE)
        tot, pct = f"{letter['Final total']}{n}", f"{letter['Final %']}{n}"
        total, percent = s.final_total, s.final_percent
        ws.write_formula(r, col["Final total"],
                         f'=IF(COUNT({first_f}{n}:{last_f}{n})={k},'
                         f'SUM({first_f}{n}:{last_f}{n}),"{INCOMPLETE}")', f.final,
                         total if total is not None else INCOMPLETE)
        ws.write_formula(r, col["Final %"],
                         f'=IF(ISNUMBER({tot}),ROUND({tot}/{max_total:g}*100,2),"{DASH}")',
                         f.final, percent if percent is not None else DASH)
        ws.write_formula(r, col["Final band"], _band_formula(rubric, pct), f.final,
                         s.band or DASH)
        _put(ws, r, col[UNCERTAINTY_HEADER],
             round(s.uncertainty, 2) if res.samples > 1 else None, f.ai)
    if last:
        for h in [teacher_header(c.id) for c in crits] + [COMMENT_HEADER, NOTE_HEADER,
                                                          APPROVED_HEADER]:
            ws.conditional_format(1, col[h], last, col[h], {
                "type": "formula", "criteria": "=TRUE", "format": f.yellow})
        for crit in crits:
            _validation(ws, crit, col[teacher_header(crit.id)], last)
        ws.data_validation(1, col[APPROVED_HEADER], last, col[APPROVED_HEADER],
                           {"validate": "list", "source": ["yes", "no"], "ignore_blank": True})
        flags = letter["Flags"]
        ws.conditional_format(1, 0, last, 1, {"type": "formula", "criteria": f"=LEN(${flags}2)>0",
                                              "format": f.red})
        for h in ("AI %", "Final %"):
            ws.conditional_format(1, col[h], last, col[h], {
                "type": "cell", "criteria": "<", "value": 50, "format": f.amber})
    _print_setup(ws)
    _protect(ws)


def _feedback(wb: Any, f: _Formats, students: Sequence[FinalStudent]) -> None:
    ws = wb.add_worksheet(FEEDBACK)
    headers = [ID_HEADER, NAME_HEADER, CRIT_ID_HEADER, "Criterion", "Max", "AI score",
               "Justification", "Evidence", "AI feedback", TEACHER_FEEDBACK_HEADER,
               SHOWN_HEADER]
    widths = [14, 20, 14, 22, 6, 9, 50, 40, 50, 50, 28]
    _header(ws, f, headers, widths, wrap=(3, 6, 7, 8, 9, 10))
    ws.freeze_panes(1, 3)
    rows = sum(len(s.criteria) for s in students)
    ws.autofilter(0, 0, max(rows, 1), len(headers) - 1)
    titles: dict[str, tuple[str, int]] = {}  # per criterion: its title cell and lines
    r = 0
    put_s, put_n = ws.write_string, ws.write_number
    for s in students:
        sid, name = cell_text(s.result.student_id) or "", cell_text(s.result.name)
        for c in s.criteria:
            r += 1
            crit = c.criterion
            if crit.id not in titles:
                title = cell_text(crit.title) or ""
                titles[crit.id] = (title, _lines(title, 22))
            title, tall = titles[crit.id]
            put_s(r, 0, sid, f.plain)
            if name:
                put_s(r, 1, name, f.plain)
            put_s(r, 2, crit.id, f.plain)
            put_s(r, 3, title, f.ai_wrap)
            put_n(r, 4, crit.max_points, f.ai)
            if c.ai_score is not None:
                put_n(r, 5, c.ai_score, f.ai)
            for col, text, width, fmt in (
                    (6, cell_text(c.justification), 50, f.ai_wrap),
                    (7, cell_text("\n".join(c.evidence)), 40, f.ai_wrap),
                    (8, cell_text(c.ai_feedback), 50, f.ai_wrap),
                    (9, cell_text(c.teacher_feedback), 50, f.edit_wrap)):
                if text:
                    put_s(r, col, text, fmt)
                    tall = max(tall, _lines(text, width))
            shown = _shown(c)
            if shown:
                put_s(r, 10, shown, f.held if c.feedback_held else f.ai_wrap)
                tall = max(tall, _lines(shown, 28))
            if tall > 1:
                ws.set_row(r, _height(tall))
    if rows:
        ws.conditional_format(1, 9, rows, 9, {"type": "formula", "criteria": "=TRUE",
                                              "format": f.yellow})
        ws.conditional_format(1, 5, rows, 5, {"type": "formula",
                                              "criteria": "=AND(ISNUMBER($F2),$F2<$E2/2)",
                                              "format": f.amber})
    _print_setup(ws)
    _protect(ws)


def _shown(c: FinalCriterion) -> str | None:
    """Which feedback the student reads for a criterion (`FinalCriterion.feedback`), in words."""
    if c.teacher_feedback:
        return "your feedback"
    if c.feedback_held:
        return HELD
    return "the AI feedback" if c.ai_feedback else None


def _criteria(wb: Any, f: _Formats, stats: Sequence[CriterionStats]) -> None:
    ws = wb.add_worksheet(CRITERIA)
    headers = ["Criterion ID", "Criterion", "Max", "N", "Mean", "Median", "Std dev", "Min",
               "Max scored", "Mean %", "Full marks %", "AI mean", "Distribution (score: count)"]
    widths = [14, 28, 6, 6, 8, 8, 8, 6, 8, 8, 10, 8, 50]
    _header(ws, f, headers, widths)
    ws.freeze_panes(1, 2)
    for r, s in enumerate(stats, start=1):
        sm = s.summary
        dist = "\n".join(f"{b.label}: {b.count}" for b in s.distribution)
        full = 100.0 * s.full_marks_share if s.full_marks_share is not None else None
        title = cell_text(s.criterion.title)
        values = [s.criterion.id, title, s.criterion.max_points, sm.n, _round(sm.mean),
                  _round(sm.median), _round(sm.stdev), sm.minimum, sm.maximum,
                  _round(s.mean_percent), _round(full), _round(s.ai_mean), cell_text(dist)]
        for i, v in enumerate(values):
            _put(ws, r, i, v, f.wrap if i in (1, 12) else f.plain)
        ws.set_row(r, _height(max(_lines(title, 28), _lines(dist, 50))))
    ws.autofilter(0, 0, max(len(stats), 1), len(headers) - 1)
    _print_setup(ws)


def _run_sheet(wb: Any, f: _Formats, store: Store, run: Run) -> None:
    """Model, tokens and cost of the run (read only)."""
    ws = wb.add_worksheet(RUN)
    _header(ws, f, ["Run", f"run {run.id}"], [28, 60])
    usage = store.usage(run.id)
    cost = run_cost(store, run, usage)
    price = ("none (local model)" if run.backend == "local" else "local, unpriced (the "
             "school's own model server)" if run.backend == "openai" else "unknown (no price in "
             "the model table)") if cost.cost_usd is None else round(cost.cost_usd, 6)
    rows: list[tuple[str, Any]] = [
        ("Model", f"{run.backend}:{run.model}"), ("Service tier", cost.tier),
        ("Model calls", int(usage["calls"])), ("Prompt tokens", int(usage["prompt_tokens"])),
        ("Cached tokens", int(usage["cached_tokens"])),
        ("Output tokens", int(usage["output_tokens"])),
        ("Thinking tokens", int(usage["thinking_tokens"])), ("Cost (USD)", price),
        ("Calls without a price", cost.unpriced),
        ("Prices", f"{cost.basis}; each call priced from its usage at the price of the day "
                   "it ran"),
    ]
    if usage.get("caches"):
        rows.insert(8, ("Context cache (USD, in the cost)", round(cost.cache_usd, 6)))
    rows += [(f"Answered by {label}", f"{calls} calls" + (f": {note}" if note else ""))
             for label, calls, note in cost.served]
    for r, (key, value) in enumerate(rows, start=1):
        _put(ws, r, 0, key, f.plain)
        _put(ws, r, 1, cell_text(value) if isinstance(value, str) else value, f.wrap)
    _print_setup(ws)
    _protect(ws)


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


def _relative(target: Path, start: Path) -> str:
    try:
        return Path(os.path.relpath(target, start)).as_posix()
    except ValueError:  # another drive (Windows)
        return ""


def _meta(wb: Any, run: Run, rubric: Rubric, db: str | None, out_dir: Path,
          students: Sequence[FinalStudent], groups: Sequence[tuple[Any, dict[str, Any]]] = ()
          ) -> None:
    ws = wb.add_worksheet(META)
    ws.hide()
    here = out_dir.resolve()
    db_abs = Path(db).resolve() if db else None
    rows: list[tuple[str, Any]] = [
        ("format_version", FORMAT_VERSION), ("run_id", run.id),
        ("run_token", run_token(run)), ("started_at", run.started_at),
        ("rubric_hash", run.rubric_hash), ("prompt_hash", run.prompt_hash),
        ("schema_hash", run.schema_hash), ("model", run.model),
        ("criteria", ",".join(c.id for c in rubric.all_criteria)),
        ("class_dir", run.class_dir),
        # Where the store is, relative to this workbook's folder (the import looks there, never
        # at the absolute path blindly), and this folder relative to the store's folder.
        ("db_relative", _relative(db_abs, here) if db_abs else ""),
        ("out_from_db", _relative(here, db_abs.parent) if db_abs else ""),
        ("db_path", str(db_abs) if db_abs else ""),
        ("generated_at", datetime.now(UTC).isoformat(timespec="seconds")),
        # this file, as written: an import tells its later edits from a new workbook's
        ("written_id", secrets.token_hex(16)),
        ("note", "Written by grader; used by `grade review import` to match this file to its "
                 "run and to apply only the cells you changed. Do not edit."),
    ]
    for i, (key, value) in enumerate(rows):
        ws.write_string(i, 0, key)
        _put(ws, i, 1, cell_text(value) if isinstance(value, str) else value, None)
    r = len(rows) + 1
    for i, h in enumerate(BASE_HEADER):
        ws.write_string(r, i, h)
    for s in students:
        r += 1
        ws.write_string(r, 0, cell_text(s.student_id) or "")
        _put(ws, r, 1, s.result.submission_id, None)
        ws.write_string(r, 2, json.dumps(student_base(s), separators=(",", ":")))
    if groups:
        from grader.reports.excel_groups import write_base

        write_base(ws, r + 2, groups)
    ws.protect("")


def _groups(wb: Any, f: _Formats, store: Store, run_id: int, rubric: Rubric,
            students: Sequence[FinalStudent]) -> list[tuple[Any, dict[str, Any]]]:
    """The Groups sheet (`excel_groups`), when the run has a group of two or more."""
    from grader.reports import excel_groups
    from grader.review.grouping import stored

    groups = stored(store, run_id)
    if not excel_groups.listed(groups):
        return []
    return excel_groups.write_sheet(wb, f, store, run_id, rubric, students, groups,
                                    store.decisions())


def write_workbook(store: Store, run_id: int, rubric: Rubric, students: Sequence[FinalStudent],
                   stats: Sequence[CriterionStats], path: Path,
                   pages: dict[str, str] | None = None) -> Path:
    """Write review.xlsx atomically (temp file, then rename). `pages`: student id -> the file
    name of their page under students/ (linked from the Name column)."""
    tmp = path.with_name(path.name + ".tmp")
    run = store.run(run_id)
    wb = xlsxwriter.Workbook(str(tmp), {
        "constant_memory": True, "strings_to_formulas": False, "strings_to_urls": False,
        "strings_to_numbers": False, "tmpdir": str(path.parent)})
    wb.set_properties({"title": f"Review: {rubric.title}", "comments": "Written by grader"})
    f = _Formats(wb)
    _howto(wb, f, rubric, run)
    _summary(wb, f, rubric, students, pages or {})
    groups = _groups(wb, f, store, run_id, rubric, students)
    _feedback(wb, f, students)
    _criteria(wb, f, stats)
    _run_sheet(wb, f, store, run)
    db = None if store.path == ":memory:" else store.path
    _meta(wb, run, rubric, db, path.parent, students, groups)
    wb.close()
    tmp.replace(path)
    return path
