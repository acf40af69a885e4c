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

from grader.backends import Backend, BatchInfo, SupportsBatch, create
from grader.batch.collect import Collected, collect, collect_waiting
from grader.batch.jobs import (
    Context,
    JobStatus,
    Pending,
    cancel,
    flags_json,
    freeze,
    no_local_batches,
    opened,
    recover,
    refresh,
    save_verdict,
    send,
)
from grader.config.settings import Settings, auto_backend, db_path
from grader.errors import BackendError, ConfigError, InputError, StoreError
from grader.grading.context import run_context, run_info
from grader.grading.embeddings import EmbeddingReport
from grader.grading.prepare import Prepared, Settled, prepare
from grader.grading.records import BatchItemIn, OutcomeRecord
from grader.grading.screen import ScreenReport
from grader.online.ledger import describe, salt
from grader.online.runner import IN_BATCH
from grader.prompting.planning import students
from grader.reports.write import write_outputs
from grader.store import Store
from grader.store.locks import RunLock
from grader.store.opening import follow_move


@dataclass
class Submitted:
    run_id: int | None = None
    jobs: list[str] = field(default_factory=list)
    requests: int = 0
    reused: int = 0
    flagged: int = 0  # flagged without a request (unreadable, too large)
    skipped: int = 0
    failed: int = 0  # failed before a request (the embedding call that picks the examples)
    in_flight: int = 0
    failed_before: int = 0  # failed lines not sent again (--retry-failed)
    embeddings: EmbeddingReport | None = None  # exemplars compared by Gemini embeddings
    screen: ScreenReport | None = None  # the model-based injection check (online calls)
    notices: tuple[str, ...] = ()  # what the teacher should know (a moved class, the roster)
    outputs: list[Path] = field(default_factory=list)  # the reports of the run it recorded


# --- submit ----------------------------------------------------------------------------------


async def submit(ctx: Context, *, retry_failed: bool = False) -> Submitted:
    """Prepare every student as `grade run` does (`prepare`) and submit the requests of those
    not yet graded, not in flight (and, unless `retry_failed`, whose last batch line did not
    fail) as jobs. A run is recorded only when something is sent or stored (a cron tick with
    nothing new leaves no trace)."""
    await recover(ctx)
    ctx.report_run = None  # a sync's collect set it: what this submit stores is its run's own
    p, store = ctx.run.p, ctx.store
    subs = students(p)
    run = run_context(p, ctx.run.gen, ctx.run.backend, subs, ctx.run.extractor, store=store,
                      backend=ctx.backend)
    out = Submitted(notices=(*ctx.notices, *run.notices, *_unapplied_budget(ctx.settings)))
    busy = store.batch_busy()
    outcomes: list[OutcomeRecord] = []  # run_id filled in once the run exists
    unsent: list[Prepared] = []
    pending: list[Pending] = []
    for sub in subs:
        got = await prepare(run, sub, store)
        if isinstance(got, Settled):
            rec = got.record
            outcomes.append(rec)
            out.reused += rec.reused
            out.skipped += rec.status == "skipped"
            out.failed += rec.status == "failed"
            continue
        assert got.submission_id is not None
        state = busy.get((sub.student_id, got.submission_id))
        held = OutcomeRecord(run_id=0, student_id=sub.student_id, submission_id=got.submission_id,
                             status="skipped" if state == "pending" else "failed")
        if state == "pending":  # in the new run's reports too, until its job is collected
            out.in_flight += 1
            outcomes.append(replace(held, reason=IN_BATCH, message=(
                "its request is in a batch job still running: `grade batch collect` stores its "
                "grade when the job ends")))
            continue
        if state == "failed" and not retry_failed:
            out.failed_before += 1
            outcomes.append(replace(held, reason="batch_failed", message=(
                "its batch line failed before; `grade batch submit --retry-failed` sends it "
                "again")))
            continue
        if got.unsent is not None:
            unsent.append(got)
            continue
        record = describe(got.req, run.prefix, salt(0, got.epoch))
        outcomes.append(replace(held, status="skipped", reason=IN_BATCH, message=(
            "sent in this run's batch job: `grade batch collect` stores its grade when the job "
            "ends")))  # the run lists every student; the grade replaces this when collected
        pending.append(Pending(sub.student_id, got.submission_id, got.req, BatchItemIn(
            student_id=sub.student_id, submission_id=got.submission_id, request=record, n=1,
            epoch=got.epoch, request_json=freeze(got.req, got.cfg, (got.seen, got.picked.uses()),
                                                 got.ex.findings),
            flags_json=flags_json(got.grounds.flags), redaction=dict(got.mapping) or None)))
    if run.examples is not None and run.examples.embedder is not None:
        out.embeddings = run.examples.embedder.report
    out.screen = run.screen.report if run.screen is not None else None
    if not pending and not unsent and not _news(store, ctx.class_key, outcomes):
        return out
    begun = store.begin_run(run_info(run, mode="batch"))
    out.run_id = begun.id
    if run.screen is not None:  # it checked before the run existed
        run.screen.book(begun.id)
    try:
        with store.atomic():
            for o in outcomes:
                store.record_outcome(replace(o, run_id=begun.id))
            for got in unsent:
                assert got.unsent is not None and got.submission_id is not None
                save_verdict(ctx, begun.id, got.student_id, got.submission_id, got.unsent,
                             got.epoch, got.cfg, [], (got.seen, got.picked.uses()))
        out.flagged = len(unsent) + sum(o.status == "flagged" and not o.reused
                                        for o in outcomes)
        try:
            out.jobs = await send(ctx, begun.id, pending, round=1)
        except BackendError as e:
            if not e.transient:  # no job was made for them: the run must not say they wait
                live = store.batch_busy()
                for x in (x for x in pending
                          if live.get((x.student_id, x.submission_id)) != "pending"):
                    store.record_outcome(OutcomeRecord(
                        run_id=begun.id, student_id=x.student_id, status="failed",
                        submission_id=x.submission_id, reason="batch_not_created",
                        message=f"the batch job could not be created: {e.render()}"))
            raise
        out.requests = len(pending)
    finally:
        with suppress(StoreError):
            store.finish_run(begun.id, "done")
    if ctx.settings.out is not None:  # the newest run's reports: everyone, waiting ones too
        out.outputs = write_outputs(store, begun.id, ctx.settings.out,
                                    handouts=ctx.settings.handouts)
    return out


