"""The Groups sheet of review.xlsx: one row per answer group (`review.groups`), so a teacher
decides a group of similar answers once.

Each row: the group, its size, its representative (the answer nearest the group's centre) and
that answer's text, the range of the AI's scores inside it per criterion and for the total, how
many members are flagged `inconsistent_with_group`, the teacher's columns (a score per
criterion, feedback to the student, Approved: the Summary sheet's headers, yellow), and a link
to each member's row of the Summary sheet (as written; a sort moves rows). Only groups of two
or more are listed: a group of one is its Summary row.

A value entered here applies, on import, to every member without a decision of their own on
that cell (`grader.review.importing`); the hidden metadata sheet records each group's members
and the base of its teacher cells, as it does for students (`excel.GROUP_BASE_HEADER`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from grader.grading.records import Decision
from grader.prompting.rubric import Rubric
from grader.reports import excel as x
from grader.review.final import FinalStudent
from grader.review.grouping import answer_text, group_values
from grader.review.groups import FLAG, Answer, Group, ranges
from grader.store import Store

SIZE_HEADER, REP_HEADER, ANSWER_HEADER = "Size", "Representative", "Representative answer"
TOTAL_HEADER, INCONSISTENT_HEADER = "AI total", "Inconsistent"
MAX_LINKS = 50  # member links per row; a larger group ends with "… and N more"
MAX_ANSWER = 1500  # characters of the representative answer shown


def listed(groups: Sequence[Group]) -> list[Group]:
    """The groups the sheet lists: two members or more."""
    return [g for g in groups if g.size > 1]


def teacher_values(values: Mapping[tuple[str, str], Any], rubric: Rubric
                   ) -> list[tuple[str, str, Any]]:
    """(criterion id or "", field, value) of a group's teacher cells, in column order."""
    return ([(c.id, "score", values.get((c.id, "score"))) for c in rubric.all_criteria]
            + [("", "comment", values.get(("", "comment"))),
               ("", "approved", values.get(("", "approved")))])


def group_base(values: Mapping[tuple[str, str], Any], rubric: Rubric) -> dict[str, Any]:
    """The base of a group's row: a token per non-empty teacher cell (as for a student)."""
    return {x.base_key(cid, fld): t for cid, fld, v in teacher_values(values, rubric)
            if (t := x.token(fld, v)) is not None}


def _range(r: tuple[float, float] | None) -> str | None:
    if r is None:
        return None
    return f"{r[0]:g}" if r[0] == r[1] else f"{r[0]:g} – {r[1]:g}"


