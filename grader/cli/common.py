"""What the commands share: the error handler every command wears, the log file, settings
resolution, the printing helpers several commands use, and the options several commands take,
each defined once here (a command whose option means something particular words its help
itself, with `.with_help`)."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from grader.cli import options as opt
from grader.config.settings import Settings, db_path, resolve
from grader.errors import GraderError
from grader.escape import terminal_safe
from grader.intake.discover import check_class_folder
from grader.outputs import check_out_dir, check_owner

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
    """Library warnings and log messages (pypdf, the extraction worker) go to opt.FOLDER/grader.log
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


def _settings(class_dir: Path | None, *, with_out: bool = False, with_log: bool = False,
              **flags: Any) -> Settings:
    """The command's settings, resolved once. `with_out`: a command that grades or writes a
    class's outputs: its `out` defaults to reports/<class folder name> and must be the class's
    own (`check_out_dir`, `check_owner`), checked before anything, its log included.
    `with_log` (implied by `with_out`): its log goes to grader.log beside the class's store
    (`_log_to`)."""
    settings = resolve(flags, class_dir=class_dir, with_out=with_out,
                       flag_names=_flag_names(flags))
    if class_dir is None:
        return settings
    if with_out:
        check_class_folder(class_dir)  # said before the log, which would start in the folder
        if settings.out is not None:
            check_out_dir(class_dir, settings.out)
            check_owner(settings.out, class_dir)
    if (with_out or with_log) and (class_dir.is_dir() or settings.db is not None):
        # (a mistyped class folder is never made, to hold the log)
        _log_to(db_path(class_dir, settings).parent)
    return settings


def _flag_names(flags: dict[str, Any]) -> dict[str, str]:
    """The option of the running command each flag came from (its long form, e.g. "timeout_s"
    -> "--timeout"; "--no-redact" for a false --redact/--no-redact), so that a refused value
    names the flag as the user typed it."""
    ctx = click.get_current_context(silent=True)
    out: dict[str, str] = {}
    for param in ctx.command.params if ctx is not None else ():
        if isinstance(param, click.Option) and param.name in flags:
            off = flags[param.name] is False and param.secondary_opts
            out[param.name] = max(param.secondary_opts if off else param.opts, key=len)
    return out


def _split(values: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """Repeated or comma-separated option values; None when the option was not given (given
    but empty, `--only "$IDS"` with the variable unset, it stays empty and is refused by the
    selection check, not read as "not given")."""
    if not values:
        return None
    return tuple(v.strip() for raw in values for v in raw.split(",") if v.strip())


def _exemplar_options(fn: F) -> F:
    """Graded examples in each prompt: the same choice for `grade run` and batch jobs."""
    for option in reversed((
            click.option("--exemplars", type=int, metavar="K",
                         help="Show each student's prompt the K most similar graded examples "
                              "(the rubric's and teacher-reviewed grades) [default: 0, none]."),
            click.option("--exemplar-db", type=opt.FILE,
                         help="Store whose teacher-reviewed grades form the example bank "
                              "[default: the class's store]."),
            click.option("--exemplar-similarity",
                         type=click.Choice(["auto", "tfidf", "embeddings"]),
                         help="Compare examples by TF-IDF (local) or Gemini embeddings of the "
                              "redacted texts [default: auto, embeddings when the backend can "
                              "embed]."))):
        fn = option(fn)
    return fn


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
    for folder, n in folders.items():
        if folder.name == "students":
            missing = n - folders.get(folder.parent / "handouts", 0)
            if missing:
                click.echo(f"  {missing} of {n} students have no handout: one is written once "
                           "the grade is reviewed or approved and may leave (--handouts all: "
                           "every grade that may leave, stamped \"not yet reviewed\")")
    fresh = next((p for p in paths if p.suffix == ".xlsx"), None)
    if fresh is not None and fresh.name != "review.xlsx":
        click.echo(f"note: {fresh.parent / 'review.xlsx'} was left as it is (it is the file "
                   "being imported, or was edited since grader wrote it); the workbook with "
                   f"every stored decision is {fresh}")


def _print_suspected(ids: list[str]) -> None:
    if ids:
        click.echo(terminal_safe(
            f"  injection suspected (graded; first in review.xlsx): {_ids(ids)}",
            newlines=False))


def _screen_line(r: Any, *, priced: bool) -> str:
    """What the model-based injection check took (and cost)."""
    cost = "unpriced" if r.cost_usd is None else f"${r.cost_usd:.4f}" + (
        ", included above" if priced else "")
    skipped = f", {r.skipped} skipped (budget or a failed call)" if r.skipped else ""
    if r.unreadable:
        skipped += (f", {r.unreadable} unreadable (the reply was cut or malformed: no verdict, "
                    "the pattern check stands)")
    return (f"  injection check by the model ({r.model}): {r.calls} call(s), {r.reused} "
            f"reused from the store{skipped}, {r.flagged} said injection; about "
            f"{r.tokens:,} tokens, {cost}")


def _embedding_line(e: Any, *, priced: bool) -> str:
    """What comparing the examples by embeddings took (and cost)."""
    return (f"  examples compared by embeddings ({e.model}): {e.texts} redacted text(s) in "
            f"{e.calls} call(s), about {e.tokens:,} tokens, ${e.cost_usd:.4f}"
            + (", included above" if priced else ""))
