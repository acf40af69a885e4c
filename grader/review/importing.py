"""Import the teacher's edited review.xlsx back into the store, three-way.

The hidden metadata sheet records, per student, the value every teacher cell had when the
workbook was written (its base; `reports.excel.student_base`). An import applies only the cells
the teacher changed from that base (`grader.review.merge`), so two reviewers' partial copies,
imported in either order, keep both reviewers' decisions, and a stale copy changes nothing it
did not change.
A cell changed both in the store since the workbook was written and in the workbook is a
conflict: listed by cell, and nothing is stored unless the import is forced.

All-or-nothing: every cell is validated first (`grader.review.workbook`) and any problem is reported
with its sheet!cell reference before anything is written. Each applied change appends a
teacher decision (value, the AI's value it was made against, cell, workbook hash); nothing is
updated or deleted.

The store is found relative to the workbook (the metadata sheet records where it was, relative
to the workbook's folder) or given with --db; an absolute path recorded in the workbook is never
opened blindly (a copied class folder must not write into the original's store), and a file is
opened only after it is checked, read-only, to be a grader store. A workbook from an older run of
the class lands in the class's latest run for every student whose submission is unchanged.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from grader.errors import StoreError
from grader.grading.records import Decision
from grader.prompting.rubric import Rubric
from grader.reports import excel
from grader.review.final import (
    FinalStudent,
    HandoutMode,
    criterion_basis,
    finals,
    load_rubric,
    student_basis,
)
from grader.review.group_import import Reach, merge_groups, reach
from grader.review.merge import Cell, Change, Conflict, merge_student
from grader.review.workbook import (
    MAX_LISTED,
    ReviewImportError,
    WorkbookMeta,
    listing,
    open_workbook,
    read_cells,
    read_group_cells,
    read_meta,
    workbook_meta,
)
from grader.store import Store, grader_store_problem, now

__all__ = ["ImportResult", "ReviewConflictError", "ReviewImportError", "import_and_report",
           "import_workbook", "locate_store", "report_lines", "target_run", "workbook_meta"]


class ReviewConflictError(ReviewImportError):
    """Cells changed both in the store and in the workbook; nothing was stored."""


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
    # after the import: students whose AI feedback waits under a score the teacher changed
    # (id, name, criterion ids): not shown to them until the teacher keeps or replaces it
    held_feedback: list[tuple[str, str | None, list[str]]] = field(default_factory=list)
    groups: list[Reach] = field(default_factory=list)  # Groups sheet cells applied


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


def _after(fs: FinalStudent, changes: list[Change]) -> FinalStudent:
    """The student as they stand once `changes` are stored (criterion values only)."""
    new = {(ch.cell.criterion_id, ch.cell.field): ch.cell.value for ch in changes
           if ch.cell.criterion_id}
    if not new:
        return fs
    crits = [replace(c, teacher_score=new.get((c.criterion.id, "score"), c.teacher_score),
                     teacher_feedback=new.get((c.criterion.id, "feedback"), c.teacher_feedback))
             for c in fs.criteria]
    return replace(fs, criteria=crits)


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
    wb = open_workbook(path)
    try:
        meta = meta or read_meta(wb, path)
        target = target_run(store, meta, path, run_id)
        rubric = load_rubric(store, target)
        crits = {c.id: c for c in rubric.all_criteria}
        cells = read_cells(wb, crits, store.run_student_ids(target), target, path)
        group_cells = read_group_cells(wb, crits, meta.groups, path)
    finally:
        wb.close()

    line = lineage(meta, path)
    last, last_groups = last_imported(store.decisions(), line)
    rescaled = _rescaled(store, meta.run_id, rubric) if meta.run_id != target else {}
    current = {fs.student_id: fs for fs in finals(store, target, rubric)}
    result = ImportResult(run_id=target, workbook_run_id=meta.run_id, students=len(cells),
                          applied=0, unchanged=0, workbook_sha256=sha, dry_run=dry_run)
    new: list[Decision] = []
    applied: dict[str, list[Change]] = {}
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
                               excel.token, excel.base_key, rescaled, last.get(sid))
        result.unchanged += merged.unchanged
        changes = list(merged.changes)
        if force:
            changes += [Change(c.cell, c.stored) for c in merged.conflicts]
        else:
            result.conflicts += merged.conflicts
        if changes:
            result.diffs.append(StudentDiff(sid, fs.result.name, changes))
            applied[sid] = changes
        for ch in changes:
            new.append(_decision(fs, ch.cell, target, sha, stamp, line))
    _groups(result, group_cells, meta, current, store, new, applied, force, target, sha, stamp,
            line, (rescaled, last_groups))
    result.applied = len(new)
    for sid, fs in current.items():
        held = _after(fs, applied.get(sid, [])).held_feedback
        if held:
            result.held_feedback.append((sid, fs.result.name, held))
    if result.conflicts and not dry_run:
        lines = [f"{describe(c.cell)}: yours {show(c.cell.value)}, the store's now "
                 f"{show(c.stored)} — {c.why}" for c in result.conflicts]
        raise ReviewConflictError(
            listing(f"{len(result.conflicts)} cell(s) were changed both in this workbook and "
                     "in the store since it was written; nothing was stored:", lines),
            path=path,
            fix="to keep the store's value, set the cell to it (or back to what it was) and "
                "import again; to keep yours, import again with --force; `grade review import "
                "--dry-run` shows everything an import would change")
    if not dry_run and new:
        store.add_decisions(new)
    return result


def _groups(result: ImportResult, cells: dict[str, list[Cell]], meta: WorkbookMeta,
            current: dict[str, FinalStudent], store: Store, new: list[Decision],
            applied: dict[str, list[Change]], force: bool, target: int, sha: str,
            stamp: str, line: str | None,
            since: tuple[dict[str, tuple[float, float]], dict[str, dict[str, Any]]]) -> None:
    """The Groups sheet's changes (`group_import`): a decision per member it is stored for,
    added to `new`; what each reached goes into `result.groups`."""
    if not cells:
        return
    decisions = store.decisions()
    merged = merge_groups(cells, meta, current, decisions, excel.token, excel.base_key, force,
                          *since)
    result.unchanged += merged.unchanged
    result.conflicts += merged.conflicts
    after: dict[str, list[Decision]] = {sid: list(ds) for sid, ds in decisions.items()}
    for d in new:
        after.setdefault(d.student_id, []).append(d)
    # approvals last: whether a flagged member's scores are all the teacher's counts the group's
    # score cells of this same import
    for ch in sorted(merged.changes, key=lambda c: c.cell.field == "approved"):
        kept, reached, counts = reach(ch, meta, current, after)
        result.groups.append(counts)
        for sid in kept:
            cell = replace(ch.cell, student_id=sid)
            new.append(replace(_decision(current[sid], cell, target, sha, stamp, line),
                               group=ch.cell.student_id))
            after.setdefault(sid, []).append(new[-1])
            if sid in reached:
                applied.setdefault(sid, []).append(Change(cell, ch.old))


def _decision(fs: FinalStudent, cell: Cell, run_id: int, sha: str, stamp: str,
              line: str | None) -> Decision:
    r = fs.result
    if cell.criterion_id:
        c = next(c for c in fs.criteria if c.criterion.id == cell.criterion_id)
        basis = criterion_basis(c.ai_score, c.criterion.max_points)
    else:
        basis = student_basis(r)
    return Decision(
        student_id=r.student_id, criterion_id=cell.criterion_id, field=cell.field,
        value=None if cell.value is None else json.dumps(cell.value),
        submission_id=r.submission_id, ai_basis=basis, run_id=run_id, grade_id=r.grade_id,
        cell=cell.ref, workbook_sha256=sha, decided_at=stamp, workbook_base=line)


def _rescaled(store: Store, then: int, rubric: Rubric) -> dict[str, tuple[float, float]]:
    """The criteria whose maximum differs between the workbook's run and `rubric` (the target
    run's): (then, now)."""
    try:
        old = {c.id: c.max_points for c in load_rubric(store, then).all_criteria}
    except (StoreError, ValueError, KeyError, AttributeError):
        return {}  # a workbook of another store's run: its maxima are not known here
    return {c.id: (float(old[c.id]), float(c.max_points)) for c in rubric.all_criteria
            if c.id in old and old[c.id] != c.max_points}


