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
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from . import __version__, exemplars, injection, models, schema, score_jump
from .backends import Backend, create, media_types
from .backends.base import SupportsEmbeddings
from .budget import Spending
from .caching import CacheReport
from .discover import Submission, discover
from .embeddings import Embedder, EmbeddingReport, similarity_of
from .errors import (
    BackendError,
    BudgetExceeded,
    ConfigError,
    InputError,
    StoreError,
    SubmissionError,
)
from .extract import Extracted
from .gate import check_gate
from .generation import Generation, configure
from .grading import (
    INFO_FLAGS,
    Policy,
    Reask,
    Reconfigure,
    Reply,
    Verdict,
    decide,
    more_room,
    rejected,
)
from .isolation import Extractor
from .ledger import Called, CallLedger, describe, prefix_hash, salt, sha256
from .limits import check_request_size
from .locks import Holder, RunLock
from .outputs import check_out_dir
from .prompts import Prompts, check_prefix_size, check_templates, load_prompts
from .redact import Redactor, restore_verdict
from .report import write_outputs
from .request import GradeRequest, Part, Usage
from .rubric import Reference, Rubric, load_references, load_rubric
from .scaffold import check_edited
from .selection import Grade, Reuse, Selection, Skip, choose
from .sending import GONE_RETRIES, Sending, open_sending
from .settings import (
    DEFAULT_GEMINI_MODEL,
    Settings,
    auto_backend,
    db_path,
    limits,
    redacting,
    rubric_path,
)
from .store import (
    FlagRow,
    GradeRecord,
    OutcomeRecord,
    RequestRecord,
    RunInfo,
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
    tier: str = "standard"
    outcomes: list[Outcome] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)  # things the teacher should know
    injection_suspected: list[str] = field(default_factory=list)
    redacted: bool = False
    cache: CacheReport | None = None  # None: no cache was considered (off, or not offered)
    cache_usd: float = 0.0  # creating and keeping the run's explicit caches (in cost_usd)
    uploads: int = 0  # files uploaded (reference files, media too large to send inline)
    embeddings: EmbeddingReport | None = None  # exemplars compared by Gemini embeddings

    @property
    def ok(self) -> bool:
        return self.failed == 0

    @property
    def skipped_budget(self) -> int:
        return sum(1 for o in self.outcomes if o.status == "skipped" and o.reason == "budget")


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
    references: tuple[Reference, ...] = ()

    @property
    def policy(self) -> Policy:
        s = self.settings
        return Policy(rubric=self.rubric, validator=self.validator,
                      reask_prompt=self.prompts.reask, max_spread=s.max_spread,
                      quote_similarity=s.quote_similarity)

    def prefix_hash(self, model: str) -> str:
        return prefix_hash(model, self.system, self.static_prefix, self.response_schema,
                           tuple(r.sha256 for r in self.references))

    @property
    def assignment_files(self) -> tuple[Path, ...]:
        """The rubric's reference files: part of the assignment, never of a submission."""
        return tuple(self.rubric_path.parent / r.name for r in self.references)

    def reference_parts(self) -> tuple[Part, ...]:
        """The reference files as request parts (bytes; a URI is added once uploaded)."""
        return tuple(Part(mime_type=r.mime_type, data=r.data) for r in self.references)

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
    # with --exemplars the rubric's own examples join the bank (chosen per student) instead
    shown = rubric.model_copy(update={"exemplars": ()}) if settings.exemplars else rubric
    system, prefix = prompts.system(), prompts.static_prefix(shown)
    check_prefix_size(system, prefix, max_tokens=MAX_PREFIX_TOKENS)
    rschema = schema.json_schema(rubric)
    shash = hashlib.sha256(json.dumps(rschema, sort_keys=True).encode()).hexdigest()[:16]
    return Plan(
        class_dir=class_dir, settings=settings, rubric=rubric, rubric_path=path,
        rubric_hash=rhash, prompts=prompts, response_schema=rschema, schema_hash=shash,
        system=system, static_prefix=prefix, validator=schema.validation_model(rubric),
        references=load_references(rubric, path),
    )


def render(p: Plan, ex: Extracted, gen: Generation, key: str = "",
           references: tuple[Part, ...] = (),
           examples: Sequence[Mapping[str, Any]] = ()) -> GradeRequest:
    """The request for one student; `examples` (`exemplars.Picked.shown`) lead its part."""
    return GradeRequest(
        key=key, model=gen.model, system=p.system, static_prefix=p.static_prefix,
        reference_parts=references,
        student_parts=p.prompts.student_parts(ex.text, ex.parts, ex.files, examples),
        response_schema=p.response_schema, max_output_tokens=gen.max_output_tokens,
        thinking_level=gen.thinking_level, temperature=gen.temperature, top_p=gen.top_p,
        seed=gen.seed,
    )


