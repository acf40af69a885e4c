"""Collecting batch jobs: each finished job's results streamed line by line, every reply kept
in the ledger and judged exactly as online grading judges it (`judge.judge`: validation, the
re-ask, the quote check against the submission as sent), grades
stored exactly once (items already stored are skipped; commits every `COMMIT_EVERY` lines, so a
crash loses at most one uncommitted chunk, judged again next time); failed lines and the lines of
failed, cancelled or expired jobs mark their students failed; answers that need the one re-ask
go out as a second, small batch round, or with `batch_reask = "online"` (`--reask online`) are
completed in the same collect by an online call through the call ledger (committed as sent
before it leaves, its reply committed on arrival: a collect stopped in between and run again
reuses the reply, pays nothing twice and stores the grade once). After the grades of a
collect are stored, the score-jump check runs over each run they belong to, as after an online
run.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grader.backends import BatchInfo, BatchResult
from grader.backends.base import SupportsFiles
from grader.batch.jobs import (
    Context,
    Frame,
    Pending,
    freeze,
    frozen_exemplars,
    frozen_findings,
    frozen_parts,
    parse_flags,
    record_outcome,
    recover,
    save_verdict,
    send,
    thaw,
    twins,
)
from grader.config import models
from grader.errors import BackendError, StoreError
from grader.grading.judge import Grounds, judge
from grader.grading.policy import Reask, Reconfigure, Verdict
from grader.grading.prepare import quote_text
from grader.grading.records import Answer, BatchItem, BatchItemIn, BatchJobRow, OutcomeRecord, Reply
from grader.intake import injection
from grader.intake.redact import restore_verdict
from grader.online.ledger import CallLedger, describe, salt
from grader.prompting.planning import spending_for
from grader.prompting.request import GradeRequest, GradeResponse, Usage
from grader.quality import score_jump
from grader.reports.write import write_outputs
from grader.store import Store

# Test-only fault hook (tests/test_batch_recovery.py): SIGKILL this process after the Nth
# collected item is committed.
KILL_AFTER_COLLECTED_ENV = "GRADER_TEST_KILL_AFTER_COLLECTED"
COMMIT_EVERY = 200  # collected items per transaction
POLL_CAP_S = 600.0


@dataclass
class Collected:
    jobs: int = 0  # jobs collected now
    graded: int = 0
    flagged: int = 0
    failed: int = 0
    reasked: int = 0  # sent in a second batch round
    reasked_online: int = 0  # completed by an online call
    running: int = 0  # jobs not finished yet
    cost_usd: float = 0.0
    outputs: list[Path] = field(default_factory=list)
    injection_suspected: list[str] = field(default_factory=list)  # by the score-jump check
    notices: tuple[str, ...] = ()  # what the teacher should know (the class folder was moved)
    # students stored now with injection evidence or signs of it, by run (score_jump)
    candidates: dict[int, dict[str, score_jump.Candidate]] = field(default_factory=dict)


class _Chunked:
    """Commit every `size` items (and when asked), so collecting 10,000 lines is not 10,000
    fsyncs, and a crash loses at most one uncommitted chunk (judged again next time)."""

    def __init__(self, store: Store, size: int):
        self.store, self.size, self.n = store, size, 0
        self._cm: AbstractContextManager[None] | None = None

    def __enter__(self) -> _Chunked:
        self._open()
        return self

    def _open(self) -> None:
        self._cm = self.store.atomic()
        self._cm.__enter__()

    def commit(self) -> None:
        assert self._cm is not None
        self._cm.__exit__(None, None, None)
        self._open()

    def tick(self) -> None:
        self.n += 1
        if self.n % self.size == 0:
            self.commit()

    def __exit__(self, kind: Any, value: Any, tb: Any) -> None:
        assert self._cm is not None
        self._cm.__exit__(kind, value, tb)


async def collect(ctx: Context) -> Collected:
    """Every finished job's results, judged and stored exactly once; the reports written."""
    await recover(ctx)
    latest = ctx.store.latest_run(ctx.class_key)
    ctx.report_run = latest.id if latest is not None else None
    ctx.report_fingerprint = latest.fingerprint if latest is not None else None
    out = Collected(notices=ctx.notices)
    touched: set[int] = set()
    reasks = _unsent_follow_ups(ctx)
    frames: dict[int, Frame] = {}
    kill_after = int(os.environ.get(KILL_AFTER_COLLECTED_ENV) or 0)
    for job in ctx.store.batch_jobs(ctx.class_key, open_only=True):
        if job.name is None:
            continue
        info = await ctx.batches.get_batch(job.name)
        ctx.store.batch_job_state(job.id, info.state, ended=info.done, error=info.error)
        if not info.done:
            out.running += 1
            continue
        with _Chunked(ctx.store, COMMIT_EVERY) as chunk:
            if info.succeeded:
                same = twins(ctx.store.batch_items(job.id, "pending"))
                async for r in ctx.batches.batch_results(info, ctx.workdir):
                    if _judge(ctx, job, r, out, reasks, frames, same):
                        chunk.tick()
                        if kill_after and chunk.n >= kill_after:
                            chunk.commit()
                            os.kill(os.getpid(), signal.SIGKILL)
            why = (f"the batch job ended {info.state.removeprefix('JOB_STATE_').lower()}"
                   + (f": {info.error}" if info.error else "") if not info.succeeded
                   else "the job's results had no line for this request")
            for item in ctx.store.batch_items(job.id, "pending"):
                _fail(ctx, item, why, out)
            ctx.store.batch_job_collected(job.id)
        await _clean_up(ctx, job, info)
        out.jobs += 1
        touched.add(job.run_id)
    for run_id, items in reasks.items():
        online = [_online(ctx, x) for x in items]
        by_batch = [x for x, o in zip(items, online, strict=True) if not o]
        if any(online):
            await _complete_online(ctx, run_id, [x for x, o in zip(items, online, strict=True)
                                                 if o], out)
            touched.add(run_id)
        if by_batch:
            await send(ctx, run_id, by_batch, round=2)
            out.reasked += len(by_batch)
    for run_id, candidates in out.candidates.items():
        out.injection_suspected += score_jump.check_run(ctx.store, run_id, candidates)
    if ctx.settings.out is not None and touched and ctx.report_run is not None:
        out.outputs = write_outputs(ctx.store, ctx.report_run, ctx.settings.out,
                                    handouts=ctx.settings.handouts)
    return out


