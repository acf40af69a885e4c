"""Import the teacher's edited review.xlsx back into the store.

All-or-nothing: every cell is validated first, and any problem is reported with its sheet!cell
reference before anything is written. The hidden metadata sheet ties the file to exactly one run
(run id plus a fingerprint of its hashes), so a workbook from another run or another store is
refused. Values equal to what is stored are skipped, which makes a second import a no-op; each
real change adds a row to `review_log` (AI value, old value, new value, cell, workbook hash).
"""

from __future__ import annotations

import hashlib
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
from .final import load_rubric
from .reports import excel
from .rubric import Criterion
from .store import Store, now

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
    return Store(target)


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
    known = {r["student_id"] for r in store.conn.execute(
        "SELECT student_id FROM outcomes WHERE run_id=?", (run_id,))}
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


def _fmt(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return "yes" if v else "no"
    return f"{v:g}" if isinstance(v, float) else str(v)


def _apply(store: Store, run_id: int, decisions: dict[str, _Decision],
           sha: str) -> tuple[int, int]:
    conn = store.conn
    stamp = now()
    grade_of = {r["student_id"]: r["grade_id"] for r in conn.execute(
        "SELECT student_id, grade_id FROM outcomes WHERE run_id=?", (run_id,))}
    ai_of: dict[tuple[str, str], float] = {
        (r["student_id"], r["criterion_id"]): r["score"] for r in conn.execute(
            "SELECT o.student_id, c.criterion_id, c.score FROM outcomes o JOIN criterion_scores c"
            " ON c.grade_id = o.grade_id WHERE o.run_id=?", (run_id,))}
    old_ovr = {(r["student_id"], r["criterion_id"]): (r["teacher_score"], r["teacher_feedback"])
               for r in conn.execute("SELECT * FROM overrides WHERE run_id=?", (run_id,))}
    old_rev = {r["student_id"]: (r["teacher_comment"], r["approved"]) for r in conn.execute(
        "SELECT * FROM reviews WHERE run_id=?", (run_id,))}
    applied = unchanged = 0
    log: list[tuple[Any, ...]] = []

    def note(sid: str, cid: str | None, fld: str, ai: Any, old: Any, new: Any, cell: str) -> None:
        log.append((run_id, sid, cid, fld, _fmt(ai), _fmt(old), _fmt(new), cell, stamp, sha))

    with conn:
        conn.execute("BEGIN IMMEDIATE")
        for sid, d in decisions.items():
            gid = grade_of.get(sid)
            for cid in sorted(set(d.scores) | set(d.feedback)):
                score, sref = d.scores.get(cid, (None, ""))
                if cid not in d.scores:  # no Summary row: keep the stored score
                    score = old_ovr.get((sid, cid), (None, None))[0]
                fb, fref = d.feedback.get(cid, (None, ""))
                if cid not in d.feedback:
                    fb = old_ovr.get((sid, cid), (None, None))[1]
                old_score, old_fb = old_ovr.get((sid, cid), (None, None))
                ai = ai_of.get((sid, cid))
                changed = False
                if score != old_score:
                    note(sid, cid, "teacher_score", ai, old_score, score, sref)
                    changed = True
                if fb != old_fb:
                    note(sid, cid, "teacher_feedback", None, old_fb, fb, fref)
                    changed = True
                if not changed:
                    unchanged += int(score is not None) + int(fb is not None)
                    continue
                applied += int(score != old_score) + int(fb != old_fb)
                if score is None and fb is None:
                    conn.execute("DELETE FROM overrides WHERE run_id=? AND student_id=? AND"
                                 " criterion_id=?", (run_id, sid, cid))
                else:
                    conn.execute(
                        "INSERT OR REPLACE INTO overrides (run_id, student_id, grade_id,"
                        " criterion_id, ai_score, teacher_score, teacher_feedback, imported_at,"
                        " workbook_sha256) VALUES (?,?,?,?,?,?,?,?,?)",
                        (run_id, sid, gid, cid, ai, score, fb, stamp, sha))
            if not d.in_summary:
                continue
            comment, cref = d.comment
            approved, aref = d.approved
            old_comment, old_appr = old_rev.get(sid, (None, None))
            old_approved = None if old_appr is None else bool(old_appr)
            if comment == old_comment and approved == old_approved:
                unchanged += int(comment is not None) + int(approved is not None)
                continue
            if comment != old_comment:
                note(sid, None, "teacher_comment", None, old_comment, comment, cref)
                applied += 1
            if approved != old_approved:
                note(sid, None, "approved", None, old_approved, approved, aref)
                applied += 1
            if comment is None and approved is None:
                conn.execute("DELETE FROM reviews WHERE run_id=? AND student_id=?", (run_id, sid))
            else:
                conn.execute(
                    "INSERT OR REPLACE INTO reviews (run_id, student_id, grade_id,"
                    " teacher_comment, approved, imported_at, workbook_sha256)"
                    " VALUES (?,?,?,?,?,?,?)",
                    (run_id, sid, gid, comment, None if approved is None else int(approved),
                     stamp, sha))
        conn.executemany(
            "INSERT INTO review_log (run_id, student_id, criterion_id, field, ai_value, old_value,"
            " new_value, cell, imported_at, workbook_sha256) VALUES (?,?,?,?,?,?,?,?,?,?)", log)
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
