"""The grading commands: `init` scaffolds an assignment, `run` grades a class (its progress bar,
the dry run and the summary it prints), `estimate` projects cost and time, `status` shows the
store, `report` regenerates the outputs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from grader.cli import options as opt
from grader.cli.common import (
    _embedding_line,
    _exemplar_options,
    _handle_errors,
    _ids,
    _print_suspected,
    _print_written,
    _screen_line,
    _settings,
    _split,
)
from grader.escape import terminal_safe


@click.command()
@click.argument("folder", type=click.Path(path_type=Path))
@_handle_errors
def init(folder: Path) -> None:
    """Scaffold an assignment: rubric.yaml, grader.toml and submissions/."""
    from grader.prompting.scaffold import init_assignment

    for path in init_assignment(folder):
        click.echo(f"created {path}")
    click.echo(f"next: put submissions in {folder / 'submissions'}, edit the rubric, then "
               f"`grade run {folder / 'submissions'}`")


@click.command()
@opt.CLASS_DIR
@opt.RUBRIC
@opt.OUT
@opt.DB
@opt.HANDOUTS
@opt.BACKEND
@opt.MODEL
@opt.MODEL_PATH
@opt.BASE_URL
@click.option("--n-ctx", type=int, help="Context size of the local model, in tokens.")
@opt.PROJECT
@opt.LOCATION
@click.option("--prompts", type=opt.FOLDER, help="Folder of .j2 templates overriding prompts/.")
@opt.ROSTER
@opt.CONCURRENCY
@opt.RPM
@opt.TPM
@opt.MAX_OUTPUT_TOKENS
@opt.THINKING
@click.option("--temperature", type=float, help="Sampling temperature [default: not sent].")
@click.option("--top-p", type=float, help="Nucleus sampling [default: not sent].")
@click.option("--seed", type=int, help="Sampling seed, best effort [default: not sent].")
@click.option("--tier", type=click.Choice(["standard", "flex"]),
              help="Gemini service tier: flex is half price and may queue for minutes.")
@click.option("--budget", type=float, metavar="USD",
              help="Spend at most USD in this run; students left are skipped (rerun with more).")
@click.option("--cache", type=click.Choice(["auto", "on", "off"]),
              help="Explicit context cache of the marking scheme: auto caches when it reaches "
                   "the model's minimum size, on requires it, off never [default: auto].")
@click.option("--timeout", "timeout_s", type=float, help="Seconds per request before retrying.")
@click.option("--max-retries", type=int, help="Retries per request on transient errors.")
@opt.LIMIT
@opt.ONLY
@click.option("--retry-flagged", multiple=True, is_flag=False, flag_value="*",
              metavar="[REASON,…]",
              help="Grade flagged students again (only those flagged for REASON, if given).")
@click.option("--regrade", is_flag=True, default=None,
              help="Ask the model again even if a grade is stored (resumable).")
@click.option("--dry-run", is_flag=True, default=None,
              help="Render prompts for the first students; call no model.")
@opt.REDACT
@opt.INJECTION_CHECK
@click.option("--no-wait", "wait", flag_value=False, default=None,
              help="Fail at once if another run is using the store, instead of waiting.")
@click.option("--samples", type=int,
              help="Grade each student K times: the median per criterion, the spread shown.")
@click.option("--force", is_flag=True, default=None,
              help="Run even though the class's calibration is below calibration_min_qwk.")
@_exemplar_options
@click.option("--exemplars-same-run/--no-exemplars-same-run", "exemplars_same_run",
              default=None, help="Let students of this run serve as examples for their "
                                 "classmates (never for themselves) [default: no].")
@_handle_errors
def run(class_dir: Path, only: tuple[str, ...], retry_flagged: tuple[str, ...],
        **flags: Any) -> None:
    """Grade every submission in CLASS_DIR (resumable: rerun to continue)."""
    from grader.online import pipeline

    retry = _split(retry_flagged)
    settings = _settings(class_dir, with_out=True, only=_split(only),
                         retry_flagged=tuple(r for r in retry if r != "*") if retry else None,
                         **flags)
    if settings.dry_run:
        from grader.online.dry_run import dry_run

        _print_dry_run(dry_run(class_dir, settings))
        return
    progress = _Progress()

    def on_start(total: int, backend: str, model: str) -> None:
        if backend == "local" and settings.model_path is None:
            from grader.backends.local import default_model_notice

            click.secho(default_model_notice(), fg="yellow", err=True)
        click.echo(f"grading {total} students with {backend}:{model}", err=True)
        progress.start(total)

    def on_notice(text: str) -> None:
        progress.note(f"note: {terminal_safe(text)}")

    def on_wait(holder: Any) -> None:
        who = terminal_safe(holder.describe()) if holder is not None else "another run"
        click.echo(f"the grade store is in use by {who}; waiting for it to finish "
                   "(Ctrl-C to stop; --no-wait to fail instead)", err=True)

    try:
        summary = pipeline.run_class(class_dir, settings, on_start=on_start,
                                     on_outcome=progress.outcome, on_retry=progress.retry,
                                     on_wait=on_wait, on_notice=on_notice)
    finally:
        progress.stop()
    _print_summary(summary)
    if not summary.ok:
        sys.exit(1)


class _Progress:
    """The progress bar; its line shows how many requests were retried so far."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.retries = 0

    def start(self, total: int) -> None:
        self.bar = click.progressbar(length=total, label="grading", file=sys.stderr,
                                     show_pos=True, show_eta=True,
                                     item_show_func=self._suffix)
        self.bar.__enter__()

    def _suffix(self, _: Any) -> str | None:
        return f"{self.retries} retries" if self.retries else None

    def outcome(self, _: Any) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def retry(self, _: Any) -> None:
        self.retries += 1
        if self.bar is not None:
            self.bar.update(0)

    def note(self, text: str) -> None:
        """A line above the bar (notices arrive before and during the run)."""
        if self.bar is not None:
            click.echo("", err=True)
        click.secho(text, fg="yellow", err=True)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def _print_dry_run(d: Any) -> None:
    plan, items = d.plan, d.items
    for notice in d.notices:
        click.secho(f"note: {terminal_safe(notice)}", fg="yellow")
    click.echo(f"rubric: {plan.rubric_path} ({len(plan.rubric.all_criteria)} criteria, "
               f"max {plan.rubric.max_total:g} points); prompts hash {plan.prompts.hash}")
    click.echo(f"static prefix: ~{(len(plan.system) + len(plan.static_prefix)) // 4} tokens "
               "(identical for every student)")
    for it in items:
        sid = terminal_safe(it.student_id)
        if it.flagged:
            click.echo(f"--- {sid}: would be flagged: {terminal_safe(it.flagged)}")
            continue
        click.echo(f"--- {sid}: ~{it.prompt_tokens} prompt tokens (estimate, chars/4)")
    first = next((it for it in items if it.prompt), None)
    if first is not None:
        click.echo(f"\n=== {terminal_safe(first.student_id)}'s prompt (system instruction "
                   "omitted) ===\n" + terminal_safe(first.prompt))
    elif not items:
        click.echo("no student to show: --only leaves out everyone")


