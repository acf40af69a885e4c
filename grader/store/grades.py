"""What a student got: students and submissions, grade versions (never deleted), the graded
examples each saw, flags, and outcomes per run."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from grader.grading.records import (
    ExemplarUse,
    FlagRow,
    GradeRecord,
    GradeVersion,
    OutcomeRecord,
    SubmissionRecord,
)
from grader.store.core import StoreCore, loads, mapped, now


class Grades(StoreCore):
    # --- students and submissions -----------------------------------------------------------

    @mapped
    def upsert_submission(self, rec: SubmissionRecord) -> int:
        with self.atomic():
            self._upsert_student(rec.student_id, rec.name, rec.email, rec.source)
            row = self.conn.execute(
                "INSERT INTO submissions (student_id, content_hash, body_hash, files_json, late,"
                " notes_json) VALUES (?,?,?,?,?,?) ON CONFLICT(student_id, content_hash)"
                " DO UPDATE SET late=excluded.late, body_hash=excluded.body_hash,"
                " notes_json=excluded.notes_json RETURNING id",
                (rec.student_id, rec.content_hash, rec.body_hash, json.dumps(list(rec.files)),
                 int(rec.late), json.dumps(list(rec.notes))),
            ).fetchone()
        return int(row["id"])

    def _upsert_student(self, sid: str, name: str | None, email: str | None,
                        source: str | None) -> None:
        self.conn.execute(
            "INSERT INTO students (id, name, email, source) VALUES (?,?,?,?)"
            " ON CONFLICT(id) DO UPDATE SET name=COALESCE(excluded.name, name),"
            " email=COALESCE(excluded.email, email), source=COALESCE(excluded.source, source)",
            (sid, name, email, source),
        )

    # --- grades: what a student got ---------------------------------------------------------

    @mapped
    def latest_grade(self, *, student_id: str, submission_id: int, fingerprint: str,
                     sample: int = 0, epoch: int | None = None,
                     samples: int = 1) -> GradeVersion | None:
        """The newest grade version for this student's submission under this fingerprint that
        combines `samples` samples (only of `epoch`, when given)."""
        sql = ("SELECT id, run_id, status, total, epoch, config_hash, samples, exemplars_hash"
               " FROM grades"
               " WHERE student_id=? AND submission_id=? AND fingerprint=? AND sample=?"
               " AND samples=?")
        args: tuple[Any, ...] = (student_id, submission_id, fingerprint, sample, samples)
        if epoch is not None:
            sql += " AND epoch=?"
            args += (epoch,)
        r = self.conn.execute(sql + " ORDER BY id DESC LIMIT 1", args).fetchone()
        if r is None:
            return None
        flags = [FlagRow(f["reason"], f["message"]) for f in self.conn.execute(
            "SELECT reason, message FROM flags WHERE grade_id=? ORDER BY id", (r["id"],))]
        return GradeVersion(r["id"], r["run_id"], r["status"], r["total"], r["epoch"],
                            r["config_hash"], flags, r["samples"], r["exemplars_hash"])

    @mapped
    def save_grade(self, g: GradeRecord) -> int:
        """Add a grade version with its scores and flags; the attempts that produced it become
        `stored`. Idempotent: the same version twice keeps the first and returns its id."""
        with self.atomic():
            cur = self.conn.execute(
                "INSERT OR IGNORE INTO grades (student_id, submission_id, fingerprint, sample,"
                " epoch, config_hash, run_id, status, total, max_total, percent, overall_comment,"
                " needs_review, review_reason, model, model_version, created_at, samples,"
                " exemplars_hash) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (g.student_id, g.submission_id, g.fingerprint, g.sample, g.epoch,
                 g.config_hash, g.run_id, g.status, g.total, g.max_total, g.percent,
                 g.overall_comment, int(g.needs_review), g.review_reason, g.model,
                 g.model_version, now(), g.samples, g.exemplars_hash))
            if cur.rowcount:
                gid = int(cur.lastrowid or 0)
                self.conn.executemany(
                    "INSERT INTO grade_exemplars (grade_id, position, exemplar, source,"
                    " student_id, submission_id, similarity) VALUES (?,?,?,?,?,?,?)",
                    [(gid, i, e.exemplar, e.source, e.student_id, e.submission_id,
                      e.similarity) for i, e in enumerate(g.exemplars)])
                self.conn.executemany(
                    "INSERT INTO criterion_scores (grade_id, criterion_id, position, score,"
                    " max_points, justification, evidence_json, feedback, spread, samples_json,"
                    " items_json) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    [(gid, c.criterion_id, i, c.score, c.max_points, c.justification,
                      json.dumps(c.evidence), c.feedback, c.spread,
                      json.dumps(list(c.samples)) if c.samples else None,
                      json.dumps([[t.item_id, t.met, t.quote] for t in c.items])
                      if c.items else None)
                     for i, c in enumerate(g.criteria)])
                stamp = now()
                self.conn.executemany(
                    "INSERT INTO flags (grade_id, run_id, student_id, reason, message,"
                    " created_at) VALUES (?,?,?,?,?,?)",
                    [(gid, g.run_id, g.student_id, f.reason, f.message, stamp)
                     for f in g.flags])
            else:
                gid = int(self.conn.execute(
                    "SELECT id FROM grades WHERE student_id=? AND submission_id=? AND"
                    " fingerprint=? AND sample=? AND epoch=? AND config_hash=?",
                    (g.student_id, g.submission_id, g.fingerprint, g.sample, g.epoch,
                     g.config_hash)).fetchone()[0])
            if g.attempt_ids:
                self.conn.executemany(
                    "UPDATE attempts SET state='stored', grade_id=? WHERE id=?",
                    [(gid, a) for a in g.attempt_ids])
        return gid

    @mapped
    def grade_exemplars(self, grade_id: int) -> list[ExemplarUse]:
        """The graded examples a grade version was shown, in prompt order."""
        return [ExemplarUse(exemplar=r["exemplar"], source=r["source"],
                            similarity=r["similarity"], student_id=r["student_id"],
                            submission_id=r["submission_id"])
                for r in self.conn.execute(
                    "SELECT * FROM grade_exemplars WHERE grade_id=? ORDER BY position",
                    (grade_id,))]

    @mapped
    def submission_facts(self, ids: Sequence[int]) -> dict[int, tuple[str | None, str | None,
                                                                        str | None]]:
        """(body hash, the student's name, e-mail) of these submissions."""
        out: dict[int, tuple[str | None, str | None, str | None]] = {}
        for r in self.conn.execute(
                "SELECT s.id, s.body_hash, t.name, t.email FROM submissions s"
                " JOIN students t ON t.id = s.student_id"
                f" WHERE s.id IN ({','.join('?' * len(ids))})", tuple(ids)):
            out[int(r["id"])] = (r["body_hash"], r["name"], r["email"])
        return out

    @mapped
    def add_flags(self, grade_id: int, run_id: int, student_id: str,
                  flags: Sequence[FlagRow]) -> None:
        """Flags found after a grade was stored (the run's score-jump check)."""
        stamp = now()
        with self.atomic():
            self.conn.executemany(
                "INSERT INTO flags (grade_id, run_id, student_id, reason, message, created_at)"
                " VALUES (?,?,?,?,?,?)",
                [(grade_id, run_id, student_id, f.reason, f.message, stamp) for f in flags])

    @mapped
    def sent_parts(self, run_id: int) -> dict[str, tuple[float, list[dict[str, Any]]]]:
        """(percent, the student's parts of the first request as sent) of every student of the
        run whose grade has a percent and was paid for by an attempt of its own."""
        out: dict[str, tuple[float, list[dict[str, Any]]]] = {}
        for r in self.conn.execute(
                "SELECT o.student_id, g.percent, q.body_json FROM outcomes o"
                " JOIN grades g ON g.id = o.grade_id"
                " JOIN attempts a ON a.grade_id = g.id AND a.n = 1"
                " JOIN requests q ON q.hash = a.request_hash"
                " WHERE o.run_id=? AND g.percent IS NOT NULL", (run_id,)):
            body = loads(r["body_json"], {})
            parts = body.get("parts") if isinstance(body, dict) else None
            out[r["student_id"]] = (float(r["percent"]),
                                    [p for p in parts or [] if isinstance(p, dict)])
        return out

    @mapped
    def flagged_reasons(self, class_dir: str) -> set[str]:
        """The flag reasons the grades of a class carry (what `--retry-flagged` can take)."""
        return {r[0] for r in self.conn.execute(
            "SELECT DISTINCT f.reason FROM flags f JOIN grades g ON g.id = f.grade_id"
            " JOIN runs r ON r.id = g.run_id WHERE r.class_dir = ?", (class_dir,))}

    @mapped
    def outcome_of(self, run_id: int, student_id: str) -> tuple[int | None, int | None] | None:
        """(submission id, grade id) of the student's outcome in the run; None: it has none."""
        r = self.conn.execute("SELECT submission_id, grade_id FROM outcomes WHERE run_id=? AND"
                              " student_id=?", (run_id, student_id)).fetchone()
        return None if r is None else (r["submission_id"], r["grade_id"])

    @mapped
    def record_outcome(self, o: OutcomeRecord) -> None:
        with self.atomic():
            if o.submission_id is None:  # otherwise upsert_submission wrote the student
                self._upsert_student(o.student_id, o.name, o.email, o.source)
            self.conn.execute(
                "INSERT OR REPLACE INTO outcomes (run_id, student_id, submission_id, grade_id,"
                " status, reused, reason, message) VALUES (?,?,?,?,?,?,?,?)",
                (o.run_id, o.student_id, o.submission_id, o.grade_id, o.status, int(o.reused),
                 o.reason, o.message))
