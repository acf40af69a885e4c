"""Numbered schema migrations, recorded in the database itself (`schema_migrations`).

Append a new `Migration` to change the schema; never edit an applied one. Each migration runs in
one transaction with foreign keys off (so tables can be rebuilt the way SQLite documents), and is
checked with `PRAGMA foreign_key_check` before it commits: a crash or a failed check leaves the
previous version intact. `tests/test_migrations.py` opens a store written by the v2 code and checks
that every run, grade and teacher decision survives.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime

from grader.errors import StoreError


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


# What one grade holds: the same columns in the first `grades` table and its v3 rebuild.
_GRADE_RESULT = """\
    status          TEXT NOT NULL CHECK (status IN ('graded', 'flagged')),
    total           REAL,
    max_total       REAL NOT NULL,
    percent         REAL,
    overall_comment TEXT,
    needs_review    INTEGER NOT NULL DEFAULT 0,
    review_reason   TEXT,
    model           TEXT NOT NULL,
    model_version   TEXT,
    created_at      TEXT NOT NULL"""

# What one teacher decision records, after its field: v3 `decisions` and its v7 rebuild.
_DECISION = """\
    value           TEXT,
    submission_id   INTEGER REFERENCES submissions(id),
    ai_basis        TEXT,
    run_id          INTEGER REFERENCES runs(id),
    grade_id        INTEGER REFERENCES grades(id),
    cell            TEXT,
    workbook_sha256 TEXT,
    decided_at      TEXT NOT NULL"""

M001_INITIAL = """
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
""" + _GRADE_RESULT + """
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
"""

M002_TEACHER_REVIEW = """
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
"""

# v3: what was paid for is kept apart from what a student got.
# - prefixes/requests/responses: the content-addressed response ledger (insert-or-ignore only);
# - attempts: every request sent (or rendered for a batch job), with its state and usage;
# - grades: per-student versions keyed by (student, submission, fingerprint, sample, epoch,
#   config), never deleted;
# - decisions: the teacher's decisions per student and criterion, append-only.
# v2 rows are converted: v2 requests get synthetic hashes ('v2:<grade_key>:<n>:<id>'), v2 grade
# keys become fingerprints ('v2:<grade_key>'), v2 overrides/reviews become decisions.
M003_LEDGER_AND_VERSIONS = """
ALTER TABLE runs ADD COLUMN fingerprint TEXT;
ALTER TABLE runs ADD COLUMN config_hash TEXT;
ALTER TABLE runs ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN mode TEXT NOT NULL DEFAULT 'normal';
ALTER TABLE runs ADD COLUMN selection_json TEXT NOT NULL DEFAULT '{}';
ALTER TABLE runs ADD COLUMN pid INTEGER;
ALTER TABLE submissions ADD COLUMN body_hash TEXT;
CREATE INDEX submissions_body ON submissions (body_hash);

CREATE TABLE prefixes (
    hash            TEXT PRIMARY KEY,
    system          TEXT NOT NULL,
    static_prefix   TEXT NOT NULL,
    schema_json     TEXT NOT NULL,
    created_at      TEXT NOT NULL
);
CREATE TABLE requests (
    hash            TEXT PRIMARY KEY,
    prefix_hash     TEXT REFERENCES prefixes(hash),
    model           TEXT NOT NULL,
    body_json       TEXT NOT NULL,
    created_at      TEXT NOT NULL
);
CREATE TABLE responses (
    request_hash    TEXT PRIMARY KEY REFERENCES requests(hash),
    attempt_id      INTEGER,
    created_at      TEXT NOT NULL,
    text            TEXT,
    finish_reason   TEXT,
    blocked_reason  TEXT,
    model_version   TEXT,
    raw_json        TEXT
);

CREATE TABLE grades_v3 (
    id              INTEGER PRIMARY KEY,
    student_id      TEXT NOT NULL REFERENCES students(id),
    submission_id   INTEGER NOT NULL REFERENCES submissions(id),
    fingerprint     TEXT NOT NULL,
    sample          INTEGER NOT NULL DEFAULT 0,
    epoch           INTEGER NOT NULL DEFAULT 0,
    config_hash     TEXT NOT NULL DEFAULT '',
    run_id          INTEGER NOT NULL REFERENCES runs(id),
""" + _GRADE_RESULT + """,
    UNIQUE (student_id, submission_id, fingerprint, sample, epoch, config_hash)
);
INSERT INTO grades_v3 (id, student_id, submission_id, fingerprint, run_id, status, total,
    max_total, percent, overall_comment, needs_review, review_reason, model, model_version,
    created_at)