def _news(store: Store, class_dir: str, outcomes: list[OutcomeRecord]) -> bool:
    """Some student's outcome is not yet in the class's latest run as it is now: a failure, a
    hand-in flagged or skipped without a request (an empty or unreadable late file), or one
    graded before (a student who went back to an earlier file), which the teacher must see; a
    cron tick that finds nothing new records no run."""
    latest = store.latest_run(class_dir)
    for o in outcomes:
        if o.reason in (IN_BATCH, "batch_failed"):
            continue
        there = store.outcome_of(latest.id, o.student_id) if latest is not None else None
        if there is None or there[0] != o.submission_id \
                or (there[1] is None and o.grade_id is not None):
            return True  # new, another hand-in than the reports show, or a grade they lack
    return False


# --- the library's entry points (the CLI calls these) ----------------------------------------


def _unapplied_budget(settings: Settings) -> tuple[str, ...]:
    """A `budget` set for the class (grader.toml, GRADER_BUDGET) that a batch job does not keep
    to: said at every submit rather than left to look applied."""
    if settings.budget is None:
        return ()
    where = settings.origin("budget")
    source = f" ({where.describe('budget', settings.budget)})" if where is not None else ""
    return (f"the budget of ${settings.budget:g}{source} is not applied to batch jobs: each "
            "job is sent whole, at the batch price; `grade estimate` shows what the class "
            "costs in batch mode, and `grade run` keeps to the budget",)


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


@dataclass(frozen=True)
class Listed:
    """`grade batch status`: every job of the class, and what the teacher should know (the
    class folder was moved)."""

    jobs: list[JobStatus]
    notices: tuple[str, ...] = ()


def status_class(class_dir: Path, settings: Settings, *, backend: Backend | None = None
                 ) -> Listed:
    """Every batch job of the class in its store (none when there is no store yet; a moved
    class folder's jobs are carried over to its new path, `follow_move`). Listing
    needs only the store: no rubric and no plan, so `grade batch status` still answers after
    the rubric was renamed or deleted (the jobs are paid for; the teacher must see them). A
    backend (`backend`, or one made from the settings) is opened only when a job is still open
    and must be asked for its state."""
    db = db_path(class_dir, settings)
    if not db.exists():
        if not class_dir.is_dir():  # a typo must not read as "no batch jobs"
            raise InputError("class folder not found, and no store for it", path=class_dir,
                             fix="pass the class folder the jobs were submitted from (or "
                                 "--db with its store)")
        return Listed([])

    async def main() -> Listed:
        made: list[Backend] = []

        def batches() -> SupportsBatch:
            if not made:
                name = backend.name if backend is not None else auto_backend(settings)
                no_local_batches(name)
                made.append(backend if backend is not None else create(name, settings=settings))
            if not isinstance(made[0], SupportsBatch):
                raise ConfigError(f"the {made[0].name} backend runs no batch jobs",
                                  fix="use --api gemini or --api enterprise")
            return made[0]

        run_lock = RunLock(db)
        await run_lock.acquire(wait=settings.wait)
        try:
            with Store(db, create=False) as store:
                moved = follow_move(store, class_dir)
                return Listed(await refresh(store, str(class_dir.resolve()), batches),
                              (moved,) if moved else ())
        finally:
            run_lock.release()
            if made and backend is None:
                await made[0].aclose()

    return asyncio.run(main())


def cancel_job(class_dir: Path, settings: Settings, ref: str
               ) -> tuple[BatchInfo, tuple[str, ...]]:
    """The job's state once cancelled, and what the teacher should know (a moved class)."""
    async def main() -> tuple[BatchInfo, tuple[str, ...]]:
        async with opened(class_dir, settings) as ctx:
            assert ctx is not None
            return await cancel(ctx, ref), ctx.notices

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
        if c.injection_suspected:
            parts.append("injection suspected (graded; first in review.xlsx): "
                         + ", ".join(c.injection_suspected))
        parts += [f"note: {n}" for n in c.notices]
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
