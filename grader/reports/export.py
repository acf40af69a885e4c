"""Gradebook exports: Canvas, Moodle and a plain CSV, final grades only.

A student who is flagged and not yet reviewed (or has no complete grade) is never exported as a
number: the grade cell stays empty and the row says why, so an LMS import cannot turn "needs a
human" into a silent zero. Every text cell goes through `_escape.escape_cell`.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from .._escape import escape_cell
from ..errors import InputError
from ..final import FinalStudent, finals, load_rubric
from ..rubric import Rubric
from ..store import Store

Format = Literal["canvas", "moodle", "csv"]
FORMATS: tuple[str, ...] = ("canvas", "moodle", "csv")
NOT_EXPORTED = "NOT EXPORTED"


def _num(v: float | None) -> str:
    return "" if v is None else f"{v:g}"


def _hold_reason(s: FinalStudent) -> str:
    """Why a student's grade is withheld, for the marker column."""
    if s.final_total is None:
        what = s.result.reason or s.result.status
        return f"{NOT_EXPORTED}: no complete grade ({what}); score every criterion in review.xlsx"
    reasons = ", ".join(f.reason for f in s.result.flags) or "needs review"
    return f"{NOT_EXPORTED}: flagged ({reasons}) and not reviewed; approve it in review.xlsx"


def _feedback(s: FinalStudent) -> str:
    parts = [s.teacher_comment] if s.teacher_comment else []
    if s.result.overall_comment:
        parts.append(s.result.overall_comment)
    for c in s.criteria:
        if c.feedback:
            parts.append(f"{c.criterion.title} ({_num(c.final)}/{_num(c.criterion.max_points)}): "
                         f"{c.feedback}")
    return "\n".join(parts)


def _write(path: Path, rows: Iterable[Sequence[object]]) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        for row in rows:
            w.writerow([escape_cell(v) for v in row])
    tmp.replace(path)
    return path


def _canvas(rubric: Rubric, students: Iterable[FinalStudent],
            held: list[Sequence[object]]) -> Iterable[Sequence[object]]:
    # Canvas gradebook import: fixed identity columns, then one column per assignment; an empty
    # grade cell means "leave unchanged", so withheld students keep whatever Canvas has.
    title = rubric.title
    yield ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", title]
    yield ["    Points Possible", "", "", "", "", _num(rubric.max_total)]
    for s in students:
        r = s.result
        grade = _num(s.final_total) if s.exportable else ""
        if not s.exportable:
            held.append([r.student_id, r.name or "", _hold_reason(s)])
        yield [r.name or r.student_id, "", r.student_id, r.email or "", "", grade]


def _moodle(students: Iterable[FinalStudent]) -> Iterable[Sequence[object]]:
    yield ["identifier", "grade", "feedback"]
    for s in students:
        r = s.result
        ident = r.email or r.student_id
        if s.exportable:
            yield [ident, _num(s.final_total), _feedback(s)]
        else:
            yield [ident, "", _hold_reason(s)]


def _plain(rubric: Rubric, students: Iterable[FinalStudent]) -> Iterable[Sequence[object]]:
    crits = rubric.all_criteria
    yield (["student_id", "name", "email", "export_status", "total", "max_total", "percent",
            "band"] + [c.id for c in crits] + ["review_status", "flags", "teacher_comment"])
    for s in students:
        r = s.result
        ok = s.exportable
        yield ([r.student_id, r.name or "", r.email or "",
                "exported" if ok else _hold_reason(s),
                _num(s.final_total) if ok else "", _num(s.max_total),
                _num(s.final_percent) if ok else "", (s.band or "") if ok else ""]
               + [_num(c.final) if ok else "" for c in s.criteria]
               + [s.review_status, s.flag_text, s.teacher_comment or ""])


def export_students(rubric: Rubric, students: Iterable[FinalStudent], fmt: Format,
                    out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    if fmt == "canvas":
        # Canvas has no free-text column on import, so withheld students are listed beside it.
        held: list[Sequence[object]] = []
        path = _write(out_dir / "gradebook_canvas.csv", _canvas(rubric, students, held))
        side = out_dir / "gradebook_canvas_withheld.csv"
        if held:
            _write(side, [["student_id", "name", "reason"], *held])
        else:
            side.unlink(missing_ok=True)
        return path
    if fmt == "moodle":
        return _write(out_dir / "gradebook_moodle.csv", _moodle(students))
    if fmt == "csv":
        return _write(out_dir / "gradebook.csv", _plain(rubric, students))
    raise InputError(f"unknown export format {fmt!r}", fix=f"use one of: {', '.join(FORMATS)}")


def export_gradebook(store: Store, run_id: int, fmt: Format, out_dir: Path) -> Path:
    """Write one gradebook file for the run and return its path."""
    rubric = load_rubric(store, run_id)
    return export_students(rubric, finals(store, run_id, rubric), fmt, out_dir)


def export_from_outdir(out_dir: Path, fmt: str, db: Path | None = None) -> Path:
    """`grade export OUT`: the run and store come from OUT/review.xlsx (its metadata sheet)."""
    from ..review import open_store_for, workbook_meta

    if fmt not in FORMATS:
        raise InputError(f"unknown export format {fmt!r}", fix=f"use one of: {', '.join(FORMATS)}")
    workbook = Path(out_dir) / "review.xlsx"
    meta = workbook_meta(workbook)
    with open_store_for(workbook, db) as store:
        return export_gradebook(store, meta.run_id, fmt, out_dir)  # type: ignore[arg-type]
