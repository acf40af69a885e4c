"""The call ledger: every model call of a run goes through `CallLedger.call`, which makes sure a
request is paid for at most once.

- A request is identified by the hash of its canonical form as sent (model, static prefix, the
  student's parts, history, schema, generation config), salted with the sample index and the
  run's epoch. If the response ledger already holds a reply for that hash, it is reused.
- Two students with byte-identical requests in one run share one call (single flight).
- The attempt is committed as `sent` before the request leaves, and the reply is committed the
  moment it arrives, before anything else is done with it. After a crash, a reply that arrived
  is never bought again, and `grade status` lists what was sent but never answered.
- Money (`budget.Spending`): before a request leaves, its worst case is reserved against the
  run's `--budget` and spend-rate limit (a student who cannot be afforded raises
  `BudgetExceeded`); when the reply arrives its real cost is computed from its usage and stored
  with it. Close to the budget a request may be sent with a smaller output cap (the budget's
  rule 3): it is then another request, with its own key, and a reply cut at that cap is kept
  (it was paid for) but not judged: the student is skipped for the budget, never flagged for
  a cap the budget chose.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from grader.backends import Backend
from grader.config.generation import served_notice
from grader.errors import BackendError
from grader.grading.records import Answer, Reply, RequestRecord
from grader.online.budget import Spending
from grader.prompting.request import GradeRequest, GradeResponse, Usage
from grader.store import Store

# Test-only fault hook: SIGKILL this process right after the Nth reply is committed, to prove
# that a rerun pays nothing for it (tests/test_paid_once.py).
KILL_AFTER_REPLY_ENV = "GRADER_TEST_KILL_AFTER_REPLY"


def sha256(*pieces: str | bytes) -> str:
    h = hashlib.sha256()
    for p in pieces:
        h.update(p.encode("utf-8") if isinstance(p, str) else p)
        h.update(b"\x1f")
    return h.hexdigest()


def prefix_hash(model: str, system: str, static_prefix: str, schema: dict[str, Any],
                references: tuple[str, ...] = ()) -> str:
    """What every request of a run shares, hashed once per run: the reference files by content
    (sha256), never by where they were uploaded, so a re-upload changes no request's key."""
    return sha256("prefix/1", model, system, static_prefix,
                  json.dumps(schema, sort_keys=True, separators=(",", ":")), *references)


def describe(req: GradeRequest, prefix: str, salt: str) -> RequestRecord:
    """The request as sent, in canonical form, and its ledger key."""
    parts: list[dict[str, Any]] = []
    for p in req.student_parts:
        if p.text is not None:
            parts.append({"text": p.text})
        else:
            data = p.data or b""
            parts.append({"mime_type": p.mime_type, "bytes": len(data),
                          "sha256": hashlib.sha256(data).hexdigest()})
    body = {"model": req.model, "prefix": prefix, "parts": parts,
            "history": [[t.role, t.text] for t in req.history],
            "config": req.generation_config()}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return RequestRecord(hash=sha256("request/1", canonical, salt), prefix_hash=prefix,
                         model=req.model, body=body)


def salt(sample: int, epoch: int) -> str:
    return f"sample={sample};epoch={epoch}"


@dataclass(frozen=True)
class Called:
    reply: Reply
    attempt_id: int | None  # None: reused (from the ledger or another student's call)


@dataclass
class Counters:
    calls: int = 0
    reused: int = 0
    retries: int = 0
    usage: Usage = field(default_factory=Usage)


