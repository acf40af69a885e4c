"""The command line: parse options, make one library call, print. The only package that imports
click. Errors from the library (`GraderError`) become a clean message and exit code 2; a run in
which some student failed exits 1; any other exception is a bug: one line and exit code 3, the
traceback only with --debug. Whatever is printed from student data goes through
`terminal_safe`, and library warnings go to the log file, never over the progress bar.

This module holds the `grade` group and registers the commands of the modules by topic: `run`
(init, run, estimate, status, report), `review` (review import, export), `quality` (calibrate,
human import, eval), `tuning` (tune), `batch` (batch), `models` (models); `common` holds what
they share, the options several commands take among it. The commands import the library inside
their bodies, so that `grade --help` starts fast."""

from __future__ import annotations

import click

from grader import __version__
from grader.cli import batch, models, quality, review, run, tuning
from grader.cli.common import EXIT_BUG

__all__ = ["EXIT_BUG", "cli", "main"]


@click.group()
@click.version_option(__version__, prog_name="grader")
@click.option("--debug", is_flag=True, help="Show full tracebacks and log to the terminal.")
def cli(debug: bool) -> None:
    """Grade a class folder of submissions against a rubric with Gemini or a local model."""


for _command in (run.init, run.run, run.estimate, run.status, run.report,
                 review.review, review.export,
                 quality.calibrate, quality.human, quality.evaluate,
                 tuning.tune, batch.batch, models.models):
    cli.add_command(_command)


def main() -> None:
    cli(prog_name="grade")


if __name__ == "__main__":
    main()