def _judge(ctx: Context, job: BatchJobRow, r: BatchResult, out: Collected,
           reasks: dict[int, list[Pending]], frames: dict[int, Frame],
           same: dict[int, list[BatchItem]]) -> bool:
    """One result line, for its item and the classmates' identical requests it was sent for
    (`same`: `twins`); False when it is not ours to judge (unknown, or judged before). Each is
    judged under the run that sent it (`Frame`); the line is paid for once."""
    if not r.key.startswith("a") or not r.key[1:].isdigit():
        return False
    item = ctx.store.batch_item(int(r.key[1:]))
    if item is None or item.job_id != job.id:
        return False
    todo = [x for x in (item, *same.pop(item.attempt_id, ())) if x.state == "pending"]
    for n, x in enumerate(todo):
        if r.response is None:
            _fail(ctx, x, f"the batch line failed: {r.error}", out)
        else:
            shared = n > 0 or x is not item  # the line's reply, paid for with its first item
            _judge_one(ctx, x, r.response, out, reasks, _frame(ctx, x.run_id, frames, out),
                       shared=shared)
    return bool(todo)


def _judge_one(ctx: Context, item: BatchItem, resp: GradeResponse, out: Collected,
               reasks: dict[int, list[Pending]], frame: Frame, *, shared: bool) -> None:
    if shared:  # kept as answered for nothing: the line was paid for with its first item
        cost: float | None = 0.0
        _keep(ctx, item, resp.model_copy(update={"usage": Usage()}), cost)
    else:
        cost = frame.pricing.cost(resp.usage, models.today())
        _keep(ctx, item, resp, cost)
    out.cost_usd += cost or 0.0
    chain = _chain(ctx, item)
    replies = [*(_reply(ctx, a) for a in chain[:-1]), Reply(
        resp.text, resp.finish_reason, resp.blocked_reason, resp.model_version,
        resp.usage.thinking_tokens, resp.usage.output_tokens)]
    verdict = judge(frame.policy, replies, grounds_of(item))
    if isinstance(verdict, Reask | Reconfigure):
        reasks.setdefault(item.run_id, []).append(_follow_up(ctx, item, verdict))
        ctx.store.batch_item_done(item.attempt_id, "reasked")
        return
    _store(ctx, item, verdict, chain, out, frame)