def _print_summary(s: Any) -> None:
    from grader.online.runner import IN_BATCH

    u = s.usage
    mode = "" if s.mode == "normal" else f" ({s.mode.replace('_', ' ')})"
    skipped = f", skipped {s.skipped}" if s.skipped else ""
    click.echo(
        f"run {s.run_id}{mode}: {s.students} students — graded {s.graded}, flagged {s.flagged}, "
        f"failed {s.failed}{skipped} ({s.reused} reused from the store)\n"
        f"tokens: prompt {u.prompt_tokens}, output {u.output_tokens}, thinking "
        f"{u.thinking_tokens}, cached {u.cached_tokens} in {s.calls} calls "
        f"({s.retries} retries); time {s.wall_s:.1f} s\n{_cost_line(s)}store: {s.db}"
    )
    flagged: dict[str, list[str]] = {}
    failed: dict[str, list[str]] = {}
    in_batch: list[str] = []
    for o in s.outcomes:
        if o.status == "flagged":
            flagged.setdefault(o.reason or "flagged", []).append(o.student_id)
        elif o.status == "failed":
            failed.setdefault(o.message or "failed", []).append(o.student_id)
        elif o.status == "skipped" and o.reason == IN_BATCH:
            in_batch.append(o.student_id)
    for reason, ids in sorted(flagged.items()):
        click.echo(terminal_safe(f"  flagged {reason}: {_ids(ids)}", newlines=False))
    for message, ids in failed.items():  # identical errors collapse into one line
        click.echo(terminal_safe(f"  failed ({_ids(ids)}): {message}"))
    if in_batch:
        click.echo(terminal_safe(
            f"  skipped ({_ids(in_batch)}): their requests are in a batch job still running, "
            "so they are not sent again; `grade batch collect` stores their grades"))
    _print_suspected(s.injection_suspected)
    if s.inconsistent:
        click.echo(terminal_safe(
            f"  flagged inconsistent_with_group after grading: {_ids(s.inconsistent)} (graded "
            "apart from answers like theirs; review.xlsx's Groups sheet shows the group)",
            newlines=False))
    if s.graded_again:
        had, kept = s.decisions_kept
        click.echo(terminal_safe(
            "  graded again because " + "; ".join(s.graded_again)
            + (f": {kept} of {had} students' teacher decisions carry over (their AI scores "
               f"are unchanged), {had - kept} need review again" if had else "")))
    if not s.redacted and s.backend != "local":
        click.echo("  names, e-mails and ids were sent unredacted (--no-redact)")
    line = _cache_line(s)
    if line:
        click.echo(line)
    if s.embeddings is not None:
        click.echo(_embedding_line(s.embeddings, priced=s.cost_usd is not None))
    if s.screen is not None:
        click.echo(_screen_line(s.screen, priced=s.cost_usd is not None))
    for notice in s.notices:
        click.secho(f"note: {terminal_safe(notice)}", fg="yellow")
    _print_written(s.outputs)


