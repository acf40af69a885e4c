"""One grading run as a sequence of verb-named steps:

    discover -> extract -> render -> grade -> validate -> store -> report

`grade_class()` is the library's async entry point (it runs inside an existing event loop, e.g.
Jupyter); `run_class()` wraps it for scripts and the CLI. The steps live in their own modules:
`planning` (discover, render), `context` (what the run shares, built once), `prepare` (one
student up to the request, as every path prepares it), `runner` (the calls through the
`CallLedger`, each reply judged by `judge`, the grade stored; and the online schedule),
`report`. This module opens the run: the lock, the store, the backend, caches and uploads, then
closes it and writes the outputs. Submissions stream through a bounded pool of workers: only
file paths are held for the whole class, content is read when a worker picks the student up.
Every student ends graded, flagged or skipped with a reason (over the budget, or in a batch job
still running: never sent twice), or failed (a transient backend error; rerunning picks them
up). A class folder moved since its store was written has its records carried over first
(`store.opening.follow_move`).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import ParamSpec, TypeVar

from grader.backends import Backend, create
from grader.config import models
from grader.config.generation import configure
from grader.config.settings import Settings, auto_backend, db_path, limits
from grader.errors import BackendError, StoreError
from grader.grading.context import RunContext, run_context, run_info, why_graded_again
from grader.grading.embeddings import EmbeddingReport
from grader.grading.screen import ScreenReport
from grader.intake.discover import Submission
from grader.intake.isolation import Extractor
from grader.online.caching import CacheReport
from grader.online.runner import Outcome, Runner
from grader.online.sending import Sending, open_sending
from grader.prompting.planning import default_model, plan, prefix_request, spending_for, students
from grader.prompting.request import Usage
from grader.quality import score_jump
from grader.quality.gate import check_gate
from grader.review.final import carried_over
from grader.review.grouping import Grouping, regroup
from grader.store import Store
from grader.store.locks import Holder, RunLock
from grader.store.opening import follow_move


@dataclass
class RunSummary:
    run_id: int
    backend: str
    model: str
    db: Path
    mode: str = "normal"
    students: int = 0
    graded: int = 0
    flagged: int = 0
    failed: int = 0
    skipped: int = 0
    reused: int = 0
    usage: Usage = field(default_factory=Usage)
    calls: int = 0
    retries: int = 0
    wall_s: float = 0.0
    cost_usd: float | None = None  # None: nothing priced (a local model, or no table price)
    unpriced: int = 0  # calls the model table had no price for
    budget: float | None = None
    budget_needed: float | None = None  # what a rerun needs for the students it skipped
    budget_shrunk: int = 0  # calls sent with a smaller output cap to fit the budget
    tier: str = "standard"
    outcomes: list[Outcome] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)  # things the teacher should know
    injection_suspected: list[str] = field(default_factory=list)
    inconsistent: list[str] = field(default_factory=list)  # inconsistent_with_group (groups)
    redacted: bool = False
    cache: CacheReport | None = None  # None: no cache was considered (off, or not offered)
    cache_usd: float = 0.0  # creating and keeping the run's explicit caches (in cost_usd)
    uploads: int = 0  # files uploaded (reference files, media too large to send inline)
    embeddings: EmbeddingReport | None = None  # exemplars compared by Gemini embeddings
    screen: ScreenReport | None = None  # the model-based injection check (injection_check)
    # graded again: why (what changed since the class's previous run), and the students with
    # teacher decisions on that run / those whose decisions still apply
    graded_again: list[str] = field(default_factory=list)
    decisions_kept: tuple[int, int] = (0, 0)

    @property
    def ok(self) -> bool:
        return self.failed == 0

    @property
    def skipped_budget(self) -> int:
        return sum(1 for o in self.outcomes if o.status == "skipped" and o.reason == "budget")


_P = ParamSpec("_P")
_T = TypeVar("_T")


# Young-generation thresholds while a run is in progress (CPython's defaults: 700, 10, 10).
RUN_GC_THRESHOLDS = (10_000, 10, 10)


@contextmanager
def collector_for_a_run() -> Iterator[None]:
    """Garbage collection tuned for a run, and put back after it.

    - The objects that exist before the run (mostly imported modules: google-genai's types
      alone are hundreds of thousands of objects) are set aside (`gc.freeze`), so a full
      collection no longer walks them all: 118 ms with the event loop stopped at a class of
      300, 11 ms set aside.
    - A young collection waits for 10,000 new objects instead of 700: a run makes and drops
      objects by the million. At a class of 10,000, collecting cost 3.4 s of CPU (7% of the
      run) with the defaults, and 0.6 s with both changes.

    Both measured on the fake server (`bench/bench_pipeline.py`). The heap is left as it is when
    the process has frozen it itself (a server that forks workers)."""
    thresholds = gc.get_threshold()
    freeze = gc.get_freeze_count() == 0
    if freeze:
        gc.freeze()
    gc.set_threshold(*RUN_GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        if freeze:
            gc.unfreeze()


def _with_run_collector(fn: Callable[_P, Awaitable[_T]]) -> Callable[_P, Awaitable[_T]]:
    @functools.wraps(fn)
    async def run(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        with collector_for_a_run():
            return await fn(*args, **kwargs)
    return run


@_with_run_collector
async def grade_class(class_dir: Path, settings: Settings, *, backend: Backend | None = None,
                      on_outcome: Callable[[Outcome], None] | None = None,
                      on_start: Callable[[int, str, str], None] | None = None,
                      on_wait: Callable[[Holder | None], None] | None = None,
                      on_retry: Callable[[BackendError], None] | None = None,
                      on_notice: Callable[[str], None] | None = None) -> RunSummary:
    """Grade every submission in `class_dir`; resumable; returns the run's summary.

    Callbacks: `on_start(students, backend, model)`, `on_outcome(Outcome)` per student,
    `on_retry(error)` per retried request (backends that report retries), `on_wait(holder)`
    when another run holds the store, `on_notice(text)` once per notice about the model
    (deprecated, routed, ignored sampling parameters)."""
    p = plan(class_dir, settings)
    tbl = models.table(settings.models)
    name = backend.name if backend is not None else auto_backend(settings)
    gen = configure(settings, default_model(name, settings), name, tbl)  # before any call
    spending_for(settings, gen, tbl)  # a budget it could not count is refused here, too
    subs = students(p)
    db = db_path(class_dir, settings)
    lock = RunLock(db)
    await lock.acquire(wait=settings.wait, on_wait=on_wait)
    try:
        with Store(db) as store:
            moved = follow_move(store, class_dir)  # before anything is sent
            if moved and on_notice:
                on_notice(moved)
            owned = backend is None  # a backend passed in is the caller's to close
            backend = backend if backend is not None else create(name, settings=settings)
            if on_retry is not None and hasattr(backend, "on_retry"):
                backend.on_retry = on_retry
            try:
                model = str(getattr(backend, "model", gen.model))
                if model != gen.model:  # a backend passed in, or a local model file
                    gen = configure(settings, model, name, tbl)
                for text in gen.notices:  # before the progress bar starts
                    if on_notice:
                        on_notice(text)
                with Extractor(max_file_mb=settings.max_file_mb, limits=limits(settings)) as ex:
                    ctx = run_context(p, gen, name, subs, ex, store=store, backend=backend)
                    if not settings.force and ctx.selection.only is None:  # calibrated?
                        check_gate(store.latest_calibration(ctx.class_key, ctx.fingerprint),
                                   settings, str(class_dir))
                    for text in ctx.notices:
                        if on_notice:
                            on_notice(text)
                    if on_start:
                        on_start(len(subs), name, model)
                    return await _graded(ctx, subs, store, backend, tbl,
                                         on_outcome=on_outcome, on_notice=on_notice)
            finally:
                if owned:
                    await backend.aclose()
    finally:
        lock.release()


async def _graded(ctx: RunContext, subs: list[Submission], store: Store, backend: Backend,
                  tbl: models.ModelTable, *, on_outcome: Callable[[Outcome], None] | None,
                  on_notice: Callable[[str], None] | None) -> RunSummary:
    started = time.perf_counter()
    p, gen, sel, settings = ctx.p, ctx.gen, ctx.selection, ctx.p.settings
    spending = spending_for(settings, gen, tbl, len(p.rubric.all_criteria))
    if ctx.screen is not None:  # the checks share the run's budget and cost
        ctx.screen.use(spending)
    store.save_prefix(ctx.prefix, p.system, p.static_prefix, p.response_schema)
    store.interrupt_stale_runs()  # we hold the lock: anything 'running' is dead
    resumed = (store.unfinished_regrade(ctx.class_key, ctx.fingerprint, sel.mode,
                                        sel.as_dict()) if sel.mode != "normal" else None)
    before = store.latest_run(ctx.class_key)
    again = why_graded_again(before, ctx) if before is not None else []
    if again and before is not None and on_notice:  # before anything is paid
        on_notice(f"the grades of run {before.id} do not apply to this run: "
                  + "; ".join(again) + "; the students are graded again (replies to requests "
                  "that did not change are reused, not paid again)")
    run = store.begin_run(run_info(ctx, mode=sel.mode,
                                   epoch=resumed.epoch if resumed else None))
    sending: Sending | None = None
    try:
        sending = await open_sending(
            store, backend, run.id, row=gen.row, settings=settings, tbl=tbl,
            probe=prefix_request(p, gen, p.reference_parts()),
            pricing=spending.pricing if spending is not None else None,
            calls=len(subs), on_notice=on_notice, spending=spending)
        for text in sending.notices:
            if on_notice:
                on_notice(text)
        ctx = ctx.with_run(run.id, run.epoch, references=sending.references)
        runner = Runner(ctx, store, backend, sending, spending=spending,
                        on_outcome=on_outcome, on_notice=on_notice)
        await runner.run(iter(subs))
        runner.suspected.update(score_jump.check_run(store, run.id, runner.candidates))
    except BaseException:
        with suppress(StoreError):  # the store may be why we stopped: keep that error
            store.finish_run(run.id, "interrupted")
        if sending is not None:  # Ctrl-C, SIGTERM, a run-wide error: delete them now
            with suppress(StoreError):
                await sending.close()
        raise
    await sending.close()
    status = "failed" if any(o.status == "failed" for o in runner.outcomes) else "done"
    store.finish_run(run.id, status)
    summary = _summarize(runner, run.id, ctx.backend, gen.model, Path(store.path), sel.mode)
    summary.cache = sending.report
    summary.uploads = sending.uploads.uploaded if sending.uploads is not None else 0
    summary.notices = list(store.notices)
    summary.injection_suspected = sorted(runner.suspected)
    summary.redacted = ctx.redactor is not None
    examples = ctx.examples
    summary.embeddings = (examples.embedder.report if examples is not None
                          and examples.embedder is not None else None)
    summary.screen = ctx.screen.report if ctx.screen is not None else None
    if spending is not None:
        held = store.usage(run.id)
        summary.cache_usd = held["cache_create_usd"] + held["cache_storage_usd"]
        summary.cost_usd = spending.cost + summary.cache_usd + (
            summary.embeddings.cost_usd if summary.embeddings is not None else 0.0)
        summary.unpriced = spending.unpriced
        summary.budget, summary.tier = settings.budget, spending.pricing.mode
        summary.budget_needed, summary.budget_shrunk = spending.needed(), spending.shrunk
    if again and before is not None:
        summary.graded_again = again
        summary.decisions_kept = carried_over(store, before.id, run.id)
    regroup(store, run.id, Grouping.of(settings))  # answer groups and their flags
    summary.inconsistent = sorted(m.student_id for m in store.answer_groups(run.id) if m.flag)
    summary.wall_s = time.perf_counter() - started
    if settings.out is not None:
        from grader.reports.write import write_outputs  # the workbook writer: only for outputs

        summary.outputs = write_outputs(store, run.id, settings.out,
                                        handouts=settings.handouts)
    return summary


def _summarize(runner: Runner, run_id: int, name: str, model: str, db: Path,
               mode: str) -> RunSummary:
    c = runner.ledger.counters
    s = RunSummary(run_id=run_id, backend=name, model=model, db=db, mode=mode,
                   usage=c.usage, calls=c.calls, retries=c.retries, outcomes=runner.outcomes)
    for o in runner.outcomes:
        s.students += 1
        s.reused += o.reused
        setattr(s, o.status, getattr(s, o.status) + 1)
    return s


def run_class(class_dir: Path, settings: Settings, *, backend: Backend | None = None,
              on_outcome: Callable[[Outcome], None] | None = None,
              on_start: Callable[[int, str, str], None] | None = None,
              on_wait: Callable[[Holder | None], None] | None = None,
              on_retry: Callable[[BackendError], None] | None = None,
              on_notice: Callable[[str], None] | None = None) -> RunSummary:
    """`grade_class` for scripts and the CLI. SIGTERM ends the run like Ctrl-C: the run is
    marked interrupted, finished grades are kept, and KeyboardInterrupt is raised."""

    async def main() -> RunSummary:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        terminated = False

        def on_term() -> None:
            nonlocal terminated
            terminated = True
            if task is not None:
                task.cancel()

        handled = threading.current_thread() is threading.main_thread()
        if handled:
            loop.add_signal_handler(signal.SIGTERM, on_term)
        try:
            return await grade_class(class_dir, settings, backend=backend,
                                     on_outcome=on_outcome, on_start=on_start, on_wait=on_wait,
                                     on_retry=on_retry, on_notice=on_notice)
        except asyncio.CancelledError:
            if terminated:
                raise KeyboardInterrupt from None
            raise
        finally:
            if handled:
                loop.remove_signal_handler(signal.SIGTERM)

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(main())


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (Linux and macOS): its event loop costs less CPU per
    request than asyncio's, which matters at hundreds of requests in flight."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
