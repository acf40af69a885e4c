"""The grading step for one student and the online schedule.

`Runner.grade_one` is one student online: `prepare` (the same preparation as batch, estimate and
dry run), then the calls through the `CallLedger` (paid at most once), each sample's replies
judged by `judge` (the same judgment as batch collecting), and the grade and its outcome stored
together. `schedule` is the online strategy: a bounded pool of workers pulling students from a
shared iterator.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, replace
from typing import Any

from grader.backends import Backend, in_flight
from grader.errors import BackendError, BudgetExceeded, SubmissionError
from grader.grading.context import RunContext
from grader.grading.judge import judge, kept
from grader.grading.policy import Reask, Reconfigure, Verdict, rejected
from grader.grading.prepare import Prepared, Settled, prepare
from grader.grading.records import FlagRow, GradeRecord, OutcomeRecord, Reply, RequestRecord
from grader.intake import injection
from grader.intake.discover import Submission
from grader.intake.redact import restore_verdict
from grader.online.budget import Spending
from grader.online.caching import MAX_RECREATES
from grader.online.ledger import Called, CallLedger, describe, salt
from grader.online.sending import GONE_RETRIES, Sending
from grader.online.turns import Turns
from grader.prompting.planning import config_hash, sampled
from grader.prompting.request import GradeRequest
from grader.quality import score_jump
from grader.store import Store

IN_BATCH = "in_batch"  # the skipped reason of a student whose batch request is in flight


@dataclass
class Outcome:
    """What happened to one student; passed to the progress callback."""

    student_id: str
    status: str  # graded | flagged | failed | skipped
    reused: bool = False
    reason: str | None = None
    message: str | None = None
    total: float | None = None


@dataclass
class Graded:
    """One student's grade as judged: the kept verdict, each sample's (several samples only)
    and the attempts each paid for."""

    verdict: Verdict
    samples: tuple[Verdict, ...] = ()
    attempts: tuple[list[int], ...] = ()


class Runner:
    """One online run: its context, store, backend, sending and ledger; the outcomes so far."""

    def __init__(self, ctx: RunContext, store: Store, backend: Backend, sending: Sending, *,
                 spending: Spending | None = None,
                 on_outcome: Callable[[Outcome], None] | None = None,
                 on_notice: Callable[[str], None] | None = None):
        self.ctx, self.store, self.backend, self.sending = ctx, store, backend, sending
        self.ledger = CallLedger(store, backend, ctx.run_id, spending=spending,
                                 service_tier=ctx.p.settings.tier if spending else None,
                                 on_notice=on_notice)
        # students graded in this run with injection evidence or signs of it (score_jump)
        self.candidates: dict[str, score_jump.Candidate] = {}
        self.suspected: set[str] = set()
        self.on_outcome = on_outcome
        self.outcomes: list[Outcome] = []
        # submissions whose request is in a batch job still open: never sent again here
        self.in_batch = {k for k, state in store.batch_busy().items() if state == "pending"}
        self.turns = Turns()  # what waits for replies to be committed (see online.turns)

    # --- the steps for one student ---------------------------------------------------------

    async def grade_one(self, sub: Submission) -> None:
        """prepare -> call -> judge -> store, for one student."""
        await self.turns.take()
        got = await prepare(self.ctx, sub, self.store)
        if isinstance(got, Settled):
            if got.suspected:
                self.suspected.add(sub.student_id)
            self._finish(got.record, total=got.total)
            return
        base = OutcomeRecord(run_id=self.ctx.run_id, student_id=sub.student_id, status="",
                             submission_id=got.submission_id)
        if (sub.student_id, got.submission_id) in self.in_batch:
            self._finish(replace(base, status="skipped", reason=IN_BATCH, message=(
                "its request is in a batch job still running, so it is not sent again: "
                "`grade batch collect` stores its grade when the job ends")))
            return
        try:
            graded = await self._graded(got)
        except BudgetExceeded as e:  # not sent: a rerun with a larger budget grades them
            self._finish(replace(base, status="skipped", reason="budget", message=e.render()))
            return
        except BackendError as e:
            if e.run_wide:
                raise
            if not e.rejected:
                self._finish(replace(base, status="failed", reason="backend_error",
                                     message=e.render()))
                await self.sending.release(sub.student_id)
                return
            graded = Graded(rejected(e.message, got.grounds.flags))
        except SubmissionError as e:  # the backend found the input unusable (too_long, ...)
            graded = Graded(Verdict(status="flagged",
                                    flags=(FlagRow(e.reason, e.render()), *got.grounds.flags),
                                    review_reason=e.render()))
        verdict = graded.verdict
        with self.store.atomic():  # the grade and its outcome land together or not at all
            if len(graded.samples) > 1:  # each sample is a grade version of its own, the
                for n, (v, a) in enumerate(zip(graded.samples, graded.attempts,  # combined
                                               strict=True)):  # one on top
                    self._save(got, v, sample=n, attempts=a, samples=1,
                               cfg=config_hash(sampled(got.req, n), 1, got.seen))
            attempts = graded.attempts[0] if len(graded.attempts) == 1 else []
            gid = self._save(got, verdict, sample=0, attempts=attempts,
                             samples=self.ctx.samples, cfg=got.cfg)
            outcome = replace(base, status=verdict.status, grade_id=gid,
                              reason=verdict.reason, message=verdict.message)
            self.store.record_outcome(outcome)
        flagged = any(f.reason == injection.FLAG for f in verdict.flags)
        if flagged:
            self.suspected.add(sub.student_id)
        if flagged or got.ex.findings:
            self.candidates[sub.student_id] = score_jump.Candidate(gid, got.ex.findings,
                                                                   flagged)
        self._told(outcome, total=verdict.total)  # after the commit, not inside it
        await self.sending.release(sub.student_id)  # its uploads are no longer needed

    async def _graded(self, got: Prepared) -> Graded:
        """The student's grade: judged without a call when the request is not sent, else
        every sample asked (at once) and judged, names restored for the teacher."""
        if got.unsent is not None:
            return Graded(got.unsent)
        self.sending.check(got.req, got.student_id)
        k = self.ctx.samples
        if k == 1:
            runs = [await self._sample(got, got.req, 0)]
        else:
            done = await asyncio.gather(
                *(self._sample(got, sampled(got.req, n), n) for n in range(k)),
                return_exceptions=True)
            for d in done:  # a backend error in any sample is raised after all of them
                if isinstance(d, BaseException):  # ended, so every reply that arrived is kept
                    raise d
            runs = [d for d in done if not isinstance(d, BaseException)]
        verdicts = [v for v, _ in runs]
        mapping = got.mapping
        return Graded(restore_verdict(kept(self.ctx.policy, verdicts), mapping),
                      tuple(restore_verdict(v, mapping) for v in verdicts) if k > 1 else (),
                      tuple(a for _, a in runs))

    def _save(self, got: Prepared, v: Verdict, *, sample: int, cfg: str, attempts: list[int],
              samples: int) -> int:
        assert got.submission_id is not None
        ctx = self.ctx
        return self.store.save_grade(GradeRecord(
            student_id=got.student_id, submission_id=got.submission_id,
            fingerprint=ctx.fingerprint, sample=sample, epoch=got.epoch, config_hash=cfg,
            run_id=ctx.run_id, status=v.status, max_total=ctx.p.rubric.max_total,
            total=v.total, percent=v.percent, overall_comment=v.overall_comment,
            needs_review=v.needs_review, review_reason=v.review_reason, model=ctx.gen.model,
            model_version=v.model_version, criteria=v.criteria, flags=v.flags,
            attempt_ids=attempts, samples=samples, exemplars_hash=got.seen,
            exemplars=got.picked.uses()))

    async def _sample(self, got: Prepared, req: GradeRequest, sample: int
                      ) -> tuple[Verdict, list[int]]:
        """One sample: ask, ask again while the judgment says so (the one re-ask, more room
        after a thinking cut-off); the verdict (in the redacted form it was sent and answered
        in) and the attempts it paid for."""
        replies: list[Reply] = []
        attempts: list[int] = []
        key_salt = salt(sample, got.epoch)
        more_room = False  # a retry after a thinking cut-off: never with a smaller cap
        while True:
            record = describe(req, self.ctx.prefix, key_salt)
            called = await self._call(got, req, record, sample, len(replies) + 1,
                                      shrink=None if more_room else key_salt)
            await self.turns.take()  # the replies that came in meanwhile are committed first
            replies.append(called.reply)
            if called.attempt_id is not None:
                attempts.append(called.attempt_id)
            verdict = judge(self.ctx.policy, replies, got.grounds)
            if isinstance(verdict, Reask):
                req = req.model_copy(update={"history": verdict.history})
                continue
            if isinstance(verdict, Reconfigure):  # thinking used the whole output cap
                req = req.model_copy(update={"max_output_tokens": verdict.max_output_tokens,
                                             "thinking_level": verdict.thinking_level})
                more_room = True
                continue
            return verdict, attempts

    async def _call(self, got: Prepared, req: GradeRequest, record: RequestRecord,
                    sample: int, n: int, *, shrink: str | None = None) -> Called:
        """One ledger call; sent again when the cache or a file it named was gone (the request's
        hash does not depend on either, so nothing paid for is lost). `shrink`: see
        `CallLedger.call`. A vanished file is retried `GONE_RETRIES` times; a vanished cache
        does not count: the keeper recreates it at most `MAX_RECREATES` times, then the
        request goes out without one, so no student fails because the cache kept vanishing."""
        assert got.submission_id is not None
        tries = 0
        last = GONE_RETRIES + MAX_RECREATES + 1  # each vanished cache is a different one
        for attempt in range(last + 1):
            sent: dict[str, GradeRequest] = {}

            async def ready(r: GradeRequest, sent: dict[str, GradeRequest] = sent
                            ) -> GradeRequest:
                return await self.sending.prepare(r, got.student_id, sent)

            try:
                return await self.ledger.call(req, record, student_id=got.student_id,
                                              submission_id=got.submission_id, sample=sample,
                                              n=n, redaction=got.mapping, prepare=ready,
                                              shrink=shrink)
            except BackendError as e:
                if (e.gone is None or tries == GONE_RETRIES or attempt == last
                        or not await self.sending.recover(e, sent)):
                    raise
                tries += e.gone != "cache"
        raise AssertionError("unreachable")  # pragma: no cover

    def _finish(self, rec: OutcomeRecord, *, total: float | None = None) -> None:
        self.store.record_outcome(rec)
        self._told(rec, total=total)

    def _told(self, rec: OutcomeRecord, *, total: float | None = None) -> None:
        o = Outcome(rec.student_id, rec.status, rec.reused, rec.reason, rec.message, total)
        self.outcomes.append(o)
        if self.on_outcome:
            self.on_outcome(o)

    async def run(self, subs: Iterator[Submission]) -> None:
        try:
            await schedule(subs, self.grade_one,
                           in_flight(self.backend, self.ctx.p.settings.concurrency))
        finally:
            self.turns.close()


# After a run-wide error, students already being graded get this long to finish (their replies
# are paid for: they are kept), then the rest is cancelled.
DRAIN_S = 10.0


async def schedule(items: Iterator[Submission], handle: Callable[[Submission], Awaitable[None]],
                   concurrency: int, drain_s: float = DRAIN_S) -> None:
    """The online strategy: a bounded pool of workers pulling students one at a time from a
    shared iterator. When one worker hits an error that stops the run, no new student is
    started, those in flight may finish for up to `drain_s` (so replies already on their way are
    stored, not lost), the rest is cancelled, and the first error is raised. Cancelling the
    caller (Ctrl-C) cancels every worker at once."""
    stop = asyncio.Event()
    errors: list[Exception] = []

    async def worker() -> None:
        for sub in items:  # each student is taken by exactly one worker
            if stop.is_set():
                return
            try:
                await handle(sub)
            except Exception as e:
                errors.append(e)
                stop.set()
                return

    tasks = [asyncio.create_task(worker()) for _ in range(max(1, concurrency))]
    everyone: asyncio.Future[Any] = asyncio.gather(*tasks)
    stopped: asyncio.Future[Any] = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({everyone, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not everyone.done():
            await asyncio.wait({everyone}, timeout=drain_s)
    finally:
        stopped.cancel()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with suppress(asyncio.CancelledError):
            await everyone
    if errors:
        raise errors[0]
