"""The command line: parse options, make one library call, print. The only module that imports
click. Errors from the library (`GraderError`) become a clean message and exit code 2; a run in
which some student failed exits 1; any other exception is a bug: one line and exit code 3, the
traceback only with --debug. Whatever is printed from student data goes through
`terminal_safe`, and library warnings go to the log file, never over the progress bar."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from grader import __version__
from grader.config.settings import Settings, resolve
from grader.errors import GraderError
from grader.escape import terminal_safe

F = TypeVar("F", bound=Callable[..., Any])
LOG_NAME = "grader.log"
EXIT_BUG = 3


def _debug() -> bool:
    return bool(click.get_current_context().find_root().params.get("debug"))


def _handle_errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except GraderError as e:
            if _debug():
                raise
            click.secho(f"error: {terminal_safe(e.render())}", fg="red", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("\ninterrupted: finished grades are saved; run the same command to resume",
                       err=True)
            sys.exit(130)
        except Exception as e:
            if _debug():
                raise
            logging.getLogger("grader").exception("unexpected error")
            click.secho(f"error: unexpected {type(e).__name__}: {terminal_safe(str(e))[:300]}"
                        "\n  fix: this is a bug in grader; rerun with --debug (before the "
                        "command) for the traceback, and report it", fg="red", err=True)
            sys.exit(EXIT_BUG)

    return wrapper  # type: ignore[return-value]


def _log_to(folder: Path) -> None:
    """Library warnings and log messages (pypdf, the extraction worker) go to FOLDER/grader.log
    (with --debug: to the terminal too), never over the progress bar."""
    logging.captureWarnings(True)
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if _debug() else logging.INFO)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(folder / LOG_NAME, encoding="utf-8")
    except OSError:
        handler = logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.handlers = [handler]
    if _debug():
        root.addHandler(logging.StreamHandler(sys.stderr))
    else:  # one INFO line per HTTP request would bury what matters
        for noisy in ("httpx", "httpx2", "httpcore", "httpcore2", "aiohttp", "google_genai"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


@click.group()
@click.version_option(__version__, prog_name="grader")
@click.option("--debug", is_flag=True, help="Show full tracebacks and log to the terminal.")
def cli(debug: bool) -> None:
    """Grade a class folder of submissions against a rubric with Gemini or a local model."""


@cli.command()
@click.argument("folder", type=click.Path(path_type=Path))
@_handle_errors
def init(folder: Path) -> None:
    """Scaffold an assignment: rubric.yaml, grader.toml and submissions/."""
    from grader.prompting.scaffold import init_assignment

    for path in init_assignment(folder):
        click.echo(f"created {path}")
    click.echo(f"next: put submissions in {folder / 'submissions'}, edit the rubric, then "
               f"`grade run {folder / 'submissions'}`")


def _settings(class_dir: Path | None, *, with_out: bool = False, **flags: Any) -> Settings:
    """The command's settings, resolved once (`with_out`: a command that writes outputs, whose
    `out` defaults to reports/<class folder name>)."""
    return resolve(flags, class_dir=class_dir, with_out=with_out)


def _split(values: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """Repeated or comma-separated option values; None when the option was not given."""
    if not values:
        return None
    return tuple(v.strip() for raw in values for v in raw.split(",") if v.strip())


def _exemplar_options(fn: F) -> F:
    """Graded examples in each prompt: the same choice for `grade run` and batch jobs."""
    for option in reversed((
            click.option("--exemplars", type=int, metavar="K",
                         help="Show each student's prompt the K most similar graded examples "
                              "(the rubric's and teacher-reviewed grades) [default: 0, none]."),
            click.option("--exemplar-db", type=click.Path(path_type=Path, dir_okay=False),
                         help="Store whose teacher-reviewed grades form the example bank "
                              "[default: the class's store]."),
            click.option("--exemplar-similarity",
                         type=click.Choice(["auto", "tfidf", "embeddings"]),
                         help="Compare examples by TF-IDF (local) or Gemini embeddings of the "
                              "redacted texts [default: auto, embeddings when the backend can "
                              "embed]."))):
        fn = option(fn)
    return fn


@cli.command()
@click.argument("class_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--rubric", type=click.Path(path_type=Path, dir_okay=False), help="Rubric YAML.")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False),
              help="Output folder [default: reports/<class folder name>].")
@click.option("--db", type=click.Path(path_type=Path, dir_okay=False),
              help="SQLite store [default: CLASS_DIR/.grader/grader.sqlite].")
@click.option("--backend",
              help="gemini | enterprise (vertex) | local [default: gemini if a key is set].")
@click.option("--model", help="Model name.")
@click.option("--model-path", type=click.Path(path_type=Path, dir_okay=False),
              help="GGUF file for the local backend.")
@click.option("--n-ctx", type=int, help="Context size of the local model, in tokens.")
@click.option("--project", help="Google Cloud project (vertex backend).")
@click.option("--location", help="Google Cloud location (vertex backend) [default: global].")
@click.option("--prompts", type=click.Path(path_type=Path, file_okay=False),
              help="Folder of .j2 templates overriding prompts/.")
@click.option("--roster", type=click.Path(path_type=Path, dir_okay=False), help="Roster CSV.")
@click.option("--concurrency", type=int, help="Requests in flight at once.")
@click.option("--rpm", type=int, help="Requests per minute quota.")
@click.option("--tpm", type=int, help="Tokens per minute quota.")
@click.option("--max-output-tokens", type=int,
              help="Output token cap per request (thinking counts against it).")
@click.option("--thinking", type=click.Choice(["minimal", "low", "medium", "high"]),
              help="Gemini thinking level [default: the model table's, e.g. low].")
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
@click.option("--limit", type=int, help="Grade only the first N students.")
@click.option("--only", multiple=True, metavar="ID[,ID…]",
              help="Grade only these students (repeat, or separate with commas).")
@click.option("--retry-flagged", multiple=True, is_flag=False, flag_value="*",
              metavar="[REASON,…]",
              help="Grade flagged students again (only those flagged for REASON, if given).")
@click.option("--regrade", is_flag=True, default=None,
              help="Ask the model again even if a grade is stored (resumable).")
@click.option("--dry-run", is_flag=True, default=None,
              help="Render prompts for the first students; call no model.")
@click.option("--redact/--no-redact", "redact", default=None,
              help="Replace student names, e-mails, ids and phone numbers by placeholders "
                   "before sending [default: on, except for the local backend].")
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
    from grader.config.settings import db_path
    from grader.online import pipeline

    retry = _split(retry_flagged)
    settings = _settings(class_dir, with_out=True, only=_split(only),
                         retry_flagged=tuple(r for r in retry if r != "*") if retry else None,
                         **flags)
    _log_to(db_path(class_dir, settings).parent)
    if settings.dry_run:
        from grader.online.dry_run import dry_run

        _print_dry_run(*dry_run(class_dir, settings))
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


def _print_dry_run(plan: Any, items: list[Any]) -> None:
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
    for o in s.outcomes:
        if o.status == "flagged":
            flagged.setdefault(o.reason or "flagged", []).append(o.student_id)
        elif o.status == "failed":
            failed.setdefault(o.message or "failed", []).append(o.student_id)
    for reason, ids in sorted(flagged.items()):
        click.echo(terminal_safe(f"  flagged {reason}: {_ids(ids)}", newlines=False))
    for message, ids in failed.items():  # identical errors collapse into one line
        click.echo(terminal_safe(f"  failed ({_ids(ids)}): {message}"))
    _print_suspected(s.injection_suspected)
    if not s.redacted and s.backend != "local":
        click.echo("  names, e-mails and ids were sent unredacted (--no-redact)")
    line = _cache_line(s)
    if line:
        click.echo(line)
    if s.embeddings is not None:
        click.echo(_embedding_line(s.embeddings, priced=s.cost_usd is not None))
    for notice in s.notices:
        click.secho(f"note: {terminal_safe(notice)}", fg="yellow")
    _print_written(s.outputs)


def _cost_line(s: Any) -> str:
    """The run's cost, with its budget; empty for a model without prices (local)."""
    if s.cost_usd is None:
        return ""
    tier = "" if s.tier == "standard" else f", {s.tier} tier"
    line = f"cost: ${s.cost_usd:.4f} (model table prices{tier}"
    line += f"; {s.unpriced} calls without a price)" if s.unpriced else ")"
    if s.budget is not None:
        line += f"; budget ${s.budget:g}"
        if s.skipped_budget:
            line += (f": {s.skipped_budget} students skipped, rerun with a larger --budget to "
                     "continue (paid work is reused)")
    return line + "\n"


