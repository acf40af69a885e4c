"""Import the teacher's edited review.xlsx back into the store.

All-or-nothing: every cell is validated first, and any problem is reported with its sheet!cell
reference before anything is written. The hidden metadata sheet ties the file to exactly one run
(run id plus a fingerprint of its hashes), so a workbook from another run or another store is
refused. Values equal to what is in effect are skipped, which makes a second import a no-op;
each real change appends a teacher decision (value, the AI's value it was made against, cell,
workbook hash) to the store; nothing is updated or deleted.
"""

from __future__ import annotations

import hashlib
import json
import math
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openpyxl import load_workbook
from openpyxl.cell.cell import ERROR_CODES
from openpyxl.utils import get_column_letter
from pydantic import BaseModel, ConfigDict

from ._escape import unescape_text
from .errors import InputError, StoreError
from .final import FinalStudent, criterion_basis, finals, load_rubric, student_basis
from .reports import excel
from .rubric import Criterion
from .store import Decision, Store, now

MAX_LISTED = 25


class ReviewImportError(InputError):
    """The review workbook cannot be imported; the message lists every bad cell."""


class ImportSummary(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: int
    students: int
    applied: int
    unchanged: int
    workbook_sha256: str


@dataclass
class _Decision:
    """What the workbook says about one student; None means "no teacher value"."""

    scores: dict[str, tuple[float | None, str]] = field(default_factory=dict)
    feedback: dict[str, tuple[str | None, str]] = field(default_factory=dict)
    comment: tuple[str | None, str] = (None, "")
    approved: tuple[bool | None, str] = (None, "")
    in_summary: bool = False


def _ref(sheet: str, row: int, col: int) -> str:
    return f"{sheet}!{get_column_letter(col)}{row}"


def _rows(ws: Any) -> Iterator[tuple[int, tuple[Any, ...]]]:
    yield from enumerate(ws.iter_rows(values_only=True), start=1)


def _cell(row: tuple[Any, ...], col: int) -> Any:
    return row[col - 1] if col - 1 < len(row) else None


def _blank(v: Any) -> bool:
    return v is None or (isinstance(v, str) and not v.strip())


def _text(v: Any) -> str | None:
    if _blank(v):
        return None
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return unescape_text(str(v)).strip()


def _plain(v: Any, ref: str, errors: list[str]) -> str | None:
    """Free text typed by the teacher; a formula error (#VALUE!, #NAME?) is refused, not stored."""
    if isinstance(v, str) and v in ERROR_CODES:
        errors.append(f"{ref}: the cell shows the error {v}; type plain text (text starting "
                      "with = is read as a formula: put a ' in front of it)")
        return None
    return _text(v)


def _score(v: Any, crit: Criterion, ref: str, errors: list[str]) -> float | None:
    if _blank(v):
        return None
    if isinstance(v, bool):
        errors.append(f"{ref}: {v!r} is not a score for {crit.id}")
        return None
    if isinstance(v, int | float):
        x = float(v)
    else:
        try:
            x = float(str(v).strip())
        except ValueError:
            errors.append(f"{ref}: {str(v)[:40]!r} is not a number; enter a score for "
                          f"{crit.id} from 0 to {crit.max_points:g} or leave it empty")
            return None
    if math.isnan(x) or not 0 <= x <= crit.max_points:
        errors.append(f"{ref}: {x:g} is out of range for {crit.id}; enter a score from 0 to "
                      f"{crit.max_points:g}")
        return None
    allowed = crit.allowed_points
    if allowed is not None and x not in allowed:
        errors.append(f"{ref}: {x:g} is not a level of {crit.id}; use one of "
                      + ", ".join(f"{p:g}" for p in allowed))
        return None
    return x


def _approved(v: Any, ref: str, errors: list[str]) -> bool | None:
    if _blank(v):
        return None
    key = str(v).strip().lower()
    if key in ("yes", "y", "true", "1", "x"):
        return True
    if key in ("no", "n", "false", "0"):
        return False
    errors.append(f"{ref}: {str(v)[:20]!r} is not yes/no; choose yes, no or leave it empty")
    return None


def _headers(ws: Any, sheet: str, wanted: list[str]) -> dict[str, int]:
    first = next(ws.iter_rows(min_row=1, max_row=1, values_only=True), ())
    cols = {str(v).strip(): i for i, v in enumerate(first, start=1) if v is not None}
    missing = [h for h in wanted if h not in cols]
    if missing:
        raise ReviewImportError(
            f"sheet {sheet!r} lacks the column(s) {missing} in row 1",
            fix="restore the header row, or export a fresh workbook with `grade report`")
    return cols


def _meta(wb: Any, path: Path) -> dict[str, Any]:
    if excel.META not in wb.sheetnames or excel.SUMMARY not in wb.sheetnames:
        raise ReviewImportError(
            "not a grader review workbook (its hidden metadata sheet is missing)", path=path,
            fix="import the review.xlsx written by `grade` (copying its sheets into another "
                "file drops the metadata)")
    meta = {}
    for row in wb[excel.META].iter_rows(values_only=True):
        if row and row[0] is not None:
            meta[str(row[0])] = _text(row[1]) if len(row) > 1 else None
    return meta


class WorkbookMeta(BaseModel):
    """Where a review workbook came from, read from its hidden metadata sheet."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: int
    db_path: Path | None
    class_dir: str | None


def workbook_meta(path: Path) -> WorkbookMeta:
    """The run and store a review.xlsx was written from (lets the CLI default --db)."""
    wb = _open(Path(path))
    try:
        meta = _meta(wb, Path(path))
    finally:
        wb.close()
    try:
        run_id = int(float(meta.get("run_id") or ""))
    except ValueError:
        raise ReviewImportError(f"{excel.META}!B2: run id is missing", path=path,
                                fix="export a fresh workbook with `grade report`") from None
    db = meta.get("db_path")
    return WorkbookMeta(run_id=run_id, db_path=Path(db) if db and db != ":memory:" else None,
                        class_dir=meta.get("class_dir"))


def open_store_for(path: Path, db: Path | None = None) -> Store:
    """Open the store given by --db, else the one recorded in the workbook; never create one."""
    target = db if db is not None else workbook_meta(path).db_path
    if target is None or not Path(target).exists():
        raise ReviewImportError(
            f"grade store {target or '(not recorded)'} does not exist", path=path,
            fix="pass --db PATH pointing at the grader.sqlite the workbook was written from")
    return Store(target, create=False)


def _open(path: Path) -> Any:
    try:
        path.stat()
    except OSError as e:
        raise ReviewImportError(f"cannot read the workbook: {e.strerror or e}", path=path,
                                fix="check the path to review.xlsx") from None
    try:
        return load_workbook(path, read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as e:
        raise ReviewImportError(
            f"not a readable .xlsx workbook ({type(e).__name__}: {e})", path=path,
            fix="save the file as Excel 2007-365 (.xlsx) and import again") from None


def _match_run(store: Store, meta: dict[str, Any], path: Path,
               expected_run: int | None) -> int:
    try:
        run_id = int(float(meta.get("run_id") or ""))
    except ValueError:
        raise ReviewImportError(f"{excel.META}!B2: run id is missing", path=path,
                                fix="export a fresh workbook with `grade report`") from None
    if expected_run is not None and run_id != expected_run:
        raise ReviewImportError(
            f"this workbook belongs to run {run_id}, not run {expected_run}", path=path,
            fix=f"import it for run {run_id}, or export a fresh workbook for run {expected_run}")
    try:
        run = store.run(run_id)
    except StoreError:
        raise ReviewImportError(
            f"this workbook belongs to run {run_id}, which is not in the store {store.path}",
            path=path, fix="pass the --db the workbook was written from") from None
    if meta.get("run_token") != excel.run_token(run):
        raise ReviewImportError(
            f"this workbook was written for another run (its fingerprint does not match run "
            f"{run_id} in {store.path})", path=path,
            fix="import it into the store it came from (--db), or export a fresh workbook")
    return run_id


def _read(wb: Any, store: Store, run_id: int, path: Path) -> dict[str, _Decision]:
    rubric = load_rubric(store, run_id)
    crits = {c.id: c for c in rubric.all_criteria}
    known = store.run_student_ids(run_id)
    errors: list[str] = []
    out: dict[str, _Decision] = {}
    seen_at: dict[str, str] = {}

    ws = wb[excel.SUMMARY]
    wanted = [excel.ID_HEADER, excel.COMMENT_HEADER, excel.APPROVED_HEADER]
    wanted += [excel.teacher_header(c) for c in crits]
    cols = _headers(ws, excel.SUMMARY, wanted)
    id_col = cols[excel.ID_HEADER]
    for n, row in _rows(ws):
        if n == 1:
            continue
        sid = _text(_cell(row, id_col))
        if sid is None:
            continue
        ref = _ref(excel.SUMMARY, n, id_col)
        if sid not in known:
            errors.append(f"{ref}: student {sid!r} is not in run {run_id}; remove the row")
            continue
        if sid in seen_at:
            errors.append(f"{ref}: student {sid!r} appears twice (also {seen_at[sid]})")
            continue
        seen_at[sid] = ref
        d = out.setdefault(sid, _Decision())
        d.in_summary = True
        for cid, crit in crits.items():
            col = cols[excel.teacher_header(cid)]
            cref = _ref(excel.SUMMARY, n, col)
            d.scores[cid] = (_score(_cell(row, col), crit, cref, errors), cref)
        col = cols[excel.COMMENT_HEADER]
        cref = _ref(excel.SUMMARY, n, col)
        d.comment = (_plain(_cell(row, col), cref, errors), cref)
        col = cols[excel.APPROVED_HEADER]
        cref = _ref(excel.SUMMARY, n, col)
        d.approved = (_approved(_cell(row, col), cref, errors), cref)

    if excel.FEEDBACK in wb.sheetnames:
        ws = wb[excel.FEEDBACK]
        cols = _headers(ws, excel.FEEDBACK, [excel.ID_HEADER, excel.CRIT_ID_HEADER,
                                             excel.TEACHER_FEEDBACK_HEADER])
        for n, row in _rows(ws):
            if n == 1:
                continue
            sid = _text(_cell(row, cols[excel.ID_HEADER]))
            fid = _text(_cell(row, cols[excel.CRIT_ID_HEADER]))
            col = cols[excel.TEACHER_FEEDBACK_HEADER]
            if sid is None:
                continue
            if sid not in known:
                errors.append(f"{_ref(excel.FEEDBACK, n, cols[excel.ID_HEADER])}: student "
                              f"{sid!r} is not in run {run_id}; remove the row")
                continue
            if fid not in crits:
                errors.append(f"{_ref(excel.FEEDBACK, n, cols[excel.CRIT_ID_HEADER])}: unknown "
                              f"criterion {fid!r}; use one of {', '.join(crits)}")
                continue
            d = out.setdefault(sid, _Decision())
            fref = _ref(excel.FEEDBACK, n, col)
            d.feedback[fid] = (_plain(_cell(row, col), fref, errors), fref)

    if errors:
        shown = errors[:MAX_LISTED]
        more = f"\n  … and {len(errors) - MAX_LISTED} more" if len(errors) > MAX_LISTED else ""
        raise ReviewImportError(
            f"{len(errors)} cell(s) cannot be imported; nothing was stored:\n  "
            + "\n  ".join(shown) + more, path=path,
            fix="correct the cells listed above and import again")
    return out


def _apply(store: Store, run_id: int, decisions: dict[str, _Decision],
           sha: str) -> tuple[int, int]:
    """Append a teacher decision for every value that differs from what is in effect now."""
    rubric = load_rubric(store, run_id)
    current = {fs.student_id: fs for fs in finals(store, run_id, rubric)}
    stamp = now()
    new: list[Decision] = []
    applied = unchanged = 0

    def decide(fs: FinalStudent, cid: str, fld: str, value: Any, old: Any, basis: str | None,
               cell: str) -> None:
        nonlocal applied, unchanged
        if value == old:
            unchanged += value is not None
            return
        applied += 1
        r = fs.result
        new.append(Decision(
            student_id=r.student_id, criterion_id=cid, field=fld,
            value=None if value is None else json.dumps(value), submission_id=r.submission_id,
            ai_basis=basis, run_id=run_id, grade_id=r.grade_id, cell=cell,
            workbook_sha256=sha, decided_at=stamp))

    for sid, d in decisions.items():
        fs = current[sid]
        for fc in fs.criteria:
            cid = fc.criterion.id
            basis = criterion_basis(fc.ai_score)
            if cid in d.scores:
                score, ref = d.scores[cid]
                decide(fs, cid, "score", score, fc.teacher_score, basis, ref)
            if cid in d.feedback:
                fb, ref = d.feedback[cid]
                decide(fs, cid, "feedback", fb, fc.teacher_feedback, basis, ref)
        if d.in_summary:
            basis = student_basis(fs.result)
            decide(fs, "", "comment", d.comment[0], fs.teacher_comment, basis, d.comment[1])
            decide(fs, "", "approved", d.approved[0], fs.approved, basis, d.approved[1])
    store.add_decisions(new)
    return applied, unchanged


def import_workbook(store: Store, path: Path, run_id: int | None = None) -> ImportSummary:
    """Validate the whole workbook, then store every teacher decision in one transaction."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ReviewImportError(f"cannot read the workbook: {e.strerror or e}", path=path,
                                fix="check the path to review.xlsx") from None
    sha = hashlib.sha256(data).hexdigest()
    wb = _open(path)
    try:
        meta = _meta(wb, path)
        rid = _match_run(store, meta, path, run_id)
        decisions = _read(wb, store, rid, path)
    finally:
        wb.close()
    applied, unchanged = _apply(store, rid, decisions, sha)
    return ImportSummary(run_id=rid, students=len(decisions), applied=applied,
                         unchanged=unchanged, workbook_sha256=sha)


def import_and_report(workbook: Path, db: Path | None,
                      out_dir: Path) -> tuple[ImportSummary, list[Path]]:
    """`grade review import`: import the workbook, then regenerate every output with finals."""
    from .report import write_outputs

    with open_store_for(workbook, db) as store:
        summary = import_workbook(store, workbook)
        paths = write_outputs(store, summary.run_id, out_dir)
    return summary, paths
