"""The teacher's review workbook (review.xlsx), streamed with openpyxl's write-only mode.

Layout is a contract with `grader.review`: the import finds columns by their header text
(`Teacher: <criterion id>`, ...) and matches the run through the hidden metadata sheet, so the
teacher may sort, filter or resize freely. Every text cell goes through `_escape.escape_text`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.formatting.rule import CellIsRule, FormulaRule
from openpyxl.styles import Alignment, Font, PatternFill, Protection
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.datavalidation import DataValidation

from .._escape import escape_text
from ..final import FinalStudent
from ..rubric import Criterion, Rubric
from ..store import Run, Store
from .stats import CriterionStats, run_cost

SUMMARY, FEEDBACK, CRITERIA, META = "Summary", "Feedback", "Criteria", "_grader_meta"
RUN = "Run"
FORMAT_VERSION = "1"
MAX_CELL = 32000  # Excel holds at most 32,767 characters in a cell

# Header names the import relies on.
ID_HEADER, NAME_HEADER = "Student ID", "Name"
COMMENT_HEADER, APPROVED_HEADER = "Teacher comment", "Approved"
CRIT_ID_HEADER, TEACHER_FEEDBACK_HEADER = "Criterion ID", "Teacher feedback"


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


def _text(value: str | None) -> str | None:
    if not value:
        return None
    text = escape_text(value)
    return text if len(text) <= MAX_CELL else text[:MAX_CELL] + "…"


class _Styles:
    """Pre-built cell styles, shared by reference (assigning fonts per cell is slow).

    A styled cell costs openpyxl about 3x a plain value, so only cells that need it (headers,
    editable cells, wrapped long text) get a style; "plain" cells are written as bare values.
    """

    def __init__(self, ws: Any):
        self.ws = ws
        thin = Font(bold=True)
        self._tmpl: dict[str, Any] = {}
        self._make("header", font=thin, fill=PatternFill("solid", fgColor="DDE4EE"),
                   alignment=Alignment(wrap_text=True, vertical="top"))
        self._make("wrap", alignment=Alignment(wrap_text=True, vertical="top"))
        self._make("edit", alignment=Alignment(vertical="top"), protection=Protection(locked=False),
                   fill=PatternFill("solid", fgColor="FFF8DC"), number_format="0.##")
        self._make("edit_wrap", alignment=Alignment(wrap_text=True, vertical="top"),
                   protection=Protection(locked=False), fill=PatternFill("solid", fgColor="FFF8DC"))

    def _make(self, name: str, **attrs: Any) -> None:
        cell = WriteOnlyCell(self.ws)
        for k, v in attrs.items():
            setattr(cell, k, v)
        self._tmpl[name] = cell

    def cell(self, value: Any, style: str) -> Any:
        t = self._tmpl.get(style)
        if t is None:  # plain
            return value
        c = WriteOnlyCell(self.ws, value)
        c._style = t._style
        return c


def _protect(ws: Any) -> None:
    """Lock AI columns without a password; leave filtering, sorting and resizing allowed."""
    p = ws.protection
    p.sheet = True
    p.autoFilter = False
    p.sort = False
    p.formatColumns = False
    p.formatRows = False
    p.selectLockedCells = False
    p.selectUnlockedCells = False


def _band_formula(rubric: Rubric, pct_ref: str) -> str:
    bands = sorted(rubric.grade_bands.items(), key=lambda kv: -kv[1])
    expr = '""'
    for name, minimum in reversed(bands):
        quoted = name.replace('"', '""')
        expr = f'IF({pct_ref}>={minimum:g},"{quoted}",{expr})'
    return f'=IF({pct_ref}="","",{expr})'


def _validation(crit: Criterion, ref: str) -> DataValidation:
    if crit.allowed_points is not None:
        allowed = ",".join(f"{p:g}" for p in crit.allowed_points)
        dv = DataValidation(type="list", formula1=f'"{allowed}"', allow_blank=True)
        dv.error = f"{crit.id}: choose one of {allowed}"
    else:
        dv = DataValidation(type="decimal", operator="between", formula1="0",
                            formula2=f"{crit.max_points:g}", allow_blank=True)
        dv.error = f"{crit.id}: enter a number from 0 to {crit.max_points:g}"
    dv.errorTitle = "Score out of range"
    dv.showErrorMessage = True
    dv.add(ref)
    return dv


def _summary(wb: Workbook, rubric: Rubric, students: Sequence[FinalStudent]) -> None:
    ws = wb.create_sheet(SUMMARY)
    st = _Styles(ws)
    crits = rubric.all_criteria
    k = len(crits)
    headers = ([ID_HEADER, NAME_HEADER] + [ai_header(c.id) for c in crits]
               + ["AI total", "AI %", "AI band", "Flags", "Review status"]
               + [teacher_header(c.id) for c in crits] + [COMMENT_HEADER, APPROVED_HEADER]
               + [final_header(c.id) for c in crits] + ["Final total", "Final %", "Final band"])
    col = {h: i + 1 for i, h in enumerate(headers)}
    letter = {h: get_column_letter(i) for h, i in col.items()}
    widths = {ID_HEADER: 14, NAME_HEADER: 24, "Flags": 40, "Review status": 14,
              COMMENT_HEADER: 40, APPROVED_HEADER: 10}
    for h, i in col.items():
        ws.column_dimensions[get_column_letter(i)].width = widths.get(h, 11)
    ws.freeze_panes = "C2"
    last_row = len(students) + 1
    ws.auto_filter.ref = f"A1:{get_column_letter(len(headers))}{last_row}"
    ws.append([st.cell(h, "header") for h in headers])

    max_total = rubric.max_total
    for r, s in enumerate(students, start=2):
        res = s.result
        row: list[Any] = [_text(res.student_id), _text(res.name)]
        row += [st.cell(c.ai_score, "plain") for c in s.criteria]
        row += [st.cell(res.total, "plain"), st.cell(res.percent, "plain"),
                st.cell(_text(rubric.band(res.percent) if res.percent is not None else None),
                        "plain"),
                st.cell(_text(s.flag_text), "plain"), st.cell(_text(s.review_status), "plain")]
        row += [st.cell(c.teacher_score, "edit") for c in s.criteria]
        approved = {True: "yes", False: "no", None: None}[s.approved]
        row += [st.cell(_text(s.teacher_comment), "edit_wrap"), st.cell(approved, "edit")]
        finals = []
        for c in crits:
            ai, te = f"{letter[ai_header(c.id)]}{r}", f"{letter[teacher_header(c.id)]}{r}"
            finals.append(st.cell(f'=IF({te}="",IF({ai}="","",{ai}),{te})', "plain"))
        row += finals
        first, last = letter[final_header(crits[0].id)], letter[final_header(crits[-1].id)]
        tot = f"{letter['Final total']}{r}"
        pct = f"{letter['Final %']}{r}"
        row += [st.cell(f'=IF(COUNT({first}{r}:{last}{r})={k},SUM({first}{r}:{last}{r}),"")',
                        "plain"),
                st.cell(f'=IF({tot}="","",ROUND({tot}/{max_total:g}*100,2))', "plain"),
                st.cell(_band_formula(rubric, pct), "plain")]
        ws.append(row)

    for c in crits:
        ref = f"{letter[teacher_header(c.id)]}2:{letter[teacher_header(c.id)]}{last_row}"
        ws.data_validations.append(_validation(c, ref))
    yes_no = DataValidation(type="list", formula1='"yes,no"', allow_blank=True)
    yes_no.add(f"{letter[APPROVED_HEADER]}2:{letter[APPROVED_HEADER]}{last_row}")
    ws.data_validations.append(yes_no)

    red = PatternFill("solid", fgColor="F8D7DA")
    amber = PatternFill("solid", fgColor="FFE5B4")
    ws.conditional_formatting.add(
        f"{letter[ID_HEADER]}2:{letter['Review status']}{last_row}",
        FormulaRule(formula=[f'LEN(${letter["Flags"]}2)>0'], fill=red))
    for h in ("AI %", "Final %"):
        ws.conditional_formatting.add(
            f"{letter[h]}2:{letter[h]}{last_row}",
            CellIsRule(operator="lessThan", formula=["50"], fill=amber))
    _protect(ws)


def _feedback(wb: Workbook, students: Sequence[FinalStudent]) -> None:
    ws = wb.create_sheet(FEEDBACK)
    st = _Styles(ws)
    headers = [ID_HEADER, NAME_HEADER, CRIT_ID_HEADER, "Criterion", "Max", "AI score",
               "Justification", "Evidence", "AI feedback", TEACHER_FEEDBACK_HEADER]
    widths = [14, 20, 14, 22, 6, 9, 50, 40, 50, 50]
    for i, w in enumerate(widths, start=1):
        ws.column_dimensions[get_column_letter(i)].width = w
    ws.freeze_panes = "D2"
    rows = sum(len(s.criteria) for s in students) + 1
    ws.auto_filter.ref = f"A1:{get_column_letter(len(headers))}{rows}"
    ws.append([st.cell(h, "header") for h in headers])
    for s in students:
        sid, name = _text(s.result.student_id), _text(s.result.name)
        for c in s.criteria:
            ws.append([
                st.cell(sid, "plain"), st.cell(name, "plain"), st.cell(c.criterion.id, "plain"),
                st.cell(_text(c.criterion.title), "wrap"), st.cell(c.criterion.max_points, "plain"),
                st.cell(c.ai_score, "plain"), st.cell(_text(c.justification), "wrap"),
                st.cell(_text("\n".join(c.evidence)), "wrap"),
                st.cell(_text(c.ai_feedback), "wrap"),
                st.cell(_text(c.teacher_feedback), "edit_wrap"),
            ])
    amber = PatternFill("solid", fgColor="FFE5B4")
    ws.conditional_formatting.add(
        f"F2:F{rows}", FormulaRule(formula=['AND(ISNUMBER(F2),F2<E2/2)'], fill=amber))
    _protect(ws)


def _criteria(wb: Workbook, stats: Sequence[CriterionStats]) -> None:
    ws = wb.create_sheet(CRITERIA)
    st = _Styles(ws)
    headers = ["Criterion ID", "Criterion", "Max", "N", "Mean", "Median", "Std dev", "Min",
               "Max scored", "Mean %", "Full marks %", "AI mean", "Distribution (score: count)"]
    for i, w in enumerate([14, 28, 6, 6, 8, 8, 8, 6, 8, 8, 10, 8, 50], start=1):
        ws.column_dimensions[get_column_letter(i)].width = w
    ws.freeze_panes = "C2"
    ws.append([st.cell(h, "header") for h in headers])
    for s in stats:
        sm = s.summary
        dist = "  ".join(f"{b.label}: {b.count}" for b in s.distribution)
        full = 100.0 * s.full_marks_share if s.full_marks_share is not None else None
        ws.append([st.cell(s.criterion.id, "plain"), st.cell(_text(s.criterion.title), "wrap"),
                   st.cell(s.criterion.max_points, "plain"), st.cell(sm.n, "plain"),
                   st.cell(_round(sm.mean), "plain"), st.cell(_round(sm.median), "plain"),
                   st.cell(_round(sm.stdev), "plain"), st.cell(sm.minimum, "plain"),
                   st.cell(sm.maximum, "plain"), st.cell(_round(s.mean_percent), "plain"),
                   st.cell(_round(full), "plain"), st.cell(_round(s.ai_mean), "plain"),
                   st.cell(_text(dist), "wrap")])
    ws.auto_filter.ref = f"A1:M{len(stats) + 1}"
    _protect(ws)


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


def _run_sheet(wb: Workbook, store: Store, run: Run) -> None:
    """Model, tokens and cost of the run (read-only)."""
    ws = wb.create_sheet(RUN)
    st = _Styles(ws)
    ws.column_dimensions["A"].width = 28
    ws.column_dimensions["B"].width = 60
    usage = store.usage(run.id)
    cost = run_cost(store, run, usage)
    price = ("none (local model)" if run.backend == "local" else "unknown (no price in the model "
             "table)") if cost.cost_usd is None else round(cost.cost_usd, 6)
    rows: list[tuple[str, Any]] = [
        ("Model", f"{run.backend}:{run.model}"), ("Service tier", cost.tier),
        ("Model calls", int(usage["calls"])), ("Prompt tokens", int(usage["prompt_tokens"])),
        ("Cached tokens", int(usage["cached_tokens"])),
        ("Output tokens", int(usage["output_tokens"])),
        ("Thinking tokens", int(usage["thinking_tokens"])), ("Cost (USD)", price),
        ("Calls without a price", cost.unpriced),
        ("Prices", f"model table checked {cost.checked}; each call priced from its usage at "
                   "the price of the day it ran"),
    ]
    if usage.get("caches"):
        rows.insert(8, ("Context cache (USD, in the cost)", round(cost.cache_usd, 6)))
    rows += [(f"Answered by {label}", f"{calls} calls" + (f": {note}" if note else ""))
             for label, calls, note in cost.served]
    ws.append([st.cell("Run", "header"), st.cell(f"run {run.id}", "header")])
    for key, value in rows:
        ws.append([key, _text(value) if isinstance(value, str) else value])
    _protect(ws)


def _meta(wb: Workbook, run: Run, rubric: Rubric, db_path: str) -> None:
    ws = wb.create_sheet(META)
    ws.sheet_state = "hidden"
    rows = [
        ("format_version", FORMAT_VERSION), ("run_id", run.id),
        ("run_token", run_token(run)), ("started_at", run.started_at),
        ("rubric_hash", run.rubric_hash), ("prompt_hash", run.prompt_hash),
        ("schema_hash", run.schema_hash), ("model", run.model),
        ("criteria", ",".join(c.id for c in rubric.all_criteria)),
        ("class_dir", run.class_dir), ("db_path", db_path),
        ("generated_at", datetime.now(UTC).isoformat(timespec="seconds")),
        ("note", "Written by grader; used by `grade review import` to match this file to its run."),
    ]
    for key, value in rows:
        ws.append([key, _text(value) if isinstance(value, str) else value])


def write_workbook(store: Store, run_id: int, rubric: Rubric, students: Sequence[FinalStudent],
                   stats: Sequence[CriterionStats], path: Path) -> Path:
    """Write review.xlsx atomically (temp file, then rename)."""
    wb = Workbook(write_only=True)
    _summary(wb, rubric, students)
    _feedback(wb, students)
    _criteria(wb, stats)
    _run_sheet(wb, store, store.run(run_id))
    db = store.path if store.path == ":memory:" else str(Path(store.path).resolve())
    _meta(wb, store.run(run_id), rubric, db)
    tmp = path.with_name(path.name + ".tmp")
    wb.save(tmp)
    tmp.replace(path)
    return path
