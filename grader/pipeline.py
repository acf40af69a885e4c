"""One grading run as a sequence of verb-named steps:

    discover -> extract -> render -> grade -> validate -> store -> report

`grade_class()` is the library's async entry point (it runs inside an existing event loop, e.g.
Jupyter); `run_class()` wraps it for scripts and the CLI. Submissions stream through a bounded
pool of workers: only file paths are held for the whole class, content is read when a worker
picks the student up. Calls go through the `CallLedger` (paid at most once), replies are judged
by the pure policy in `grading`, and every student ends graded, flagged or skipped with a reason,
or failed (a transient backend error; rerunning picks them up).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from . import __version__, schema
from .backends import Backend, create, media_types
from .discover import Submission, discover
from .errors import BackendError, InputError, SubmissionError
from .extract import Extracted
from .grading import INFO_FLAGS, Policy, Reask, Reply, Verdict, decide, rejected
from .isolation import Extractor
from .ledger import CallLedger, describe, prefix_hash, salt, sha256
from .limits import check_request_size
from .locks import Holder, RunLock
from .outputs import check_out_dir
from .prompts import Prompts, check_prefix_size, check_templates, load_prompts
from .report import write_outputs
from .request import GradeRequest, Usage
from .rubric import Rubric, load_rubric
from .scaffold import check_edited
from .selection import Grade, Reuse, Selection, Skip, choose
from .settings import Settings, auto_backend, db_path, limits, rubric_path
from .store import FlagRow, GradeRecord, OutcomeRecord, RunInfo, Store, SubmissionRecord


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
    outcomes: list[Outcome] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0


@dataclass
class Plan:
    """Everything fixed for the whole run, prepared once."""

    class_dir: Path
    settings: Settings
    rubric: Rubric
    rubric_path: Path
    rubric_hash: str
    prompts: Prompts
    response_schema: dict[str, Any]
    schema_hash: str
    system: str
    static_prefix: str
    validator: type[BaseModel]

    @property
    def policy(self) -> Policy:
        return Policy(rubric=self.rubric, validator=self.validator,
                      reask_prompt=self.prompts.reask)

    def prefix_hash(self, model: str) -> str:
        return prefix_hash(model, self.system, self.static_prefix, self.response_schema)

    def fingerprint(self, model: str) -> str:
        """What makes a grade what it is: the model and every byte of the prompt around the
        student's work (rendered, so a YAML comment changes nothing), and the schema. The
        generation config is not part of it (see `config_hash`)."""
        shape = self.prompts.student_parts("\x00TEXT\x00", (), ("a", "b"))
        return sha256("fingerprint/1", self.prefix_hash(model), shape[0].text or "",
                      self.prompts.reask("\x00ERROR\x00"))


# Input tokens the repeated prefix may take: Gemini 3.x models take about 1M tokens of input;
# a rubric near that leaves no room for the student's work.
MAX_PREFIX_TOKENS = 500_000


def plan(class_dir: Path, settings: Settings) -> Plan:
    """Prepare the static part of every request: rubric, prompts, schema. Everything that could
    fail for the whole class fails here, before any model call: the rubric, every template
    (rendered once with sample data), the prefix size, the output folder."""
    if not class_dir.is_dir():
        raise InputError("class folder not found", path=class_dir,
                         fix="pass the folder that holds the students' submissions")
    if settings.out is not None:
        check_out_dir(class_dir, settings.out)
    path = rubric_path(class_dir, settings)
    rubric, rhash = load_rubric(path)
    check_edited(rubric, path)
    prompts = load_prompts(settings.prompts)
    check_templates(prompts, rubric)
    system, prefix = prompts.system(), prompts.static_prefix(rubric)
    check_prefix_size(system, prefix, max_tokens=MAX_PREFIX_TOKENS)
    rschema = schema.json_schema(rubric)
    shash = hashlib.sha256(json.dumps(rschema, sort_keys=True).encode()).hexdigest()[:16]
    return Plan(
        class_dir=class_dir, settings=settings, rubric=rubric, rubric_path=path,
        rubric_hash=rhash, prompts=prompts, response_schema=rschema, schema_hash=shash,
        system=system, static_prefix=prefix, validator=schema.validation_model(rubric),
    )


def render(p: Plan, ex: Extracted, model: str, key: str = "") -> GradeRequest:
    s = p.settings
    return GradeRequest(
        key=key, model=model, system=p.system, static_prefix=p.static_prefix,
        student_parts=p.prompts.student_parts(ex.text, ex.parts, ex.files),
        response_schema=p.response_schema, temperature=s.temperature, seed=s.seed,
        max_output_tokens=s.max_output_tokens, thinking_budget=s.thinking_budget,
    )


def config_hash(req: GradeRequest) -> str:
    return sha256("config/1", json.dumps(req.generation_config(), sort_keys=True))


def body_hash(ex: Extracted) -> str:
    """What the model sees of the submission: two students with the same body hash handed in
    byte-identical work (names of single files do not count)."""
    return sha256("body/1", ex.text, *(p.mime_type or "" for p in ex.parts),
                  *(p.data or b"" for p in ex.parts))


def input_flags(ex: Extracted) -> tuple[FlagRow, ...]:
    """What extraction left out: shown on every output, never a silent note."""
    flags = []
    if ex.skipped:
        flags.append(FlagRow("partial_submission", "graded without "
                             + "; ".join(ex.skipped) + "; check those files by hand"))
    if ex.truncated:
        flags.append(FlagRow("truncated", "the submission's text was cut to fit the prompt; "
                             "the end was not graded"))
    return tuple(flags)


def students(class_dir: Path, settings: Settings) -> list[Submission]:
    """discover: the class's submissions (paths only), honouring --limit."""
    roster = settings.roster
    if roster is None and (class_dir / "roster.csv").is_file():
        roster = class_dir / "roster.csv"
    subs = list(discover(class_dir, roster))
    if not subs:
        raise InputError("no submissions found in the class folder", path=class_dir,
                         fix="put one file or folder per student in it (see README: Intake)")
    return subs[: settings.limit] if settings.limit else subs


