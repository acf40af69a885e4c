"""Batch grading: the requests of `grade run`, sent as provider batch jobs (half price, hours
instead of seconds), collected and stored exactly once.

    submit  -> the same plan, extraction, redaction, `render()` and request hashes as an online
               run; job and attempt rows committed BEFORE the provider's job is created
    collect -> each result line judged by the same pure policy (`grading.decide`); a reply is
               kept in the ledger, a grade saved with its outcome in one transaction; an answer
               that needs the one re-ask goes out again as a second, small batch round (or,
               with `--reask online`, is completed at once by an online call)
    sync    -> collect what finished, then submit what is new, under the store's lock (cron)

A crash between the store write and the job's creation leaves a `preparing` job: the next
command looks for it on the service by its display name and adopts it, or drops it so its
students are submitted again. A crash while collecting loses nothing: items not yet committed
are judged again from the (re-downloaded) results, items committed are skipped.

This module submits and holds the library's entry points; `batch_jobs` opens a command and
sends jobs, `batch_collect` collects them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import __version__, exemplars
from .backends import Backend, BatchInfo, media_types
from .batch_collect import Collected, collect, collect_waiting
from .batch_jobs import (
    Context,
    JobStatus,
    Pending,
    cancel,
    flags_json,
    freeze,
    opened,
    recover,
    refresh,
    save_verdict,
    send,
)
from .embeddings import EmbeddingReport
from .errors import StoreError, SubmissionError
from .extract import Extracted
from .grading import INFO_FLAGS, Reply, Verdict, decide
from .isolation import Extractor
from .ledger import describe, salt
from .limits import check_request_size
from .pipeline import _sdk_version, run_examples
from .planning import (
    body_hash,
    config_hash,
    example_selector,
    input_flags,
    redactor_for,
    render,
    selection_of,
    students,
)
from .request import GradeRequest
from .selection import Grade, Reuse, Skip, choose
from .settings import Settings, limits
from .store import BatchItemIn, FlagRow, OutcomeRecord, RunInfo, SubmissionRecord

_UNREADABLE_MEDIA = Reply(None, "UNSUPPORTED_MEDIA", "UNSUPPORTED_MEDIA")
_NOTHING = Extracted(text="", content_hash="", files=())


@dataclass
class Submitted:
    run_id: int | None = None
    jobs: list[str] = field(default_factory=list)
    requests: int = 0
    reused: int = 0
    flagged: int = 0  # flagged without a request (unreadable, too large)
    skipped: int = 0
    in_flight: int = 0
    failed_before: int = 0  # failed lines not sent again (--retry-failed)
    embeddings: EmbeddingReport | None = None  # exemplars compared by Gemini embeddings


# --- submit ----------------------------------------------------------------------------------


async def submit(ctx: Context, *, retry_failed: bool = False) -> Submitted:
    """Build the requests of every student not yet graded, not in flight (and, unless
    `retry_failed`, whose last batch line did not fail), and submit them as jobs. A run is
    recorded only when something is sent or stored (a cron tick with nothing new leaves no
    trace)."""
    await recover(ctx)
    s, p, store = ctx.settings, ctx.p, ctx.store
    subs = students(p.class_dir, s, p.assignment_files)
    sel = selection_of(s)
    out = Submitted()
    busy = store.batch_busy(ctx.class_key)
    selector = example_selector(p, store, subs)
    redactor = redactor_for(s, ctx.name, subs, selector)
    examples = run_examples(p, selector, redactor, ctx.backend, ctx.name)
    references = p.reference_parts()
    epoch = 0  # a batch run is a normal run: regrades go through `grade run --regrade`
    outcomes: list[OutcomeRecord] = []  # run_id filled in once the run exists
    verdicts: list[tuple[str, int, Verdict, str]] = []
    pending: list[Pending] = []
    with Extractor(max_file_mb=s.max_file_mb, limits=limits(s)) as extractor:
        for sub in subs:
            try:
                ex = extractor.extract(sub)
            except SubmissionError as e:
                outcomes.append(OutcomeRecord(
                    run_id=0, student_id=sub.student_id, status="flagged", reason=e.reason,
                    message=e.render(), name=sub.name, email=sub.email, source=sub.source))
                continue
            bh = body_hash(ex)
            sub_id = store.upsert_submission(SubmissionRecord(
                student_id=sub.student_id, name=sub.name, email=sub.email, source=sub.source,
                content_hash=ex.content_hash, body_hash=bh, files=ex.files,
                late=sub.late, notes=ex.notes))
            sent, mapping = (redactor.submission(ex, sub.student_id) if redactor
                             else (ex, {}))
            picked = (await examples.choose(ex.text, sent.text, sub.student_id, bh)
                      if examples is not None else exemplars.NONE)
            req = render(p, sent, ctx.gen, references=references, examples=picked.shown)
            seen = picked.digest(req)
            cfg = config_hash(req, 1, seen)
            latest = store.latest_grade(student_id=sub.student_id, submission_id=sub_id,
                                        fingerprint=ctx.fingerprint, samples=1)
            choice = choose(sel, sub.student_id, latest=latest, in_epoch=None,
                            run_epoch=epoch, config_hash=cfg, exemplars=seen)
            base = OutcomeRecord(run_id=0, student_id=sub.student_id, status="",
                                 submission_id=sub_id)
            if isinstance(choice, Skip):
                outcomes.append(_with(base, status="skipped", reason=choice.reason,
                                      message=choice.message))
                out.skipped += 1
                continue
            if isinstance(choice, Reuse):
                g = choice.grade
                first = next((f for f in g.flags if f.reason not in INFO_FLAGS), None)
                outcomes.append(_with(base, status=g.status, grade_id=g.id, reused=True,
                                      reason=first.reason if first else None,
                                      message=first.message if first else None))
                out.reused += 1
                continue
            assert isinstance(choice, Grade)
            state = busy.get((sub.student_id, sub_id))
            if state == "pending":
                out.in_flight += 1
                continue
            if state == "failed" and not retry_failed:
                out.failed_before += 1
                continue
            flags = input_flags(ex)
            verdict = _without_call(ctx, req, ex, flags, sub.student_id)
            if verdict is not None:
                verdicts.append((sub.student_id, sub_id, verdict, cfg))
                continue
            record = describe(req, ctx.prefix, salt(0, choice.epoch))
            pending.append(Pending(sub.student_id, sub_id, req, BatchItemIn(
                student_id=sub.student_id, submission_id=sub_id, request=record, n=1,
                epoch=choice.epoch, request_json=freeze(req, cfg, (seen, picked.uses())),
                flags_json=flags_json(flags), redaction=mapping or None)))
    if examples is not None and examples.embedder is not None:
        out.embeddings = examples.embedder.report
    if not pending and not verdicts:
        return out
    run = store.begin_run(RunInfo(
        class_dir=ctx.class_key, backend=ctx.name, model=ctx.gen.model,
        rubric_path=str(p.rubric_path), rubric_hash=p.rubric_hash, prompt_hash=p.prompts.hash,
        schema_hash=p.schema_hash, fingerprint=ctx.fingerprint,
        config_hash=config_hash(render(p, _NOTHING, ctx.gen)), sdk_version=_sdk_version(),
        grader_version=__version__, settings=s.model_dump(mode="json", exclude={"api_key"}),
        rubric=p.rubric.model_dump(mode="json"), mode="batch", selection=sel.as_dict()))
    out.run_id = run.id
    try:
        with store.atomic():
            for o in outcomes:
                store.record_outcome(_with(o, run_id=run.id))
            for student_id, sub_id, verdict, cfg in verdicts:
                save_verdict(ctx, run.id, student_id, sub_id, verdict, epoch, cfg, [])
        out.flagged = len(verdicts) + sum(o.status == "flagged" and not o.reused
                                          for o in outcomes)
        out.jobs = await send(ctx, run.id, pending, round=1)
        out.requests = len(pending)
    finally:
        with suppress(StoreError):
            store.finish_run(run.id, "done")
    return out


def _without_call(ctx: Context, req: GradeRequest, ex: Extracted, flags: tuple[FlagRow, ...],
                  student_id: str) -> Verdict | None:
    """The verdict of a student whose request is not sent (too large, or nothing the model
    can read), as `grade run` judges it; None when the request goes out."""
    try:
        check_request_size(req, max_bytes=limits(ctx.settings).max_request_bytes,
                           student=student_id)
    except SubmissionError as e:
        return Verdict(status="flagged", flags=(FlagRow(e.reason, e.render()), *flags),
                       review_reason=e.render())
    if not ex.has_text and not any(x.mime_type in media_types(ctx.backend) for x in ex.parts):
        judged = decide(ctx.policy, [_UNREADABLE_MEDIA], flags)
        assert isinstance(judged, Verdict)
        return judged
    return None


def _with(base: OutcomeRecord, **changes: Any) -> OutcomeRecord:
    return replace(base, **changes)


# --- the library's entry points (the CLI calls these) ----------------------------------------


def submit_class(class_dir: Path, settings: Settings, *, retry_failed: bool = False,
                 backend: Backend | None = None) -> Submitted:
    async def main() -> Submitted:
        async with opened(class_dir, settings, backend=backend) as ctx:
            assert ctx is not None
            return await submit(ctx, retry_failed=retry_failed)

    return asyncio.run(main())


def collect_class(class_dir: Path, settings: Settings, *, wait: bool = False,
                  on_poll: Callable[[Collected], None] | None = None,
                  backend: Backend | None = None) -> Collected:
    async def main() -> Collected:
        async with opened(class_dir, settings, backend=backend) as ctx:
            assert ctx is not None
            return await (collect_waiting(ctx, on_poll) if wait else collect(ctx))

    return asyncio.run(main())


def status_class(class_dir: Path, settings: Settings, *, backend: Backend | None = None
                 ) -> list[JobStatus]:
    async def main() -> list[JobStatus]:
        async with opened(class_dir, settings, backend=backend) as ctx:
            assert ctx is not None
            return await refresh(ctx)

    return asyncio.run(main())


def cancel_job(class_dir: Path, settings: Settings, ref: str) -> BatchInfo:
    async def main() -> BatchInfo:
        async with opened(class_dir, settings) as ctx:
            assert ctx is not None
            return await cancel(ctx, ref)

    return asyncio.run(main())


@dataclass
class Synced:
    busy: bool = False
    collected: Collected = field(default_factory=Collected)
    submitted: Submitted = field(default_factory=Submitted)
    wall_s: float = 0.0

    @property
    def idle(self) -> bool:
        c, s = self.collected, self.submitted
        return not (self.busy or c.jobs or s.jobs)

    def line(self) -> str:
        """One line a cron mail can be read from."""
        if self.busy:
            return "grade batch sync: another grade command holds the store; nothing done"
        c, s = self.collected, self.submitted
        parts = []
        if c.jobs or c.reasked or c.reasked_online:
            parts.append(f"collected {c.jobs} job(s): {c.graded} graded, {c.flagged} flagged, "
                         f"{c.failed} failed" + (f", {c.reasked} re-asked" if c.reasked else "")
                         + (f", {c.reasked_online} re-asked online" if c.reasked_online else "")
                         + f", ${c.cost_usd:.4f}")
        if s.jobs:
            parts.append(f"submitted {s.requests} request(s) in {len(s.jobs)} job(s)")
        running = c.running
        if running:
            parts.append(f"{running} job(s) still running")
        if s.failed_before:
            parts.append(f"{s.failed_before} failed line(s) held back (--retry-failed)")
        return "grade batch sync: " + ("; ".join(parts) if parts else "nothing to do")


def sync_class(class_dir: Path, settings: Settings, *, retry_failed: bool = False) -> Synced:
    """Collect what finished, then submit what is new or changed; never waits for the lock
    (an overlapping cron run does nothing and says so)."""
    async def main() -> Synced:
        started = time.perf_counter()
        async with opened(class_dir, settings, no_wait=True) as ctx:
            if ctx is None:
                return Synced(busy=True)
            done = Synced(collected=await collect(ctx))
            done.submitted = await submit(ctx, retry_failed=retry_failed)
            done.wall_s = time.perf_counter() - started
            return done

    return asyncio.run(main())
