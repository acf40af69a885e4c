"""Batch grading: the requests of `grade run`, sent as provider batch jobs (half price, hours
instead of seconds), collected and stored exactly once.

    submit  -> the same plan, extraction, redaction, `render()` and request hashes as an online
               run; job and attempt rows committed BEFORE the provider's job is created
    collect -> each result line judged by the same pure policy (`grading.decide`); a reply is
               kept in the ledger, a grade saved with its outcome in one transaction; an answer
               that needs the one re-ask goes out again as a second, small batch round
    sync    -> collect what finished, then submit what is new, under the store's lock (cron)

A crash between the store write and the job's creation leaves a `preparing` job: the next
command looks for it on the service by its display name and adopts it, or drops it so its
students are submitted again. A crash while collecting loses nothing: items not yet committed
are judged again from the (re-downloaded) results, items committed are skipped.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractContextManager, asynccontextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import __version__, models
from .backends import Backend, BatchInfo, BatchResult, SupportsBatch, create, media_types
from .backends.base import SupportsFiles
from .errors import BackendError, ConfigError, StoreError, SubmissionError
from .extract import Extracted
from .generation import Generation, configure
from .grading import INFO_FLAGS, Policy, Reask, Reconfigure, Reply, Verdict, decide
from .isolation import Extractor
from .ledger import describe, salt
from .limits import check_request_size
from .locks import RunLock
from .pipeline import (
    Plan,
    _sdk_version,
    body_hash,
    config_hash,
    default_model,
    input_flags,
    plan,
    render,
    selection_of,
    students,
    thinking_retry,
)
from .ratelimit import estimate_tokens
from .redact import Redactor, restore_verdict
from .report import write_outputs
from .request import GradeRequest, GradeResponse, Part, Turn
from .selection import Grade, Reuse, Skip, choose
from .settings import Settings, auto_backend, db_path, limits, redacting
from .store import (
    Answer,
    BatchItem,
    BatchItemIn,
    BatchJobRow,
    FlagRow,
    GradeRecord,
    OutcomeRecord,
    RunInfo,
    Store,
    SubmissionRecord,
)

# Test-only fault hooks (tests/test_batch_recovery.py): SIGKILL this process when a job's rows are
# committed, "before" the provider's job is created or right "after" (before its name is
# stored); or after the Nth collected item is committed.
KILL_AT_CREATE_ENV = "GRADER_TEST_KILL_AT_BATCH_CREATE"
KILL_AFTER_COLLECTED_ENV = "GRADER_TEST_KILL_AFTER_COLLECTED"
COMMIT_EVERY = 200  # collected items per transaction
POLL_CAP_S = 600.0
_UNREADABLE_MEDIA = Reply(None, "UNSUPPORTED_MEDIA", "UNSUPPORTED_MEDIA")
_NOTHING = Extracted(text="", content_hash="", files=())


@dataclass
class Context:
    """Everything fixed for one batch command."""

    p: Plan
    store: Store
    backend: Backend
    batches: SupportsBatch
    name: str
    gen: Generation
    pricing: models.Pricing
    policy: Policy
    prefix: str
    fingerprint: str
    workdir: Path

    @property
    def settings(self) -> Settings:
        return self.p.settings

    @property
    def class_key(self) -> str:
        return str(self.p.class_dir.resolve())


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


@dataclass
class Collected:
    jobs: int = 0  # jobs collected now
    graded: int = 0
    flagged: int = 0
    failed: int = 0
    reasked: int = 0
    running: int = 0  # jobs not finished yet
    cost_usd: float = 0.0
    outputs: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class JobStatus:
    job: BatchJobRow
    counts: dict[str, float]
    age_s: float


# --- opening ---------------------------------------------------------------------------------


@asynccontextmanager
async def opened(class_dir: Path, settings: Settings, *, lock: bool = True,
                 wait: bool | None = None, backend: Backend | None = None
                 ) -> AsyncIterator[Context | None]:
    """The plan, the store (under the run lock) and a backend that runs batch jobs (`backend`:
    one passed in, the caller's to close). Yields None when `wait` is False and another command
    holds the store."""
    p = plan(class_dir, settings)
    tbl = models.table(settings.models)
    name = backend.name if backend is not None else auto_backend(settings)
    if name == "local":
        raise ConfigError("batch jobs need a Gemini API: the local model has no batch mode",
                          fix="set GEMINI_API_KEY (or pass --api gemini / --api enterprise)")
    if settings.samples > 1:
        raise ConfigError("grade batch sends one sample per student",
                          fix="grade with --samples through `grade run`, or set samples = 1")
    gen = configure(settings, default_model(name, settings), name, tbl)
    db = db_path(class_dir, settings)
    run_lock = RunLock(db)
    if lock:
        if wait is False:
            if not run_lock.try_acquire():
                yield None
                return
        else:
            await run_lock.acquire(wait=settings.wait)
    try:
        with Store(db) as store:
            owned = backend is None
            backend = create(name, settings=settings) if backend is None else backend
            try:
                if not isinstance(backend, SupportsBatch):
                    raise ConfigError(f"the {name} backend runs no batch jobs",
                                      fix="use --api gemini or --api enterprise")
                model = gen.model
                store.save_prefix(p.prefix_hash(model), p.system, p.static_prefix,
                                  p.response_schema)
                yield Context(
                    p=p, store=store, backend=backend, batches=backend, name=name, gen=gen,
                    pricing=models.Pricing.of(tbl, model, "batch"),
                    policy=replace(p.policy, on_thinking_cut=thinking_retry(gen)),
                    prefix=p.prefix_hash(model), fingerprint=p.fingerprint(model),
                    workdir=db.parent / "batch")
            finally:
                if owned:
                    await backend.aclose()
    finally:
        if lock:
            run_lock.release()


# --- requests as stored with their batch item --------------------------------------------------


def _freeze(req: GradeRequest, cfg: str) -> str:
    """What collecting needs to ask again: the student's parts, history and generation config
    (the run's prefix, schema and references come from the plan)."""
    parts = [{"text": p.text} if p.text is not None else
             {"mime_type": p.mime_type, "data": base64.b64encode(p.data or b"").decode()}
             for p in req.student_parts]
    return json.dumps({"cfg": cfg, "parts": parts,
                       "history": [[t.role, t.text] for t in req.history],
                       "max_output_tokens": req.max_output_tokens,
                       "thinking_level": req.thinking_level, "temperature": req.temperature,
                       "top_p": req.top_p, "seed": req.seed}, ensure_ascii=False)


def _thaw(ctx: Context, frozen: str) -> tuple[GradeRequest, str]:
    d = json.loads(frozen)
    parts = tuple(Part(text=x["text"]) if "text" in x else
                  Part(mime_type=x["mime_type"], data=base64.b64decode(x["data"]))
                  for x in d["parts"])
    p = ctx.p
    req = GradeRequest(
        key="", model=ctx.gen.model, system=p.system, static_prefix=p.static_prefix,
        reference_parts=p.reference_parts(), student_parts=parts,
        history=tuple(Turn(role=r, text=t) for r, t in d["history"]),
        response_schema=p.response_schema, max_output_tokens=d["max_output_tokens"],
        thinking_level=d["thinking_level"], temperature=d["temperature"], top_p=d["top_p"],
        seed=d["seed"])
    return req, str(d["cfg"])


def _flags_json(flags: Sequence[FlagRow]) -> str:
    return json.dumps([[f.reason, f.message] for f in flags], ensure_ascii=False)


def _flags(text: str) -> tuple[FlagRow, ...]:
    return tuple(FlagRow(r, m) for r, m in json.loads(text))


@dataclass(frozen=True)
class _Pending:
    student_id: str
    submission_id: int
    req: GradeRequest
    item: BatchItemIn


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
    redactor = (Redactor(subs, phone_region=s.phone_region) if redacting(s, ctx.name)
                else None)
    references = p.reference_parts()
    epoch = 0  # a batch run is a normal run: regrades go through `grade run --regrade`
    outcomes: list[OutcomeRecord] = []  # run_id filled in once the run exists
    verdicts: list[tuple[str, int, Verdict, str]] = []
    pending: list[_Pending] = []
    with Extractor(max_file_mb=s.max_file_mb, limits=limits(s)) as extractor:
        for sub in subs:
            try:
                ex = extractor.extract(sub)
            except SubmissionError as e:
                outcomes.append(OutcomeRecord(
                    run_id=0, student_id=sub.student_id, status="flagged", reason=e.reason,
                    message=e.render(), name=sub.name, email=sub.email, source=sub.source))
                continue
            sub_id = store.upsert_submission(SubmissionRecord(
                student_id=sub.student_id, name=sub.name, email=sub.email, source=sub.source,
                content_hash=ex.content_hash, body_hash=body_hash(ex), files=ex.files,
                late=sub.late, notes=ex.notes))
            sent, mapping = (redactor.submission(ex, sub.student_id) if redactor
                             else (ex, {}))
            req = render(p, sent, ctx.gen, references=references)
            cfg = config_hash(req)
            latest = store.latest_grade(student_id=sub.student_id, submission_id=sub_id,
                                        fingerprint=ctx.fingerprint, samples=1)
            choice = choose(sel, sub.student_id, latest=latest, in_epoch=None,
                            run_epoch=epoch, config_hash=cfg)
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
            pending.append(_Pending(sub.student_id, sub_id, req, BatchItemIn(
                student_id=sub.student_id, submission_id=sub_id, request=record, n=1,
                epoch=choice.epoch, request_json=_freeze(req, cfg),
                flags_json=_flags_json(flags), redaction=mapping or None)))
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
                _save(ctx, run.id, student_id, sub_id, verdict, epoch, cfg, [])
        out.flagged = len(verdicts) + sum(o.status == "flagged" and not o.reused
                                          for o in outcomes)
        out.jobs = await _send(ctx, run.id, pending, round=1)
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


def _jobs_of(ctx: Context, pending: list[_Pending]) -> list[list[_Pending]]:
    """Split into jobs within the requests and estimated tokens a job may hold."""
    s = ctx.settings
    prefix_tokens = estimate_tokens(len(ctx.p.system) + len(ctx.p.static_prefix))
    jobs: list[list[_Pending]] = []
    current: list[_Pending] = []
    tokens = 0
    for item in pending:
        t = prefix_tokens + estimate_tokens(sum(len(x.text or "") for x in
                                                item.req.student_parts))
        if current and (len(current) >= s.batch_max_requests
                        or tokens + t > s.batch_max_tokens):
            jobs.append(current)
            current, tokens = [], 0
        current.append(item)
        tokens += t
    if current:
        jobs.append(current)
    return jobs


async def _send(ctx: Context, run_id: int, pending: list[_Pending], *, round: int) -> list[str]:
    names = []
    for chunk in _jobs_of(ctx, pending):
        names.append(await _send_job(ctx, run_id, chunk, round=round))
    return names


async def _send_job(ctx: Context, run_id: int, chunk: list[_Pending], *, round: int) -> str:
    """One job: rows first (committed), then the input, then the provider's job."""
    store, s = ctx.store, ctx.settings
    display = f"grader-{run_id}-{round}-{uuid.uuid4().hex[:10]}"
    lines: list[dict[str, Any]] | None = None
    if ctx.batches.batch_source == "gcs":
        mode = "gcs"
    elif s.batch_mode != "auto":
        mode = s.batch_mode
    else:  # sized once, with empty keys; a file job reuses the lines
        lines = [ctx.batches.batch_line("", x.req) for x in chunk]
        size = sum(len(json.dumps(line)) for line in lines)
        mode = "inline" if size < s.batch_inline_mb * 1024 * 1024 else "file"
    job_id, attempt_ids = store.begin_batch_job(
        run_id=run_id, class_dir=ctx.class_key, backend=ctx.name, model=ctx.gen.model,
        display_name=display, mode=mode, round=round, items=[x.item for x in chunk])
    _maybe_kill("before")
    keyed = [(f"a{a}", x.req) for a, x in zip(attempt_ids, chunk, strict=True)]
    try:
        if mode == "inline":
            info = await ctx.batches.create_batch(model=ctx.gen.model, display_name=display,
                                                  inline=keyed)
            source = None
        else:
            source = await _upload_input(ctx, run_id, display, keyed, lines)
            store.batch_job_input(job_id, source)
            dest = (source.rsplit("/", 1)[0] + f"/{display}-out" if mode == "gcs" else None)
            info = await ctx.batches.create_batch(model=ctx.gen.model, display_name=display,
                                                  source=source, destination=dest)
    except BackendError as e:
        if e.transient:  # it may exist: the next command looks for it by its display name
            raise
        store.batch_drop_job(job_id, e.render())
        raise
    _maybe_kill("after")
    store.batch_job_created(job_id, name=info.name, state=info.state, input_ref=source)
    return info.name


def _maybe_kill(moment: str) -> None:
    if os.environ.get(KILL_AT_CREATE_ENV) == moment:
        os.kill(os.getpid(), signal.SIGKILL)


async def _upload_input(ctx: Context, run_id: int, display: str,
                        keyed: list[tuple[str, GradeRequest]],
                        lines: list[dict[str, Any]] | None) -> str:
    """The job's JSONL, written line by line and uploaded (Files API, or the gs:// bucket).
    `lines`: the lines already built (with empty keys), else they are built here."""
    if not isinstance(ctx.backend, SupportsFiles) or not ctx.backend.files_available:
        fix = ctx.backend.files_fix if isinstance(ctx.backend, SupportsFiles) else ""
        raise ConfigError(f"the {ctx.name} backend cannot upload a batch input file",
                          fix=fix or "use --api gemini")
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    path = ctx.workdir / f"{display}.jsonl"
    digest = hashlib.sha256()
    with path.open("w", encoding="utf-8") as fh:
        for n, (key, req) in enumerate(keyed):
            if lines is not None:
                line = {**lines[n], "key": key}
            else:
                line = ctx.batches.batch_line(key, req)
            text = json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n"
            digest.update(text.encode())
            fh.write(text)
    size = path.stat().st_size
    upload = ctx.store.begin_upload(run_id=run_id, backend=ctx.name, purpose="batch",
                                    sha256=digest.hexdigest(), size=size,
                                    mime_type="application/jsonl",
                                    display_name=f"{display}.jsonl", job_ref=display)
    info = await ctx.backend.upload_file(path, mime_type="application/jsonl",
                                         display_name=f"{display}.jsonl")
    ctx.store.upload_active(upload, name=info.name, uri=info.uri,
                            expires_at=info.expires_at.isoformat() if info.expires_at else None)
    path.unlink()
    return info.name


# --- recover, status, cancel -----------------------------------------------------------------


async def recover(ctx: Context) -> int:
    """Jobs whose rows were written but whose creation was never recorded: adopted when the
    service has one of that display name, else dropped (their students are submitted again)."""
    preparing = [j for j in ctx.store.batch_jobs(ctx.class_key, open_only=True)
                 if j.state == "preparing"]
    if not preparing:
        return 0
    known = {i.display_name: i for i in await ctx.batches.list_batches()}
    for j in preparing:
        found = known.get(j.display_name)
        if found is not None:
            ctx.store.batch_job_created(j.id, name=found.name, state=found.state,
                                        input_ref=None)
        else:
            ctx.store.batch_drop_job(j.id, "the job was never created (the command stopped "
                                     "first); its students are submitted again")
    return len(preparing)


async def refresh(ctx: Context) -> list[JobStatus]:
    """Every job of the class, open ones asked for their state."""
    await recover(ctx)
    out = []
    for job in ctx.store.batch_jobs(ctx.class_key):
        if job.name and job.state not in ("collected", "abandoned") \
                and not job.state.endswith(("SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED")):
            info = await ctx.batches.get_batch(job.name)
            ctx.store.batch_job_state(job.id, info.state, ended=info.done, error=info.error)
            job = ctx.store.batch_job(job.display_name) or job
        made = datetime.fromisoformat(job.created_at)
        out.append(JobStatus(job, ctx.store.batch_job_counts(job.id),
                             (datetime.now(UTC) - made).total_seconds()))
    return out


async def cancel(ctx: Context, ref: str) -> BatchInfo:
    job = ctx.store.batch_job(ref)
    name = job.name if job is not None and job.name else ref
    await ctx.batches.cancel_batch(name)
    info = await ctx.batches.get_batch(name)
    if job is not None:
        ctx.store.batch_job_state(job.id, info.state, ended=info.done)
    return info


# --- collect ---------------------------------------------------------------------------------


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
    out = Collected()
    touched: set[int] = set()
    reasks: dict[int, list[_Pending]] = {}
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
                async for r in ctx.batches.batch_results(info, ctx.workdir):
                    if _judge(ctx, job, r, out, reasks):
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
        await _send(ctx, run_id, items, round=2)
    if ctx.settings.out is not None:
        for run_id in sorted(touched):
            out.outputs = write_outputs(ctx.store, run_id, ctx.settings.out)
    return out


def _judge(ctx: Context, job: BatchJobRow, r: BatchResult, out: Collected,
           reasks: dict[int, list[_Pending]]) -> bool:
    """One result line; False when it is not ours to judge (unknown, or judged before)."""
    if not r.key.startswith("a") or not r.key[1:].isdigit():
        return False
    item = ctx.store.batch_item(int(r.key[1:]))
    if item is None or item.job_id != job.id or item.state != "pending":
        return False
    if r.response is None:
        _fail(ctx, item, f"the batch line failed: {r.error}", out)
        return True
    resp = r.response
    cost = ctx.pricing.cost(resp.usage, models.today())
    out.cost_usd += cost or 0.0
    _keep(ctx, item, resp, cost)
    chain = _chain(ctx, item)
    replies = [*(_reply(ctx, a) for a in chain[:-1]), Reply(
        resp.text, resp.finish_reason, resp.blocked_reason, resp.model_version,
        resp.usage.thinking_tokens, resp.usage.output_tokens)]
    flags = _flags(item.flags_json)
    verdict = decide(ctx.policy, replies, flags)
    if isinstance(verdict, Reask | Reconfigure):
        req, cfg = _thaw(ctx, item.request_json)
        if isinstance(verdict, Reask):
            req = req.model_copy(update={"history": verdict.history})
        else:
            req = req.model_copy(update={"max_output_tokens": verdict.max_output_tokens,
                                         "thinking_level": verdict.thinking_level})
        record = describe(req, ctx.prefix, salt(0, item.epoch))
        reasks.setdefault(item.run_id, []).append(_Pending(
            item.student_id, item.submission_id, req, BatchItemIn(
                student_id=item.student_id, submission_id=item.submission_id, request=record,
                n=item.n + 1, epoch=item.epoch, request_json=_freeze(req, cfg),
                flags_json=item.flags_json, redaction=item.redaction or None,
                previous=item.attempt_id)))
        ctx.store.batch_item_done(item.attempt_id, "reasked")
        out.reasked += 1
        return True
    cfg = str(json.loads(item.request_json)["cfg"])
    verdict = restore_verdict(verdict, item.redaction)
    with ctx.store.atomic():
        _save(ctx, item.run_id, item.student_id, item.submission_id, verdict, item.epoch, cfg,
              chain)
        ctx.store.batch_item_done(item.attempt_id, "stored")
    if verdict.status == "graded":
        out.graded += 1
    else:
        out.flagged += 1
    return True


def _keep(ctx: Context, item: BatchItem, resp: GradeResponse, cost: float | None) -> None:
    u = resp.usage
    ctx.store.answer_attempt(item.attempt_id, item.request_hash, Answer(
        text=resp.text, finish_reason=resp.finish_reason, blocked_reason=resp.blocked_reason,
        model_version=resp.model_version, raw=resp.raw, prompt_tokens=u.prompt_tokens,
        output_tokens=u.output_tokens, thinking_tokens=u.thinking_tokens,
        cached_tokens=u.cached_tokens, latency_ms=0.0, retries=0, cost_usd=cost,
        model_status=resp.model_status, service_tier="batch"))


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
    s = ctx.store.reply_of(attempt_id)
    if s is None:
        raise StoreError(f"attempt {attempt_id} has no stored reply",
                         fix="report this store to the grader developers")
    return Reply(s.text, s.finish_reason, s.blocked_reason, s.model_version, s.thinking_tokens,
                 s.output_tokens)


def _fail(ctx: Context, item: BatchItem, why: str, out: Collected) -> None:
    with ctx.store.atomic():
        ctx.store.fail_attempt(item.attempt_id, error=why, status=None, retries=0,
                               latency_ms=0.0)
        ctx.store.batch_item_done(item.attempt_id, "failed", why)
        ctx.store.record_outcome(OutcomeRecord(
            run_id=item.run_id, student_id=item.student_id, status="failed",
            submission_id=item.submission_id, reason="batch_failed",
            message=f"{why}; `grade batch submit --retry-failed` sends it again"))
    out.failed += 1


def _save(ctx: Context, run_id: int, student_id: str, sub_id: int, v: Verdict, epoch: int,
          cfg: str, attempts: list[int]) -> None:
    """The grade and its outcome (the caller holds the transaction)."""
    gid = ctx.store.save_grade(GradeRecord(
        student_id=student_id, submission_id=sub_id, fingerprint=ctx.fingerprint, sample=0,
        epoch=epoch, config_hash=cfg, run_id=run_id, status=v.status,
        max_total=ctx.p.rubric.max_total, total=v.total, percent=v.percent,
        overall_comment=v.overall_comment, needs_review=v.needs_review,
        review_reason=v.review_reason, model=ctx.gen.model, model_version=v.model_version,
        criteria=v.criteria, flags=v.flags, attempt_ids=attempts, samples=1))
    ctx.store.record_outcome(OutcomeRecord(
        run_id=run_id, student_id=student_id, status=v.status, submission_id=sub_id,
        grade_id=gid, reason=v.reason, message=v.message))


async def _clean_up(ctx: Context, job: BatchJobRow, info: BatchInfo) -> None:
    """The job's input file is no longer needed: delete it (results stay with the job)."""
    if not isinstance(ctx.backend, SupportsFiles):
        return
    for up in ctx.store.open_uploads(ctx.name, job_ref=job.display_name):
        if up.name is not None:
            try:
                await ctx.backend.delete_file(up.name)
            except BackendError:
                continue  # it expires on its own (48 h); tried again next time
        ctx.store.end_upload(up.id, "deleted")


async def collect_waiting(ctx: Context, on_poll: Callable[[Collected], None] | None = None,
                          sleep: Callable[[float], Any] = asyncio.sleep) -> Collected:
    """`collect` until no job is running, polling with a growing wait."""
    total = Collected()
    delay = ctx.settings.batch_poll_s
    while True:
        got = await collect(ctx)
        for name in ("jobs", "graded", "flagged", "failed", "reasked", "cost_usd"):
            setattr(total, name, getattr(total, name) + getattr(got, name))
        total.outputs = got.outputs or total.outputs
        total.running = got.running
        open_jobs = ctx.store.batch_jobs(ctx.class_key, open_only=True)
        if not open_jobs:
            return total
        if on_poll is not None:
            on_poll(total)
        await sleep(delay)
        delay = min(POLL_CAP_S, delay * 1.5)


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
        if c.jobs:
            parts.append(f"collected {c.jobs} job(s): {c.graded} graded, {c.flagged} flagged, "
                         f"{c.failed} failed" + (f", {c.reasked} re-asked" if c.reasked else "")
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
        async with opened(class_dir, settings, wait=False) as ctx:
            if ctx is None:
                return Synced(busy=True)
            done = Synced(collected=await collect(ctx))
            done.submitted = await submit(ctx, retry_failed=retry_failed)
            done.wall_s = time.perf_counter() - started
            return done

    return asyncio.run(main())