SELECT id, student_id, submission_id, 'v2:' || grade_key, run_id, status, total, max_total,
    percent, overall_comment, needs_review, review_reason, model, model_version, created_at
FROM grades;

CREATE TABLE attempts_v3 (
    id              INTEGER PRIMARY KEY,
    run_id          INTEGER NOT NULL REFERENCES runs(id),
    student_id      TEXT REFERENCES students(id),
    submission_id   INTEGER REFERENCES submissions(id),
    request_hash    TEXT NOT NULL REFERENCES requests(hash),
    sample          INTEGER NOT NULL DEFAULT 0,
    n               INTEGER NOT NULL,
    state           TEXT NOT NULL CHECK (state IN
                        ('rendered', 'sent', 'answered', 'validated', 'stored', 'failed')),
    job_ref         TEXT,
    created_at      TEXT NOT NULL,
    sent_at         TEXT,
    answered_at     TEXT,
    error           TEXT,
    error_status    INTEGER,
    retries         INTEGER NOT NULL DEFAULT 0,
    latency_ms      REAL,
    prompt_tokens   INTEGER NOT NULL DEFAULT 0,
    output_tokens   INTEGER NOT NULL DEFAULT 0,
    thinking_tokens INTEGER NOT NULL DEFAULT 0,
    cached_tokens   INTEGER NOT NULL DEFAULT 0,
    cost_usd        REAL,
    model_version   TEXT,
    grade_id        INTEGER REFERENCES grades(id)
);
INSERT INTO requests (hash, prefix_hash, model, body_json, created_at)
SELECT 'v2:' || a.grade_key || ':' || a.n || ':' || a.id, NULL, r.model,
    COALESCE(a.request_json, '{}'), a.created_at
FROM attempts a JOIN runs r ON r.id = a.run_id;
INSERT INTO responses (request_hash, attempt_id, created_at, text, finish_reason, model_version,
    raw_json)
SELECT 'v2:' || grade_key || ':' || n || ':' || id, id, created_at, response_text, finish_reason,
    model_version, raw_json
FROM attempts WHERE error IS NULL;
INSERT INTO attempts_v3 (id, run_id, student_id, submission_id, request_hash, n, state,
    created_at, sent_at, answered_at, error, retries, latency_ms, prompt_tokens, output_tokens,
    thinking_tokens, cached_tokens, model_version, grade_id)
SELECT a.id, a.run_id, s.student_id, a.submission_id,
    'v2:' || a.grade_key || ':' || a.n || ':' || a.id, a.n,
    CASE WHEN a.error IS NOT NULL THEN 'failed' WHEN g.id IS NOT NULL THEN 'stored'
         ELSE 'answered' END,
    a.created_at, a.created_at, CASE WHEN a.error IS NULL THEN a.created_at END, a.error,
    a.retries, a.latency_ms, a.prompt_tokens, a.output_tokens, a.thinking_tokens,
    a.cached_tokens, a.model_version, g.id
FROM attempts a JOIN submissions s ON s.id = a.submission_id
LEFT JOIN grades g ON g.grade_key = a.grade_key;

DROP TABLE attempts;
ALTER TABLE attempts_v3 RENAME TO attempts;
CREATE INDEX attempts_request ON attempts (request_hash);
CREATE INDEX attempts_run ON attempts (run_id, state);
DROP TABLE grades;
ALTER TABLE grades_v3 RENAME TO grades;
CREATE INDEX grades_lookup ON grades (student_id, submission_id, fingerprint, sample, id);

CREATE TABLE decisions (
    id              INTEGER PRIMARY KEY,
    student_id      TEXT NOT NULL REFERENCES students(id),
    criterion_id    TEXT NOT NULL DEFAULT '',
    field           TEXT NOT NULL CHECK (field IN ('score', 'feedback', 'comment', 'approved')),
""" + _DECISION + """
);
CREATE INDEX decisions_student ON decisions (student_id, criterion_id, field, id);
INSERT INTO decisions (student_id, criterion_id, field, value, submission_id, ai_basis, run_id,
    grade_id, workbook_sha256, decided_at)
