"""Numbered schema migrations, recorded in the database itself (`schema_migrations`).

Append a new (number, name, sql) entry to change the schema; never edit an applied one.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "initial", """
CREATE TABLE runs (
    id              INTEGER PRIMARY KEY,
    started_at      TEXT NOT NULL,
    finished_at     TEXT,
    status          TEXT NOT NULL DEFAULT 'running',
    class_dir       TEXT NOT NULL,
    backend         TEXT NOT NULL,
    model           TEXT NOT NULL,
    rubric_path     TEXT,
    rubric_hash     TEXT NOT NULL,
    prompt_hash     TEXT NOT NULL,
    schema_hash     TEXT NOT NULL,
    sdk_version     TEXT,
    grader_version  TEXT NOT NULL,
    settings_json   TEXT NOT NULL,
    rubric_json     TEXT NOT NULL
);
CREATE TABLE students (
    id      TEXT PRIMARY KEY,
    name    TEXT,
    email   TEXT,
    source  TEXT
);
CREATE TABLE submissions (
    id              INTEGER PRIMARY KEY,
    student_id      TEXT NOT NULL REFERENCES students(id),
    content_hash    TEXT NOT NULL,
    files_json      TEXT NOT NULL,
    late            INTEGER NOT NULL DEFAULT 0,
    notes_json      TEXT NOT NULL DEFAULT '[]',
    first_run_id    INTEGER REFERENCES runs(id),
    UNIQUE (student_id, content_hash)
);
CREATE TABLE attempts (
    id              INTEGER PRIMARY KEY,
    run_id          INTEGER NOT NULL REFERENCES runs(id),
    submission_id   INTEGER NOT NULL REFERENCES submissions(id),
    grade_key       TEXT NOT NULL,
    n               INTEGER NOT NULL,
    created_at      TEXT NOT NULL,
    request_json    TEXT,
    response_text   TEXT,
    raw_json        TEXT,
    error           TEXT,
    finish_reason   TEXT,
    prompt_tokens   INTEGER NOT NULL DEFAULT 0,
    output_tokens   INTEGER NOT NULL DEFAULT 0,
    thinking_tokens INTEGER NOT NULL DEFAULT 0,
    cached_tokens   INTEGER NOT NULL DEFAULT 0,
    model_version   TEXT,
    latency_ms      REAL,
    retries         INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX attempts_key ON attempts (grade_key);
CREATE TABLE grades (
    id              INTEGER PRIMARY KEY,
    grade_key       TEXT NOT NULL UNIQUE,
    submission_id   INTEGER NOT NULL REFERENCES submissions(id),
    run_id          INTEGER NOT NULL REFERENCES runs(id),
    student_id      TEXT NOT NULL REFERENCES students(id),
    status          TEXT NOT NULL CHECK (status IN ('graded', 'flagged')),
    total           REAL,
    max_total       REAL NOT NULL,
    percent         REAL,
    overall_comment TEXT,
    needs_review    INTEGER NOT NULL DEFAULT 0,
    review_reason   TEXT,
    model           TEXT NOT NULL,
    model_version   TEXT,
    created_at      TEXT NOT NULL
);
CREATE TABLE criterion_scores (
    grade_id        INTEGER NOT NULL REFERENCES grades(id) ON DELETE CASCADE,
    criterion_id    TEXT NOT NULL,
    position        INTEGER NOT NULL,
    score           REAL NOT NULL,
    max_points      REAL NOT NULL,
    justification   TEXT NOT NULL,
    evidence_json   TEXT NOT NULL,
    feedback        TEXT NOT NULL,
    PRIMARY KEY (grade_id, criterion_id)
);
CREATE TABLE flags (
    id          INTEGER PRIMARY KEY,
    grade_id    INTEGER REFERENCES grades(id) ON DELETE CASCADE,
    run_id      INTEGER NOT NULL REFERENCES runs(id),
    student_id  TEXT NOT NULL REFERENCES students(id),
    reason      TEXT NOT NULL,
    message     TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE INDEX flags_grade ON flags (grade_id);
-- One row per student per run: what happened to them in that run.
CREATE TABLE outcomes (
    run_id          INTEGER NOT NULL REFERENCES runs(id),
    student_id      TEXT NOT NULL REFERENCES students(id),
    submission_id   INTEGER REFERENCES submissions(id),
    grade_id        INTEGER REFERENCES grades(id) ON DELETE SET NULL,
    status          TEXT NOT NULL CHECK (status IN ('graded', 'flagged', 'failed', 'skipped')),
    reused          INTEGER NOT NULL DEFAULT 0,
    reason          TEXT,
    message         TEXT,
    PRIMARY KEY (run_id, student_id)
);
"""),
    (2, "teacher_review", """
-- Teacher decisions imported from review.xlsx. The AI's value stays in criterion_scores; these
-- rows hold what the teacher decided, keyed by run and student (a flagged student may have no
-- grade row, yet the teacher can still score them).
CREATE TABLE overrides (
    run_id           INTEGER NOT NULL REFERENCES runs(id),
    student_id       TEXT NOT NULL REFERENCES students(id),
    grade_id         INTEGER REFERENCES grades(id) ON DELETE SET NULL,
    criterion_id     TEXT NOT NULL,
    ai_score         REAL,
    teacher_score    REAL,
    teacher_feedback TEXT,
    imported_at      TEXT NOT NULL,
    workbook_sha256  TEXT NOT NULL,
    PRIMARY KEY (run_id, student_id, criterion_id)
);
-- Per-student review decisions: overall comment and approval.
CREATE TABLE reviews (
    run_id           INTEGER NOT NULL REFERENCES runs(id),
    student_id       TEXT NOT NULL REFERENCES students(id),
    grade_id         INTEGER REFERENCES grades(id) ON DELETE SET NULL,
    teacher_comment  TEXT,
    approved         INTEGER,
    imported_at      TEXT NOT NULL,
    workbook_sha256  TEXT NOT NULL,
    PRIMARY KEY (run_id, student_id)
);
-- Audit trail: one row per changed value per import (what the AI said, what was there before,
-- what the teacher set). Importing the same workbook again adds nothing.
CREATE TABLE review_log (
    id               INTEGER PRIMARY KEY,
    run_id           INTEGER NOT NULL REFERENCES runs(id),
    student_id       TEXT NOT NULL,
    criterion_id     TEXT,
    field            TEXT NOT NULL,
    ai_value         TEXT,
    old_value        TEXT,
    new_value        TEXT,
    cell             TEXT,
    imported_at      TEXT NOT NULL,
    workbook_sha256  TEXT NOT NULL
);
CREATE INDEX review_log_run ON review_log (run_id, student_id);
"""),
]


def current_version(conn: sqlite3.Connection) -> int:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    row = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
    return int(row[0] or 0)


def migrate(conn: sqlite3.Connection) -> list[int]:
    """Apply every pending migration, each in its own transaction. Returns the versions applied."""
    applied = []
    have = current_version(conn)
    for version, name, sql in MIGRATIONS:
        if version <= have:
            continue
        # executescript commits first; wrap in an explicit transaction so a crash
        # mid-migration leaves the previous version intact.
        conn.executescript(
            "BEGIN;\n" + sql
            + f"\nINSERT INTO schema_migrations (version, name, applied_at) VALUES "
            f"({version}, '{name}', '{datetime.now(UTC).isoformat()}');\nCOMMIT;"
        )
        applied.append(version)
    return applied