def default_model(backend: str, settings: Settings) -> str:
    """The model a backend will be asked for when none is given (before it is created)."""
    if settings.model:
        return settings.model
    return DEFAULT_GEMINI_MODEL if backend in ("gemini", "vertex", "enterprise") else "local"


def thinking_retry(gen: Generation) -> Reconfigure | None:
    """The one retry after a thinking cut-off, from the model table's limits."""
    if gen.row is None and gen.surface is None:
        return None  # a local model does not think
    limit = gen.row.max_output_tokens if gen.row is not None else None
    lower = gen.row.lower_level(gen.thinking_level) if gen.row is not None else None
    return more_room(gen.max_output_tokens, gen.thinking_level, limit, lower)


def spending_for(settings: Settings, gen: Generation, tbl: models.ModelTable) -> Spending | None:
    """Prices, --budget and the spend-rate limit of a run on a paid API (None for local)."""
    if gen.surface is None:
        return None  # a local model costs nothing: there is nothing to price or cap
    pricing = models.Pricing.of(tbl, gen.model, settings.tier)
    if not pricing.known and (settings.budget is not None or settings.spend_per_10min):
        raise ConfigError(
            f"--budget and spend_per_10min need a price for {gen.model}, and the model table "
            "has none", fix=f'add a price row under [grader.models."{gen.model}"] in '
            "grader.toml (README: Configuration), or leave --budget unset")
    return Spending(pricing, tbl.media, budget=settings.budget,
                    per_10min=settings.spend_per_10min)


def config_hash(req: GradeRequest, samples: int = 1, exemplars: str | None = None) -> str:
    """The generation config of a grade; a grade combining several samples is another one, and
    so is a grade shown other graded examples (`exemplars`: their digest)."""
    h = sha256("config/1", json.dumps(req.generation_config(), sort_keys=True))
    if exemplars is not None:
        h = sha256(h, f"exemplars={exemplars}")
    return h if samples == 1 else sha256(h, f"samples={samples}")


def sampled(req: GradeRequest, k: int) -> GradeRequest:
    """Sample k of a student's request. The ledger key is salted with k, so each sample is its
    own paid call; the request itself is the same (the model's own sampling makes the answers
    differ), except that a seed the teacher set moves by k."""
    if k == 0 or req.seed is None:
        return req
    return req.model_copy(update={"seed": req.seed + k})


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
    if injection.suspicious(ex.findings):
        flags.insert(0, FlagRow(injection.FLAG, injection.evidence(ex.findings)))
    return tuple(flags)