def _embedding_line(e: Any, *, priced: bool) -> str:
    """What comparing the examples by embeddings took (and cost)."""
    return (f"  examples compared by embeddings ({e.model}): {e.texts} redacted text(s) in "
            f"{e.calls} call(s), about {e.tokens:,} tokens, ${e.cost_usd:.4f}"
            + (", included above" if priced else ""))


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


def _ids(ids: list[str], shown: int = 8) -> str:
    head = ", ".join(ids[:shown])
    more = f" and {len(ids) - shown} more" if len(ids) > shown else ""
    return f"{len(ids)}: {head}{more}" if len(ids) > 1 else head


def _print_written(paths: list[Path]) -> None:
    """One line per top-level output; per-student pages summarised by folder."""
    folders: dict[Path, int] = {}
    for p in paths:
        if p.parent.name in ("students", "handouts"):
            folders[p.parent] = folders.get(p.parent, 0) + 1
        else:
            click.echo(f"wrote {p}")
    for folder, n in folders.items():
        view = "teacher view" if folder.name == "students" else "student view, to hand out"
        click.echo(f"wrote {folder}/ ({n} student pages, {view})")
    fresh = next((p for p in paths if p.suffix == ".xlsx"), None)
    if fresh is not None and fresh.name != "review.xlsx":
        click.echo(f"note: {fresh.parent / 'review.xlsx'} was left as it is (it is the file "
                   "being imported, or was edited since grader wrote it); the workbook with "
                   f"every stored decision is {fresh}")