def _cost_line(s: Any) -> str:
    """The run's cost, with its budget; empty for the local model, "local, unpriced" for a
    school's own server without a price (never $0.00: its machines and power are not free, only
    not counted)."""
    from grader.online.budget import usd_up

    if s.cost_usd is None:
        return "cost: local, unpriced (the school's own model server)\n" \
            if s.backend == "openai" else ""
    tier = "" if s.tier == "standard" else f", {s.tier} tier"
    basis = "the price set in grader.toml" if s.backend == "openai" else "model table prices"
    line = f"cost: ${s.cost_usd:.4f} ({basis}{tier}"
    line += f"; {s.unpriced} calls without a price)" if s.unpriced else ")"
    if s.budget is not None:
        line += f"; budget ${s.budget:g}"
        if s.skipped_budget:
            line += (f": {_count(s.skipped_budget, 'student')} skipped, rerun with a larger "
                     "--budget to continue (paid work is reused)")
            if s.budget_needed is not None:
                line += (f"; --budget {usd_up(s.budget_needed)} would grade them if their "
                         "calls cost what `grade estimate` assumes")
        if s.budget_shrunk:
            line += (f"; {_count(s.budget_shrunk, 'call')} sent with a smaller output cap to "
                     "fit it (with room for half again the answer and thinking expected)")
    return line + "\n"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _cache_line(s: Any) -> str:
    """What the explicit cache did (and cost), and what was uploaded."""
    c, parts = s.cache, []
    if c is not None and c.used:
        what = f"cache: the marking scheme ({c.tokens:,} tokens) was cached"
        done = [f"{n} {label}" for n, label in ((c.created, "created"), (c.reused, "reused from "
                "a run that was killed"), (c.recreated, "recreated after it expired"),
                (c.extended, "times extended")) if n]
        parts.append(what + (f" ({', '.join(done)})" if done else "")
                     + (f"; creating and keeping it cost ${s.cache_usd:.4f}, included above"
                        if s.cost_usd is not None else ""))
    elif c is not None and c.reason and not c.noticed:
        parts.append(f"cache: not used: {c.reason}")
    if s.uploads:
        parts.append(f"uploaded {s.uploads} file(s) too large to send inline (deleted at the "
                     "end)")
    return "\n".join(f"  {terminal_safe(p)}" for p in parts)


@click.command()
@opt.CLASS_DIR
@opt.RUBRIC
@opt.BACKEND.with_help("gemini | enterprise | vertex (countTokens) | openai (the server's "
                       "tokenizer) [default: auto].")
@opt.MODEL.with_help("Model name [default: the model table's].")
@opt.BASE_URL
@opt.THINKING
@opt.MAX_OUTPUT_TOKENS
@opt.CONCURRENCY
@opt.RPM
@opt.TPM
@opt.LIMIT
@opt.REDACT.with_help("Count the requests as `grade run` would send them: with names, "
                         "e-mails and ids replaced [default: on for Gemini].")
@opt.INJECTION_CHECK.with_help("Count the model-based injection check's calls (one per text "
                               "the patterns do not flag) in the cost [default: off].")
@_exemplar_options
@_handle_errors
def estimate(class_dir: Path, **flags: Any) -> None:
    """Project what grading CLASS_DIR would cost and take (online, flex, batch); no grading."""
    from grader.online.estimate import estimate as project
    from grader.online.estimate import render_text

    click.echo(render_text(project(class_dir, _settings(class_dir, **flags)), class_dir))


@click.command()
@opt.CLASS_DIR
@opt.DB
@_handle_errors
def status(class_dir: Path, db: Path | None) -> None:
    """Show what the store holds for CLASS_DIR: the latest run, its review progress and what
    an export would withhold."""
    from grader.reports.status import class_status

    click.echo(terminal_safe(class_status(class_dir, _settings(class_dir, db=db))))


@click.command()
@opt.CLASS_DIR
@opt.DB
@opt.OUT
@opt.RUN
@opt.HANDOUTS
@_handle_errors
def report(class_dir: Path, db: Path | None, out: Path | None, run_id: int | None,
           handouts: str | None) -> None:
    """Regenerate every output from the store (no model is called)."""
    from grader.reports.write import regenerate

    settings = _settings(class_dir, db=db, out=out, handouts=handouts)
    _print_written(regenerate(class_dir, settings, run_id))
