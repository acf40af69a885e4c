"""Supervised tuning on the teacher's reviewed grades: `tune export` writes the dataset,
`tune start` starts a job, `tune status` follows (or cancels) it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from grader.cli import options as opt
from grader.cli.common import (
    F,
    _handle_errors,
    _settings,
)
from grader.escape import terminal_safe


def _service_options(fn: F) -> F:
    """Where the tuning jobs run: the same choice for `tune start` and `tune status`."""
    for option in reversed((
            opt.BACKEND.with_help("enterprise (vertex) [default: from the environment]."),
            opt.PROJECT,
            opt.LOCATION,
            opt.DB)):
        fn = option(fn)
    return fn


@click.group()
def tune() -> None:
    """Supervised tuning on the teacher's reviewed grades (Gemini Enterprise / Vertex AI)."""


@tune.command("export")
@opt.CLASS_DIR
@opt.OUT.with_help("Folder for the dataset [default: reports/<class folder name>/tuning].")
@opt.DB
@opt.RUN
@click.option("--validation", type=float, default=0.1, show_default=True,
              help="Share of the reviewed grades held out as the validation split.")
@_handle_errors
def tune_export(class_dir: Path, out: Path | None, db: Path | None, run_id: int | None,
                validation: float) -> None:
    """Write the supervised-tuning dataset (JSONL) of CLASS_DIR's reviewed grades."""
    from grader.quality.tuning import export

    r = export(class_dir, _settings(class_dir, db=db), out=out, run_id=run_id,
               validation=validation)
    click.echo(f"wrote {r.out}: {r.train} training and {r.validation} validation examples "
               f"from run {r.run_id} ({r.corrections} corrected by the teacher, {r.approvals} "
               "approved as graded)")
    for why, n in sorted(r.skipped.items()):
        click.echo(f"  left out {n}: {why}")


@tune.command("start")
@opt.CLASS_DIR
@click.option("--base", "base_model", required=True, help="Base model to tune.")
@click.option("--data", type=opt.FOLDER,
              help="Folder `grade tune export` wrote [default: reports/<class>/tuning].")
@click.option("--name", "display_name", help="The tuned model's name, for --model tuned:NAME "
              "[default: grader-<class folder name>].")
@click.option("--epochs", type=int, help="Training epochs [default: the service's].")
@_service_options
@_handle_errors
def tune_start(class_dir: Path, base_model: str, data: Path | None, display_name: str | None,
               epochs: int | None, **flags: Any) -> None:
    """Upload the dataset to the staging bucket and start a tuning job (billed by Google)."""
    import asyncio

    from grader.config.settings import out_dir
    from grader.quality.tuning import start

    settings = _settings(class_dir, **flags)
    name = display_name or f"grader-{class_dir.resolve().name}"
    job = asyncio.run(start(class_dir, settings, base_model=base_model,
                            data=data or out_dir(class_dir, settings) / "tuning",
                            display_name=name, epochs=epochs))
    click.echo(f"started {job.name} ({job.state}): {job.base_model} on {job.train_examples} "
               f"examples ({job.validation_examples} validation)")
    click.echo(f"follow it with `grade tune status {class_dir}`; when it succeeds, grade with "
               f"--backend enterprise --model tuned:{terminal_safe(name)}")


@tune.command("status")
@opt.CLASS_DIR
@click.option("--cancel", metavar="NAME", help="Cancel this job (its name or display name).")
@_service_options
@_handle_errors
def tune_status(class_dir: Path, cancel: str | None, **flags: Any) -> None:
    """The tuning jobs started for CLASS_DIR and their state."""
    import asyncio

    from grader.quality.tuning import status

    jobs = asyncio.run(status(class_dir, _settings(class_dir, **flags), cancel=cancel))
    if not jobs:
        click.echo("no tuning job started for this class; see `grade tune start`")
    for j in jobs:
        click.echo(terminal_safe(f"{j.display_name}: {j.state} ({j.name}, base {j.base_model}, "
                                 f"{j.train_examples} examples)"))
        if j.endpoint:
            click.echo(terminal_safe(f"  endpoint {j.endpoint}: grade with --backend "
                                     f"enterprise --model tuned:{j.display_name}"))
        if j.error:
            click.echo(terminal_safe(f"  error: {j.error}"))