@cli.command()
@click.argument("class_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--rubric", type=click.Path(path_type=Path, dir_okay=False), help="Rubric YAML.")
@click.option("--backend", help="gemini | enterprise | vertex (countTokens) [default: auto].")
@click.option("--model", help="Model name [default: the model table's].")
@click.option("--thinking", type=click.Choice(["minimal", "low", "medium", "high"]),
              help="Gemini thinking level [default: the model table's].")
@click.option("--max-output-tokens", type=int, help="Output token cap per request.")
@click.option("--concurrency", type=int, help="Requests in flight at once.")
@click.option("--rpm", type=int, help="Requests per minute quota.")
@click.option("--tpm", type=int, help="Tokens per minute quota.")
@click.option("--limit", type=int, help="Only the first N students.")
@click.option("--redact/--no-redact", "redact", default=None,
              help="Count the requests as `grade run` would send them: with names, e-mails and "
                   "ids replaced [default: on for Gemini].")
@_exemplar_options
@_handle_errors
def estimate(class_dir: Path, **flags: Any) -> None:
    """Project what grading CLASS_DIR would cost and take (online, flex, batch); no grading."""
    from grader.online.estimate import estimate as project
    from grader.online.estimate import render_text

    click.echo(render_text(project(class_dir, _settings(class_dir, **flags)), class_dir))


@cli.command()
@click.argument("class_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--db", type=click.Path(path_type=Path, dir_okay=False))
@_handle_errors
def status(class_dir: Path, db: Path | None) -> None:
    """Show what the store holds for CLASS_DIR."""
    from grader.reports.status import class_status

    click.echo(class_status(class_dir, _settings(class_dir, db=db)))


@cli.command()
@click.argument("class_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--db", type=click.Path(path_type=Path, dir_okay=False),
              help="SQLite store [default: CLASS_DIR/.grader/grader.sqlite].")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False),
              help="Output folder [default: reports/<class folder name>].")
@click.option("--run", "run_id", type=int, help="Run id [default: the latest run of CLASS_DIR].")
@_handle_errors
def report(class_dir: Path, db: Path | None, out: Path | None, run_id: int | None) -> None:
    """Regenerate every output from the store (no model is called)."""
    from grader.reports.write import regenerate

    settings = _settings(class_dir, db=db, out=out)
    _print_written(regenerate(class_dir, settings, run_id))


@cli.group()
def review() -> None:
    """The teacher's review loop: import the edited review.xlsx."""


@review.command("import")
@click.argument("workbook", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--db", type=click.Path(path_type=Path, dir_okay=False),
              help="SQLite store [default: found relative to the workbook].")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False),
              help="Where to regenerate reports [default: the run's output folder].")
@click.option("--dry-run", is_flag=True, help="Show what would change, per student; store "
                                                "nothing.")
@click.option("--force", is_flag=True, help="On a conflict, store the workbook's value.")
@_handle_errors
def review_import(workbook: Path, db: Path | None, out: Path | None, dry_run: bool,
                  force: bool) -> None:
    """Merge WORKBOOK's changed cells into the store (scores, feedback, notes, approvals)."""
    from grader.review.importing import import_and_report, report_lines

    result, paths = import_and_report(workbook, db, out, force=force, dry_run=dry_run)
    for line in report_lines(result):
        click.echo(terminal_safe(line))
    _print_written(paths)


