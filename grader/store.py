"""The SQLite store: every run, submission, attempt, grade and flag.

Resume works by `grade_key`: the hash of (submission content, rubric, prompts, schema, model). A
grade is written in one transaction with its criterion scores and flags, so a SIGKILL leaves either
the whole grade or none of it, and a rerun skips every key that already has one.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import StoreError
from .migrations import migrate

DEFAULT_DB_NAME = ".grader/grader.sqlite"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def grade_key(content_hash: str, rubric_hash: str, prompt_hash: str, schema_hash: str,
              model: str) -> str:
    raw = "\x1f".join([content_hash, rubric_hash, prompt_hash, schema_hash, model])
    return hashlib.sha256(raw.encode()).hexdigest()


@dataclass
class CriterionRow:
    criterion_id: str
    score: float
    max_points: float
    justification: str
    evidence: list[str]
    feedback: str


@dataclass
class FlagRow:
    reason: str
    message: str


@dataclass
class StudentResult:
    """One student's outcome in one run, with the grade it points to (if any)."""

    student_id: str
    name: str | None
    email: str | None
    status: str
    reason: str | None
    message: str | None
    reused: bool
    late: bool
    files: list[str]
    grade_id: int | None = None
    grade_status: str | None = None
    total: float | None = None
    max_total: float | None = None
    percent: float | None = None
    overall_comment: str | None = None
    needs_review: bool = False
    review_reason: str | None = None
    model_version: str | None = None
    criteria: list[CriterionRow] = field(default_factory=list)
    flags: list[FlagRow] = field(default_factory=list)