def write_sheet(wb: Any, f: Any, store: Store, run_id: int, rubric: Rubric,
                students: Sequence[FinalStudent], groups: Sequence[Group],
                decisions: Mapping[str, Sequence[Decision]]
                ) -> list[tuple[Group, dict[str, Any]]]:
    """Write the Groups sheet; returns each listed group with its base (for the metadata)."""
    ws = wb.add_worksheet(x.GROUPS)
    crits = rubric.all_criteria
    shown = listed(groups)
    by_id = {s.student_id: s for s in students}
    row_of = {s.student_id: n for n, s in enumerate(students, start=2)}  # Summary rows
    links = min(MAX_LINKS, max((g.size for g in shown), default=1))
    headers = ([x.GROUP_HEADER, SIZE_HEADER, REP_HEADER, ANSWER_HEADER]
               + [x.ai_header(c.id) for c in crits] + [TOTAL_HEADER, INCONSISTENT_HEADER]
               + [x.teacher_header(c.id) for c in crits] + [x.COMMENT_HEADER, x.APPROVED_HEADER]
               + [f"Member {i}" for i in range(1, links + 1)])
    col = {h: i for i, h in enumerate(headers)}
    fixed = {x.GROUP_HEADER: 8, SIZE_HEADER: 6, REP_HEADER: 14, ANSWER_HEADER: 60,
             INCONSISTENT_HEADER: 12, x.COMMENT_HEADER: 36, x.APPROVED_HEADER: 10}
    widths = [fixed.get(h, 14.0) for h in headers]
    x._header(ws, f, headers, widths, wrap=(col[ANSWER_HEADER], col[x.COMMENT_HEADER]))
    ws.freeze_panes(1, 1)
    ws.autofilter(0, 0, max(len(shown), 1), len(headers) - 1)
    answers = {s.student_id: Answer(s.student_id, "", {c.criterion.id: float(c.ai_score)
                                                       for c in s.criteria
                                                       if c.ai_score is not None},
                                    s.ai_total) for s in students}
    results = {s.student_id: s.result for s in students}
    out = []
    for r, g in enumerate(shown, start=1):
        x._put(ws, r, 0, g.label, f.plain)
        x._put(ws, r, 1, g.size, f.plain)
        rep = by_id.get(g.representative)
        if g.representative in row_of:
            ws.write_url(r, 2, f"internal:'{x.SUMMARY}'!A{row_of[g.representative]}", f.link,
                         x.cell_text(g.representative), "The representative's Summary row")
        text = _answer(store, rep)
        x._put(ws, r, 3, text, f.ai_wrap)
        for c in crits:
            x._put(ws, r, col[x.ai_header(c.id)], _range(ranges(g, answers, c.id)), f.ai)
        x._put(ws, r, col[TOTAL_HEADER], _range(ranges(g, answers)), f.ai)
        odd = sum(1 for sid in g.members if sid in by_id
                  and any(fl.reason == FLAG for fl in by_id[sid].result.flags))
        x._put(ws, r, col[INCONSISTENT_HEADER], odd or None, f.ai)
        values = group_values(decisions, results, g)
        for cid, fld, v in teacher_values(values, rubric):
            head = (x.teacher_header(cid) if fld == "score" else
                    x.COMMENT_HEADER if fld == "comment" else x.APPROVED_HEADER)
            x._put(ws, r, col[head], x.cell_text(v) if fld == "comment" else v,
                   f.edit_wrap if fld == "comment" else f.edit)
        members = list(g.members)
        for i, sid in enumerate(members[:links]):
            c0 = col["Member 1"] + i
            m = by_id.get(sid)
            label = f"{sid} ({m.ai_total:g})" if m is not None and m.ai_total is not None \
                else sid
            if i == links - 1 and len(members) > links:
                x._put(ws, r, c0, f"… and {len(members) - links + 1} more", f.plain)
            elif sid in row_of:
                ws.write_url(r, c0, f"internal:'{x.SUMMARY}'!A{row_of[sid]}", f.link,
                             x.cell_text(label), "The member's Summary row")
        comment = x.cell_text(values.get(("", "comment")))
        tall = max(x._lines(text, 60), x._lines(comment, 36))
        ws.set_row(r, x._height(min(tall, 8), 8 * x.LINE_PT))
        out.append((g, group_base(values, rubric)))
    if shown:
        last = len(shown)
        for h in [x.teacher_header(c.id) for c in crits] + [x.COMMENT_HEADER,
                                                          x.APPROVED_HEADER]:
            ws.conditional_format(1, col[h], last, col[h], {
                "type": "formula", "criteria": "=TRUE", "format": f.yellow})
        for crit in crits:
            x._validation(ws, crit, col[x.teacher_header(crit.id)], last)
        ws.data_validation(1, col[x.APPROVED_HEADER], last, col[x.APPROVED_HEADER],
                           {"validate": "list", "source": ["yes", "no"], "ignore_blank": True})
    x._print_setup(ws)
    x._protect(ws)
    return out


def _answer(store: Store, s: FinalStudent | None) -> str | None:
    """The representative's answer as graded (redacted as sent), cut for the cell."""
    text = answer_text(store, s.result) if s is not None else ""
    if len(text) > MAX_ANSWER:
        text = text[:MAX_ANSWER] + "…"
    return x.cell_text(text)


def write_base(ws: Any, row: int, bases: Sequence[tuple[Group, dict[str, Any]]]) -> None:
    """The groups' base table of the metadata sheet, from `row` on."""
    for i, h in enumerate(x.GROUP_BASE_HEADER):
        ws.write_string(row, i, h)
    for g, base in bases:
        row += 1
        ws.write_string(row, 0, g.label)
        ws.write_string(row, 1, json.dumps(list(g.members)))
        ws.write_string(row, 2, json.dumps({"t": base}, separators=(",", ":")))
