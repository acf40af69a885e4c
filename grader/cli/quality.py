"""Measuring the model against human graders: `calibrate` checks the rubric on a few students
the teacher scores blind, `human import` stores human scores, `eval` measures agreement."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from grader.cli import options as opt
from grader.cli.common import (
    _handle_errors,
    _settings,
)
from grader.escape import terminal_safe


@click.command()
@opt.CLASS_DIR
@click.option("--n", "n", type=int, default=10, show_default=True,
              help="Students in the sample.")
@click.option("--rater", default="teacher", show_default=True,
              help="Your name in the workbook's rater column.")
@opt.RUBRIC
@opt.OUT.with_help("Where calibration.xlsx goes [default: reports/<class folder name>].")
@opt.DB
@opt.BACKEND
@opt.MODEL
@opt.MODEL_PATH
@opt.BASE_URL
@_handle_errors
def calibrate(class_dir: Path, n: int, rater: str, **flags: Any) -> None:
    """Check the rubric on a few students you score blind, before grading the class: the first
    call writes calibration.xlsx; run it again once you have scored it."""
    from grader.quality.calibration import Written
    from grader.quality.calibration import calibrate as run_calibration
    from grader.quality.evaluation import render_text

    settings = _settings(class_dir, with_out=True, **flags)
    got = run_calibration(class_dir, settings, n=n, rater=rater)
    if isinstance(got, Written):
        click.echo(f"picked {len(got.students)} students spread over length and content: "
                   f"{terminal_safe(', '.join(got.students))}")
        if got.skipped:
            click.echo(f"({got.skipped} students without readable text were not considered)")
        click.echo(f"wrote {got.path}\nnext: score every row of its Scores sheet (the model's "
                   f"scores are not shown), save it, then run `grade calibrate {class_dir}` "
                   "again")
        return
    click.echo(terminal_safe(render_text(got.evaluation)))
    if got.passed:
        click.secho(f"calibration passed: every criterion has QWK >= {got.bar:g} (or full "
                    f"agreement); `grade run {class_dir}` grades the class", fg="green")
        return
    from grader.quality.gate import describe

    click.secho(f"calibration below the bar (calibration_min_qwk = {got.bar:g}): "
                f"{describe(got.failing)}\nreword those criteria in the rubric, then run "
                f"`grade calibrate {class_dir}` again; `grade run` refuses this class until "
                "then (or pass --force)", fg="red")
    sys.exit(1)


@click.group()
def human() -> None:
    """Human graders' scores, the reference `grade eval` measures the model against."""


@human.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@opt.CLASS_DIR
@opt.DB
@opt.RUBRIC
@_handle_errors
def human_import(file: Path, class_dir: Path, db: Path | None, rubric: Path | None) -> None:
    """Store human scores for CLASS_DIR from opt.FILE (.csv or .xlsx; columns student_id,
    criterion (an id or `total`), score, rater)."""
    from grader.errors import some
    from grader.quality.human import import_scores

    r = import_scores(file, class_dir, _settings(class_dir, db=db, rubric=rubric))
    if not r.stored:
        click.echo(f"{file}: already imported for this class; nothing changed")
        return
    click.echo(f"imported {r.rows} scores for {r.students} students by "
               f"{terminal_safe(some(r.raters))}")


@click.command("eval")
@click.argument("class_dirs", nargs=-1, required=True, type=opt.FOLDER)
@opt.RUN.with_help("Run id [default: the latest run of CLASS_DIR; one class only].")
@click.option("--rater", help="The human rater to compare with [default: the one with most "
              "scores].")
@click.option("--csv", "csv_path", type=opt.FILE, help="Also write the figures to this CSV file.")
@opt.DB
@click.option("--compare", nargs=2, type=int, metavar="RUN_A RUN_B",
              help="Compare two runs of CLASS_DIR against the human scores: per criterion, "
                   "the change B − A in QWK, MAE and exact agreement with 95% intervals.")
@_handle_errors
def evaluate(class_dirs: tuple[Path, ...], run_id: int | None, rater: str | None,
             csv_path: Path | None, db: Path | None,
             compare: tuple[int, int] | None) -> None:
    """Measure the model's agreement with human graders on CLASS_DIR (several: each, then
    pooled): QWK, MAE, correlations, exact/adjacent agreement, bias, 95% intervals."""
    from grader.quality.evaluation import run_eval

    if compare:
        from grader.errors import InputError
        from grader.quality import comparison

        if len(class_dirs) != 1 or run_id is not None:
            raise InputError("--compare takes one CLASS_DIR and no --run",
                             fix="pass one class folder and the two run ids to --compare")
        c = comparison.compare_runs(class_dirs[0], _settings(class_dirs[0], db=db),
                                    *compare, rater=rater)
        click.echo(terminal_safe(comparison.render(c)))
        if csv_path is not None:
            click.echo(f"wrote {comparison.write_csv(c, csv_path)}")
        return

    for block in run_eval(class_dirs, lambda d: _settings(d, db=db), run_id=run_id,
                          rater=rater, csv_path=csv_path):
        click.echo(terminal_safe(block) + "\n")
    if csv_path is not None:
        click.echo(f"wrote {csv_path}")

