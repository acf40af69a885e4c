"""Supervised tuning: the graded exchanges a dataset is built from, and the jobs started."""

from __future__ import annotations

from typing import Any

from grader.grading.records import TuningJob
from grader.store.core import StoreCore, loads, mapped, now


class Tuning(StoreCore):
    # --- tuning jobs ---------------------------------------------------------------------------

    @mapped
    def graded_exchange(self, grade_id: int) -> tuple[str, str, list[dict[str, Any]],
                                                      str | None, dict[str, str]] | None:
        """What a grade was asked and answered: (system, static prefix, the first request's
        student parts as the ledger keeps them, the last reply's text, the redaction mapping);
        None when the grade has no request of its own (shared, or from before the ledger)."""
        first = self.conn.execute(
            "SELECT p.system, p.static_prefix, q.body_json, a.redaction_json FROM attempts a"
            " JOIN requests q ON q.hash = a.request_hash JOIN prefixes p ON p.hash ="
            " q.prefix_hash WHERE a.grade_id=? ORDER BY a.n, a.id LIMIT 1",
            (grade_id,)).fetchone()
        if first is None:
            return None
        last = self.conn.execute(
            "SELECT r.text FROM attempts a JOIN responses r ON r.request_hash = a.request_hash"
            " WHERE a.grade_id=? ORDER BY a.n DESC, a.id DESC LIMIT 1", (grade_id,)).fetchone()
        parts = loads(first["body_json"], {}).get("parts")
        mapping = loads(first["redaction_json"], {})
        return (first["system"], first["static_prefix"],
                [p for p in parts or [] if isinstance(p, dict)],
                last["text"] if last is not None else None,
                {str(k): str(v) for k, v in mapping.items()} if isinstance(mapping, dict)
                else {})

    @mapped
    def save_tuning_job(self, job: TuningJob) -> None:
        stamp = now()
        with self.atomic():
            self.conn.execute(
                "INSERT INTO tuning_jobs (name, display_name, base_model, train_uri,"
                " validation_uri, train_examples, validation_examples, state, tuned_model,"
                " endpoint, error, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (job.name, job.display_name, job.base_model, job.train_uri, job.validation_uri,
                 job.train_examples, job.validation_examples, job.state, job.tuned_model,
                 job.endpoint, job.error, stamp, stamp))

    @mapped
    def update_tuning_job(self, name: str, *, state: str, tuned_model: str | None,
                          endpoint: str | None, error: str | None) -> None:
        with self.atomic():
            self.conn.execute(
                "UPDATE tuning_jobs SET state=?, tuned_model=?, endpoint=?, error=?,"
                " updated_at=? WHERE name=?", (state, tuned_model, endpoint, error, now(), name))

    @mapped
    def tuning_jobs(self) -> list[TuningJob]:
        """Every recorded tuning job, newest first."""
        return [TuningJob(**{k: v for k, v in dict(r).items() if k != "id"})
                for r in self.conn.execute("SELECT * FROM tuning_jobs ORDER BY id DESC")]
