"""One error hierarchy. Every message says what went wrong, where, and how to fix it.

The CLI maps `GraderError` to a clean exit (code 2 for user errors); anything else is a bug
and gets a traceback only under `--debug`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

if TYPE_CHECKING:
    from grader.online.ratelimit import QuotaHint


class GraderError(Exception):
    """Base class: a problem the user can fix. `str(err)` is the full, actionable message."""

    exit_code = 2

    def __init__(self, message: str, *, fix: str | None = None, path: Path | str | None = None):
        self.message = message
        self.fix = fix
        self.path = str(path) if path is not None else None
        super().__init__(self.render())

    def render(self) -> str:
        where = f"{self.path}: " if self.path else ""
        tail = f"\n  fix: {self.fix}" if self.fix else ""
        return f"{where}{self.message}{tail}"


class ConfigError(GraderError):
    """Bad settings: grader.toml, environment, flags."""


class RubricError(GraderError):
    """The rubric file is missing or invalid."""


class PromptError(GraderError):
    """A prompt template is missing or fails to render."""


class InputError(GraderError):
    """The class folder or roster cannot be read."""


class SubmissionError(GraderError):
    """One student's submission cannot be graded; the student is flagged and the run goes on.

    `reason` is a short machine-readable code stored with the flag (e.g. "empty", "binary",
    "password_protected", "oversized", "unreadable", "unsupported").
    """

    def __init__(self, reason: str, message: str, *, fix: str | None = None,
                 path: Path | str | None = None):
        self.reason = reason
        super().__init__(message, fix=fix, path=path)


class BackendError(GraderError):
    """A model backend failed. `transient` errors may be retried; the rest are final."""

    def __init__(self, message: str, *, fix: str | None = None, transient: bool = False,
                 status: int | None = None, retry_after: float | None = None,
                 run_wide: bool = False, rejected: bool = False, retries: int = 0,
                 gone: str | None = None, quota: QuotaHint | None = None):
        # run_wide: bad credentials, an unknown model or an unreachable service fail every
        # request alike, so the run stops at once instead of failing each student the same way.
        # rejected: the service refused this one request for good (a deterministic 4xx): the
        # student is flagged `request_rejected`, not failed.
        self.run_wide = run_wide
        self.rejected = rejected
        self.transient = transient
        self.status = status
        self.retry_after = retry_after
        self.retries = retries
        # gone: the request named something the service no longer has ("cache": the explicit
        # cache expired or was deleted; "file": an uploaded file): recreate it and send again.
        self.gone = gone
        # quota: a 429's account of the limit it hit (which window, its value and period)
        self.quota = quota
        super().__init__(message, fix=fix)


class BudgetExceeded(GraderError):
    """A call would take the run past its --budget: the student is skipped (reason `budget`),
    and a rerun with a larger budget continues (replies already paid for are reused)."""

    exit_code = 1


class CalibrationError(GraderError):
    """The class's calibration is missing a step or is below the bar."""


class StoreError(GraderError):
    """The SQLite store cannot be opened or migrated."""


def some(items: Sequence[str], shown: int = 5) -> str:
    """The first `shown` items, then "and N more". A message lists what the user gave, and a
    mistaken or hostile input can give millions (one file named 1.5 million raters, and a
    message listing them all ran to 14 MB): every list in a message goes through this."""
    head = ", ".join(items[:shown])
    return head + (f" and {len(items) - shown:,} more" if len(items) > shown else "")


def format_validation_error(err: ValidationError) -> str:
    """Render a pydantic error as one "field path: message" line per problem."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"{loc}: {e['msg']}")
    return "\n".join(lines)
