"""Grading through provider batch jobs: `batch submit`, `status`, `collect`, `cancel`, and
`sync`, the one command for cron."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from grader.cli import options as opt
from grader.cli.common import (
    F,
    _embedding_line,
    _exemplar_options,
    _handle_errors,
    _print_suspected,
    _print_written,
    _screen_line,
    _settings,
    _split,
)
from grader.escape import terminal_safe


@click.group()
def batch() -> None:
    """Grade through provider batch jobs (half price, results within hours; run `batch sync`
    from cron)."""


def _batch_options(fn: F) -> F:
    for option in reversed((
            opt.RUBRIC,
            click.option("--api", "backend", type=click.Choice(["gemini", "enterprise"]),
                         help="Developer API (gemini) or Gemini Enterprise/Vertex batch "
                         "prediction [default: auto]."),
            opt.DB,
            opt.OUT,
            opt.MODEL,
            opt.PROJECT,
            opt.LOCATION)):
        fn = option(fn)
    return fn


_reask_option = click.option(
    "--reask", "batch_reask", type=click.Choice(["batch", "online"]),
    help="An answer that needs the one re-ask: a second, small batch round, or an online call "
         "(online price) in this collect [default: batch].")


def _submit_options(fn: F) -> F:
    for option in reversed((
            opt.THINKING,
            opt.MAX_OUTPUT_TOKENS,
            opt.LIMIT,
            opt.ONLY,
            opt.INJECTION_CHECK,
            click.option("--batch-mode", type=click.Choice(["auto", "inline", "file"]),
                         help="Developer API job input: inline requests or a JSONL file "
                         "[default: auto, inline under batch_inline_mb]."),
            click.option("--retry-failed", is_flag=True,
                         help="Send again the lines of failed or expired jobs."))):
        fn = option(fn)
    return _exemplar_options(fn)


def _print_notes(notices: Any) -> None:
    for notice in notices:
        click.secho(f"note: {terminal_safe(notice)}", fg="yellow")


def _print_submitted(s: Any) -> None:
    if not s.jobs:
        click.echo("nothing to submit"
                   + (f" ({s.in_flight} in flight)" if s.in_flight else ""))
    else:
        click.echo(f"submitted {s.requests} request(s) in {len(s.jobs)} job(s): "
                   + ", ".join(s.jobs))
    _print_notes(s.notices)
    if s.reused:
        click.echo(f"  {s.reused} already graded (kept)")
    if s.embeddings is not None:
        click.echo(_embedding_line(s.embeddings, priced=False))
    if s.screen is not None:
        click.echo(_screen_line(s.screen, priced=False))
    if s.in_flight and s.jobs:
        click.echo(f"  {s.in_flight} already in a running job")
    if s.flagged:
        click.echo(f"  {s.flagged} flagged without a request (see the reports)")
    if s.failed:
        click.echo(f"  {s.failed} failed before a request (see `grade status`); the next "
                   "`grade batch submit` tries them again")
    if s.failed_before:
        click.echo(f"  {s.failed_before} failed line(s) not sent again: "
                   "`grade batch submit --retry-failed` sends them")
    _print_written(s.outputs)


@batch.command("submit")
@opt.CLASS_DIR
@_batch_options
@_submit_options
@_handle_errors
def batch_submit(class_dir: Path, only: tuple[str, ...], retry_failed: bool,
                 **flags: Any) -> None:
    """Submit batch jobs for every student of CLASS_DIR not yet graded or in flight."""
    from grader.batch.submit import submit_class

    settings = _settings(class_dir, with_out=True, only=_split(only), **flags)
    _print_submitted(submit_class(class_dir, settings, retry_failed=retry_failed))


@batch.command("status")
@click.argument("class_dir", required=False, default=".", type=opt.FOLDER)
@_batch_options
@_handle_errors
def batch_status(class_dir: Path, **flags: Any) -> None:
    """Every batch job of CLASS_DIR (default: the current folder): state, requests, age, cost
    so far. Needs only the store (no rubric)."""
    from grader.batch.submit import status_class

    listed = status_class(class_dir, _settings(class_dir, with_log=True, **flags))
    _print_notes(listed.notices)
    if not listed.jobs:
        click.echo("no batch jobs")
    for j in listed.jobs:
        c = j.counts
        state = j.job.state.removeprefix("JOB_STATE_").lower()
        click.echo(f"{j.job.name or j.job.display_name}  {state}  round {j.job.round}  "
                   f"{j.job.requests} request(s): {int(c.get('stored', 0))} stored, "
                   f"{int(c.get('pending', 0))} pending, {int(c.get('failed', 0))} failed, "
                   f"{int(c.get('reasked', 0))} re-asked  age {j.age_s / 3600:.1f} h  "
                   f"${c['cost_usd']:.4f}")


@batch.command("collect")
@click.argument("class_dir", required=False, default=".", type=opt.FOLDER)
@_batch_options
@_reask_option
@opt.HANDOUTS
@click.option("--wait", "wait_done", is_flag=True,
              help="Poll (with a growing wait) until every job is done.")
@_handle_errors
def batch_collect(class_dir: Path, wait_done: bool, **flags: Any) -> None:
    """Store the results of finished jobs of CLASS_DIR (default: the current folder), exactly
    once, and write the reports."""
    from grader.batch.submit import collect_class

    def on_poll(c: Any) -> None:
        click.echo(f"{c.running} job(s) still running; waiting", err=True)

    c = collect_class(class_dir, _settings(class_dir, with_out=True, **flags), wait=wait_done,
                      on_poll=on_poll)
    _print_notes(c.notices)
    click.echo(f"collected {c.jobs} job(s): {c.graded} graded, {c.flagged} flagged, "
               f"{c.failed} failed" + (f", {c.reasked} re-asked in a second round"
                                       if c.reasked else "")
               + (f", {c.reasked_online} re-asked online" if c.reasked_online else "")
               + f"; ${c.cost_usd:.4f}" + (f"; {c.running} job(s) still running"
                                           if c.running else ""))
    if c.failed:
        click.echo("  `grade batch submit --retry-failed` sends the failed lines again")
    _print_suspected(c.injection_suspected)
    _print_written(c.outputs)


@batch.command("cancel")
@click.argument("job")
@opt.CLASS_DIR
@_batch_options
@_handle_errors
def batch_cancel(job: str, class_dir: Path, **flags: Any) -> None:
    """Cancel the batch job JOB (its name, or grader's display name) of CLASS_DIR."""
    from grader.batch.submit import cancel_job

    info, notices = cancel_job(class_dir, _settings(class_dir, with_log=True, **flags), job)
    _print_notes(notices)
    click.echo(f"{info.name}: {info.state.removeprefix('JOB_STATE_').lower()}")


@batch.command("sync")
@opt.CLASS_DIR
@_batch_options
@_submit_options
@_reask_option
@opt.HANDOUTS
@_handle_errors
def batch_sync(class_dir: Path, only: tuple[str, ...], retry_failed: bool,
               **flags: Any) -> None:
    """Collect finished jobs, then submit what is new or changed: the one command for cron.
    Prints one line; exits 0 when there is nothing to do or another run holds the store."""
    from grader.batch.submit import sync_class

    settings = _settings(class_dir, with_out=True, only=_split(only), **flags)
    click.echo(terminal_safe(sync_class(class_dir, settings, retry_failed=retry_failed).line()))