def _frame(ctx: Context, run_id: int, frames: dict[int, Frame], out: Collected) -> Frame:
    """The run's frame, once per run; a run sent with another rubric, prompt or model than
    now is said aloud."""
    if run_id not in frames:
        frames[run_id] = f = Frame.of_run(ctx, run_id)
        if f.changed is not None:
            out.notices += (
                f"run {run_id}'s batch job was sent with another {f.changed} than the class has "
                f"now: its grades are kept as they were asked ({f.model}, the rubric then, out "
                f"of {f.max_total:g} points); `grade batch sync` or `grade run` grades those "
                "students again with today's",)
    return frames[run_id]


def grounds_of(item: BatchItem) -> Grounds:
    """What the item's replies are judged against: intake's flags, and the submission as the
    request sent it (for the quote check)."""
    return Grounds(parse_flags(item.flags_json), quote_text(frozen_parts(item.request_json)))


def _store(ctx: Context, item: BatchItem, verdict: Verdict, attempts: list[int],
           out: Collected, frame: Frame | None = None) -> None:
    """The student's grade (names mapped back), stored with the item marked done, together."""
    cfg = str(json.loads(item.request_json)["cfg"])
    verdict = restore_verdict(verdict, item.redaction)
    with ctx.store.atomic():
        gid = save_verdict(ctx, item.run_id, item.student_id, item.submission_id, verdict,
                           item.epoch, cfg, attempts, frozen_exemplars(item.request_json),
                           frame)
        ctx.store.batch_item_done(item.attempt_id, "stored")
    flagged = any(f.reason == injection.FLAG for f in verdict.flags)
    findings = frozen_findings(item.request_json)
    if flagged or findings:
        out.candidates.setdefault(item.run_id, {})[item.student_id] = score_jump.Candidate(
            gid, findings, flagged)
    if verdict.status == "graded":
        out.graded += 1
    else:
        out.flagged += 1


def _follow_up(ctx: Context, item: BatchItem, verdict: Reask | Reconfigure) -> Pending:
    """The second round of a conversation: the re-ask, or more room after a thinking cut-off."""
    req, cfg = thaw(ctx, item.request_json)
    req = _asked_again(req, verdict)
    record = describe(req, ctx.run.prefix, salt(0, item.epoch))
    return Pending(item.student_id, item.submission_id, req, BatchItemIn(
        student_id=item.student_id, submission_id=item.submission_id, request=record,
        n=item.n + 1, epoch=item.epoch,
        request_json=freeze(req, cfg, frozen_exemplars(item.request_json)),
        flags_json=item.flags_json, redaction=item.redaction or None,
        previous=item.attempt_id))


def _asked_again(req: GradeRequest, verdict: Reask | Reconfigure) -> GradeRequest:
    if isinstance(verdict, Reask):
        return req.model_copy(update={"history": verdict.history})
    return req.model_copy(update={"max_output_tokens": verdict.max_output_tokens,
                                  "thinking_level": verdict.thinking_level})


def _online(ctx: Context, follow_up: Pending) -> bool:
    """Asked online: when the settings say so, or when the ledger already holds its reply (an
    online re-ask of a collect that stopped before storing its grade: never paid twice)."""
    return (ctx.settings.batch_reask == "online"
            or ctx.store.response_for(follow_up.item.request.hash) is not None)


async def _complete_online(ctx: Context, run_id: int, follow_ups: list[Pending],
                           out: Collected) -> None:
    """Re-asks of one run answered by online calls (at the online price), judged by the same
    policy (asked again while it says so), restored and stored like a batch result."""
    tbl = models.table(ctx.settings.models)
    spending = spending_for(ctx.settings, ctx.run.gen, tbl, len(ctx.run.p.rubric.all_criteria))
    assert spending is not None  # a batch backend is a paid API
    ledger = CallLedger(ctx.store, ctx.backend, run_id, spending=spending,
                        service_tier=ctx.settings.tier)
    try:
        for follow_up in follow_ups:
            await _ask_online(ctx, ledger, follow_up, out)
    finally:
        out.cost_usd += spending.cost