def students(class_dir: Path, settings: Settings, assignment: tuple[Path, ...] = ()
             ) -> list[Submission]:
    """discover: the class's submissions (paths only), honouring --limit. `assignment`: the
    rubric's reference files (never anyone's submission)."""
    roster = settings.roster
    if roster is None and (class_dir / "roster.csv").is_file():
        roster = class_dir / "roster.csv"
    subs = list(discover(class_dir, roster, assignment=assignment))
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
                text = ex.text if ex.has_text and not ex.parts else None
                samples, verdict = finalize(self.policy, [v for v, _ in graded], text)
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
        (with the redacted names mapped back) and the attempts it paid for."""
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
            return restore_verdict(verdict, mapping), attempts

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
# A submission with no content, rendered once per run to read the run's generation config.
_NOTHING = Extracted(text="", content_hash="", files=())


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
    spending = spending_for(settings, gen, tbl)
    subs = students(class_dir, settings, p.assignment_files)
    sel = selection_of(settings)
    db = db_path(class_dir, settings)
    lock = RunLock(db)
    await lock.acquire(wait=settings.wait, on_wait=on_wait)
    try:
        with Store(db) as store:
            owned = backend is None  # a backend passed in is the caller's to close
            backend = backend if backend is not None else create(name, settings=settings)
            if on_retry is not None and hasattr(backend, "on_retry"):
                backend.on_retry = on_retry
            try:
                model = str(getattr(backend, "model", gen.model))
                if model != gen.model:  # a backend passed in, or a local model file
                    gen = configure(settings, model, name, tbl)
                    spending = spending_for(settings, gen, tbl)
                for text in gen.notices:  # before the progress bar starts
                    if on_notice:
                        on_notice(text)
                if not settings.force and sel.only is None:  # calibrated well enough?
                    check_gate(store.latest_calibration(str(class_dir.resolve()),
                                                        p.fingerprint(model)), settings,
                               str(class_dir))
                if on_start:
                    on_start(len(subs), name, model)
                selector = example_selector(p, store, subs)
                authors = exemplars.authors(selector, subs) if selector is not None else []
                redactor = (Redactor([*subs, *authors], phone_region=settings.phone_region)
                            if redacting(settings, name) else None)
                return await _graded(
                    p, subs, sel, store, backend, name, gen, on_outcome, tbl=tbl,
                    spending=spending, on_notice=on_notice, redactor=redactor,
                    examples=run_examples(p, selector, redactor, backend, name))
            finally:
                if owned:
                    await backend.aclose()
    finally:
        lock.release()


def example_selector(p: Plan, store: Store, subs: Sequence[Submission]
                     ) -> exemplars.Selector | None:
    """The run's graded-example selector (`--exemplars K`), from the bank of `exemplar_db` (else
    the run's store); None when exemplars are off. Reviewed grades of the students this run
    grades are left out unless `exemplars_same_run` allows them."""
    s = p.settings
    if not s.exemplars:
        return None
    other = s.exemplar_db
    own = other is None or other.resolve() == Path(store.path).resolve()
    if other is None or own:
        bank = exemplars.load_bank(store, p.rubric)
    else:
        if not other.is_file():
            raise InputError("the example bank's store was not found", path=other,
                             fix="pass --exemplar-db with the grader.sqlite of a reviewed class")
        with Store(other, create=False) as theirs:
            bank = exemplars.load_bank(theirs, p.rubric)
    # the students of this run are in the run's own store; another store's ids are other
    # submissions (an id there that is a student's here is still never shown to that student)
    same_run = (frozenset(x.student_id for x in subs) if own and not s.exemplars_same_run
                else frozenset())
    return exemplars.Selector(bank, s.exemplars, run_students=same_run)


def run_examples(p: Plan, selector: exemplars.Selector | None, redactor: Redactor | None,
                 backend: Backend, name: str) -> exemplars.Examples | None:
    """The run's examples (None when exemplars are off), compared by TF-IDF or, as
    `exemplar_similarity` resolves for `backend`, by the model table's embedding model."""
    if selector is None:
        return None
    how = similarity_of(p.settings.exemplar_similarity, backend, name)
    embedder = (Embedder(backend, models.table(p.settings.models).embedding, models.today())
                if how == "embeddings" and isinstance(backend, SupportsEmbeddings) else None)
    return exemplars.Examples(selector, redactor, embedder)


async def _graded(p: Plan, subs: list[Submission], sel: Selection, store: Store,
                  backend: Backend, name: str, gen: Generation,
                  on_outcome: Callable[[Outcome], None] | None, *,
                  tbl: models.ModelTable, spending: Spending | None,
                  on_notice: Callable[[str], None] | None,
                  redactor: Redactor | None,
                  examples: exemplars.Examples | None = None) -> RunSummary:
    started = time.perf_counter()
    model = gen.model
    fingerprint = p.fingerprint(model)
    cfg = config_hash(render(p, _NOTHING, gen), p.settings.samples)
    class_key = str(p.class_dir.resolve())
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
    with Extractor(max_file_mb=p.settings.max_file_mb, limits=limits(p.settings)) as ex:
        sending: Sending | None = None
        try:
            sending = await open_sending(
                store, backend, run.id, row=gen.row, settings=p.settings, tbl=tbl,
                probe=render(p, _NOTHING, gen, references=p.reference_parts()
                             ).model_copy(update={"student_parts": ()}),
                pricing=spending.pricing if spending is not None else None,
                calls=len(subs), on_notice=on_notice)
            for text in sending.notices:
                if on_notice:
                    on_notice(text)
            runner = Runner(p, store, backend, ex, run.id, run.epoch, gen, sel, on_outcome,
                            spending=spending, on_notice=on_notice, redactor=redactor,
                            sending=sending, examples=examples)
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
    summary = _summarize(runner, run.id, name, model, Path(store.path), sel.mode)
    summary.cache = sending.report
    summary.uploads = sending.uploads.uploaded if sending.uploads is not None else 0
    summary.notices = list(store.notices)
    summary.injection_suspected = sorted(runner.suspected)
    summary.redacted = redactor is not None
    summary.embeddings = (examples.embedder.report if examples is not None
                          and examples.embedder is not None else None)
    if spending is not None:
        held = store.usage(run.id)
        summary.cache_usd = held["cache_create_usd"] + held["cache_storage_usd"]
        summary.cost_usd = spending.cost + summary.cache_usd + (
            summary.embeddings.cost_usd if summary.embeddings is not None else 0.0)
        summary.unpriced = spending.unpriced
        summary.budget, summary.tier = p.settings.budget, p.settings.tier
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
