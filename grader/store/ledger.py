"""The ledger: what was paid for. Prefixes, requests and responses (content-addressed, never
updated or deleted) and the attempts that sent them; replies that could not be committed are
kept beside the store (or, when that cannot be written, in the user's state or temp folder)
and imported on the next open."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from grader.errors import StoreError
from grader.grading.records import Answer, Reply, RequestRecord, Unanswered
from grader.prompting.request import GradeResponse
from grader.store.core import (
    StoreCore,
    keep_unsaved,
    kept_unsaved,
    mapped,
    now,
    store_error,
    unsaved_path,
)


class Ledger(StoreCore):
    # --- the ledger: what was paid for -------------------------------------------------------

    @mapped
    def save_prefix(self, hash: str, system: str, static_prefix: str,
                    schema: dict[str, Any]) -> None:
        self.conn.execute(
            "INSERT OR IGNORE INTO prefixes (hash, system, static_prefix, schema_json, created_at)"
            " VALUES (?,?,?,?,?)", (hash, system, static_prefix, json.dumps(schema), now()))

    @mapped
    def response_for(self, request_hash: str) -> Reply | None:
        """A reply already paid for with this exact request, if any."""
        r = self.conn.execute(
            "SELECT r.text, r.finish_reason, r.blocked_reason, r.model_version,"
            " a.thinking_tokens, a.output_tokens FROM responses r"
            " LEFT JOIN attempts a ON a.id = r.attempt_id"
            " WHERE r.request_hash=?", (request_hash,)).fetchone()
        if r is None:
            return None
        return Reply(r["text"], r["finish_reason"], r["blocked_reason"], r["model_version"],
                     r["thinking_tokens"] or 0, r["output_tokens"] or 0)

    @mapped
    def paid_attempt(self, request_hash: str, student_id: str, submission_id: int) -> int | None:
        """This student's attempt that paid for the ledger's reply to this request, if any (a
        reply reused after a crash still belongs to the grade it completes)."""
        r = self.conn.execute(
            "SELECT r.attempt_id FROM responses r JOIN attempts a ON a.id = r.attempt_id"
            " WHERE r.request_hash=? AND a.student_id=? AND a.submission_id=?",
            (request_hash, student_id, submission_id)).fetchone()
        return int(r[0]) if r is not None else None

    @mapped
    def begin_attempt(self, *, run_id: int, student_id: str, submission_id: int,
                      request: RequestRecord, sample: int, n: int, state: str = "sent",
                      job_ref: str | None = None,
                      redaction: Mapping[str, str] | None = None) -> int:
        """Record a request before it leaves (committed: after a crash, `grade status` shows it
        as sent but unanswered). `redaction`: what the request's placeholders stand for."""
        stamp = now()
        with self.atomic():
            self._keep_request(request, stamp)
            cur = self.conn.execute(
                "INSERT INTO attempts (run_id, student_id, submission_id, request_hash, sample,"
                " n, state, job_ref, created_at, sent_at, redaction_json)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (run_id, student_id, submission_id, request.hash, sample, n, state, job_ref,
                 stamp, stamp if state == "sent" else None,
                 json.dumps(dict(redaction), ensure_ascii=False) if redaction else None))
        return int(cur.lastrowid or 0)

    def _keep_request(self, request: RequestRecord, stamp: str) -> None:
        """The request as the ledger keys it (insert-or-ignore: it may be asked again)."""
        self.conn.execute(
            "INSERT OR IGNORE INTO requests (hash, prefix_hash, model, body_json, created_at)"
            " VALUES (?,?,?,?,?)",
            (request.hash, request.prefix_hash, request.model,
             json.dumps(request.body, default=str), stamp))

    def answer_attempt(self, attempt_id: int, request_hash: str, answer: Answer,
                       also: RequestRecord | None = None) -> None:
        """Keep a reply (insert-or-ignore: the first paid reply for a request stays) and what it
        cost, in one commit. `also`: another request the reply answers as well, kept in the same
        commit (the request as asked, when a complete reply came back at a smaller output cap
        the budget chose: a later run asks it again and must not pay again). If the commit
        fails (a full disk), the reply is written to a side file instead (beside the store,
        else in the state or temp folder, likely on another disk: `unsaved_paths`), read back
        the next time the store is opened, and the StoreError says where: a paid reply is never
        dropped."""
        try:
            self._answer(attempt_id, request_hash, answer, now(), also)
        except (sqlite3.Error, StoreError) as e:
            err = e if isinstance(e, StoreError) else store_error(e, self.path)
            where = self._keep_unsaved(attempt_id, request_hash, answer)
            away = where is not None and where != unsaved_path(self.path)
            raise StoreError(
                f"{err.message}; the reply that just arrived was "
                + (f"kept in {where}" + (" (beside the store could not be written)"
                                         if away else "")
                   + " and is stored the next time the store is opened"
                   if where else "NOT saved: it may be paid for again"),
                path=self.path, fix=err.fix) from e

    def _answer(self, attempt_id: int, request_hash: str, answer: Answer, stamp: str,
                also: RequestRecord | None = None) -> None:
        r, u = answer.response, answer.response.usage
        raw = json.dumps(r.raw, default=str) if r.raw is not None else None
        with self.atomic():
            if also is not None:
                self._keep_request(also, stamp)
            for key in (request_hash, *((also.hash,) if also is not None else ())):
                self.conn.execute(
                    "INSERT OR IGNORE INTO responses (request_hash, attempt_id, created_at, text,"
                    " finish_reason, blocked_reason, model_version, raw_json)"
                    " VALUES (?,?,?,?,?,?,?,?)",
                    (key, attempt_id, stamp, r.text, r.finish_reason, r.blocked_reason,
                     r.model_version, raw))
            self.conn.execute(
                "UPDATE attempts SET state='answered', answered_at=?, retries=?, latency_ms=?,"
                " prompt_tokens=?, output_tokens=?, thinking_tokens=?, cached_tokens=?,"
                " model_version=?, cost_usd=?, model_status=?, service_tier=? WHERE id=?",
                (stamp, r.retries, r.latency_ms, u.prompt_tokens, u.output_tokens,
                 u.thinking_tokens, u.cached_tokens, r.model_version, answer.cost_usd,
                 r.model_status, answer.service_tier, attempt_id))

    def _keep_unsaved(self, attempt_id: int, request_hash: str, answer: Answer) -> Path | None:
        line = json.dumps({"attempt_id": attempt_id, "request_hash": request_hash,
                           "at": now(), "answer": _answer_json(answer)}, default=str) + "\n"
        return keep_unsaved(self.path, line)

    def _import_unsaved(self) -> None:
        for path in kept_unsaved(self.path):
            self._import_unsaved_from(path)

    def _import_unsaved_from(self, path: Path) -> None:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError:
            return
        for line in lines:
            try:
                item = json.loads(line)
                answer = _answer_of(item["answer"])
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short when the disk filled up
            try:
                self._answer(int(item["attempt_id"]), str(item["request_hash"]), answer,
                             str(item["at"]))
            except sqlite3.Error as e:
                raise store_error(e, self.path) from e
        path.unlink()
        self.notices.append(f"{len(lines)} reply(ies) kept in {path} while the disk was full "
                            "were stored")

    @mapped
    def fail_attempt(self, attempt_id: int, *, error: str, status: int | None, retries: int,
                     latency_ms: float) -> None:
        self.conn.execute(
            "UPDATE attempts SET state='failed', error=?, error_status=?, retries=?,"
            " latency_ms=? WHERE id=?", (error, status, retries, latency_ms, attempt_id))

    @mapped
    def unanswered(self, class_dir: str | None = None, *,
                   include_running: bool = False) -> list[Unanswered]:
        """Attempts sent online by runs that are over and never answered (a batch job's lines
        are answered by the job, `batch_jobs`). `include_running`: count runs still marked
        running too (the caller knows no process holds the store)."""
        sql = ("SELECT a.id, a.run_id, a.student_id, a.sent_at FROM attempts a"
               " JOIN runs r ON r.id = a.run_id WHERE a.state='sent' AND NOT EXISTS"
               " (SELECT 1 FROM batch_items b WHERE b.attempt_id = a.id)")
        if not include_running:
            sql += " AND r.status != 'running'"
        args: tuple[Any, ...] = ()
        if class_dir is not None:
            sql += " AND r.class_dir=?"
            args = (class_dir,)
        return [Unanswered(r["id"], r["run_id"], r["student_id"], r["sent_at"])
                for r in self.conn.execute(sql + " ORDER BY a.id", args)]


def _answer_json(answer: Answer) -> dict[str, Any]:
    return {"response": answer.response.model_dump(mode="json"), "cost_usd": answer.cost_usd,
            "service_tier": answer.service_tier}


_USAGE = ("prompt_tokens", "output_tokens", "thinking_tokens", "cached_tokens")


def _answer_of(d: dict[str, Any]) -> Answer:
    """An answer as `_answer_json` wrote it, or as grader before 2026-12-07 did (the reply's
    fields and its token counts side by side): a side file left by an older version is still
    stored."""
    if "response" not in d:
        flat = dict(d)
        usage = {k: flat.pop(k) for k in _USAGE if k in flat}
        cost, tier = flat.pop("cost_usd", None), flat.pop("service_tier", None)
        d = {"response": {**flat, "usage": usage}, "cost_usd": cost, "service_tier": tier}
    return Answer(GradeResponse.model_validate(d["response"]), d.get("cost_usd"),
                  d.get("service_tier"))