class CallLedger:
    """One per run; used from the event-loop thread only. `on_notice` hears, once each, what
    the replies reveal about the served model (routed, deprecated)."""

    def __init__(self, store: Store, backend: Backend, run_id: int, *,
                 spending: Spending | None = None, service_tier: str | None = None,
                 on_notice: Callable[[str], None] | None = None):
        self.store, self.backend, self.run_id = store, backend, run_id
        self.spending = spending
        self.service_tier = service_tier
        self.on_notice = on_notice
        self.counters = Counters()
        self._inflight: dict[str, asyncio.Future[Reply]] = {}
        self._kill_after = int(os.environ.get(KILL_AFTER_REPLY_ENV) or 0)
        self._answered = 0
        self._served: set[tuple[str | None, str | None]] = set()

    async def call(self, req: GradeRequest, record: RequestRecord, *, student_id: str,
                   submission_id: int, sample: int, n: int,
                   redaction: Mapping[str, str] | None = None,
                   prepare: Callable[[GradeRequest], Awaitable[GradeRequest]] | None = None,
                   shrink: str | None = None) -> Called:
        """`prepare` runs only when the request is really sent (no stored reply, none in
        flight): it names the run's cache and uploads what is too big to send inline.
        `shrink`: the request's salt (`salt`), given when it may be sent with a smaller output
        cap where only that fits the budget (it is then keyed as sent, with this salt)."""
        stored = self.store.response_for(record.hash)
        if stored is not None:
            self.counters.reused += 1
            return Called(stored, None)
        pending = self._inflight.get(record.hash)
        if pending is not None:  # an identical request is on its way: share its reply
            reply = await asyncio.shield(pending)
            self.counters.reused += 1
            return Called(reply, None)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        key, asked_record = record.hash, record  # as asked: `record` becomes it as sent
        self._inflight[key] = future
        try:
            hold = (await self.spending.reserve(req, shrink=shrink is not None)
                    if self.spending is not None else None)
            asked = req
            try:  # from here the reservation is given back whatever happens
                if hold is not None and shrink is not None and hold.cap < req.max_output_tokens:
                    req = req.model_copy(update={"max_output_tokens": hold.cap})
                    record = describe(req, record.prefix_hash or "", shrink)
                if prepare is not None:
                    req = await prepare(req)
                attempt_id = self.store.begin_attempt(
                    run_id=self.run_id, student_id=student_id, submission_id=submission_id,
                    request=record, sample=sample, n=n, redaction=redaction)
                try:
                    resp = await self.backend.generate(
                        req.model_copy(update={"key": record.hash}))
                except BackendError as e:
                    self.store.fail_attempt(attempt_id, error=e.render(), status=e.status,
                                            retries=e.retries, latency_ms=0.0)
                    raise
            except BaseException:
                if self.spending is not None:
                    self.spending.settle(hold, None)  # not answered: nothing to book
                raise
            cost = self.spending.settle(hold, resp.usage) if self.spending is not None else None
            # a complete reply at the smaller cap answers the request as asked, too
            also = asked_record if record is not asked_record \
                and resp.blocked_reason != "MAX_TOKENS" else None
            self._keep(attempt_id, record.hash, resp, cost, also)
            self._watch(req.model, resp)
            if req is not asked and resp.blocked_reason == "MAX_TOKENS":
                assert self.spending is not None
                raise self.spending.cut_short(asked, req.max_output_tokens)
            reply = Reply(resp.text, resp.finish_reason, resp.blocked_reason, resp.model_version,
                          resp.usage.thinking_tokens, resp.usage.output_tokens)
            future.set_result(reply)
            return Called(reply, attempt_id)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as e:
            future.set_exception(e)
            future.exception()  # retrieved here: waiters (if any) re-raise it themselves
            raise
        finally:
            del self._inflight[key]

    def _keep(self, attempt_id: int, request_hash: str, resp: GradeResponse,
              cost: float | None, also: RequestRecord | None = None) -> None:
        """Commit the reply, with what it cost, before anything else happens to it."""
        self.store.answer_attempt(attempt_id, request_hash,
                                  Answer(resp, cost, service_tier=self.service_tier), also)
        self._answered += 1
        if self._kill_after and self._answered >= self._kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        c = self.counters
        c.calls += 1
        c.retries += resp.retries
        c.usage = c.usage + resp.usage

    def _watch(self, asked: str, resp: GradeResponse) -> None:
        """Say once per (served version, stage) when the reply came from another model than the
        one asked for, or from a deprecated one."""
        key = (resp.model_version, resp.model_status)
        if key in self._served:
            return
        self._served.add(key)
        text = served_notice(asked, resp.model_version, resp.model_status)
        if text is not None and self.on_notice is not None:
            self.on_notice(text + " (recorded with every attempt; report.html lists it)")