def selection_of(settings: Settings) -> Selection:
    return Selection(
        only=frozenset(settings.only) if settings.only is not None else None,
        regrade=settings.regrade,
        retry_flagged=(frozenset(settings.retry_flagged)
                       if settings.retry_flagged is not None else None))


class Runner:
    """One run's shared state: plan, store, ledger, counters."""

    def __init__(self, p: Plan, store: Store, backend: Backend, extractor: Extractor,
                 run_id: int, epoch: int, model: str, selection: Selection,
                 on_outcome: Callable[[Outcome], None] | None):
        self.p, self.store, self.backend, self.extractor = p, store, backend, extractor
        self.run_id, self.epoch, self.model, self.selection = run_id, epoch, model, selection
        self.ledger = CallLedger(store, backend, run_id)
        self.policy = p.policy
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
        sub_id = self.store.upsert_submission(SubmissionRecord(
            student_id=sub.student_id, name=sub.name, email=sub.email, source=sub.source,
            content_hash=ex.content_hash, body_hash=body_hash(ex), files=ex.files,
            late=sub.late, notes=ex.notes))
        req = render(self.p, ex, self.model)
        cfg = config_hash(req)
        max_request = self.extractor.limits.max_request_bytes
        latest = self.store.latest_grade(student_id=sub.student_id, submission_id=sub_id,
                                         fingerprint=self.fingerprint)
        in_epoch = self.store.latest_grade(
            student_id=sub.student_id, submission_id=sub_id, fingerprint=self.fingerprint,
            epoch=self.epoch) if self.epoch else None
        choice = choose(self.selection, sub.student_id, latest=latest, in_epoch=in_epoch,
                        run_epoch=self.epoch, config_hash=cfg)
        base = OutcomeRecord(run_id=self.run_id, student_id=sub.student_id, status="",
                             submission_id=sub_id)
        if isinstance(choice, Skip):
            self._finish(_with(base, status="skipped", reason=choice.reason,
                               message=choice.message))
            return
        if isinstance(choice, Reuse):
            g = choice.grade
            first = next((f for f in g.flags if f.reason not in INFO_FLAGS), None)
            self._finish(_with(base, status=g.status, grade_id=g.id, reused=True,
                               reason=first.reason if first else None,
                               message=first.message if first else None), total=g.total)
            return
        assert isinstance(choice, Grade)
        flags = input_flags(ex)
        try:
            check_request_size(req, max_bytes=max_request, student=sub.student_id)
            if not ex.has_text and not self._can_read(ex):
                verdict = decide(self.policy, [_UNREADABLE_MEDIA], flags)
                assert isinstance(verdict, Verdict)
                attempts: list[int] = []
            else:
                verdict, attempts = await self._grade(sub.student_id, sub_id, req,
                                                      choice.epoch, flags)
        except BackendError as e:
            if e.run_wide:
                raise
            if not e.rejected:
                self._finish(_with(base, status="failed", reason="backend_error",
                                   message=e.render()))
                return
            verdict, attempts = rejected(e.message, flags), []
        except SubmissionError as e:  # the backend found the input unusable (too_long, …)
            verdict = Verdict(status="flagged", flags=(FlagRow(e.reason, e.render()), *flags),
                              review_reason=e.render())
            attempts = []
        with self.store.atomic():  # the grade and its outcome land together or not at all
            gid = self.store.save_grade(GradeRecord(
                student_id=sub.student_id, submission_id=sub_id, fingerprint=self.fingerprint,
                sample=0, epoch=choice.epoch, config_hash=cfg, run_id=self.run_id,
                status=verdict.status, max_total=self.p.rubric.max_total, total=verdict.total,
                percent=verdict.percent, overall_comment=verdict.overall_comment,
                needs_review=verdict.needs_review, review_reason=verdict.review_reason,
                model=self.model, model_version=verdict.model_version,
                criteria=verdict.criteria, flags=verdict.flags, attempt_ids=attempts))
            self._finish(_with(base, status=verdict.status, grade_id=gid,
                               reason=verdict.reason, message=verdict.message),
                         total=verdict.total)

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

    async def _grade(self, student_id: str, sub_id: int, req: GradeRequest, epoch: int,
                     flags: tuple[FlagRow, ...]) -> tuple[Verdict, list[int]]:
        """grade + validate: ask, re-ask once on invalid output; return the verdict and the
        attempts it paid for."""
        replies: list[Reply] = []
        attempts: list[int] = []
        while True:
            record = describe(req, self.prefix, salt(0, epoch))
            called = await self.ledger.call(req, record, student_id=student_id,
                                            submission_id=sub_id, sample=0, n=len(replies) + 1)
            replies.append(called.reply)
            if called.attempt_id is not None:
                attempts.append(called.attempt_id)
            verdict = decide(self.policy, replies, flags)
            if isinstance(verdict, Reask):
                req = req.model_copy(update={"history": verdict.history})
                continue
            return verdict, attempts

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
# A submission with no content, rendered once per run to read the run's generation config.
_NOTHING = Extracted(text="", content_hash="", files=())


