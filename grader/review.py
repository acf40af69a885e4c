"""Import the teacher's edited review.xlsx back into the store, three-way.

The hidden metadata sheet records, per student, the value every teacher cell had when the
workbook was written (its base; `reports.excel.student_base`). An import applies only the cells
the teacher changed from that base (`grader.merge`), so two reviewers' partial copies, imported in
either order, keep both reviewers' decisions, and a stale copy changes nothing it did not change.
A cell changed both in the store since the workbook was written and in the workbook is a
conflict: listed by cell, and nothing is stored unless the import is forced.

All-or-nothing: every cell is validated first and any problem is reported with its sheet!cell
reference before anything is written. Each applied change appends a teacher decision (value, the
AI's value it was made against, cell, workbook hash); nothing is updated or deleted.

The store is found relative to the workbook (the metadata sheet records where it was, relative
to the workbook's folder) or given with --db; an absolute path recorded in the workbook is never
opened blindly (a copied class folder must not write into the original's store), and a file is
opened only after it is checked, read-only, to be a grader store. A workbook from an older run of
the class lands in the class's latest run for every student whose submission is unchanged.
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

from .errors import InputError
from .final import FinalStudent, criterion_basis, finals, load_rubric, student_basis
from .merge import Cell, Change, Conflict, merge_student
from .reports import excel
from .rubric import Criterion
from .store import Decision, Store, grader_store_problem, now

MAX_LISTED = 25
_ID_CELL = f"{excel.META}!B2"


class ReviewImportError(InputError):
    """The review workbook cannot be imported; the message lists every bad cell."""


class ReviewConflictError(ReviewImportError):
    """Cells changed both in the store and in the workbook; nothing was stored."""


@dataclass(frozen=True)
class WorkbookMeta:
    """Where a review workbook came from, read from its hidden metadata sheet."""

    run_id: int
    run_token: str
    class_dir: str | None
    format_version: str
    db_relative: str | None  # the store, relative to the workbook's folder when written
    out_from_db: str | None  # the workbook's folder, relative to the store's folder
    db_path: str | None  # where the store was when written (shown, never opened blindly)
    base: dict[str, tuple[int | None, dict[str, Any]]] = field(default_factory=dict)


@dataclass(frozen=True)
class StudentDiff:
    student_id: str
    name: str | None
    changes: list[Change]


@dataclass
class ImportResult:
    run_id: int  # the run the decisions were applied to
    workbook_run_id: int
    students: int
    applied: int
    unchanged: int
    workbook_sha256: str
    diffs: list[StudentDiff] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    resubmitted: list[str] = field(default_factory=list)  # not applied: new submission since
    dry_run: bool = False


# --- reading cells ----------------------------------------------------------------------------

def _ref(sheet: str, row: int, col: int) -> str:
    return f"{sheet}!{get_column_letter(col)}{row}"


def _rows(ws: Any) -> Iterator[tuple[int, tuple[Any, ...]]]:
    yield from enumerate(ws.iter_rows(values_only=True), start=1)


def _cell(row: tuple[Any, ...], col: int) -> Any:
    return row[col - 1] if col - 1 < len(row) else None


def _plain(v: Any, ref: str, errors: list[str]) -> str | None:
    """Free text typed by the teacher; a formula error (#VALUE!, #NAME?) is refused, not stored."""
    if isinstance(v, str) and v in ERROR_CODES:
        errors.append(f"{ref}: the cell shows the error {v}; type plain text (text starting "
                      "with = is read as a formula: put a ' in front of it)")
        return None
    return excel.read_text(v)


def _score(v: Any, crit: Criterion, ref: str, errors: list[str]) -> float | None:
    if v is None or (isinstance(v, str) and not v.strip()):
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
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    key = str(v).strip().lower()
    if key in ("yes", "y", "true", "1", "x"):
        return True
    if key in ("no", "n", "false", "0"):
        return False
    errors.append(f"{ref}: {str(v)[:20]!r} is not yes/no; choose yes, no or leave it empty")
    return None


def _headers(ws: Any, sheet: str, wanted: list[str],
             optional: tuple[str, ...] = ()) -> dict[str, int]:
    first = next(ws.iter_rows(min_row=1, max_row=1, values_only=True), ())
    cols = {str(v).strip(): i for i, v in enumerate(first, start=1) if v is not None}
    for name, olds in excel.ALIASES.items():  # workbooks written by an older grader
        for old in olds:
            if name not in cols and old in cols:
                cols[name] = cols[old]
    missing = [h for h in wanted if h not in cols and h not in optional]
    if missing:
        raise ReviewImportError(
            f"sheet {sheet!r} lacks the column(s) {missing} in row 1",
            fix="restore the header row, or export a fresh workbook with `grade report`")
    return cols


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


def _read_meta(wb: Any, path: Path) -> WorkbookMeta:
    if excel.META not in wb.sheetnames or excel.SUMMARY not in wb.sheetnames:
        raise ReviewImportError(
            "not a grader review workbook (its hidden metadata sheet is missing)", path=path,
            fix="import the review.xlsx written by `grade` (copying its sheets into another "
                "file drops the metadata)")
    keys: dict[str, Any] = {}
    base: dict[str, tuple[int | None, dict[str, Any]]] = {}
    in_base = False
    for n, row in _rows(wb[excel.META]):
        if not row or row[0] is None:
            continue
        if in_base:
            sid = excel.read_text(row[0])
            try:
                sub = int(row[1]) if len(row) > 1 and row[1] is not None else None
                data = json.loads(str(row[2])) if len(row) > 2 and row[2] else {}
            except (TypeError, ValueError):
                raise ReviewImportError(
                    f"{excel.META}!A{n}: the recorded base of a row is damaged", path=path,
                    fix="export a fresh workbook with `grade report` and copy your edits "
                        "into it") from None
            if sid is not None and isinstance(data, dict):
                base[sid] = (sub, data)
        elif tuple(row[:3]) == excel.BASE_HEADER:
            in_base = True
        else:
            keys[str(row[0])] = excel.read_text(row[1]) if len(row) > 1 else None
    try:
        run_id = int(float(keys.get("run_id") or ""))
    except ValueError:
        raise ReviewImportError(f"{_ID_CELL}: run id is missing", path=path,
                                fix="export a fresh workbook with `grade report`") from None
    return WorkbookMeta(
        run_id=run_id, run_token=keys.get("run_token") or "", class_dir=keys.get("class_dir"),
        format_version=keys.get("format_version") or "1",
        db_relative=keys.get("db_relative"), out_from_db=keys.get("out_from_db"),
        db_path=keys.get("db_path"), base=base)


def workbook_meta(path: Path) -> WorkbookMeta:
    """The run and store a review.xlsx was written from."""
    wb = _open(Path(path))
    try:
        return _read_meta(wb, Path(path))
    finally:
        wb.close()


# --- finding the store ------------------------------------------------------------------------

def locate_store(path: Path, db: Path | None, meta: WorkbookMeta) -> Path:
    """--db, else the store at the place recorded relative to the workbook; checked (read-only)
    to be a grader store before anything opens it."""
    if db is not None:
        problem = grader_store_problem(db)
        if problem:
            raise ReviewImportError(f"--db {db} {problem}; it is not a grade store", path=path,
                                    fix="pass --db PATH pointing at the .grader/grader.sqlite "
                                        "the workbook was written from")
        return Path(db)
    candidate = (Path(path).parent / meta.db_relative) if meta.db_relative else None
    if candidate is not None and grader_store_problem(candidate) is None:
        return candidate
    where = (f"not at {candidate} (where it was relative to the workbook)"
             if candidate is not None else "not recorded in the workbook")
    was = f"; it was written from {meta.db_path}" if meta.db_path else ""
    raise ReviewImportError(
        f"the grade store this workbook belongs to is {where}{was}", path=path,
        fix="pass --db PATH with the store to import into (the workbook is never imported into "
            "a store found by an absolute path alone)")


def open_store_for(path: Path, db: Path | None = None) -> Store:
    """Open the store given by --db, else the one found relative to the workbook; never create
    one."""
    return Store(locate_store(path, db, workbook_meta(path)))


def output_folder(path: Path, store_path: Path, meta: WorkbookMeta) -> Path:
    """Where the run's reports live: the workbook's folder as recorded relative to its store,
    else the workbook's own folder."""
    if meta.out_from_db:
        return (Path(store_path).parent / meta.out_from_db).resolve()
    return Path(path).parent.resolve()


def target_run(store: Store, meta: WorkbookMeta, path: Path, expected: int | None = None) -> int:
    """The run decisions land in: the latest run of the workbook's class."""
    if expected is not None and meta.run_id != expected:
        raise ReviewImportError(
            f"this workbook belongs to run {meta.run_id}, not run {expected}", path=path,
            fix=f"import it for run {meta.run_id}, or export a fresh workbook for run {expected}")
    try:
        run = next(r for r in store.runs() if r.id == meta.run_id)
    except StopIteration:
        raise ReviewImportError(
            f"this workbook belongs to run {meta.run_id}, which is not in the store "
            f"{store.path}", path=path, fix="pass the --db the workbook was written from") from None
    if meta.run_token != excel.run_token(run):
        raise ReviewImportError(
            f"this workbook was written for another run (its fingerprint does not match run "
            f"{meta.run_id} in {store.path})", path=path,
            fix="import it into the store it came from (--db), or export a fresh workbook")
    if expected is not None:
        return run.id
    latest = store.latest_run(run.class_dir)
    return latest.id if latest is not None else run.id


# --- the import -------------------------------------------------------------------------------

def _read_cells(wb: Any, crits: dict[str, Criterion], known: set[str], run_id: int,
                path: Path) -> dict[str, list[Cell]]:
    errors: list[str] = []
    out: dict[str, list[Cell]] = {}
    seen_at: dict[str, str] = {}
    ws = wb[excel.SUMMARY]
    wanted = [excel.ID_HEADER, excel.COMMENT_HEADER, excel.NOTE_HEADER, excel.APPROVED_HEADER]
    wanted += [excel.teacher_header(c) for c in crits]
    cols = _headers(ws, excel.SUMMARY, wanted, optional=(excel.NOTE_HEADER,))
    id_col = cols[excel.ID_HEADER]
    for n, row in _rows(ws):
        if n == 1:
            continue
        sid = excel.read_text(_cell(row, id_col))
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
        cells = out.setdefault(sid, [])
        for cid, crit in crits.items():
            col = cols[excel.teacher_header(cid)]
            cref = _ref(excel.SUMMARY, n, col)
            cells.append(Cell(sid, cid, "score", _score(_cell(row, col), crit, cref, errors),
                              cref))
        for header, fld in ((excel.COMMENT_HEADER, "comment"), (excel.NOTE_HEADER, "note")):
            if header in cols:
                cref = _ref(excel.SUMMARY, n, cols[header])
                cells.append(Cell(sid, "", fld, _plain(_cell(row, cols[header]), cref, errors),
                                  cref))
        cref = _ref(excel.SUMMARY, n, cols[excel.APPROVED_HEADER])
        cells.append(Cell(sid, "", "approved", _approved(
            _cell(row, cols[excel.APPROVED_HEADER]), cref, errors), cref))

    if excel.FEEDBACK in wb.sheetnames:
        ws = wb[excel.FEEDBACK]
        cols = _headers(ws, excel.FEEDBACK, [excel.ID_HEADER, excel.CRIT_ID_HEADER,
                                             excel.TEACHER_FEEDBACK_HEADER])
        for n, row in _rows(ws):
            if n == 1:
                continue
            sid = excel.read_text(_cell(row, cols[excel.ID_HEADER]))
            fid = excel.read_text(_cell(row, cols[excel.CRIT_ID_HEADER]))
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
            fref = _ref(excel.FEEDBACK, n, cols[excel.TEACHER_FEEDBACK_HEADER])
            value = _plain(_cell(row, cols[excel.TEACHER_FEEDBACK_HEADER]), fref, errors)
            out.setdefault(sid, []).append(Cell(sid, fid, "feedback", value, fref))

    if errors:
        raise ReviewImportError(_listing(f"{len(errors)} cell(s) cannot be imported; nothing "
                                         "was stored:", errors), path=path,
                                fix="correct the cells listed above and import again")
    return out


def _listing(head: str, lines: list[str]) -> str:
    shown = lines[:MAX_LISTED]
    more = f"\n  … and {len(lines) - MAX_LISTED} more" if len(lines) > MAX_LISTED else ""
    return head + "\n  " + "\n  ".join(shown) + more


def _stored(fs: FinalStudent) -> dict[tuple[str, str], Any]:
    out: dict[tuple[str, str], Any] = {}
    for c in fs.criteria:
        out[(c.criterion.id, "score")] = c.teacher_score
        out[(c.criterion.id, "feedback")] = c.teacher_feedback
    out[("", "comment")] = fs.teacher_comment
    out[("", "note")] = fs.private_note
    out[("", "approved")] = fs.approved
    return out


def show(value: Any) -> str:
    """A teacher value as the diff and conflict listings print it."""
    if value is None:
        return "(empty)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    text = str(value).replace("\n", " ")
    return repr(text if len(text) <= 50 else text[:49] + "…")


def describe(cell: Cell) -> str:
    what = cell.field if not cell.criterion_id else f"{cell.field} {cell.criterion_id}"
    return f"{cell.ref} ({cell.student_id}, {what})"


def import_workbook(store: Store, path: Path, run_id: int | None = None, *,
                    force: bool = False, dry_run: bool = False,
                    meta: WorkbookMeta | None = None) -> ImportResult:
    """Validate the whole workbook, merge it three-way against the store, and (unless
    `dry_run`) store every change in one transaction. Conflicts refuse the import unless
    `force` (then the workbook's value wins)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ReviewImportError(f"cannot read the workbook: {e.strerror or e}", path=path,
                                fix="check the path to review.xlsx") from None
    sha = hashlib.sha256(data).hexdigest()
    wb = _open(path)
    try:
        meta = meta or _read_meta(wb, path)
        target = target_run(store, meta, path, run_id)
        rubric = load_rubric(store, target)
        crits = {c.id: c for c in rubric.all_criteria}
        cells = _read_cells(wb, crits, store.run_student_ids(target), target, path)
    finally:
        wb.close()

    current = {fs.student_id: fs for fs in finals(store, target, rubric)}
    result = ImportResult(run_id=target, workbook_run_id=meta.run_id, students=len(cells),
                          applied=0, unchanged=0, workbook_sha256=sha, dry_run=dry_run)
    new: list[Decision] = []
    stamp = now()
    for sid, student_cells in cells.items():
        fs = current[sid]
        sub, base = meta.base.get(sid, (None, {}))
        ai_now = {c.criterion.id: float(c.ai_score) for c in fs.criteria
                  if c.ai_score is not None}
        if sub is not None and sub != fs.result.submission_id:
            if any(c.value is not None for c in student_cells):
                result.resubmitted.append(sid)
            continue
        base_ai = base.get("ai", ai_now) if meta.base else ai_now
        merged = merge_student(student_cells, base.get("t", {}), base_ai, _stored(fs), ai_now,
                               excel.token, excel.base_key)
        result.unchanged += merged.unchanged
        changes = list(merged.changes)
        if force:
            changes += [Change(c.cell, c.stored) for c in merged.conflicts]
        else:
            result.conflicts += merged.conflicts
        if changes:
            result.diffs.append(StudentDiff(sid, fs.result.name, changes))
        for ch in changes:
            new.append(_decision(fs, ch.cell, target, sha, stamp))
    result.applied = len(new)
    if result.conflicts and not dry_run:
        lines = [f"{describe(c.cell)}: yours {show(c.cell.value)}, the store's now "
                 f"{show(c.stored)} — {c.why}" for c in result.conflicts]
        raise ReviewConflictError(
            _listing(f"{len(result.conflicts)} cell(s) were changed both in this workbook and "
                     "in the store since it was written; nothing was stored:", lines),
            path=path,
            fix="to keep the store's value, set the cell to it (or back to what it was) and "
                "import again; to keep yours, import again with --force; `grade review import "
                "--dry-run` shows everything an import would change")
    if not dry_run and new:
        store.add_decisions(new)
    return result


def _decision(fs: FinalStudent, cell: Cell, run_id: int, sha: str, stamp: str) -> Decision:
    r = fs.result
    if cell.criterion_id:
        ai = next(c.ai_score for c in fs.criteria if c.criterion.id == cell.criterion_id)
        basis = criterion_basis(ai)
    else:
        basis = student_basis(r)
    return Decision(
        student_id=r.student_id, criterion_id=cell.criterion_id, field=cell.field,
        value=None if cell.value is None else json.dumps(cell.value),
        submission_id=r.submission_id, ai_basis=basis, run_id=run_id, grade_id=r.grade_id,
        cell=cell.ref, workbook_sha256=sha, decided_at=stamp)


def report_lines(r: ImportResult) -> list[str]:
    """What `grade review import` prints: where the decisions went, the per-student diff (in
    full for a dry run), students not imported and any conflicts."""
    lines = []
    if r.workbook_run_id != r.run_id:
        lines.append(f"this workbook was written for run {r.workbook_run_id}; its decisions go "
                     f"to run {r.run_id}, the latest run of the class, for every student whose "
                     "submission is unchanged")
    verb = "would change" if r.dry_run else "changed"
    lines.append(f"run {r.run_id}: {r.students} students in the workbook, {r.applied} values "
                 f"{verb}, {r.unchanged} unchanged")
    shown = r.diffs if r.dry_run else r.diffs[:MAX_LISTED]
    for d in shown:
        name = f" ({d.name})" if d.name else ""
        lines.append(f"  {d.student_id}{name}:")
        lines += [f"    {describe(c.cell)}: {show(c.old)} -> {show(c.cell.value)}"
                  for c in d.changes]
    if len(shown) < len(r.diffs):
        lines.append(f"  … and {len(r.diffs) - len(shown)} more students (--dry-run lists all)")
    if r.resubmitted:
        lines.append(f"not imported: {len(r.resubmitted)} student(s) handed in a new submission "
                     "since this workbook was written (review them in a fresh workbook): "
                     + ", ".join(r.resubmitted[:MAX_LISTED]))
    if r.conflicts:
        lines.append(f"{len(r.conflicts)} conflict(s): an import would store nothing unless "
                     "--force:")
        lines += [f"  {describe(c.cell)}: yours {show(c.cell.value)}, the store's now "
                  f"{show(c.stored)} — {c.why}" for c in r.conflicts]
    if r.dry_run:
        lines.append("dry run: nothing was stored")
    return lines


def import_and_report(workbook: Path, db: Path | None, out_dir: Path | None, *,
                      force: bool = False, dry_run: bool = False
                      ) -> tuple[ImportResult, list[Path]]:
    """`grade review import`: import the workbook, then regenerate every output into the run's
    output folder (never over the workbook being imported)."""
    from .report import write_outputs

    workbook = Path(workbook)
    meta = workbook_meta(workbook)
    store_path = locate_store(workbook, db, meta)
    with Store(store_path) as store:
        result = import_workbook(store, workbook, force=force, dry_run=dry_run, meta=meta)
        if dry_run:
            return result, []
        out = out_dir if out_dir is not None else output_folder(workbook, store_path, meta)
        paths = write_outputs(store, result.run_id, out, keep=workbook)
    return result, paths