SELECT student_id, criterion_id, field, value, submission_id, ai_basis, run_id, grade_id,
    workbook_sha256, imported_at FROM (
    SELECT o.student_id, o.criterion_id, 'score' AS field, json_quote(o.teacher_score) AS value,
        oc.submission_id, CASE WHEN o.ai_score IS NULL THEN NULL ELSE json_quote(o.ai_score) END
        AS ai_basis, o.run_id, o.grade_id, o.workbook_sha256, o.imported_at, 0 AS k
    FROM overrides o LEFT JOIN outcomes oc ON oc.run_id = o.run_id
        AND oc.student_id = o.student_id
    WHERE o.teacher_score IS NOT NULL
    UNION ALL
    SELECT o.student_id, o.criterion_id, 'feedback', json_quote(o.teacher_feedback),
        oc.submission_id, CASE WHEN o.ai_score IS NULL THEN NULL ELSE json_quote(o.ai_score) END,
        o.run_id, o.grade_id, o.workbook_sha256, o.imported_at, 1
    FROM overrides o LEFT JOIN outcomes oc ON oc.run_id = o.run_id
        AND oc.student_id = o.student_id
    WHERE o.teacher_feedback IS NOT NULL
    UNION ALL
    SELECT r.student_id, '', 'comment', json_quote(r.teacher_comment), oc.submission_id,
        (SELECT json_group_object(c.criterion_id, c.score) FROM criterion_scores c
         WHERE c.grade_id = oc.grade_id), r.run_id, r.grade_id, r.workbook_sha256,
        r.imported_at, 2
    FROM reviews r LEFT JOIN outcomes oc ON oc.run_id = r.run_id AND oc.student_id = r.student_id
    WHERE r.teacher_comment IS NOT NULL
    UNION ALL
    SELECT r.student_id, '', 'approved', CASE WHEN r.approved THEN 'true' ELSE 'false' END,
        oc.submission_id,
        (SELECT json_group_object(c.criterion_id, c.score) FROM criterion_scores c
         WHERE c.grade_id = oc.grade_id), r.run_id, r.grade_id, r.workbook_sha256,
        r.imported_at, 3
    FROM reviews r LEFT JOIN outcomes oc ON oc.run_id = r.run_id AND oc.student_id = r.student_id
    WHERE r.approved IS NOT NULL
) ORDER BY imported_at, run_id, student_id, criterion_id, k;
DROP TABLE overrides;
DROP TABLE reviews;
ALTER TABLE review_log RENAME TO v2_review_log;
"""

M004_MODEL_STATUS_AND_TIER = """
ALTER TABLE attempts ADD COLUMN model_status TEXT;
ALTER TABLE attempts ADD COLUMN service_tier TEXT;
"""

# What the placeholders of a redacted request stood for (placeholder -> original, JSON), kept
# per attempt so a reply can be mapped back later (batch results); never sent anywhere.
M005_ATTEMPT_REDACTION = """
ALTER TABLE attempts ADD COLUMN redaction_json TEXT;
"""

# v6: grading quality. Human scores are data of their own (not teacher decisions, which are
# anchored on the AI's number): each imported file once (by hash), several raters, the newest
# import of a (student, criterion, rater) wins. Calibrations record a blind-scored sample's
# agreement per criterion for one grading fingerprint (the `grade run` gate reads them). Grades
# record how many samples they combine; criterion scores keep the samples' spread and scores,
# and the items of a checklist criterion.
M006_QUALITY = """
CREATE TABLE human_imports (
    id              INTEGER PRIMARY KEY,
    class_dir       TEXT NOT NULL,
    path            TEXT NOT NULL,
    sha256          TEXT NOT NULL,
    rows            INTEGER NOT NULL,
    imported_at     TEXT NOT NULL,
    UNIQUE (class_dir, sha256)
);
CREATE TABLE human_scores (
    import_id       INTEGER NOT NULL REFERENCES human_imports(id),
    class_dir       TEXT NOT NULL,
    student_id      TEXT NOT NULL,
    criterion_id    TEXT NOT NULL,
    rater           TEXT NOT NULL,
    score           REAL NOT NULL,
    PRIMARY KEY (import_id, student_id, criterion_id, rater)
);
CREATE INDEX human_scores_class ON human_scores (class_dir, student_id, criterion_id, rater);
CREATE TABLE calibrations (
    id              INTEGER PRIMARY KEY,
    class_dir       TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    run_id          INTEGER NOT NULL REFERENCES runs(id),
    rater           TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    students_json   TEXT NOT NULL,
    figures_json    TEXT NOT NULL
);
CREATE INDEX calibrations_class ON calibrations (class_dir, fingerprint, id);
ALTER TABLE grades ADD COLUMN samples INTEGER NOT NULL DEFAULT 1;
ALTER TABLE criterion_scores ADD COLUMN spread REAL;
ALTER TABLE criterion_scores ADD COLUMN samples_json TEXT;
ALTER TABLE criterion_scores ADD COLUMN items_json TEXT;
"""

# v7: the review workbook separates "feedback to the student" (field `comment`) from a
# teacher's private note (field `note`, never shown to a student), so the decisions table is
# rebuilt with `note` allowed; attempts get an index by submission so a student page can find
# the text that was sent for a submission without scanning every attempt.
M007_REVIEW_NOTES_AND_SENT_TEXT = """
CREATE TABLE decisions_v7 (
    id              INTEGER PRIMARY KEY,
    student_id      TEXT NOT NULL REFERENCES students(id),
    criterion_id    TEXT NOT NULL DEFAULT '',
    field           TEXT NOT NULL
                        CHECK (field IN ('score', 'feedback', 'comment', 'approved', 'note')),
""" + _DECISION + """
);
INSERT INTO decisions_v7 (id, student_id, criterion_id, field, value, submission_id, ai_basis,
    run_id, grade_id, cell, workbook_sha256, decided_at)