@cli.command()
@click.argument("class_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--n", "n", type=int, default=10, show_default=True,
              help="Students in the sample.")
@click.option("--rater", default="teacher", show_default=True,
              help="Your name in the workbook's rater column.")
@click.option("--rubric", type=click.Path(path_type=Path, dir_okay=False), help="Rubric YAML.")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False),
              help="Where calibration.xlsx goes [default: reports/<class folder name>].")
@click.option("--db", type=click.Path(path_type=Path, dir_okay=False),
              help="SQLite store [default: CLASS_DIR/.grader/grader.sqlite].")
@click.option("--backend", help="gemini | vertex | local [default: gemini if a key is set].")
@click.option("--model", help="Model name.")
@click.option("--model-path", type=click.Path(path_type=Path, dir_okay=False),
              help="GGUF file for the local backend.")
@_handle_errors
def calibrate(class_dir: Path, n: int, rater: str, **flags: Any) -> None:
    """Check the rubric on a few students you score blind, before grading the class: the first
    call writes calibration.xlsx; run it again once you have scored it."""
    from grader.config.settings import db_path
    from grader.quality.calibration import Written
    from grader.quality.calibration import calibrate as run_calibration
    from grader.quality.evaluation import render_text

    settings = _settings(class_dir, with_out=True, **flags)
    _log_to(db_path(class_dir, settings).parent)
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


@cli.group()
def human() -> None:
    """Human graders' scores, the reference `grade eval` measures the model against."""


@human.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.argument("class_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--db", type=click.Path(path_type=Path, dir_okay=False),
              help="SQLite store [default: CLASS_DIR/.grader/grader.sqlite].")
@click.option("--rubric", type=click.Path(path_type=Path, dir_okay=False), help="Rubric YAML.")
@_handle_errors
def human_import(file: Path, class_dir: Path, db: Path | None, rubric: Path | None) -> None:
    """Store human scores for CLASS_DIR from FILE (.csv or .xlsx; columns student_id,
    criterion (an id or `total`), score, rater)."""
    from grader.quality.human import import_scores

    r = import_scores(file, class_dir, _settings(class_dir, db=db, rubric=rubric))
    if not r.stored:
        click.echo(f"{file}: already imported for this class; nothing changed")
        return
    click.echo(f"imported {r.rows} scores for {r.students} students by "
               f"{terminal_safe(', '.join(r.raters))}")


@cli.group()
def tune() -> None:
    """Supervised tuning on the teacher's reviewed grades (Gemini Enterprise / Vertex AI)."""


@tune.command("export")
@click.argument("class_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--out", type=click.Path(path_type=Path, file_okay=False),
              help="Folder for the dataset [default: reports/<class folder name>/tuning].")
@click.option("--db", type=click.Path(path_type=Path, dir_okay=False),
              help="SQLite store [default: CLASS_DIR/.grader/grader.sqlite].")
@click.option("--run", "run_id", type=int, help="Run id [default: the latest run of CLASS_DIR].")
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
@click.argument("class_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--base", "base_model", required=True, help="Base model to tune.")
@click.option("--data", type=click.Path(path_type=Path, file_okay=False),
              help="Folder `grade tune export` wrote [default: reports/<class>/tuning].")
@click.option("--name", "display_name", help="The tuned model's name, for --model tuned:NAME "
              "[default: grader-<class folder name>].")
@click.option("--epochs", type=int, help="Training epochs [default: the service's].")
@click.option("--backend", help="enterprise (vertex) [default: from the environment].")
@click.option("--project", help="Google Cloud project.")
@click.option("--location", help="Google Cloud location [default: global].")
@click.option("--db", type=click.Path(path_type=Path, dir_okay=False),
              help="SQLite store [default: CLASS_DIR/.grader/grader.sqlite].")
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
@click.argument("class_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--cancel", metavar="NAME", help="Cancel this job (its name or display name).")
@click.option("--backend", help="enterprise (vertex) [default: from the environment].")
@click.option("--project", help="Google Cloud project.")
@click.option("--location", help="Google Cloud location [default: global].")
@click.option("--db", type=click.Path(path_type=Path, dir_okay=False),
              help="SQLite store [default: CLASS_DIR/.grader/grader.sqlite].")
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


@cli.command("eval")
@click.argument("class_dirs", nargs=-1, required=True,
                type=click.Path(path_type=Path, file_okay=False))
@click.option("--run", "run_id", type=int,
              help="Run id [default: the latest run of CLASS_DIR; one class only].")
