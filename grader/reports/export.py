"""Gradebook exports: Canvas, Moodle and a plain CSV, final grades only, in files the LMS
imports as they are (what each importer expects: `lms.py`).

A student whose grade may not leave yet (flagged and not reviewed, no complete grade, not
approved under `--approved-only`, or an anonymous Canvas download) is *withheld*: left out of the
LMS file, so an import can neither turn "needs a human" into a zero nor erase a grade entered in
the LMS by hand, and listed with the reason in `<file>_withheld.csv` beside it. Every row is
checked before anything is written: a student the LMS could not match is refused by name.
Nothing internal (flags, notes, review status) reaches a column the student sees. Every text
cell goes through `_escape.escape_cell`.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from grader.errors import GraderError, InputError
from grader.escape import FORMULA_STARTS, escape_cell
from grader.grading.records import Run
from grader.intake.discover import RosterEntry, clean_id, read_roster
from grader.prompting.rubric import Rubric
from grader.reports.lms import (
    MOODLE_IDS,
    MOODLE_MAX_DEFAULT,
    CanvasMatcher,
    CanvasRow,
    canvas_title_problems,
    moodle_identifier,
    read_canvas_gradebook,
    roster_row,
)
from grader.review.final import FinalStudent, finals, load_rubric
from grader.store import Store

Format = Literal["canvas", "moodle", "csv"]
FORMATS: tuple[str, ...] = ("canvas", "moodle", "csv")
MoodleId = Literal["email", "username", "idnumber"]
NOT_EXPORTED = "NOT EXPORTED"
MAX_NAMED = 20


class ExportOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    approved_only: bool = False
    canvas_gradebook: Path | None = None
    canvas_assignment: str | None = None
    moodle_id: MoodleId = "email"
    out_of: float | None = Field(default=None, gt=0, description="the LMS item's maximum")
    roster: Path | None = None


@dataclass
class ExportResult:
    path: Path
    run_id: int
    exported: int
    never_reviewed: int  # exported grades no teacher looked at (the AI's, as it gave them)
    withheld: list[tuple[str, str, str]] = field(default_factory=list)  # (id, name, reason)
    withheld_path: Path | None = None
    warnings: list[str] = field(default_factory=list)
    scale: tuple[float, float] | None = None  # (rubric maximum, LMS maximum) when they differ
    out_of: float | None = None  # the maximum the file's grades are out of (LMS files)
    out_of_source: str = ""  # where that maximum came from, in words
    notes: list[str] = field(default_factory=list)  # what the teacher should know (not a fault)

    def scale_lines(self) -> list[str]:
        """The scale the file was written in, and what to do when the LMS item has another."""
        if self.out_of is None:
            return []
        line = f"grades are out of {self.out_of:g} points ({self.out_of_source})"
        if self.scale:
            line += f": totals scaled from {self.scale[0]:g} to {self.scale[1]:g} points"
        return [line, *self.notes]


def _num(v: float | None) -> str:
    return "" if v is None else f"{v:g}"


def _feedback(s: FinalStudent) -> str:
    """What the student may read: the teacher's feedback, the overall comment, and each
    criterion's final feedback (never flags, the private note or review status; never the AI's
    feedback or overall comment under a score the teacher changed, unless they kept the
    feedback: `FinalCriterion.feedback`, `FinalStudent.overall_comment`)."""
    parts = [s.teacher_comment] if s.teacher_comment else []
    if s.overall_comment:
        parts.append(s.overall_comment)
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


def _named(names: list[str]) -> str:
    """The first `MAX_NAMED` of `names`, and how many more."""
    more = f" and {len(names) - MAX_NAMED} more" if len(names) > MAX_NAMED else ""
    return ", ".join(names[:MAX_NAMED]) + more


def _points(cell: str) -> float | None:
    """A Points Possible cell as a number: `10`, `10.00`, or `10,00` as a gradebook exported
    under a decimal-comma locale writes it; None for anything else (`(read only)`)."""
    text = cell.strip()
    if re.fullmatch(r"\d+,\d+", text):
        text = text.replace(",", ".")
    try:
        return float(text)
    except ValueError:
        return None


def _refuse(what: str, names: list[str], path: Path | None, fix: str) -> InputError:
    return InputError(f"{len(names)} student(s) {what}: {_named(names)}; nothing was written",
                      path=path, fix=fix)


def _who(s: FinalStudent) -> str:
    return f"{s.result.name} ({s.student_id})" if s.result.name else s.student_id


def _scaled(s: FinalStudent, rubric: Rubric, out_of: float) -> str:
    total = s.final_total or 0.0
    if out_of == rubric.max_total:
        return _num(total)
    return _num(round(total * out_of / rubric.max_total, 2))


def _shared(ready: list[FinalStudent], key: Callable[[FinalStudent], str]) -> list[str]:
    """"A and B (key)" for each student whose gradebook key another student already has."""
    seen: dict[str, str] = {}
    twice = []
    for s in ready:
        k = key(s)
        if k in seen:
            twice.append(f"{_who(s)} and {seen[k]} ({k})")
        seen[k] = _who(s)
    return twice


def _canvas_key(row: CanvasRow | None) -> str:
    """What Canvas matches an imported row by: its ID, else SIS User ID, else SIS Login ID."""
    assert row is not None
    if row.id:
        return f"Canvas ID {row.id}"
    return f"SIS User ID {row.sis_user_id}" if row.sis_user_id else \
        f"SIS Login ID {row.sis_login_id}"


def _canvas(rubric: Rubric, ready: list[FinalStudent], roster: dict[str, RosterEntry],
            opts: ExportOptions, roster_path: Path | None,
            res: ExportResult) -> list[Sequence[object]]:
    rows: dict[str, CanvasRow | None] = {}
    if opts.canvas_gradebook is not None:
        gb = read_canvas_gradebook(opts.canvas_gradebook, rubric.title, opts.canvas_assignment)
        header, points = gb.header, gb.points
        matcher = CanvasMatcher(gb.rows)
        for s in ready:
            r = s.result
            rows[s.student_id] = matcher.match(s.student_id, r.name, r.email, r.source,
                                               roster.get(s.student_id))
        fix = ("check the students are enrolled in the Canvas course, or add their Canvas "
               "ID / SIS ids to the roster (--roster)")
        where: Path | None = opts.canvas_gradebook
        what = "have no row in the Canvas gradebook"
    else:
        header, points = rubric.title, None
        res.warnings.append(f"no --canvas-gradebook: the column is titled {header!r} without "
                            "an assignment id, so Canvas matches it by title or creates a new "
                            "assignment; pass the gradebook export to fill in IDs and the "
                            "exact assignment column")
        if header.rstrip().endswith(")") and header.rstrip()[-2:-1].isdigit():
            res.warnings.append(f"the title {header!r} ends in a number in brackets, which "
                                "Canvas reads as an assignment id")
        for s in ready:
            rows[s.student_id] = roster_row(s.student_id, s.result.source,
                                            roster.get(s.student_id))
        fix = ("pass --canvas-gradebook with the gradebook exported from Canvas (Grades > "
               "Export), or put the students' Canvas ID / SIS User ID in the roster (--roster)")
        where, what = None, "have no Canvas ID, SIS User ID or SIS Login ID (Canvas could " \
                            "match them only by name)"
    res.warnings += canvas_title_problems(header)
    missing = [_who(s) for s in ready if rows[s.student_id] is None]
    if missing:
        raise _refuse(what, missing, where, fix)
    # Canvas finds a row by its ID, else its SIS User ID, else its SIS Login ID: two students
    # on one would put one's grade on the other
    twice = _shared(ready, lambda s: _canvas_key(rows[s.student_id]))
    if twice:
        raise _refuse("would land on one Canvas student", twice, where or roster_path,
                      fix="give each student their own Canvas ID or SIS id in the roster "
                          "(--roster); with --canvas-gradebook, check that the names and ids "
                          "that matched them are each one student's")
    out_of = opts.out_of or rubric.max_total
    source = "--out-of" if opts.out_of else "the rubric's maximum"
    if points:
        worth = _points(points)
        if worth is not None and worth <= 0:  # every total would be scaled to 0
            raise InputError(f"the Canvas assignment {header!r} is worth {points} points "
                             "(its Points Possible), so every grade would be 0; nothing was "
                             "written", path=opts.canvas_gradebook,
                             fix="set the assignment's points in Canvas and export the "
                                 "gradebook again")
        if worth is not None:
            out_of = worth
            source = "the Canvas assignment's Points Possible, from --canvas-gradebook"
        else:
            res.warnings.append(f"the Canvas assignment's Points Possible {points!r} is not "
                                f"a number: totals are out of {out_of:g} ({source})")
        if opts.out_of is not None and opts.out_of != out_of:
            res.warnings.append(f"--out-of {opts.out_of:g} ignored: the Canvas assignment is "
                                f"worth {points} points")
    if out_of != rubric.max_total:
        res.scale = (rubric.max_total, out_of)
    res.out_of, res.out_of_source = out_of, source
    if source == "the rubric's maximum":
        res.notes.append(f"if the Canvas assignment is worth other than {out_of:g} points, "
                         "pass --out-of with its points (or --canvas-gradebook, which has "
                         "them) to scale the totals: Canvas takes each number as points of "
                         "the assignment as it is")
    table: list[Sequence[object]] = [
        ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", header],
        ["    Points Possible", "", "", "", "", points or _num(out_of)]]
    for s in ready:
        row = rows[s.student_id]
        assert row is not None
        table.append([row.name or s.result.name or s.student_id, row.id, row.sis_user_id,
                      row.sis_login_id, row.section, _scaled(s, rubric, out_of)])
    return table


def _moodle(rubric: Rubric, ready: list[FinalStudent], roster: dict[str, RosterEntry],
            opts: ExportOptions, roster_path: Path | None,
            res: ExportResult) -> list[Sequence[object]]:
    kind = opts.moodle_id
    if roster_path is None:
        raise InputError(
            "a Moodle export needs the class roster, to check every student's "
            f"{MOODLE_IDS[kind].lower()} before Moodle sees it (one unknown row aborts Moodle's "
            "whole import)", fix="put roster.csv in the class folder, or pass --roster FILE")
    values = {s.student_id: moodle_identifier(kind, roster.get(s.student_id)) for s in ready}
    missing = [_who(s) for s in ready if not values[s.student_id]]
    if missing:
        raise _refuse(f"have no {MOODLE_IDS[kind].lower()} in the roster, so Moodle would "
                      "refuse the whole file", missing, roster_path,
                      fix=f"add the {MOODLE_IDS[kind].lower()} of each student listed to the "
                          "roster, or choose another identifier with --moodle-id")
    # a cell that starts like a formula is written with a leading ' (`escape_cell`), which
    # Moodle takes as part of the identifier: it finds no such user and refuses the file
    formula = [f"{_who(s)} ({values[s.student_id]})" for s in ready
               if (values[s.student_id] or "").startswith(FORMULA_STARTS)]
    if formula:
        res.warnings.append(
            f"{len(formula)} student(s) have a {MOODLE_IDS[kind].lower()} that starts like a "
            f"spreadsheet formula (= + - @): {_named(formula)}; the file writes it with a "
            "leading ' (so no spreadsheet runs it), which Moodle will not match, and one "
            "unmatched row stops Moodle's whole import: choose another identifier with "
            "--moodle-id, or remove those rows before importing")
    # Moodle keeps user names in lower case, and looks e-mail addresses up in its database,
    # which on most sites ignores case: two that differ only by case may be one user to it
    folded = kind in ("email", "username")
    twice = _shared(ready, lambda s: (values[s.student_id] or "").lower() if folded
                    else values[s.student_id] or "")
    if twice:
        raise _refuse(f"share one {MOODLE_IDS[kind].lower()}", twice, roster_path,
                      fix="give every student their own identifier in the roster")
    out_of = opts.out_of or rubric.max_total
    if out_of != rubric.max_total:
        res.scale = (rubric.max_total, out_of)
    res.out_of = out_of
    res.out_of_source = "--out-of" if opts.out_of else "the rubric's maximum"
    if not opts.out_of:
        res.notes.append(f"if the Moodle grade item's maximum is not {out_of:g} (a new "
                         f"item's is {MOODLE_MAX_DEFAULT:g}), pass --out-of with it to scale "
                         "the totals: Moodle takes each number as it is, so full marks here "
                         f"would read as {out_of:g}/{MOODLE_MAX_DEFAULT:g} in a "
                         f"{MOODLE_MAX_DEFAULT:g}-point item")
    if out_of > MOODLE_MAX_DEFAULT:
        res.warnings.append(f"grades go up to {out_of:g}: Moodle refuses grades above "
                            f"{MOODLE_MAX_DEFAULT:g} unless the site allows unlimited grades; "
                            f"pass --out-of with the grade item's maximum to scale them")
    table: list[Sequence[object]] = [[MOODLE_IDS[kind], rubric.title, "Feedback"]]
    table += [[values[s.student_id], _scaled(s, rubric, out_of), _feedback(s)] for s in ready]
    return table


def _plain(rubric: Rubric, students: Iterable[FinalStudent],
           held: dict[str, str]) -> Iterable[Sequence[object]]:
    crits = rubric.all_criteria
    yield (["student_id", "name", "email", "export_status", "total", "max_total", "percent",
            "band"] + [c.id for c in crits] + ["review_status", "flags", "teacher_comment"])
    for s in students:
        r = s.result
        reason = held.get(s.student_id)
        ok = reason is None
        yield ([r.student_id, r.name or "", r.email or "",
                "exported" if ok else f"{NOT_EXPORTED}: {reason}",
                _num(s.final_total) if ok else "", _num(s.max_total),
                _num(s.final_percent) if ok else "", (s.band or "") if ok else ""]
               + [_num(c.final) if ok else "" for c in s.criteria]
               + [s.review_status, s.flag_text, s.teacher_comment or ""])


def _roster_file(run: Run, opts: ExportOptions) -> Path | None:
    """`--roster`, else the roster the run named, else where a run looks for one."""
    from grader.prompting.planning import find_roster

    if opts.roster is not None:
        return opts.roster
    named = run.settings.get("roster")
    if named and Path(named).is_file():
        return Path(named)
    return find_roster(Path(run.class_dir),
                       Path(run.rubric_path) if run.rubric_path else None)


def _refuse_partial(run: Run) -> None:
    """A run that never reached every student of its class (stopped, still running, or a
    `--limit` trial): its gradebook would leave the others out without a word."""
    limit = run.settings.get("limit")
    if run.status in ("running", "interrupted"):
        why = "did not finish (it was stopped, or it is still running)"
    elif limit:
        why = f"graded only the first {limit} students (--limit {limit})"
    else:
        return
    raise InputError(f"run {run.id} of {run.class_dir} {why}: the students it never reached "
                     "would be left out of the gradebook; nothing was written",
                     fix=f"run `grade run {run.class_dir}` without --limit (it resumes and "
                         "reuses every grade already stored), then export again")


def export_gradebook(store: Store, run_id: int, fmt: Format, out_dir: Path,
                     opts: ExportOptions | None = None) -> ExportResult:
    """Write one gradebook file for the run (checked before writing)."""
    opts = opts or ExportOptions()
    if fmt not in FORMATS:
        raise InputError(f"unknown export format {fmt!r}", fix=f"use one of: {', '.join(FORMATS)}")
    _refuse_partial(store.run(run_id))
    rubric = load_rubric(store, run_id)
    students = list(finals(store, run_id, rubric))
    held = {s.student_id: why for s in students
            if (why := s.hold_reason(opts.approved_only)) is not None}
    ready = [s for s in students if s.student_id not in held]
    name = {"canvas": "gradebook_canvas.csv", "moodle": "gradebook_moodle.csv",
            "csv": "gradebook.csv"}[fmt]
    out_dir.mkdir(parents=True, exist_ok=True)
    res = ExportResult(path=out_dir / name, run_id=run_id, exported=len(ready),
                       never_reviewed=sum(1 for s in ready if s.review_status == "pending"),
                       withheld=[(s.student_id, s.result.name or "", held[s.student_id])
                                 for s in students if s.student_id in held])
    if fmt == "csv":  # the teacher's own file: everyone, with the reason beside each held grade
        _write(res.path, _plain(rubric, students, held))
        return res
    roster_path = _roster_file(store.run(run_id), opts)
    entries = read_roster(roster_path) if roster_path is not None else {}
    # by the student's id as stored; roster ids are cleaned (`clean_id`), and a store written
    # before ids were cleaned may hold the raw form
    roster = {s.student_id: e for s in ready
              if (e := entries.get(s.student_id) or entries.get(clean_id(s.student_id)))}
    table = (_canvas(rubric, ready, roster, opts, roster_path, res) if fmt == "canvas"
             else _moodle(rubric, ready, roster, opts, roster_path, res))
    _write(res.path, table)
    side = res.path.with_name(res.path.stem + "_withheld.csv")
    if res.withheld:
        res.withheld_path = _write(side, [["student_id", "name", "reason"], *res.withheld])
    else:
        side.unlink(missing_ok=True)
    return res


def export_from_outdir(out_dir: Path, fmt: str, db: Path | None = None,
                       opts: ExportOptions | None = None) -> ExportResult:
    """`grade export OUT`: the store is found from OUT's review workbook; the grades are the
    latest run of its class (decisions follow the students into it)."""
    from grader.review.importing import locate_store, target_run, workbook_meta

    if fmt not in FORMATS:
        raise InputError(f"unknown export format {fmt!r}", fix=f"use one of: {', '.join(FORMATS)}")
    out_dir = Path(out_dir)
    workbook = next((p for p in (out_dir / "review.xlsx", out_dir / "review-updated.xlsx")
                     if p.exists()), out_dir / "review.xlsx")
    meta = workbook_meta(workbook)
    with Store(locate_store(workbook, db, meta), create=False) as store:
        run_id = target_run(store, meta, workbook)
        _refuse_unimported(store, run_id, out_dir)
        return export_gradebook(store, run_id, fmt, out_dir, opts)  # type: ignore[arg-type]


def _refuse_unimported(store: Store, run_id: int, out_dir: Path) -> None:
    """A review workbook in `out_dir` saved with changes the store does not have (never
    imported, or that an import refuses, such as a score that is no level of its criterion):
    the gradebook would have the grades without them, so nothing is written. A workbook as
    grader wrote it, or one already imported, passes; so does one whose changes conflict with
    later decisions (a stale workbook: `grade review import` says which)."""
    from grader.reports import as_written, workbooks
    from grader.review.importing import import_workbook

    for path in workbooks(out_dir):
        if as_written(path):
            continue
        try:
            got = import_workbook(store, path, dry_run=True)
        except GraderError as e:  # saved with changes an import refuses: not left out silently
            raise InputError(
                f"{path.name} was saved with changes that cannot be imported ({e.message}); "
                "the gradebook would have the grades without them; nothing was written",
                path=path, fix=(e.fix + "; or " if e.fix else "") + "undo the changes, or "
                "delete the workbook and run `grade report` on the class to write it again "
                "from the store") from None
        if got.run_id != run_id or not (got.diffs or got.groups):
            continue
        ids = [d.student_id for d in got.diffs]
        labels = sorted({g.cell.student_id for g in got.groups})
        what = (([f"{len(ids)} student(s) ({_named(ids)})"] if ids else [])
                + ([f"answer group(s) {_named(labels)} on the Groups sheet"] if labels else []))
        raise InputError(
            f"{path.name} holds changes for {' and '.join(what)} that were never imported: "
            "the gradebook would have the grades without them; nothing was written", path=path,
            fix=f"run `grade review import {path}` first (`--dry-run` shows the changes); to "
                "leave them out instead, undo them in the workbook, or delete it and run "
                "`grade report` on the class to write it again from the store")