SELECT id, student_id, criterion_id, field, value, submission_id, ai_basis, run_id, grade_id,
    cell, workbook_sha256, decided_at FROM decisions;
DROP TABLE decisions;
ALTER TABLE decisions_v7 RENAME TO decisions;
CREATE INDEX decisions_student ON decisions (student_id, criterion_id, field, id);
CREATE INDEX attempts_submission ON attempts (submission_id, n, id);
"""

# Explicit context caches and uploaded files a run created on the service, so that a run that was
# killed leaves nothing behind for long (the next run reuses or deletes them) and the cache's
# creation and storage are priced. A row is written before the service is asked (state
# 'creating' / 'uploading', with the display name or object name it will have), so a kill between
# the two is found again. `job_ref` is set for uploads a batch job holds (not deleted by an
# online run).
M008_CACHES_AND_UPLOADS = """
CREATE TABLE caches (
    id            INTEGER PRIMARY KEY,
    run_id        INTEGER NOT NULL REFERENCES runs(id),
    backend       TEXT NOT NULL,
    model         TEXT NOT NULL,
    content_hash  TEXT NOT NULL,
    display_name  TEXT NOT NULL,
    name          TEXT,
    tokens        INTEGER,
    create_usd    REAL,
    usd_per_hour  REAL,
    created_at    TEXT NOT NULL,
    expires_at    TEXT,
    ended_at      TEXT,
    storage_usd   REAL,
    state         TEXT NOT NULL
        CHECK (state IN ('creating', 'live', 'deleted', 'expired', 'failed'))
);
CREATE INDEX caches_state ON caches (state, backend);
CREATE INDEX caches_run ON caches (run_id);

