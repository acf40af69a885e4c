"""Batch jobs and their items: rows committed before the provider's job exists, their states,
what is still in flight, and the class folder that keys runs and jobs (carried over when the
folder is moved)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from grader.grading.records import BatchItem, BatchItemIn, BatchJobRow, Reply
from grader.store.core import loads, mapped, now
from grader.store.ledger import Ledger


class Batches(Ledger):
    # --- batch jobs ----------------------------------------------------------------------------

    _OPEN_JOB = "state NOT IN ('collected', 'abandoned')"

    @mapped
    def begin_batch_job(self, *, run_id: int, class_dir: str, backend: str, model: str,
                        display_name: str, mode: str, round: int,
                        items: Sequence[BatchItemIn]) -> tuple[int, list[int]]:
        """The job and one `rendered` attempt per item, in one commit, before the provider's
        job is created (a crash in between leaves a `preparing` job to recover)."""
        stamp = now()
        with self.atomic():
            cur = self.conn.execute(
                "INSERT INTO batch_jobs (run_id, class_dir, backend, model, display_name, mode,"
                " round, state, requests, created_at) VALUES (?,?,?,?,?,?,?,'preparing',?,?)",
                (run_id, class_dir, backend, model, display_name, mode, round, len(items),
                 stamp))
            job_id = int(cur.lastrowid or 0)
            self.conn.executemany(
                "INSERT OR IGNORE INTO requests (hash, prefix_hash, model, body_json, created_at)"
                " VALUES (?,?,?,?,?)",
                [(i.request.hash, i.request.prefix_hash, i.request.model,
                  json.dumps(i.request.body, default=str), stamp) for i in items])
            ids = []
            for i in items:
                a = self.conn.execute(
                    "INSERT INTO attempts (run_id, student_id, submission_id, request_hash,"
                    " sample, n, state, job_ref, created_at, redaction_json)"
                    " VALUES (?,?,?,?,0,?,'rendered',?,?,?)",
                    (run_id, i.student_id, i.submission_id, i.request.hash, i.n, display_name,
                     stamp, json.dumps(dict(i.redaction), ensure_ascii=False)
                     if i.redaction else None))
                aid = int(a.lastrowid or 0)
                ids.append(aid)
                self.conn.execute(
                    "INSERT INTO batch_items (attempt_id, job_id, previous, epoch, request_json,"
                    " flags_json, state) VALUES (?,?,?,?,?,?,'pending')",
                    (aid, job_id, i.previous, i.epoch, i.request_json, i.flags_json))
        return job_id, ids

    @mapped
    def batch_job_created(self, job_id: int, *, name: str, state: str,
                          input_ref: str | None) -> None:
        """The provider accepted the job: its attempts are `sent`."""
        stamp = now()
        with self.atomic():
            self.conn.execute(
                "UPDATE batch_jobs SET name=?, state=?, input_ref=COALESCE(?, input_ref),"
                " submitted_at=? WHERE id=?", (name, state, input_ref, stamp, job_id))
            self.conn.execute(
                "UPDATE attempts SET state='sent', sent_at=? WHERE state='rendered' AND id IN"
                " (SELECT attempt_id FROM batch_items WHERE job_id=?)", (stamp, job_id))

    @mapped
    def batch_job_input(self, job_id: int, input_ref: str) -> None:
        self.conn.execute("UPDATE batch_jobs SET input_ref=? WHERE id=?", (input_ref, job_id))

    @mapped
    def batch_job_state(self, job_id: int, state: str, *, ended: bool = False,
                        error: str | None = None) -> None:
        self.conn.execute(
            "UPDATE batch_jobs SET state=?, ended_at=CASE WHEN ? THEN COALESCE(ended_at, ?)"
            " ELSE ended_at END, error=COALESCE(?, error) WHERE id=?",
            (state, int(ended), now(), error, job_id))

    @mapped
    def batch_job_collected(self, job_id: int, state: str = "collected") -> None:
        self.conn.execute("UPDATE batch_jobs SET state=?, collected_at=? WHERE id=?",
                          (state, now(), job_id))

    @mapped
    def batch_jobs(self, class_dir: str | None = None, *, open_only: bool = False
                   ) -> list[BatchJobRow]:
        sql, args = "SELECT * FROM batch_jobs WHERE 1=1", []
        if class_dir is not None:
            sql += " AND class_dir=?"
            args.append(class_dir)
        if open_only:
            sql += " AND " + self._OPEN_JOB
        return [BatchJobRow(**dict(r)) for r in self.conn.execute(sql + " ORDER BY id", args)]

    @mapped
    def batch_job(self, ref: str) -> BatchJobRow | None:
        """A job by the provider's name or our display name."""
        r = self.conn.execute("SELECT * FROM batch_jobs WHERE name=? OR display_name=?",
                              (ref, ref)).fetchone()
        return BatchJobRow(**dict(r)) if r is not None else None

    _ITEM = ("SELECT b.attempt_id, b.job_id, a.run_id, a.student_id, a.submission_id,"
             " a.request_hash, a.n, b.epoch, b.previous, b.request_json, b.flags_json,"
             " a.redaction_json, b.state FROM batch_items b JOIN attempts a"
             " ON a.id = b.attempt_id")

    @staticmethod
    def _item(r: sqlite3.Row) -> BatchItem:
        return BatchItem(r["attempt_id"], r["job_id"], r["run_id"], r["student_id"],
                         r["submission_id"], r["request_hash"], r["n"], r["epoch"],
                         r["previous"], r["request_json"], r["flags_json"],
                         loads(r["redaction_json"], {}), r["state"])

    @mapped
    def batch_item(self, attempt_id: int) -> BatchItem | None:
        r = self.conn.execute(self._ITEM + " WHERE b.attempt_id=?", (attempt_id,)).fetchone()
        return self._item(r) if r is not None else None

    @mapped
    def batch_items(self, job_id: int, state: str | None = None) -> list[BatchItem]:
        sql = self._ITEM + " WHERE b.job_id=?" + (" AND b.state=?" if state else "")
        args: tuple[Any, ...] = (job_id, state) if state else (job_id,)
        return [self._item(r) for r in self.conn.execute(sql + " ORDER BY b.attempt_id", args)]

    @mapped
    def batch_unfollowed(self, class_dir: str) -> list[BatchItem]:
        """Items judged to need a second round whose second round was never sent (or sent in
        a job that was never created)."""
        sql = (self._ITEM + " JOIN batch_jobs j ON j.id = b.job_id WHERE j.class_dir=? AND"
               " b.state='reasked' AND NOT EXISTS (SELECT 1 FROM batch_items f"
               " WHERE f.previous = b.attempt_id AND f.state != 'dropped')"
               " ORDER BY b.attempt_id")
        return [self._item(r) for r in self.conn.execute(sql, (class_dir,))]

    @mapped
    def batch_item_done(self, attempt_id: int, state: str, error: str | None = None) -> None:
        self.conn.execute("UPDATE batch_items SET state=?, error=? WHERE attempt_id=?",
                          (state, error, attempt_id))

    @mapped
    def batch_drop_job(self, job_id: int, reason: str) -> None:
        """A job that was never created: its attempts failed, its students free to submit."""
        with self.atomic():
            self.conn.execute(
                "UPDATE attempts SET state='failed', error=? WHERE id IN"
                " (SELECT attempt_id FROM batch_items WHERE job_id=? AND state='pending')",
                (reason, job_id))
            self.conn.execute("UPDATE batch_items SET state='dropped', error=? WHERE job_id=?"
                              " AND state='pending'", (reason, job_id))
            self.conn.execute("UPDATE batch_jobs SET state='abandoned', error=?, collected_at=?"
                              " WHERE id=?", (reason, now(), job_id))

    @mapped
    def batch_busy(self) -> dict[tuple[str, int], str]:
        """(student, submission) -> 'pending' for work in an open job, 'failed' for work whose
        latest batch line failed (resubmitted only with --retry-failed). Over every job of the
        store, whichever class folder it was submitted from: a submission in flight is never
        sent again, even when the folder's path changed."""
        rows = self.conn.execute(
            "SELECT a.student_id, a.submission_id, b.state FROM batch_items b"
            " JOIN attempts a ON a.id = b.attempt_id"
            " WHERE b.state IN ('pending', 'failed', 'stored', 'reasked')"
            " ORDER BY b.attempt_id")
        out: dict[tuple[str, int], str] = {}
        for r in rows:  # the latest item decides; a re-asked one is still in flight
            key = (r["student_id"], r["submission_id"])
            if r["state"] == "stored":
                out.pop(key, None)
            else:
                out[key] = "pending" if r["state"] == "reasked" else r["state"]
        return out

    # --- the class folder: the key of runs and jobs, carried over when it is moved --------------

    @mapped
    def class_folders(self) -> list[str]:
        """The class folders the store's runs and batch jobs were made for."""
        return [r[0] for r in self.conn.execute(
            "SELECT class_dir FROM runs UNION SELECT class_dir FROM batch_jobs ORDER BY 1")]

    @mapped
    def move_class(self, old: str, new: str) -> tuple[int, int]:
        """The records of class folder `old` become those of `new` (the folder was moved), in
        every table keyed by the folder, in one transaction. Returns (runs, batch jobs still
        open) carried over. A human-score import already made at `new` of the same file is
        kept (human_imports is unique by folder and file); the old row stays as it was."""
        with self.atomic():
            runs = self.conn.execute("UPDATE runs SET class_dir=? WHERE class_dir=?",
                                     (new, old)).rowcount
            (open_jobs,) = self.conn.execute(
                "SELECT COUNT(*) FROM batch_jobs WHERE class_dir=? AND " + self._OPEN_JOB,
                (old,)).fetchone()
            for table in ("batch_jobs", "human_scores", "calibrations"):
                self.conn.execute(f"UPDATE {table} SET class_dir=? WHERE class_dir=?",
                                  (new, old))
            self.conn.execute("UPDATE OR IGNORE human_imports SET class_dir=? WHERE class_dir=?",
                              (new, old))
        return int(runs), int(open_jobs)

    @mapped
    def batch_job_counts(self, job_id: int) -> dict[str, float]:
        """Items per state, and the cost of the replies stored so far."""
        out: dict[str, float] = {r[0]: r[1] for r in self.conn.execute(
            "SELECT state, COUNT(*) FROM batch_items WHERE job_id=? GROUP BY state", (job_id,))}
        out["cost_usd"] = float(self.conn.execute(
            "SELECT COALESCE(SUM(a.cost_usd), 0) FROM attempts a JOIN batch_items b"
            " ON b.attempt_id = a.id WHERE b.job_id=?", (job_id,)).fetchone()[0])
        return out

    @mapped
    def reply_of(self, attempt_id: int) -> Reply | None:
        """The reply an attempt's request got (from whichever attempt paid for it)."""
        r = self.conn.execute("SELECT request_hash FROM attempts WHERE id=?",
                              (attempt_id,)).fetchone()
        return self.response_for(r[0]) if r is not None else None