def lineage(meta: WorkbookMeta, path: Path) -> str | None:
    """Which workbook file this is, whatever has been typed into it since: the file as grader
    wrote it (its `written_id`) where it is now. Copies handed to several TAs are files of
    their own (each merged on its own), and a workbook written afresh is a new one. None: a
    workbook written before files were told apart."""
    if meta.written_id is None:
        return None
    return hashlib.sha256(f"{meta.written_id}\n{path.resolve()}".encode()).hexdigest()[:32]


def last_imported(decisions: dict[str, list[Decision]], line: str | None
                  ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """The tokens earlier imports of this file stored (the last one per cell), per student and
    per answer group, by base key: an edit made after an import is compared with what that
    import stored (`merge._since_last`), not with what the file held when written."""
    students: dict[str, dict[str, Any]] = {}
    groups: dict[str, dict[str, Any]] = {}
    if line is None:
        return students, groups
    mine = sorted((d for ds in decisions.values() for d in ds if d.workbook_base == line),
                  key=lambda d: d.id)  # oldest first, over every student: the last one stands
    for d in mine:
        into = groups.setdefault(d.group, {}) if d.group is not None \
            else students.setdefault(d.student_id, {})
        into[excel.base_key(d.criterion_id, d.field)] = excel.token(
            d.field, None if d.value is None else json.loads(d.value))
    return students, groups


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
    for g in r.groups[:MAX_LISTED]:
        c = g.cell
        what = c.field if not c.criterion_id else f"{c.field} {c.criterion_id}"
        lines.append(f"  group {c.student_id} ({c.ref}, {what}) -> {show(c.value)}: "
                     f"{'would reach' if r.dry_run else 'reached'} {g.reached} of {g.members} "
                     "students" + (f" ({g.own} with a value of their own, which wins)"
                                   if g.own else "")
                     + (f" ({g.moved} not changed: their submission or AI score changed since "
                        "this workbook was written)" if g.moved else "")
                     + (f" ({g.flagged} flagged inconsistent_with_group not approved: decide "
                        "them on their own Summary row, or give the group a score for every "
                        "criterion)"
                        if g.flagged else ""))
    if len(r.groups) > MAX_LISTED:
        lines.append(f"  … and {len(r.groups) - MAX_LISTED} more group values")
    if r.resubmitted:
        lines.append(f"not imported: {len(r.resubmitted)} student(s) handed in a new submission "
                     "since this workbook was written (review them in a fresh workbook): "
                     + ", ".join(r.resubmitted[:MAX_LISTED]))
    if r.held_feedback:
        n = sum(len(h[2]) for h in r.held_feedback)
        verb = "would wait" if r.dry_run else "waits"
        lines.append(f"AI feedback under a score you changed {verb} for you: {n} "
                     f"{'criterion' if n == 1 else 'criteria'} of "
                     f"{len(r.held_feedback)} student(s), not shown to the student (handouts, "
                     "exports) until you keep it (copy it into \"Teacher feedback to the "
                     "student\" on the Feedback sheet, as it is or edited) or write your own:")
        lines += [f"  {sid}{f' ({name})' if name else ''}: {', '.join(crits)}"
                  for sid, name, crits in r.held_feedback[:MAX_LISTED]]
        if len(r.held_feedback) > MAX_LISTED:
            lines.append(f"  … and {len(r.held_feedback) - MAX_LISTED} more students")
    if r.conflicts:
        lines.append(f"{len(r.conflicts)} conflict(s): an import would store nothing unless "
                     "--force:")
        lines += [f"  {describe(c.cell)}: yours {show(c.cell.value)}, the store's now "
                  f"{show(c.stored)} — {c.why}" for c in r.conflicts]
    if r.dry_run:
        lines.append("dry run: nothing was stored")
    return lines


def import_and_report(workbook: Path, db: Path | None, out_dir: Path | None, *,
                      force: bool = False, dry_run: bool = False,
                      handouts: HandoutMode | None = None
                      ) -> tuple[ImportResult, list[Path]]:
    """`grade review import`: import the workbook, then regenerate every output into the run's
    output folder (never over the workbook being imported). `handouts`: which handouts to
    write (None: the class's setting, as `grade report` would)."""
    from grader.reports.write import write_outputs

    workbook = Path(workbook)
    meta = workbook_meta(workbook)
    store_path = locate_store(workbook, db, meta)
    with Store(store_path, create=False) as store:
        result = import_workbook(store, workbook, force=force, dry_run=dry_run, meta=meta)
        if dry_run:
            return result, []
        out = out_dir if out_dir is not None else output_folder(workbook, store_path, meta)
        mode = handouts or class_handouts(Path(store.run(result.run_id).class_dir))
        paths = write_outputs(store, result.run_id, out, keep=workbook, handouts=mode)
    return result, paths


def class_handouts(class_dir: Path) -> HandoutMode:
    """The class's `handouts` setting (GRADER_HANDOUTS, its grader.toml), when the class
    folder is still there; else the default."""
    from grader.config.settings import resolve

    return resolve(class_dir=class_dir if class_dir.is_dir() else None).handouts
