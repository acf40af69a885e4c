"""Helpers for tests that run `grade run` as a real process against the fake Gemini server."""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path

from grader.online.ledger import KILL_AFTER_REPLY_ENV
from grader.testing.fake_gemini import FakeGemini


def env_for(fake: FakeGemini, **extra: str) -> dict[str, str]:
    """This process's environment, pointed at `fake` with a Gemini key."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI",
                        "GOOGLE_GENAI_USE_ENTERPRISE", KILL_AFTER_REPLY_ENV)}
    env.update(GEMINI_API_KEY="k", GOOGLE_GEMINI_BASE_URL=fake.url, **extra)
    return env


def grade_cmd(class_dir: Path, db: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "grader.cli", "run", str(class_dir), "--db", str(db),
            "--out", str(db.parent / "out"), *extra]


def scalar(db: Path, sql: str) -> int:
    """One number from the store, or 0 while it does not exist yet."""
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return int(conn.execute(sql).fetchone()[0] or 0)
    except sqlite3.Error:  # tables not created yet
        return 0


def paid(fake: FakeGemini) -> tuple[int, int]:
    """(replies the fake delivered, distinct requests among them)."""
    by_request = fake.stats()["billed_by_request"]
    return sum(by_request.values()), len(by_request)
