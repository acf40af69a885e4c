"""After grading: `review import` merges the teacher's edited review.xlsx into the store, and
`export` writes the LMS gradebook of final grades."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from grader.cli import options as opt
from grader.cli.common import (
    _handle_errors,
    _print_written,
)
from grader.escape import terminal_safe


@click.group()
def review() -> None:
    """The teacher's review loop: import the edited review.xlsx."""


@review.command("import")
@click.argument("workbook", type=opt.FILE)
@opt.DB.with_help("SQLite store [default: found relative to the workbook].")
@opt.OUT.with_help("Where to regenerate reports [default: the run's output folder].")
@click.option("--dry-run", is_flag=True, help="Show what would change, per student; store "
                                                "nothing.")
@click.option("--force", is_flag=True, help="On a conflict, store the workbook's value.")
@opt.HANDOUTS.with_help(
    "Which handouts (handouts/, the pages for students) to write: reviewed = grades a teacher "
    "reviewed or approved; all = every grade that may leave, each one not yet reviewed "
    "stamped so [default: the class's `handouts` setting, else reviewed].")
@_handle_errors
def review_import(workbook: Path, db: Path | None, out: Path | None, dry_run: bool,
                  force: bool, handouts: Any) -> None:
    """Merge WORKBOOK's changed cells into the store (scores, feedback, notes, approvals).
    WORKBOOK must be an .xlsx file."""
    from grader.review.importing import import_and_report, report_lines

    result, paths = import_and_report(workbook, db, out, force=force, dry_run=dry_run,
                                      handouts=handouts)
    for line in report_lines(result):
        click.echo(terminal_safe(line))
    _print_written(paths)


@click.command("export")
@click.argument("out", type=opt.FOLDER)
@click.option("--format", "fmt", type=click.Choice(["canvas", "moodle", "csv"]), required=True,
              help="Gradebook format.")
@opt.DB.with_help("SQLite store [default: found from OUT/review.xlsx].")
@click.option("--approved-only", is_flag=True,
              help="Export only grades marked Approved; withhold the rest.")
@click.option("--canvas-gradebook", type=opt.FILE,
              help="Canvas gradebook export (Grades > Export): student IDs and the exact "
                   "assignment column.")
@click.option("--canvas-assignment", metavar="ID|TITLE",
              help="Which assignment of the Canvas gradebook to fill.")
@click.option("--moodle-id", type=click.Choice(["email", "username", "idnumber"]),
              default="email", show_default=True,
              help="The Moodle user field the file identifies students by (from the roster).")
@click.option("--out-of", type=float, metavar="POINTS",
              help="The LMS grade item's maximum: totals are scaled to it [default: the "
                   "rubric's maximum].")
@opt.ROSTER.with_help("Roster CSV with the students' LMS identifiers [default: the class's].")
@_handle_errors
def export(out: Path, fmt: str, db: Path | None, **options: Any) -> None:
    """Write an LMS gradebook of final grades from OUT (the folder holding review.xlsx)."""
    from grader.reports.export import ExportOptions, export_from_outdir

    r = export_from_outdir(out, fmt, db, ExportOptions(**options))
    click.echo(f"wrote {r.path}: {r.exported} grades of run {r.run_id}")
    if r.never_reviewed:
        click.echo(f"  {r.never_reviewed} of them were never reviewed by a teacher (the AI's "
                   "grade as it stands); --approved-only exports approved grades only")
    for line in r.scale_lines():
        click.echo(f"  {line}")
    if r.withheld_path is not None:
        click.echo(f"  {len(r.withheld)} students withheld (left out of the file): listed with "
                   f"the reason in {r.withheld_path}")
    elif r.withheld:
        click.echo(f"  {len(r.withheld)} students withheld: see export_status in {r.path}")
    for w in r.warnings:
        click.secho(terminal_safe(f"warning: {w}"), fg="yellow", err=True)