@click.option("--rater", help="The human rater to compare with [default: the one with most "
              "scores].")
@click.option("--csv", "csv_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Also write the figures to this CSV file.")
@click.option("--db", type=click.Path(path_type=Path, dir_okay=False),
              help="SQLite store [default: CLASS_DIR/.grader/grader.sqlite].")
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


@cli.command("export")
@click.argument("out", type=click.Path(path_type=Path, file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["canvas", "moodle", "csv"]), required=True,
              help="Gradebook format.")
@click.option("--db", type=click.Path(path_type=Path, dir_okay=False),
              help="SQLite store [default: found from OUT/review.xlsx].")
@click.option("--approved-only", is_flag=True,
              help="Export only grades marked Approved; withhold the rest.")
@click.option("--canvas-gradebook", type=click.Path(path_type=Path, dir_okay=False),
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
@click.option("--roster", type=click.Path(path_type=Path, dir_okay=False),
              help="Roster CSV with the students' LMS identifiers [default: the class's].")
@_handle_errors
def export(out: Path, fmt: str, db: Path | None, **options: Any) -> None:
    """Write an LMS gradebook of final grades from OUT (the folder holding review.xlsx)."""
    from grader.reports.export import ExportOptions, export_from_outdir

    r = export_from_outdir(out, fmt, db, ExportOptions(**options))
    click.echo(f"wrote {r.path}: {r.exported} grades of run {r.run_id}")
    if r.never_reviewed:
        click.echo(f"  {r.never_reviewed} of them were never reviewed by a teacher (the AI's "
                   "grade as it stands); --approved-only exports approved grades only")
    if r.scale:
        click.echo(f"  totals scaled from {r.scale[0]:g} to {r.scale[1]:g} points")
    if r.withheld_path is not None:
        click.echo(f"  {len(r.withheld)} students withheld (left out of the file): listed with "
                   f"the reason in {r.withheld_path}")
    elif r.withheld:
        click.echo(f"  {len(r.withheld)} students withheld: see export_status in {r.path}")
    for w in r.warnings:
        click.secho(terminal_safe(f"warning: {w}"), fg="yellow", err=True)


@cli.group()
def batch() -> None:
    """Grade through provider batch jobs (half price, results within hours; run `batch sync`
    from cron)."""


def _batch_options(fn: F) -> F:
    for option in reversed((
            click.option("--rubric", type=click.Path(path_type=Path, dir_okay=False),
                         help="Rubric YAML."),
            click.option("--api", "backend", type=click.Choice(["gemini", "enterprise"]),
                         help="Developer API (gemini) or Gemini Enterprise/Vertex batch "
                         "prediction [default: auto]."),
            click.option("--db", type=click.Path(path_type=Path, dir_okay=False),
                         help="SQLite store [default: CLASS_DIR/.grader/grader.sqlite]."),
            click.option("--out", type=click.Path(path_type=Path, file_okay=False),
                         help="Output folder [default: reports/<class folder name>]."),
            click.option("--model", help="Model name."),
            click.option("--project", help="Google Cloud project (enterprise)."),
            click.option("--location", help="Google Cloud location (enterprise)."))):
        fn = option(fn)
    return fn


def _batch_settings(class_dir: Path, **flags: Any) -> Settings:
    from grader.config.settings import db_path

    settings = _settings(class_dir, with_out=True, **flags)
    _log_to(db_path(class_dir, settings).parent)
    return settings


_reask_option = click.option(
    "--reask", "batch_reask", type=click.Choice(["batch", "online"]),
    help="An answer that needs the one re-ask: a second, small batch round, or an online call "
         "(online price) in this collect [default: batch].")


def _submit_options(fn: F) -> F:
    for option in reversed((
            click.option("--thinking", type=click.Choice(["minimal", "low", "medium", "high"]),
                         help="Thinking level [default: the model's]."),
            click.option("--max-output-tokens", type=int,
                         help="Output token cap per request (thinking included)."),
            click.option("--limit", type=int, help="Only the first N students."),
            click.option("--only", multiple=True, metavar="ID[,ID…]",
                         help="Only these students."),
            click.option("--batch-mode", type=click.Choice(["auto", "inline", "file"]),
                         help="Developer API job input: inline requests or a JSONL file "
                         "[default: auto, inline under batch_inline_mb]."),
            click.option("--retry-failed", is_flag=True,
                         help="Send again the lines of failed or expired jobs."))):
        fn = option(fn)
    return _exemplar_options(fn)


def _print_submitted(s: Any) -> None:
    if not s.jobs:
        click.echo("nothing to submit"
                   + (f" ({s.in_flight} in flight)" if s.in_flight else ""))
    else:
        click.echo(f"submitted {s.requests} request(s) in {len(s.jobs)} job(s): "
                   + ", ".join(s.jobs))
    if s.reused:
        click.echo(f"  {s.reused} already graded (kept)")
    if s.embeddings is not None:
        click.echo(_embedding_line(s.embeddings, priced=False))
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


@batch.command("submit")
@click.argument("class_dir", type=click.Path(path_type=Path, file_okay=False))
@_batch_options
@_submit_options
@_handle_errors
def batch_submit(class_dir: Path, only: tuple[str, ...], retry_failed: bool,
                 **flags: Any) -> None:
    """Submit batch jobs for every student of CLASS_DIR not yet graded or in flight."""
    from grader.batch.submit import submit_class

    settings = _batch_settings(class_dir, only=_split(only), **flags)
    _print_submitted(submit_class(class_dir, settings, retry_failed=retry_failed))


@batch.command("status")
@click.argument("class_dir", required=False, default=".",
                type=click.Path(path_type=Path, file_okay=False))
@_batch_options
@_handle_errors
def batch_status(class_dir: Path, **flags: Any) -> None:
    """Every batch job of CLASS_DIR (default: the current folder): state, requests, age, cost
    so far."""
    from grader.batch.submit import status_class

    jobs = status_class(class_dir, _batch_settings(class_dir, **flags))
    if not jobs:
        click.echo("no batch jobs")
    for j in jobs:
        c = j.counts
        state = j.job.state.removeprefix("JOB_STATE_").lower()
        click.echo(f"{j.job.name or j.job.display_name}  {state}  round {j.job.round}  "
                   f"{j.job.requests} request(s): {int(c.get('stored', 0))} stored, "
                   f"{int(c.get('pending', 0))} pending, {int(c.get('failed', 0))} failed, "
                   f"{int(c.get('reasked', 0))} re-asked  age {j.age_s / 3600:.1f} h  "
                   f"${c['cost_usd']:.4f}")


@batch.command("collect")
@click.argument("class_dir", required=False, default=".",
                type=click.Path(path_type=Path, file_okay=False))
@_batch_options
@_reask_option
@click.option("--wait", "wait_done", is_flag=True,
              help="Poll (with a growing wait) until every job is done.")
@_handle_errors
def batch_collect(class_dir: Path, wait_done: bool, **flags: Any) -> None:
    """Store the results of finished jobs of CLASS_DIR (default: the current folder), exactly
    once, and write the reports."""
    from grader.batch.submit import collect_class

    def on_poll(c: Any) -> None:
        click.echo(f"{c.running} job(s) still running; waiting", err=True)

    c = collect_class(class_dir, _batch_settings(class_dir, **flags), wait=wait_done,
                      on_poll=on_poll)
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


def _print_suspected(ids: list[str]) -> None:
    if ids:
        click.echo(terminal_safe(
            f"  injection suspected (graded; first in review.xlsx): {_ids(ids)}",
            newlines=False))


@batch.command("cancel")
@click.argument("job")
@click.argument("class_dir", type=click.Path(path_type=Path, file_okay=False))
@_batch_options
@_handle_errors
def batch_cancel(job: str, class_dir: Path, **flags: Any) -> None:
    """Cancel the batch job JOB (its name, or grader's display name) of CLASS_DIR."""
    from grader.batch.submit import cancel_job

    info = cancel_job(class_dir, _batch_settings(class_dir, **flags), job)
    click.echo(f"{info.name}: {info.state.removeprefix('JOB_STATE_').lower()}")


@batch.command("sync")
@click.argument("class_dir", type=click.Path(path_type=Path, file_okay=False))
@_batch_options
@_submit_options
@_reask_option
@_handle_errors
def batch_sync(class_dir: Path, only: tuple[str, ...], retry_failed: bool,
               **flags: Any) -> None:
    """Collect finished jobs, then submit what is new or changed: the one command for cron.
    Prints one line; exits 0 when there is nothing to do or another run holds the store."""
    from grader.batch.submit import sync_class

    settings = _batch_settings(class_dir, only=_split(only), **flags)
    click.echo(terminal_safe(sync_class(class_dir, settings, retry_failed=retry_failed).line()))


def main() -> None:
    cli(prog_name="grade")


if __name__ == "__main__":
    main()