async def _ask_online(ctx: Context, ledger: CallLedger, follow_up: Pending,
                      out: Collected) -> None:
    """One student's conversation finished online from the batch item that needed a re-ask;
    a permanent error fails the student (`--retry-failed` sends it again)."""
    asked = follow_up.item
    assert asked.previous is not None
    item = ctx.store.batch_item(asked.previous)
    assert item is not None
    attempts = _chain(ctx, item)
    replies = [_reply(ctx, a) for a in attempts]
    req, record, n = follow_up.req, asked.request, asked.n
    while True:
        try:
            called = await ledger.call(req, record, student_id=item.student_id,
                                       submission_id=item.submission_id, sample=0, n=n,
                                       redaction=item.redaction or None)
        except BackendError as e:
            if e.transient:  # the item stays re-asked: the next collect asks again
                raise
            _fail(ctx, item, f"the online re-ask failed: {e.render()}", out, answered=True)
            return
        replies.append(called.reply)
        paid = called.attempt_id or ctx.store.paid_attempt(record.hash, item.student_id,
                                                           item.submission_id)
        if paid is not None:
            attempts.append(paid)
        verdict = judge(ctx.run.policy, replies, grounds_of(item))
        if isinstance(verdict, Verdict):
            break
        req = _asked_again(req, verdict)
        record, n = describe(req, ctx.run.prefix, salt(0, item.epoch)), n + 1
    _store(ctx, item, verdict, attempts, out)
    out.reasked_online += 1


def _unsent_follow_ups(ctx: Context) -> dict[int, list[Pending]]:
    """Re-asks judged and committed by a collect that stopped before sending them: judged
    again from the stored replies (the policy is pure: the same re-ask) and sent now."""
    out: dict[int, list[Pending]] = {}
    for item in ctx.store.batch_unfollowed(ctx.class_key):
        replies = [_reply(ctx, a) for a in _chain(ctx, item)]
        verdict = judge(ctx.run.policy, replies, grounds_of(item))
        if isinstance(verdict, Reask | Reconfigure):
            out.setdefault(item.run_id, []).append(_follow_up(ctx, item, verdict))
    return out


def _keep(ctx: Context, item: BatchItem, resp: GradeResponse, cost: float | None) -> None:
    ctx.store.answer_attempt(item.attempt_id, item.request_hash,
                             Answer(resp, cost, service_tier="batch"))


def _chain(ctx: Context, item: BatchItem) -> list[int]:
    """The attempts of one student's conversation, first round first."""
    chain = [item.attempt_id]
    prev = item.previous
    while prev is not None:
        chain.insert(0, prev)
        before = ctx.store.batch_item(prev)
        prev = before.previous if before is not None else None
    return chain


def _reply(ctx: Context, attempt_id: int) -> Reply:
    reply = ctx.store.reply_of(attempt_id)
    if reply is None:
        raise StoreError(f"attempt {attempt_id} has no stored reply",
                         fix="report this store to the grader developers")
    return reply


def _fail(ctx: Context, item: BatchItem, why: str, out: Collected, *,
          answered: bool = False) -> None:
    """The student failed; `answered`: the item's own reply arrived (its re-ask failed)."""
    with ctx.store.atomic():
        if not answered:
            ctx.store.fail_attempt(item.attempt_id, error=why, status=None, retries=0,
                                   latency_ms=0.0)
        ctx.store.batch_item_done(item.attempt_id, "failed", why)
        record_outcome(ctx, OutcomeRecord(
            run_id=item.run_id, student_id=item.student_id, status="failed",
            submission_id=item.submission_id, reason="batch_failed",
            message=f"{why}; `grade batch submit --retry-failed` sends it again"))
    out.failed += 1


async def _clean_up(ctx: Context, job: BatchJobRow, info: BatchInfo) -> None:
    """The job's input file is no longer needed: delete it (results stay with the job)."""
    if not isinstance(ctx.backend, SupportsFiles):
        return
    for up in ctx.store.open_uploads(ctx.run.backend, job_ref=job.display_name):
        if up.name is not None:
            try:
                await ctx.backend.delete_file(up.name)
            except BackendError:
                continue  # it expires on its own (48 h); tried again next time
        ctx.store.end_upload(up.id, "deleted")


async def collect_waiting(ctx: Context, on_poll: Callable[[Collected], None] | None = None,
                          sleep: Callable[[float], Any] = asyncio.sleep) -> Collected:
    """`collect` until no job is running, polling with a growing wait."""
    total = Collected(notices=ctx.notices)
    delay = ctx.settings.batch_poll_s
    while True:
        got = await collect(ctx)
        for name in ("jobs", "graded", "flagged", "failed", "reasked", "reasked_online",
                     "cost_usd"):
            setattr(total, name, getattr(total, name) + getattr(got, name))
        total.outputs = got.outputs or total.outputs
        total.running = got.running
        total.injection_suspected += got.injection_suspected
        total.notices += tuple(n for n in got.notices if n not in total.notices)
        open_jobs = ctx.store.batch_jobs(ctx.class_key, open_only=True)
        if not open_jobs:
            return total
        if on_poll is not None:
            on_poll(total)
        await sleep(delay)
        delay = min(POLL_CAP_S, delay * 1.5)
