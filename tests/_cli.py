"""`grade` in this process (click's CliRunner) and one query of a store: what most end-to-end
tests need."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from click.testing import CliRunner

from grader.cli import cli


def grade(*args: str) -> tuple[int, str]:
    """`grade ARGS...`: (exit code, everything it printed)."""
    res = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return res.exit_code, res.output


def q(db: Path, sql: str) -> list[tuple]:
    """The rows of one query of the store `db`."""
    with sqlite3.connect(db) as conn:
        return list(conn.execute(sql))
