"""Reads for reports: a run's results per student, usage and cost, served models, and the
text a grade was given as it was sent."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator

from grader.grading.records import (
    CriterionRow,
    FlagRow,
    ItemRow,
    SentText,
    ServedModel,
    StudentResult,
)
from grader.store.core import ROWS_PER_BATCH, StoreCore, loads, mapped, store_error


class Reports(StoreCore):
    # --- reads for reports -------------------------------------------------------------------

    @mapped
    def grade_count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM grades").fetchone()[0])

    @mapped
    def run_student_ids(self, run_id: int) -> set[str]:
        return {r[0] for r in self.conn.execute(
            "SELECT student_id FROM outcomes WHERE run_id=?", (run_id,))}

    @mapped
    def usage(self, run_id: int) -> dict[str, float]:
        """Calls made, tokens billed and what they cost in a run (replies reused from the ledger
        cost nothing). `cost_usd` sums the priced calls; `unpriced` counts answered calls the
        model table had no price for; `cache_create_usd` and `cache_storage_usd` are what the
        run's explicit caches cost to create and to keep (storage is booked when a cache
        ends); `screen_usd` what the run's model-based injection checks cost."""
        row = self.conn.execute(
            "SELECT COUNT(*) AS calls, COALESCE(SUM(prompt_tokens),0) AS prompt_tokens,"
            " COALESCE(SUM(output_tokens),0) AS output_tokens,"
            " COALESCE(SUM(thinking_tokens),0) AS thinking_tokens,"
            " COALESCE(SUM(cached_tokens),0) AS cached_tokens,"
            " COALESCE(SUM(latency_ms),0) AS latency_ms,"
            " COALESCE(SUM(retries),0) AS retries,"
            " COALESCE(SUM(cost_usd),0) AS cost_usd,"
            " COUNT(*) FILTER (WHERE answered_at IS NOT NULL AND cost_usd IS NULL) AS unpriced"
            " FROM attempts WHERE run_id=? AND state != 'rendered'", (run_id,),
        ).fetchone()
        cache = self.conn.execute(
            "SELECT COUNT(*) AS caches, COALESCE(SUM(create_usd),0) AS cache_create_usd,"
            " COALESCE(SUM(storage_usd),0) AS cache_storage_usd FROM caches"
            " WHERE run_id=? AND name IS NOT NULL", (run_id,)).fetchone()
        screen = self.conn.execute(
            "SELECT COALESCE(SUM(cost_usd),0) AS screen_usd FROM injection_checks"
            " WHERE run_id=?", (run_id,)).fetchone()
        return {**dict(row), **dict(cache), **dict(screen)}

    @mapped
    def served_models(self, run_id: int) -> list[ServedModel]:
        """The model versions (and lifecycle stages) that answered the run's calls."""
        return [ServedModel(r[0], r[1], r[2]) for r in self.conn.execute(
            "SELECT model_version, model_status, COUNT(*) FROM attempts"
            " WHERE run_id=? AND answered_at IS NOT NULL"
            " GROUP BY model_version, model_status ORDER BY COUNT(*) DESC", (run_id,))]

    def _identical(self, run_id: int) -> dict[str, list[str]]:
        """Students of the run whose whole submission is byte-identical to someone else's."""
        out: dict[str, list[str]] = {}
        for r in self.conn.execute(
            "SELECT group_concat(o.student_id, char(31)) AS ids FROM outcomes o"
            " JOIN submissions sub ON sub.id = o.submission_id"
            " WHERE o.run_id=? AND sub.body_hash IS NOT NULL"
            " GROUP BY sub.body_hash HAVING COUNT(*) > 1", (run_id,)):
            ids = sorted(r["ids"].split("\x1f"))
            for sid in ids:
                out[sid] = [i for i in ids if i != sid]
        return out

    def results(self, run_id: int) -> Iterator[StudentResult]:
        """Every student's outcome in a run, ordered by student id, streamed row by row."""
        try:
            yield from self._results(run_id)
        except sqlite3.Error as e:
            raise store_error(e, self.path) from e

    def _results(self, run_id: int) -> Iterator[StudentResult]:
        identical = self._identical(run_id)
        inconsistent = {r[0]: r[1] for r in self.conn.execute(
            "SELECT student_id, flag FROM answer_groups WHERE run_id=? AND flag IS NOT NULL",
            (run_id,))}
        rows = self.conn.execute(
            "SELECT o.*, s.name, s.email, s.source, sub.files_json, sub.late, sub.notes_json,"
            " g.status AS grade_status, g.total, g.max_total, g.percent, g.overall_comment,"
            " g.needs_review, g.review_reason, g.model_version, g.samples FROM outcomes o"
            " JOIN students s ON s.id = o.student_id"
            " LEFT JOIN submissions sub ON sub.id = o.submission_id"
            " LEFT JOIN grades g ON g.id = o.grade_id WHERE o.run_id=? ORDER BY o.student_id",
            (run_id,),
        )
        while batch := rows.fetchmany(ROWS_PER_BATCH):
            yield from self._result_batch(batch, identical, inconsistent)

    def _result_batch(self, batch: list[sqlite3.Row], identical: dict[str, list[str]],
                      inconsistent: dict[str, str]) -> Iterator[StudentResult]:
        """Results for a batch of outcome rows: scores and flags read with one query each;
        `inconsistent`: the `inconsistent_with_group` messages of the run's answer groups."""
        gids = [r["grade_id"] for r in batch if r["grade_id"] is not None]
        marks = ",".join("?" * len(gids))
        crits: dict[int, list[CriterionRow]] = {}
        flags: dict[int, list[FlagRow]] = {}
        if gids:
            cur = self.conn.cursor()
            cur.row_factory = None  # plain tuples: 60,000 rows for a class of 10,000
            for (gid, cid, score, max_points, justification, evidence, feedback, spread,
                 samples, items) in cur.execute(
                    "SELECT grade_id, criterion_id, score, max_points, justification,"
                    " evidence_json, feedback, spread, samples_json, items_json"
                    f" FROM criterion_scores WHERE grade_id IN ({marks})"
                    " ORDER BY grade_id, position", gids):
                crits.setdefault(gid, []).append(CriterionRow(
                    cid, score, max_points, justification,
                    json.loads(evidence) if evidence != "[]" else [], feedback, spread,
                    loads(samples, []), [ItemRow(*t) for t in loads(items, [])]))
            for gid, reason, message in cur.execute(
                    f"SELECT grade_id, reason, message FROM flags WHERE grade_id IN ({marks})"
                    " ORDER BY id", gids):
                flags.setdefault(gid, []).append(FlagRow(reason, message))
        for r in batch:
            res = StudentResult(
                student_id=r["student_id"], name=r["name"], email=r["email"], status=r["status"],
                reason=r["reason"], message=r["message"], reused=bool(r["reused"]),
                late=bool(r["late"]), files=loads(r["files_json"], []),
                submission_id=r["submission_id"], notes=loads(r["notes_json"], []),
                source=r["source"],
                grade_id=r["grade_id"], grade_status=r["grade_status"], total=r["total"],
                max_total=r["max_total"], percent=r["percent"],
                overall_comment=r["overall_comment"], needs_review=bool(r["needs_review"]),
                review_reason=r["review_reason"], model_version=r["model_version"],
                samples=r["samples"] or 1,
            )
            if r["grade_id"] is not None:
                res.criteria = crits.get(r["grade_id"], [])
                res.flags = flags.get(r["grade_id"], [])
            if r["reason"] and not any(f.reason == r["reason"] for f in res.flags):
                res.flags.insert(0, FlagRow(r["reason"], r["message"] or r["reason"]))
            others = identical.get(res.student_id)
            if others:
                res.flags.append(FlagRow(
                    "identical_to", "the whole submission is byte-identical to that of "
                    + ", ".join(others) + " (graded once); check for copying or an unchanged "
                    "starter file"))
            if res.student_id in inconsistent and res.grade_id is not None:
                res.flags.append(FlagRow("inconsistent_with_group",
                                         inconsistent[res.student_id]))
            yield res

    @mapped
    def sent_text(self, submission_id: int, grade_id: int | None = None) -> SentText | None:
        """The student's parts of the first request of grade `grade_id` (the request that
        grade answers), else of the first request sent for this submission; else those of a
        byte-identical submission's request (its reply was shared); None when nothing was ever
        sent (flagged at intake) or the request predates the ledger."""
        row = self.conn.execute(
            "SELECT r.body_json, a.redaction_json FROM attempts a"
            " JOIN requests r ON r.hash = a.request_hash"
            " WHERE a.grade_id=? AND a.submission_id=? ORDER BY a.n, a.id LIMIT 1",
            (grade_id, submission_id)).fetchone() if grade_id is not None else None
        if row is None:
            row = self.conn.execute(
                "SELECT r.body_json, a.redaction_json FROM attempts a"
                " JOIN requests r ON r.hash = a.request_hash"
                " WHERE a.submission_id=? ORDER BY a.n, a.id LIMIT 1",
                (submission_id,)).fetchone()
        own = row is not None
        if row is None:
            row = self.conn.execute(
                "SELECT r.body_json, a.redaction_json FROM submissions s"
                " JOIN submissions o ON o.body_hash = s.body_hash AND o.id != s.id"
                " JOIN attempts a ON a.submission_id = o.id"
                " JOIN requests r ON r.hash = a.request_hash"
                " WHERE s.id=? AND s.body_hash IS NOT NULL ORDER BY a.n, a.id LIMIT 1",
                (submission_id,)).fetchone()
        if row is None:
            return None
        parts = loads(row["body_json"], {}).get("parts")
        if not isinstance(parts, list):
            return None
        mapping = loads(row["redaction_json"], {})
        return SentText(parts=[p for p in parts if isinstance(p, dict)], own=own,
                        redaction={str(k): str(v) for k, v in mapping.items()}
                        if isinstance(mapping, dict) else {})