CREATE TABLE uploads (
    id            INTEGER PRIMARY KEY,
    run_id        INTEGER REFERENCES runs(id),
    job_ref       TEXT,
    backend       TEXT NOT NULL,
    purpose       TEXT NOT NULL,
    sha256        TEXT NOT NULL,
    size          INTEGER NOT NULL,
    mime_type     TEXT NOT NULL,
    display_name  TEXT NOT NULL,
    name          TEXT,
    uri           TEXT,
    created_at    TEXT NOT NULL,
    expires_at    TEXT,
    ended_at      TEXT,
    state         TEXT NOT NULL
        CHECK (state IN ('uploading', 'active', 'deleted', 'expired', 'failed'))
);
CREATE INDEX uploads_content ON uploads (backend, sha256, state);
CREATE INDEX uploads_state ON uploads (state, backend);
"""

# Which graded examples each grade was shown (`grade run --exemplars K`), the digest of that set
# on the grade (a changed set is graded again), and the Enterprise tuning jobs `grade tune` ran.
M009_EXEMPLARS_AND_TUNING = """
ALTER TABLE grades ADD COLUMN exemplars_hash TEXT;
CREATE TABLE grade_exemplars (
    grade_id        INTEGER NOT NULL REFERENCES grades(id) ON DELETE CASCADE,
    position        INTEGER NOT NULL,
    exemplar        TEXT NOT NULL,
    source          TEXT NOT NULL CHECK (source IN ('rubric', 'approved', 'corrected')),
    student_id      TEXT,
    submission_id   INTEGER,
    similarity      REAL NOT NULL,
    PRIMARY KEY (grade_id, position)
);
CREATE TABLE tuning_jobs (
    id              INTEGER PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    display_name    TEXT NOT NULL,
    base_model      TEXT NOT NULL,
    train_uri       TEXT NOT NULL,
    validation_uri  TEXT,
    train_examples  INTEGER NOT NULL,
    validation_examples INTEGER NOT NULL,
    state           TEXT NOT NULL,
    tuned_model     TEXT,
    endpoint        TEXT,
    error           TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
"""

# Batch jobs (Developer API batch mode, Enterprise batch prediction): a job row and its items are
# written before the provider's job is created (`name` is set once it exists), so a crash in
# between is recoverable; each item is one attempt (attempts.job_ref = the job's display name)
# with what collecting needs to judge its reply: the request as rendered (without the run's
# static prefix), the input flags, the attempt it follows (a re-ask round) and the epoch.
M010_BATCH_JOBS = """
CREATE TABLE batch_jobs (
    id            INTEGER PRIMARY KEY,
    run_id        INTEGER NOT NULL REFERENCES runs(id),
    class_dir     TEXT NOT NULL,
    backend       TEXT NOT NULL,
    model         TEXT NOT NULL,
    display_name  TEXT NOT NULL UNIQUE,
    mode          TEXT NOT NULL CHECK (mode IN ('inline', 'file', 'gcs')),
    round         INTEGER NOT NULL DEFAULT 1,
    name          TEXT,
    input_ref     TEXT,
    state         TEXT NOT NULL,
    requests      INTEGER NOT NULL,
    created_at    TEXT NOT NULL,
    submitted_at  TEXT,
    ended_at      TEXT,
    collected_at  TEXT,
    error         TEXT
);
CREATE INDEX batch_jobs_state ON batch_jobs (class_dir, state);
CREATE TABLE batch_items (
    attempt_id    INTEGER PRIMARY KEY REFERENCES attempts(id),
    job_id        INTEGER NOT NULL REFERENCES batch_jobs(id),
    previous      INTEGER REFERENCES attempts(id),
    epoch         INTEGER NOT NULL,
    request_json  TEXT NOT NULL,
    flags_json    TEXT NOT NULL,
    state         TEXT NOT NULL
        CHECK (state IN ('pending', 'stored', 'failed', 'reasked', 'dropped')),
    error         TEXT
);
CREATE INDEX batch_items_job ON batch_items (job_id, state);
"""

# The model-based injection check (`grader.grading.screen`): one verdict per checked text, keyed
# by the hash of what was asked (check version, model, the text as sent), so the same text is
# never paid for twice; with what the call cost and the run that paid for it.
M011_INJECTION_CHECKS = """
CREATE TABLE injection_checks (
    key           TEXT PRIMARY KEY,
    model         TEXT NOT NULL,
    injection     INTEGER NOT NULL CHECK (injection IN (0, 1)),
    reason        TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd      REAL,
    run_class     TEXT,
    created_at    TEXT NOT NULL
);
"""

# Answer groups (review by group): each run's grouping of its students' answers as last computed
# (after grading, and by `grade report`), with the `inconsistent_with_group` flag of a member the
# model graded apart from its group; a teacher decision entered for a group is stored once per
# member it was made for, with the group's label (NULL: the student's own decision, which wins).
M012_ANSWER_GROUPS = """
CREATE TABLE answer_groups (
    run_id          INTEGER NOT NULL REFERENCES runs(id),
    student_id      TEXT NOT NULL,
    label           TEXT NOT NULL,
    representative  INTEGER NOT NULL DEFAULT 0,
    flag            TEXT,
    PRIMARY KEY (run_id, student_id)
);
ALTER TABLE decisions ADD COLUMN group_label TEXT;
"""

# A model check whose reply could not be read (cut by its output cap even after the one retry
# with more room, or not the asked-for object) is kept as paid for, so the same text is never
# asked again, but it is no verdict: `readable` 0, and the run says how many there were.
M013_UNREADABLE_CHECKS = """
ALTER TABLE injection_checks ADD COLUMN readable INTEGER NOT NULL DEFAULT 1
    CHECK (readable IN (0, 1));
"""

# Which review workbook file a decision was imported from (a digest of its path and hidden base:
# `review.importing.lineage`), so that importing that file again after more edits compares
# each cell with what the last import from it stored, not with what it held when written (a value
# cleared again is a change; the same file imported twice changes nothing). NULL: before v14.
M014_DECISION_WORKBOOK_BASE = """
ALTER TABLE decisions ADD COLUMN workbook_base TEXT;
"""

# The run that paid for a model-based injection check (`grade run --injection-check`), so that the
# run's cost in `grade status`, report.html and review.xlsx includes it. NULL: before v15, or a
# check reused from an earlier run (it cost that run, not this one).
M015_INJECTION_CHECK_RUN = """
ALTER TABLE injection_checks ADD COLUMN run_id INTEGER;
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial", M001_INITIAL),
    Migration(2, "teacher_review", M002_TEACHER_REVIEW),
    Migration(3, "ledger_and_grade_versions", M003_LEDGER_AND_VERSIONS),
    Migration(4, "attempt_model_status_and_service_tier", M004_MODEL_STATUS_AND_TIER),
    Migration(5, "attempt_redaction", M005_ATTEMPT_REDACTION),
    Migration(6, "human_scores_calibration_uncertainty", M006_QUALITY),
    Migration(7, "review_notes_and_sent_text", M007_REVIEW_NOTES_AND_SENT_TEXT),
    Migration(8, "caches_and_uploads", M008_CACHES_AND_UPLOADS),
    Migration(9, "exemplars_and_tuning_jobs", M009_EXEMPLARS_AND_TUNING),
    Migration(10, "batch_jobs", M010_BATCH_JOBS),
    Migration(11, "injection_checks", M011_INJECTION_CHECKS),
    Migration(12, "answer_groups", M012_ANSWER_GROUPS),
    Migration(13, "unreadable_injection_checks", M013_UNREADABLE_CHECKS),
    Migration(14, "decision_workbook_base", M014_DECISION_WORKBOOK_BASE),
    Migration(15, "injection_check_run", M015_INJECTION_CHECK_RUN),
)
LATEST = MIGRATIONS[-1].version


