"""Batch jobs on the provider: opening a batch command (plan, store under the run lock, a
backend with `SupportsBatch`), the requests as kept with their batch items, splitting into jobs
within the provider's limits, and sending a job: rows first (committed), then the input (inline,
a Files API JSONL file, or a gs:// object), then the job. Also finding jobs again after a crash
(`recover`), their state (`refresh`) and `cancel`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from grader.backends import Backend, BatchInfo, SupportsBatch, create, media_types
from grader.backends.base import SupportsFiles
from grader.config import models
from grader.config.generation import configure
from grader.config.settings import SELF_HOSTED, Settings, auto_backend, db_path, limits
from grader.errors import BackendError, ConfigError
from grader.grading.context import RunContext
from grader.grading.policy import Policy, Verdict
from grader.grading.records import (
    BatchItem,
    BatchItemIn,
    BatchJobRow,
    ExemplarUse,
    FlagRow,
    GradeRecord,
    OutcomeRecord,
)
from grader.intake.injection import Finding
from grader.intake.isolation import Extractor
from grader.online.ratelimit import estimate_tokens
from grader.prompting.planning import default_model, plan
from grader.prompting.request import GradeRequest, Part, Turn
from grader.prompting.rubric import Rubric
from grader.prompting.schema import validation_model
from grader.store import Store
from grader.store.locks import RunLock
from grader.store.opening import follow_move

# Test-only fault hook (tests/test_batch_recovery.py): SIGKILL this process when a job's rows are
# committed, "before" the provider's job is created or right "after" (before its name is
# stored).
KILL_AT_CREATE_ENV = "GRADER_TEST_KILL_AT_BATCH_CREATE"


@dataclass
class Context:
    """Everything fixed for one batch command: the run context (`run`: the same plan,
    generation config, policy and hashes as `grade run`; submit widens it with the class's
    redactor and graded examples), the store, and a backend that runs batch jobs."""

    run: RunContext
    store: Store
    backend: Backend
    batches: SupportsBatch
    pricing: models.Pricing
    workdir: Path
    report_run: int | None = None  # collecting: the latest run of the class
    report_fingerprint: str | None = None  # ... and its fingerprint
    notices: tuple[str, ...] = ()  # the class folder was moved (`follow_move`)

    @property
    def settings(self) -> Settings:
        return self.run.p.settings

    @property
    def class_key(self) -> str:
        return self.run.class_key


@dataclass(frozen=True)
class JobStatus:
    job: BatchJobRow
    counts: dict[str, float]
    age_s: float


# --- opening ---------------------------------------------------------------------------------


def no_local_batches(name: str) -> None:
    """A self-hosted model (the local one, a school's server) has no batch mode: said before
    anything is opened."""
    if name in SELF_HOSTED:
        raise ConfigError(f"batch jobs need a Gemini API: the {name} backend has no batch mode",
                          fix="set GEMINI_API_KEY (or pass --api gemini / --api enterprise)")


@asynccontextmanager
async def opened(class_dir: Path, settings: Settings, *, no_wait: bool = False,
                 backend: Backend | None = None) -> AsyncIterator[Context | None]:
    """The plan, the store (under the run lock; records of a moved class folder carried over
    to its new path) and a backend that runs batch jobs (`backend`: one passed in, the
    caller's to close). With `no_wait`, yields None at once when another command holds the
    store."""
    p = plan(class_dir, settings)
    tbl = models.table(settings.models)
    name = backend.name if backend is not None else auto_backend(settings)
    no_local_batches(name)
    if settings.samples > 1:
        raise ConfigError("grade batch sends one sample per student",
                          fix="grade with --samples through `grade run`, or set samples = 1")
    gen = configure(settings, default_model(name, settings), name, tbl)
    db = db_path(class_dir, settings)
    run_lock = RunLock(db)
    if no_wait:
        if not run_lock.try_acquire():
            yield None
            return
    else:
        await run_lock.acquire(wait=settings.wait)
    try:
        with Store(db) as store, \
                Extractor(max_file_mb=settings.max_file_mb, limits=limits(settings)) as ex:
            moved = follow_move(store, class_dir)
            owned = backend is None
            backend = create(name, settings=settings) if backend is None else backend
            try:
                if not isinstance(backend, SupportsBatch):
                    raise ConfigError(f"the {name} backend runs no batch jobs",
                                      fix="use --api gemini or --api enterprise")
                run = RunContext.build(p, gen, name, extractor=ex,
                                       reads=media_types(backend))
                store.save_prefix(run.prefix, p.system, p.static_prefix, p.response_schema)
                yield Context(run=run, store=store, backend=backend, batches=backend,
                              pricing=models.Pricing.of(tbl, gen.model, "batch"),
                              workdir=db.parent / "batch",
                              notices=(moved,) if moved else ())
            finally:
                if owned:
                    await backend.aclose()
    finally:
        run_lock.release()


# --- requests as stored with their batch item --------------------------------------------------


def freeze(req: GradeRequest, cfg: str,
           seen: tuple[str | None, Sequence[ExemplarUse]] = (None, ()),
           findings: Sequence[Finding] = ()) -> str:
    """What collecting needs to ask again and to judge: the student's parts, history and
    generation config (the run's prefix, schema and references come from the plan), the graded
    examples the request shows (`seen`: their digest and uses, recorded with the grade), and
    intake's injection findings (for the score-jump check)."""
    parts = [{"text": p.text} if p.text is not None else
             {"mime_type": p.mime_type, "data": base64.b64encode(p.data or b"").decode()}
             for p in req.student_parts]
    return json.dumps({"cfg": cfg, "parts": parts,
                       "exemplars": {"hash": seen[0], "uses": [asdict(u) for u in seen[1]]},
                       "findings": [f.model_dump() for f in findings],
                       "history": [[t.role, t.text] for t in req.history],
                       "max_output_tokens": req.max_output_tokens,
                       "thinking_level": req.thinking_level, "temperature": req.temperature,
                       "top_p": req.top_p, "seed": req.seed}, ensure_ascii=False)


def thaw(ctx: Context, frozen: str) -> tuple[GradeRequest, str]:
    d = json.loads(frozen)
    parts = tuple(Part(text=x["text"]) if "text" in x else
                  Part(mime_type=x["mime_type"], data=base64.b64decode(x["data"]))
                  for x in d["parts"])
    p = ctx.run.p
    req = GradeRequest(
        key="", model=ctx.run.gen.model, system=p.system, static_prefix=p.static_prefix,
        reference_parts=p.reference_parts(), student_parts=parts,
        history=tuple(Turn(role=r, text=t) for r, t in d["history"]),
        response_schema=p.response_schema, max_output_tokens=d["max_output_tokens"],
        thinking_level=d["thinking_level"], temperature=d["temperature"], top_p=d["top_p"],
        seed=d["seed"])
    return req, str(d["cfg"])


def frozen_exemplars(frozen: str) -> tuple[str | None, list[ExemplarUse]]:
    """The graded examples a frozen request shows (none for one frozen before they existed)."""
    d = json.loads(frozen).get("exemplars") or {}
    return d.get("hash"), [ExemplarUse(**u) for u in d.get("uses") or ()]


def frozen_findings(frozen: str) -> tuple[Finding, ...]:
    """Intake's injection findings of a frozen request (none for one frozen before they were
    kept)."""
    return tuple(Finding(**f) for f in json.loads(frozen).get("findings") or ())


def frozen_parts(frozen: str) -> list[dict[str, Any]]:
    """The student's parts of a frozen request, as the ledger stores them (text, or the media
    type of a media part)."""
    return [{"text": x["text"]} if "text" in x else {"mime_type": x.get("mime_type")}
            for x in json.loads(frozen)["parts"]]


def flags_json(flags: Sequence[FlagRow]) -> str:
    return json.dumps([[f.reason, f.message] for f in flags], ensure_ascii=False)


def parse_flags(text: str) -> tuple[FlagRow, ...]:
    return tuple(FlagRow(r, m) for r, m in json.loads(text))


@dataclass(frozen=True)
class Pending:
    student_id: str
    submission_id: int
    req: GradeRequest
    item: BatchItemIn


def jobs_of(ctx: Context, pending: list[Pending]) -> list[list[Pending]]:
    """Split into jobs within the requests and estimated tokens a job may hold."""
    s = ctx.settings
    prefix_tokens = estimate_tokens(len(ctx.run.p.system) + len(ctx.run.p.static_prefix))
    jobs: list[list[Pending]] = []
    current: list[Pending] = []
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


async def send(ctx: Context, run_id: int, pending: list[Pending], *, round: int) -> list[str]:
    names = []
    for chunk in jobs_of(ctx, pending):
        names.append(await _send_job(ctx, run_id, chunk, round=round))
    return names


async def _send_job(ctx: Context, run_id: int, chunk: list[Pending], *, round: int) -> str:
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
        run_id=run_id, class_dir=ctx.class_key, backend=ctx.run.backend, model=ctx.run.gen.model,
        display_name=display, mode=mode, round=round, items=[x.item for x in chunk])
    _maybe_kill("before")
    # one line per distinct request: a classmate's identical request (a byte-identical hand-in)
    # is judged from the same reply when the job is collected (`twins`), never paid twice
    keyed, sent = [], set()
    for a, x in zip(attempt_ids, chunk, strict=True):
        if x.item.request.hash not in sent:
            sent.add(x.item.request.hash)
            keyed.append((f"a{a}", x.req))
    if lines is not None and len(keyed) < len(chunk):
        lines = None  # built for every item: the file job builds its own, one per request
    try:
        if mode == "inline":
            info = await ctx.batches.create_batch(model=ctx.run.gen.model, display_name=display,
                                                  inline=keyed)
            source = None
        else:
            source = await _upload_input(ctx, run_id, display, keyed, lines)
            store.batch_job_input(job_id, source)
            dest = (source.rsplit("/", 1)[0] + f"/{display}-out" if mode == "gcs" else None)
            info = await ctx.batches.create_batch(model=ctx.run.gen.model, display_name=display,
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
        raise ConfigError(f"the {ctx.run.backend} backend cannot upload a batch input file",
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
    upload = ctx.store.begin_upload(run_id=run_id, backend=ctx.run.backend, purpose="batch",
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
    return await _recover(ctx.store, ctx.class_key, lambda: ctx.batches)


async def _recover(store: Store, class_key: str, batches: Callable[[], SupportsBatch]) -> int:
    preparing = [j for j in store.batch_jobs(class_key, open_only=True)
                 if j.state == "preparing"]
    if not preparing:
        return 0
    known = {i.display_name: i for i in await batches().list_batches()}
    for j in preparing:
        found = known.get(j.display_name)
        if found is not None:
            store.batch_job_created(j.id, name=found.name, state=found.state, input_ref=None)
        else:
            store.batch_drop_job(j.id, "the job was never created (the command stopped "
                                 "first); its students are submitted again")
    return len(preparing)


async def refresh(store: Store, class_key: str,
                  batches: Callable[[], SupportsBatch]) -> list[JobStatus]:
    """Every job of the class `class_key`, open ones asked for their state. It needs only the
    store and, for jobs still open, a backend (`batches` makes it on first need): no rubric
    and no plan, so that the jobs can be listed after the rubric moved or was deleted, and
    jobs that are all finished are listed without credentials."""
    await _recover(store, class_key, batches)
    out = []
    for job in store.batch_jobs(class_key):
        if job.name and job.state not in ("collected", "abandoned") \
                and not job.state.endswith(("SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED")):
            info = await batches().get_batch(job.name)
            store.batch_job_state(job.id, info.state, ended=info.done, error=info.error)
            job = store.batch_job(job.display_name) or job
        made = datetime.fromisoformat(job.created_at)
        out.append(JobStatus(job, store.batch_job_counts(job.id),
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



@dataclass(frozen=True)
class Frame:
    """What a run's batch replies are judged and stored under: the run that sent them. One sent
    with another rubric, prompt or model than the command now has is judged against its own
    rubric (kept with the run in the store), priced for its own model and stored under its
    own fingerprint, so its grades say what they were graded with, and the next run grades
    those students again with today's (`changed` says what differs; None: nothing)."""

    policy: Policy
    fingerprint: str
    max_total: float
    model: str
    pricing: models.Pricing
    changed: str | None = None

    @classmethod
    def now(cls, ctx: Context) -> Frame:
        return cls(ctx.run.policy, ctx.run.fingerprint, ctx.run.p.rubric.max_total,
                   ctx.run.gen.model, ctx.pricing)

    @classmethod
    def of_run(cls, ctx: Context, run_id: int) -> Frame:
        run, current = ctx.store.run(run_id), cls.now(ctx)
        p = ctx.run.p
        changed = [what for what, then, now in (
            ("rubric", run.rubric_hash, p.rubric_hash), ("model", run.model, current.model),
            ("prompts", run.prompt_hash, p.prompts.hash), ("schema", run.schema_hash,
                                                         p.schema_hash)) if then != now]
        if run.fingerprint is None or (run.fingerprint == current.fingerprint and not changed):
            return current
        rubric = Rubric.model_validate(run.rubric)
        policy = replace(current.policy, rubric=rubric, validator=validation_model(rubric),
                         max_reasks=0, on_thinking_cut=None)  # no second round: it would be
        return cls(policy, run.fingerprint, rubric.max_total, run.model,  # asked in today's
                   models.Pricing.of(models.table(ctx.settings.models), run.model, "batch"),
                   " and ".join(changed) or "fingerprint")  # terms


def twins(items: Sequence[BatchItem]) -> dict[int, list[BatchItem]]:
    """The items of one job sent as one line (the same request: `_send_job` keys the line by
    the first), by the attempt id of that first item."""
    first: dict[str, int] = {}
    out: dict[int, list[BatchItem]] = {}
    for it in sorted(items, key=lambda i: i.attempt_id):
        if it.request_hash in first:
            out.setdefault(first[it.request_hash], []).append(it)
        else:
            first[it.request_hash] = it.attempt_id
    return out


def save_verdict(ctx: Context, run_id: int, student_id: str, sub_id: int, v: Verdict,
                 epoch: int, cfg: str, attempts: list[int],
                 seen: tuple[str | None, list[ExemplarUse]] = (None, []),
                 frame: Frame | None = None) -> int:
    """The grade and its outcome (the caller holds the transaction); `seen`: the graded
    examples the request showed (digest, uses); `frame`: the run's, when it is not today's
    (`Frame.of_run`). Returns the grade's id."""
    f = frame or Frame.now(ctx)
    gid = ctx.store.save_grade(GradeRecord(
        student_id=student_id, submission_id=sub_id, fingerprint=f.fingerprint, sample=0,
        epoch=epoch, config_hash=cfg, run_id=run_id, status=v.status,
        max_total=f.max_total, total=v.total, percent=v.percent,
        overall_comment=v.overall_comment, needs_review=v.needs_review,
        review_reason=v.review_reason, model=f.model, model_version=v.model_version,
        criteria=v.criteria, flags=v.flags, attempt_ids=attempts, samples=1,
        exemplars_hash=seen[0], exemplars=seen[1]))
    record_outcome(ctx, OutcomeRecord(
        run_id=run_id, student_id=student_id, status=v.status, submission_id=sub_id,
        grade_id=gid, reason=v.reason, message=v.message), f)
    return gid


def record_outcome(ctx: Context, rec: OutcomeRecord, frame: Frame | None = None) -> None:
    """A student's outcome in its run, and in the class's latest run when collecting (the run
    the reports are written from), so that the reports show everyone collected so far: only
    where that run holds no grade of the student (a placeholder for a request in flight, or
    nothing), so a grade stored there since (a resubmission, online or in a quicker job) stays;
    the next `grade batch sync` finds which submission the folder holds now. A grade asked
    under another rubric or model than that run's (`frame`) is not its grade: the run says so."""
    ctx.store.record_outcome(rec)
    if ctx.report_run is None or ctx.report_run == rec.run_id:
        return
    there = ctx.store.outcome_of(ctx.report_run, rec.student_id)
    if there is not None and (there[1] is not None or there[0] != rec.submission_id):
        return  # a grade there, or a placeholder waiting for another hand-in of the student
    if frame is not None and frame.fingerprint != ctx.report_fingerprint:
        rec = replace(rec, status="skipped", grade_id=None, reason="graded_before_a_change",
                      message=f"graded in run {rec.run_id}'s batch job with another rubric, "
                              "prompt or model than this run's (its grade is in that run); "
                              "`grade run` or `grade batch sync` grades it with today's")
    ctx.store.record_outcome(replace(rec, run_id=ctx.report_run))
