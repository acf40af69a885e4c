"""The options and arguments several commands take, each defined once: `@opt.DB` adds `--db`
as defined here, `@opt.DB.with_help(...)` with the command's own help text (for a command
where the option means something particular). Commands import this module as `opt`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


class SharedOption:
    """An option several commands take, defined once. `@OPTION` adds it as defined here;
    `@OPTION.with_help(...)` adds it with the command's own help text, for a command where the
    option means something particular (another default, a narrower choice)."""

    def __init__(self, *decls: str, **attrs: Any) -> None:
        self.decls, self.attrs = decls, attrs

    def __call__(self, fn: F) -> F:
        return click.option(*self.decls, **self.attrs)(fn)

    def with_help(self, text: str) -> Callable[[F], F]:
        return click.option(*self.decls, **{**self.attrs, "help": text})


# What a path option takes: a file, or a folder (neither needs to exist yet).
FILE = click.Path(path_type=Path, dir_okay=False)
FOLDER = click.Path(path_type=Path, file_okay=False)

CLASS_DIR = click.argument("class_dir", type=FOLDER)

RUBRIC = SharedOption("--rubric", type=FILE, help="Rubric YAML.")
OUT = SharedOption("--out", type=FOLDER,
                          help="Output folder [default: reports/<class folder name>].")
DB = SharedOption("--db", type=FILE,
                         help="SQLite store [default: CLASS_DIR/.grader/grader.sqlite].")
RUN = SharedOption("--run", "run_id", type=int,
                          help="Run id [default: the latest run of CLASS_DIR].")
ROSTER = SharedOption("--roster", type=FILE, help="Roster CSV.")
HANDOUTS = SharedOption(
    "--handouts", type=click.Choice(["reviewed", "all"]),
    help="Which handouts (handouts/, the pages for students) to write: reviewed = grades a "
         "teacher reviewed or approved; all = every grade that may leave, each one not yet "
         "reviewed stamped so [default: reviewed].")
BACKEND = SharedOption(
    "--backend", help="gemini | enterprise (vertex) | local | openai (a school's own model "
    "server, at --base-url) [default: gemini if a key is set].")
BASE_URL = SharedOption(
    "--base-url", help="The model server's /v1 root for --backend openai, e.g. "
    "http://localhost:11434/v1.")
MODEL = SharedOption("--model", help="Model name.")
MODEL_PATH = SharedOption("--model-path", type=FILE,
                                 help="GGUF file for the local backend.")
PROJECT = SharedOption("--project", help="Google Cloud project (enterprise).")
LOCATION = SharedOption("--location",
                               help="Google Cloud location (enterprise) [default: global].")
THINKING = SharedOption("--thinking",
                               type=click.Choice(["minimal", "low", "medium", "high"]),
                               help="Gemini thinking level [default: the model table's, e.g. "
                                    "low].")
MAX_OUTPUT_TOKENS = SharedOption(
    "--max-output-tokens", type=int,
    help="Output token cap per request (thinking counts against it).")
CONCURRENCY = SharedOption("--concurrency", type=int,
                           help="A cap on requests in flight (default: as many as the quota "
                           "allows).")
RPM = SharedOption("--rpm", type=int, help="Requests per minute quota.")
TPM = SharedOption("--tpm", type=int, help="Tokens per minute quota.")
LIMIT = SharedOption("--limit", type=int, help="Only the first N students.")
ONLY = SharedOption("--only", multiple=True, metavar="ID[,ID…]",
                           help="Only these students (repeat, or separate with commas).")
REDACT = SharedOption(
    "--redact/--no-redact", "redact", default=None,
    help="Replace student names, e-mails, ids and phone numbers by placeholders before sending "
         "[default: on, except for the local backend].")
INJECTION_CHECK = SharedOption(
    "--injection-check/--no-injection-check", "injection_check", default=None,
    help="Before grading, ask the model whether each submission tries to steer its grade: one "
         "small call per distinct text, stored and never paid twice, within --budget "
         "[default: off; the phrase patterns run either way].")