def _statements(sql: str) -> list[str]:
    """Split a script into complete statements (executescript would COMMIT our transaction)."""
    out: list[str] = []
    buf = ""
    for line in sql.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                out.append(buf)
            buf = ""
    if buf.strip():
        out.append(buf)
    return out


def current_version(conn: sqlite3.Connection) -> int:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    row = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
    return int(row[0] or 0)


def pending(conn: sqlite3.Connection) -> list[Migration]:
    have = current_version(conn)
    return [m for m in MIGRATIONS if m.version > have]


def apply(conn: sqlite3.Connection, m: Migration) -> None:
    """One migration in one transaction, foreign keys checked before it commits."""
    conn.execute("PRAGMA foreign_keys=OFF")  # a no-op inside a transaction: set it first
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for stmt in _statements(m.sql):
                conn.execute(stmt)
            broken = conn.execute("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise StoreError(
                    f"migration {m.version} ({m.name}) would leave {len(broken)} broken "
                    f"references (first: table {broken[0][0]}, row {broken[0][1]})",
                    fix="nothing was changed; report this store to the grader developers")
            conn.execute("INSERT INTO schema_migrations (version, name, applied_at)"
                         " VALUES (?,?,?)", (m.version, m.name, datetime.now(UTC).isoformat()))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    finally:
        conn.execute("PRAGMA foreign_keys=ON")


def migrate(conn: sqlite3.Connection) -> list[int]:
    """Apply every pending migration in order; returns the versions applied."""
    have = current_version(conn)
    if have > LATEST:
        raise StoreError(
            f"the store was written by a newer grader (schema version {have}; this grader "
            f"knows up to {LATEST})", fix="upgrade grader (pip install -U grader)")
    done = []
    for m in pending(conn):
        apply(conn, m)
        done.append(m.version)
    return done