def _with(base: OutcomeRecord, **changes: Any) -> OutcomeRecord:
    return replace(base, **changes)


async def schedule(items: Iterator[Submission], handle: Callable[[Submission], Awaitable[None]],
                   concurrency: int) -> None:
    """The online strategy: a bounded pool of workers pulling students one at a time. A run-wide
    error in one worker cancels the others (TaskGroup), so none keeps talking to a client that
    is about to close."""
    async def worker() -> None:
        for sub in items:  # a shared iterator: each student is taken by exactly one worker
            await handle(sub)

    try:
        async with asyncio.TaskGroup() as tg:
            for _ in range(max(1, concurrency)):
                tg.create_task(worker())
    except BaseExceptionGroup as group:
        raise group.exceptions[0] from None


def _sdk_version() -> str | None:
    try:
        from google.genai import version

        return str(version.__version__)
    except Exception:  # pragma: no cover - the SDK is a dependency
        return None


async def grade_class(class_dir: Path, settings: Settings, *, backend: Backend | None = None,
                      on_outcome: Callable[[Outcome], None] | None = None,
                      on_start: Callable[[int, str, str], None] | None = None,
                      on_wait: Callable[[Holder | None], None] | None = None,
                      on_retry: Callable[[BackendError], None] | None = None) -> RunSummary:
    """Grade every submission in `class_dir`; resumable; returns the run's summary.

    Callbacks: `on_start(students, backend, model)`, `on_outcome(Outcome)` per student,
    `on_retry(error)` per retried request (backends that report retries), `on_wait(holder)`
    when another run holds the store."""
    p = plan(class_dir, settings)
    subs = students(class_dir, settings)
    sel = selection_of(settings)
    db = db_path(class_dir, settings)
    lock = RunLock(db)
    await lock.acquire(wait=settings.wait, on_wait=on_wait)
    try:
        owned = backend is None  # a backend passed in is the caller's to close
        name = backend.name if backend is not None else auto_backend(settings)
        backend = backend if backend is not None else create(name, settings=settings)
        if on_retry is not None and hasattr(backend, "on_retry"):
            backend.on_retry = on_retry
        try:
            model = str(getattr(backend, "model", settings.model or "unknown"))
            if on_start:
                on_start(len(subs), name, model)
            return await _graded(p, subs, sel, db, backend, name, model, on_outcome)
        finally:
            if owned:
                await backend.aclose()
    finally:
        lock.release()


