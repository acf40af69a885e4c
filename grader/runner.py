"""The grading step for one student and the online schedule.

`Runner.grade_one` is extract -> render -> grade -> validate -> store for one student: calls go
through the `CallLedger` (paid at most once), replies are judged by the pure policy in
`grading`, and the grade and its outcome are stored together. `schedule` is the online
strategy: a bounded pool of workers pulling students from a shared iterator.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, replace
from typing import Any

from . import exemplars, injection, score_jump
from .backends import Backend, media_types
from .budget import Spending
from .discover import Submission
from .errors import (
    BackendError,
    BudgetExceeded,
    SubmissionError,
)
from .extract import Extracted
from .generation import Generation
from .grading import (
    INFO_FLAGS,
    Reask,
    Reconfigure,
    Reply,
    Verdict,
    decide,
    rejected,
)
from .isolation import Extractor
from .ledger import Called, CallLedger, describe, salt
from .limits import check_request_size
from .planning import Plan, body_hash, config_hash, input_flags, render, sampled, thinking_retry
from .redact import Redactor, restore_verdict
from .request import GradeRequest
from .selection import Grade, Reuse, Selection, Skip, choose
from .sending import GONE_RETRIES, Sending
from .store import (
    FlagRow,
    GradeRecord,
    OutcomeRecord,
    RequestRecord,
    Store,
    SubmissionRecord,
)
from .uncertainty import finalize


@dataclass
class Outcome:
    """What happened to one student; passed to the progress callback."""

    student_id: str
    status: str  # graded | flagged | failed | skipped
    reused: bool = False
    reason: str | None = None
    message: str | None = None
    total: float | None = None


class Runner:
    """One run's shared state: plan, store, ledger, counters."""

    def __init__(self, p: Plan, store: Store, backend: Backend, extractor: Extractor,
                 run_id: int, epoch: int, gen: Generation, selection: Selection,
                 on_outcome: Callable[[Outcome], None] | None, *,
                 spending: Spending | None = None,
                 sending: Sending, on_notice: Callable[[str], None] | None = None,
                 redactor: Redactor | None = None,
                 examples: exemplars.Examples | None = None):
        self.p, self.store, self.backend, self.extractor = p, store, backend, extractor
        self.redactor = redactor
        self.examples = examples
        self.sending = sending
        # students graded in this run with injection evidence or signs of it (score_jump)
        self.candidates: dict[str, score_jump.Candidate] = {}
        self.suspected: set[str] = set()
        self.run_id, self.epoch, self.selection = run_id, epoch, selection
        self.gen = gen
        self.model = model = gen.model
        self.ledger = CallLedger(store, backend, run_id, spending=spending,
                                 service_tier=p.settings.tier if spending else None,
                                 on_notice=on_notice)
        self.policy = replace(p.policy, on_thinking_cut=thinking_retry(gen))
        self.samples = p.settings.samples
        self.prefix = p.prefix_hash(model)
        self.fingerprint = p.fingerprint(model)
        store.save_prefix(self.prefix, p.system, p.static_prefix, p.response_schema)
        self.on_outcome = on_outcome
        self.outcomes: list[Outcome] = []

    # --- the steps for one student ---------------------------------------------------------

    async def grade_one(self, sub: Submission) -> None:
        """extract -> render -> grade -> validate -> store, for one student."""
        try:
            ex = await self._extract(sub)
        except SubmissionError as e:
            self._finish(OutcomeRecord(
                run_id=self.run_id, student_id=sub.student_id, status="flagged",
                reason=e.reason, message=e.render(), name=sub.name, email=sub.email,
                source=sub.source))
            return
        bh = body_hash(ex)
        sub_id = self.store.upsert_submission(SubmissionRecord(
            student_id=sub.student_id, name=sub.name, email=sub.email, source=sub.source,
            content_hash=ex.content_hash, body_hash=bh, files=ex.files,
            late=sub.late, notes=ex.notes))
        sent, mapping = (self.redactor.submission(ex, sub.student_id) if self.redactor
                         else (ex, {}))
        try:
            picked = (await self.examples.choose(ex.text, sent.text, sub.student_id, bh)
                      if self.examples is not None else exemplars.NONE)
        except BackendError as e:  # embedding the texts failed: this student, not the run
            if e.run_wide:
                raise
            self._finish(OutcomeRecord(
                run_id=self.run_id, student_id=sub.student_id, status="failed",
                reason="backend_error", message=e.render(), submission_id=sub_id))
            return
        req = render(self.p, sent, self.gen, references=self.sending.references,
                     examples=picked.shown)
        k = self.samples
        seen = picked.digest(req)
        cfg = config_hash(req, k, seen)
        max_request = self.extractor.limits.max_request_bytes
        latest = self.store.latest_grade(student_id=sub.student_id, submission_id=sub_id,
                                         fingerprint=self.fingerprint, samples=k)
        in_epoch = self.store.latest_grade(
            student_id=sub.student_id, submission_id=sub_id, fingerprint=self.fingerprint,
            epoch=self.epoch, samples=k) if self.epoch else None
        choice = choose(self.selection, sub.student_id, latest=latest, in_epoch=in_epoch,
                        run_epoch=self.epoch, config_hash=cfg, exemplars=seen)
        base = OutcomeRecord(run_id=self.run_id, student_id=sub.student_id, status="",
                             submission_id=sub_id)
        if isinstance(choice, Skip):
            self._finish(_with(base, status="skipped", reason=choice.reason,
                               message=choice.message))
            return
        if isinstance(choice, Reuse):
            g = choice.grade
            if any(f.reason == injection.FLAG for f in g.flags):
                self.suspected.add(sub.student_id)
            first = next((f for f in g.flags if f.reason not in INFO_FLAGS), None)
            self._finish(_with(base, status=g.status, grade_id=g.id, reused=True,
                               reason=first.reason if first else None,
                               message=first.message if first else None), total=g.total)
            return
        assert isinstance(choice, Grade)
        flags = input_flags(ex)
        samples: tuple[Verdict, ...] = ()
        sample_attempts: list[list[int]] = []
        try:
            check_request_size(req, max_bytes=max_request, student=sub.student_id)
            self.sending.check(req, sub.student_id)
            if not ex.has_text and not self._can_read(ex):
                verdict = decide(self.policy, [_UNREADABLE_MEDIA], flags)
                assert isinstance(verdict, Verdict)
                attempts: list[int] = []
            else:
                graded = await self._samples(sub.student_id, sub_id, req, choice.epoch, flags,
                                             mapping)
                # quotes are checked against the text as sent (redacted), then names restored
                text = sent.text if ex.has_text and not ex.parts else None
                samples, verdict = finalize(self.policy, [v for v, _ in graded], text)
                samples = tuple(restore_verdict(v, mapping) for v in samples)
                verdict = restore_verdict(verdict, mapping)
                sample_attempts = [a for _, a in graded]
                attempts = sample_attempts[0] if k == 1 else []
        except BudgetExceeded as e:  # not sent: a rerun with a larger budget grades them
            self._finish(_with(base, status="skipped", reason="budget", message=e.render()))
            return
        except BackendError as e:
            if e.run_wide:
                raise
            if not e.rejected:
                self._finish(_with(base, status="failed", reason="backend_error",
                                   message=e.render()))
                await self.sending.release(sub.student_id)
                return
            verdict, attempts = rejected(e.message, flags), []
        except SubmissionError as e:  # the backend found the input unusable (too_long, …)
            verdict = Verdict(status="flagged", flags=(FlagRow(e.reason, e.render()), *flags),
                              review_reason=e.render())
            attempts = []
        with self.store.atomic():  # the grade and its outcome land together or not at all
            if k > 1:  # each sample is a grade version of its own, the combined one on top
                for n, (v, a) in enumerate(zip(samples, sample_attempts, strict=True)):
                    self._save(sub.student_id, sub_id, v, sample=n, epoch=choice.epoch,
                               cfg=config_hash(sampled(req, n), 1, seen), attempts=a,
                               samples=1, seen=(seen, picked))
            gid = self._save(sub.student_id, sub_id, verdict, sample=0, epoch=choice.epoch,
                             cfg=cfg, attempts=attempts, samples=k, seen=(seen, picked))
            flagged = any(f.reason == injection.FLAG for f in verdict.flags)
            if flagged:
                self.suspected.add(sub.student_id)
            if flagged or ex.findings:
                self.candidates[sub.student_id] = score_jump.Candidate(gid, ex.findings,
                                                                       flagged)
            self._finish(_with(base, status=verdict.status, grade_id=gid,
                               reason=verdict.reason, message=verdict.message),
                         total=verdict.total)
        await self.sending.release(sub.student_id)  # its uploads are no longer needed

    def _save(self, student_id: str, sub_id: int, v: Verdict, *, sample: int, epoch: int,
              cfg: str, attempts: list[int], samples: int,
              seen: tuple[str | None, exemplars.Picked] = (None, exemplars.NONE)) -> int:
        return self.store.save_grade(GradeRecord(
            student_id=student_id, submission_id=sub_id, fingerprint=self.fingerprint,
            sample=sample, epoch=epoch, config_hash=cfg, run_id=self.run_id, status=v.status,
            max_total=self.p.rubric.max_total, total=v.total, percent=v.percent,
            overall_comment=v.overall_comment, needs_review=v.needs_review,
            review_reason=v.review_reason, model=self.model, model_version=v.model_version,
            criteria=v.criteria, flags=v.flags, attempt_ids=attempts, samples=samples,
            exemplars_hash=seen[0], exemplars=seen[1].uses()))

    async def _extract(self, sub: Submission) -> Extracted:
        """Small text on the event loop (microseconds); PDFs, documents, notebooks and large
        files in a worker process with a time and memory budget, so the loop stays free to read
        and commit replies the moment they arrive."""
        try:
            return await self.extractor.aextract(sub)
        except SubmissionError:
            raise
        except Exception as e:  # a parser bug must cost one student a flag, not the class
            raise SubmissionError(
                "corrupt", f"the files could not be read ({type(e).__name__}: {e})",
                path=sub.student_id, fix="open the files by hand; grade this student manually "
                "or ask for a resubmission") from None

    def _can_read(self, ex: Extracted) -> bool:
        """Capability check: does the backend accept at least one of the submission's media?"""
        accepted = media_types(self.backend)
        return any(p.mime_type in accepted for p in ex.parts)

    async def _samples(self, student_id: str, sub_id: int, req: GradeRequest, epoch: int,
                       flags: tuple[FlagRow, ...], mapping: dict[str, str]
                       ) -> list[tuple[Verdict, list[int]]]:
        """Grade the student `samples` times (at once); a backend error in any sample is raised
        after all of them ended, so every reply that arrived is kept in the ledger."""
        if self.samples == 1:
            return [await self._grade(student_id, sub_id, req, epoch, flags, 0, mapping)]
        done = await asyncio.gather(
            *(self._grade(student_id, sub_id, sampled(req, n), epoch, flags, n, mapping)
              for n in range(self.samples)), return_exceptions=True)
        for d in done:
            if isinstance(d, BaseException):
                raise d
        return [d for d in done if not isinstance(d, BaseException)]

    async def _grade(self, student_id: str, sub_id: int, req: GradeRequest, epoch: int,
                     flags: tuple[FlagRow, ...], sample: int, mapping: dict[str, str]
                     ) -> tuple[Verdict, list[int]]:
        """grade + validate one sample: ask, re-ask once on invalid output; return the verdict
        (in the redacted form it was sent and answered in) and the attempts it paid for."""
        replies: list[Reply] = []
        attempts: list[int] = []
        while True:
            record = describe(req, self.prefix, salt(sample, epoch))
            called = await self._call(req, record, student_id, sub_id, sample,
                                      len(replies) + 1, mapping)
            replies.append(called.reply)
            if called.attempt_id is not None:
                attempts.append(called.attempt_id)
            verdict = decide(self.policy, replies, flags)
            if isinstance(verdict, Reask):
                req = req.model_copy(update={"history": verdict.history})
                continue
            if isinstance(verdict, Reconfigure):  # thinking used the whole output cap
                req = req.model_copy(update={"max_output_tokens": verdict.max_output_tokens,
                                             "thinking_level": verdict.thinking_level})
                continue
            return verdict, attempts

    async def _call(self, req: GradeRequest, record: RequestRecord, student_id: str,
                    sub_id: int, sample: int, n: int, mapping: dict[str, str]) -> Called:
        """One ledger call; sent again when the cache or a file it named was gone (the request's
        hash does not depend on either, so nothing paid for is lost)."""
        for tries in range(GONE_RETRIES + 1):
            sent: dict[str, GradeRequest] = {}

            async def prepare(r: GradeRequest, sent: dict[str, GradeRequest] = sent
                              ) -> GradeRequest:
                return await self.sending.prepare(r, student_id, sent)

            try:
                return await self.ledger.call(req, record, student_id=student_id,
                                              submission_id=sub_id, sample=sample, n=n,
                                              redaction=mapping, prepare=prepare)
            except BackendError as e:
                if (e.gone is None or tries == GONE_RETRIES
                        or not await self.sending.recover(e, sent)):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _finish(self, rec: OutcomeRecord, *, total: float | None = None) -> None:
        self.store.record_outcome(rec)
        o = Outcome(rec.student_id, rec.status, rec.reused, rec.reason, rec.message, total)
        self.outcomes.append(o)
        if self.on_outcome:
            self.on_outcome(o)

    async def run(self, subs: Iterator[Submission]) -> None:
        await schedule(subs, self.grade_one, self.p.settings.concurrency)


# What a backend that cannot read a submission's only content "replies": judged like a block.
_UNREADABLE_MEDIA = Reply(None, "UNSUPPORTED_MEDIA", "UNSUPPORTED_MEDIA")


def _with(base: OutcomeRecord, **changes: Any) -> OutcomeRecord:
    return replace(base, **changes)


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