class Store:
    """One connection per process; all writes go through it (the pipeline's event-loop thread)."""

    def __init__(self, path: Path | str):
        self.path = str(path)
        self._depth = 0
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            self.conn.row_factory = sqlite3.Row
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute("PRAGMA foreign_keys=ON")
            migrate(self.conn)
        except sqlite3.DatabaseError as e:
            raise StoreError(
                f"cannot open the grade store: {e}", path=self.path,
                fix="pass another --db PATH, or move the damaged file aside",
            ) from None

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writes -------------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All-or-nothing writes. Nested uses join the outer transaction, so a grade and the
        outcome that points to it are committed together (one commit per student)."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self.conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")
        finally:
            self._depth = 0

    def begin_run(self, *, class_dir: str, backend: str, model: str, rubric_path: str | None,
                  rubric_hash: str, prompt_hash: str, schema_hash: str, sdk_version: str | None,
                  grader_version: str, settings: dict[str, Any], rubric: dict[str, Any]) -> int:
        cur = self.conn.execute(
            "INSERT INTO runs (started_at, class_dir, backend, model, rubric_path, rubric_hash,"
            " prompt_hash, schema_hash, sdk_version, grader_version, settings_json, rubric_json)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (now(), class_dir, backend, model, rubric_path, rubric_hash, prompt_hash, schema_hash,
             sdk_version, grader_version, json.dumps(settings, default=str), json.dumps(rubric)),
        )
        return int(cur.lastrowid or 0)

    def finish_run(self, run_id: int, status: str) -> None:
        self.conn.execute("UPDATE runs SET finished_at=?, status=? WHERE id=?",
                          (now(), status, run_id))

    def upsert_submission(self, *, run_id: int, student_id: str, name: str | None,
                          email: str | None, source: str, content_hash: str,
                          files: Sequence[str], late: bool, notes: Sequence[str]) -> int:
        with self.transaction():
            self.conn.execute(
                "INSERT INTO students (id, name, email, source) VALUES (?,?,?,?)"
                " ON CONFLICT(id) DO UPDATE SET name=COALESCE(excluded.name, name),"
                " email=COALESCE(excluded.email, email), source=excluded.source",
                (student_id, name, email, source),
            )
            row = self.conn.execute(
                "INSERT INTO submissions (student_id, content_hash, files_json, late, notes_json,"
                " first_run_id) VALUES (?,?,?,?,?,?) ON CONFLICT(student_id, content_hash)"
                " DO UPDATE SET late=excluded.late RETURNING id",
                (student_id, content_hash, json.dumps(list(files)), int(late),
                 json.dumps(list(notes)), run_id),
            ).fetchone()
        return int(row["id"])

    def record_attempt(self, *, run_id: int, submission_id: int, key: str, n: int,
                       request: dict[str, Any] | None, response_text: str | None,
                       raw: dict[str, Any] | None, error: str | None, finish_reason: str | None,
                       usage: dict[str, int], model_version: str | None, latency_ms: float,
                       retries: int) -> None:
        self.conn.execute(
            "INSERT INTO attempts (run_id, submission_id, grade_key, n, created_at, request_json,"
            " response_text, raw_json, error, finish_reason, prompt_tokens, output_tokens,"
            " thinking_tokens, cached_tokens, model_version, latency_ms, retries)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (run_id, submission_id, key, n, now(),
             json.dumps(request) if request is not None else None, response_text,
             json.dumps(raw, default=str) if raw is not None else None, error, finish_reason,
             usage.get("prompt_tokens", 0), usage.get("output_tokens", 0),
             usage.get("thinking_tokens", 0), usage.get("cached_tokens", 0),
             model_version, latency_ms, retries),
        )

    def save_grade(self, *, key: str, run_id: int, submission_id: int, student_id: str,
                   status: str, max_total: float, total: float | None, percent: float | None,
                   overall_comment: str | None, needs_review: bool, review_reason: str | None,
                   model: str, model_version: str | None, criteria: Sequence[CriterionRow],
                   flags: Sequence[FlagRow], regrade: bool = False) -> int:
        """Write a grade, its scores and flags atomically. With `regrade`, replaces an old one."""
        with self.transaction():
            if regrade:
                self.conn.execute("DELETE FROM grades WHERE grade_key=?", (key,))
            cur = self.conn.execute(
                "INSERT INTO grades (grade_key, submission_id, run_id, student_id, status, total,"
                " max_total, percent, overall_comment, needs_review, review_reason, model,"
                " model_version, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (key, submission_id, run_id, student_id, status, total, max_total, percent,
                 overall_comment, int(needs_review), review_reason, model, model_version, now()),
            )
            gid = int(cur.lastrowid or 0)
            self.conn.executemany(
                "INSERT INTO criterion_scores (grade_id, criterion_id, position, score, max_points,"
                " justification, evidence_json, feedback) VALUES (?,?,?,?,?,?,?,?)",
                [(gid, c.criterion_id, i, c.score, c.max_points, c.justification,
                  json.dumps(c.evidence), c.feedback) for i, c in enumerate(criteria)],
            )
            self.conn.executemany(
                "INSERT INTO flags (grade_id, run_id, student_id, reason, message, created_at)"
                " VALUES (?,?,?,?,?,?)",
                [(gid, run_id, student_id, f.reason, f.message, now()) for f in flags],
            )
        return gid

    def record_outcome(self, *, run_id: int, student_id: str, submission_id: int | None,
                       grade_id: int | None, status: str, reused: bool = False,
                       reason: str | None = None, message: str | None = None,
                       name: str | None = None, email: str | None = None,
                       source: str | None = None) -> None:
        with self.transaction():
            if submission_id is None:  # otherwise upsert_submission already wrote the student
                self.conn.execute(
                    "INSERT INTO students (id, name, email, source) VALUES (?,?,?,?)"
                    " ON CONFLICT(id) DO UPDATE SET name=COALESCE(excluded.name, name),"
                    " email=COALESCE(excluded.email, email)",
                    (student_id, name, email, source),
                )
            self.conn.execute(
                "INSERT OR REPLACE INTO outcomes (run_id, student_id, submission_id, grade_id,"
                " status, reused, reason, message) VALUES (?,?,?,?,?,?,?,?)",
                (run_id, student_id, submission_id, grade_id, status, int(reused), reason,
                 message),
            )

    def carry_forward_reviews(self, run_id: int) -> int:
        """Copy the teacher's latest decisions into a new run for every student whose
        submission and grade did not change, so rerunning a class (to resume, or to add a late
        submission) never drops a review. Returns the number of students carried."""
        same = """
            SELECT prev.run_id AS prev_run, cur.student_id FROM outcomes cur
            JOIN outcomes prev ON prev.student_id = cur.student_id
             AND prev.submission_id IS cur.submission_id AND prev.grade_id IS cur.grade_id
            WHERE cur.run_id = :run AND prev.run_id = (
                SELECT MAX(d.run_id) FROM (
                    SELECT run_id, student_id FROM reviews
                    UNION ALL SELECT run_id, student_id FROM overrides) d
                WHERE d.student_id = cur.student_id AND d.run_id < :run)
        """
        with self.transaction():
            carried = self.conn.execute(
                f"INSERT OR IGNORE INTO reviews (run_id, student_id, grade_id, teacher_comment,"
                f" approved, imported_at, workbook_sha256) SELECT :run, r.student_id, r.grade_id,"
                f" r.teacher_comment, r.approved, r.imported_at, r.workbook_sha256 FROM reviews r"
                f" JOIN ({same}) s ON s.prev_run = r.run_id AND s.student_id = r.student_id",
                {"run": run_id}).rowcount
            self.conn.execute(
                f"INSERT OR IGNORE INTO overrides (run_id, student_id, grade_id, criterion_id,"
                f" ai_score, teacher_score, teacher_feedback, imported_at, workbook_sha256)"
                f" SELECT :run, o.student_id, o.grade_id, o.criterion_id, o.ai_score,"
                f" o.teacher_score, o.teacher_feedback, o.imported_at, o.workbook_sha256"
                f" FROM overrides o JOIN ({same}) s ON s.prev_run = o.run_id"
                f" AND s.student_id = o.student_id", {"run": run_id})
        return int(carried)

    # -- reads --------------------------------------------------------------------------------

    def find_grade(self, key: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self.conn.execute(
            "SELECT * FROM grades WHERE grade_key=?", (key,)
        ).fetchone()
        return row

    def paid_response(self, key: str) -> sqlite3.Row | None:
        """The newest answered attempt for `key`: a response already paid for whose grade was
        not saved (the process died in between). Reusing it means a rerun never pays twice."""
        row: sqlite3.Row | None = self.conn.execute(
            "SELECT response_text, finish_reason, model_version FROM attempts"
            " WHERE grade_key=? AND error IS NULL AND response_text IS NOT NULL"
            " ORDER BY id DESC LIMIT 1", (key,)).fetchone()
        return row

    def run(self, run_id: int) -> sqlite3.Row:
        row = self.conn.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None:
            raise StoreError(f"no run {run_id} in the store", path=self.path,
                             fix="run `grade status CLASS_DIR` to list runs")
        result: sqlite3.Row = row
        return result

    def latest_run(self, class_dir: str | None = None) -> sqlite3.Row | None:
        if class_dir is None:
            cur = self.conn.execute("SELECT * FROM runs ORDER BY id DESC LIMIT 1")
        else:
            cur = self.conn.execute(
                "SELECT * FROM runs WHERE class_dir=? ORDER BY id DESC LIMIT 1", (class_dir,))
        row: sqlite3.Row | None = cur.fetchone()
        return row

    def runs(self) -> list[sqlite3.Row]:
        return list(self.conn.execute("SELECT * FROM runs ORDER BY id"))

    def usage(self, run_id: int) -> dict[str, float]:
        row = self.conn.execute(
            "SELECT COUNT(*) AS calls, COALESCE(SUM(prompt_tokens),0) AS prompt_tokens,"
            " COALESCE(SUM(output_tokens),0) AS output_tokens,"
            " COALESCE(SUM(thinking_tokens),0) AS thinking_tokens,"
            " COALESCE(SUM(cached_tokens),0) AS cached_tokens,"
            " COALESCE(SUM(latency_ms),0) AS latency_ms FROM attempts WHERE run_id=?",
            (run_id,),
        ).fetchone()
        return dict(row)

    def results(self, run_id: int) -> Iterator[StudentResult]:
        """Every student's outcome in a run, ordered by student id, streamed row by row."""
        rows = self.conn.execute(
            "SELECT o.*, s.name, s.email, sub.files_json, sub.late, g.status AS grade_status,"
            " g.total, g.max_total, g.percent, g.overall_comment, g.needs_review, g.review_reason,"
            " g.model_version FROM outcomes o JOIN students s ON s.id = o.student_id"
            " LEFT JOIN submissions sub ON sub.id = o.submission_id"
            " LEFT JOIN grades g ON g.id = o.grade_id WHERE o.run_id=? ORDER BY o.student_id",
            (run_id,),
        )
        for r in rows:
            res = StudentResult(
                student_id=r["student_id"], name=r["name"], email=r["email"], status=r["status"],
                reason=r["reason"], message=r["message"], reused=bool(r["reused"]),
                late=bool(r["late"]), files=json.loads(r["files_json"] or "[]"),
                grade_id=r["grade_id"], grade_status=r["grade_status"], total=r["total"],
                max_total=r["max_total"], percent=r["percent"],
                overall_comment=r["overall_comment"], needs_review=bool(r["needs_review"]),
                review_reason=r["review_reason"], model_version=r["model_version"],
            )
            if r["grade_id"] is not None:
                res.criteria = [
                    CriterionRow(c["criterion_id"], c["score"], c["max_points"],
                                 c["justification"], json.loads(c["evidence_json"]), c["feedback"])
                    for c in self.conn.execute(
                        "SELECT * FROM criterion_scores WHERE grade_id=? ORDER BY position",
                        (r["grade_id"],))
                ]
                res.flags = [FlagRow(f["reason"], f["message"]) for f in self.conn.execute(
                    "SELECT reason, message FROM flags WHERE grade_id=? ORDER BY id",
                    (r["grade_id"],))]
            if r["reason"] and not any(f.reason == r["reason"] for f in res.flags):
                res.flags.insert(0, FlagRow(r["reason"], r["message"] or r["reason"]))
            yield res