async def _graded(p: Plan, subs: list[Submission], sel: Selection, db: Path, backend: Backend,
                  name: str, model: str,
                  on_outcome: Callable[[Outcome], None] | None) -> RunSummary:
    started = time.perf_counter()
    fingerprint = p.fingerprint(model)
    cfg = config_hash(render(p, _NOTHING, model))
    class_key = str(p.class_dir.resolve())
    with Store(db) as store:
        store.interrupt_stale_runs()  # we hold the lock: anything 'running' is dead
        resumed = (store.unfinished_regrade(class_key, fingerprint, sel.mode, sel.as_dict())
                   if sel.mode != "normal" else None)
        run = store.begin_run(RunInfo(
            class_dir=class_key, backend=name, model=model, rubric_path=str(p.rubric_path),
            rubric_hash=p.rubric_hash, prompt_hash=p.prompts.hash, schema_hash=p.schema_hash,
            fingerprint=fingerprint, config_hash=cfg, sdk_version=_sdk_version(),
            grader_version=__version__,
            settings=p.settings.model_dump(mode="json", exclude={"api_key"}),
            rubric=p.rubric.model_dump(mode="json"), mode=sel.mode, selection=sel.as_dict(),
            epoch=resumed.epoch if resumed else None))
        status = "interrupted"
        with Extractor(max_file_mb=p.settings.max_file_mb, limits=limits(p.settings)) as ex:
            runner = Runner(p, store, backend, ex, run.id, run.epoch, model, sel, on_outcome)
            try:
                await runner.run(iter(subs))
                status = "failed" if any(o.status == "failed" for o in runner.outcomes) \
                    else "done"
            finally:
                store.finish_run(run.id, status)
        summary = _summarize(runner, run.id, name, model, db, sel.mode)
        summary.wall_s = time.perf_counter() - started
        if p.settings.out is not None:
            summary.outputs = write_outputs(store, run.id, p.settings.out)
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
              on_retry: Callable[[BackendError], None] | None = None) -> RunSummary:
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
                                     on_retry=on_retry)
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
