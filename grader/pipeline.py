"""One grading run as a sequence of verb-named steps:

    discover -> extract -> render -> grade -> validate -> store -> report

`run_class()` is the library entry point (the CLI is a thin wrapper around it). Submissions are
streamed through a bounded pool of workers: only file paths are held for the whole class, content
is read when a worker picks the student up. Every student ends graded, flagged (with a reason) or
failed (a backend error worth retrying; a rerun picks it up).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from . import __version__, schema
from .backends import Backend, create
from .discover import Submission, discover
from .errors import BackendError, InputError, RubricError, SubmissionError
from .extract import Extracted, extract
from .prompts import Prompts, load_prompts
from .report import write_outputs
from .request import GradeRequest, GradeResponse, Turn, Usage
from .rubric import Rubric, load_rubric
from .settings import Settings, auto_backend
from .store import DEFAULT_DB_NAME, CriterionRow, FlagRow, Store, grade_key

RUBRIC_NAMES = ("rubric.yaml", "rubric.yml")

# What `_save` needs: the validated result (None when flagged), model version, flags.
ToSave = tuple["schema.ModelGrade | None", "str | None", "list[FlagRow]"]


@dataclass
class Outcome:
    """What happened to one student; passed to the progress callback."""

    student_id: str
    status: str  # graded | flagged | failed
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
    students: int = 0
    graded: int = 0
    flagged: int = 0
    failed: int = 0
    reused: int = 0
    usage: Usage = field(default_factory=Usage)
    calls: int = 0
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
    validator: type[Any]


def find_rubric(class_dir: Path, settings: Settings) -> Path:
    if settings.rubric is not None:
        return settings.rubric
    for name in RUBRIC_NAMES:
        if (class_dir / name).is_file():
            return class_dir / name
    raise RubricError(
        "no rubric given and none found in the class folder", path=class_dir,
        fix="pass --rubric FILE, put rubric.yaml in the class folder, or set rubric in grader.toml",
    )


def db_path(class_dir: Path, settings: Settings) -> Path:
    return settings.db if settings.db is not None else class_dir / DEFAULT_DB_NAME


def plan(class_dir: Path, settings: Settings) -> Plan:
    """Prepare the static part of every request: rubric, prompts, schema (fails fast)."""
    if not class_dir.is_dir():
        raise InputError("class folder not found", path=class_dir,
                         fix="pass the folder that holds the students' submissions")
    rubric_path = find_rubric(class_dir, settings)
    rubric, rhash = load_rubric(rubric_path)
    prompts = load_prompts(settings.prompts)
    rschema = schema.json_schema(rubric)
    shash = hashlib.sha256(json.dumps(rschema, sort_keys=True).encode()).hexdigest()[:16]
    return Plan(
        class_dir=class_dir, settings=settings, rubric=rubric, rubric_path=rubric_path,
        rubric_hash=rhash, prompts=prompts, response_schema=rschema, schema_hash=shash,
        system=prompts.system(), static_prefix=prompts.static_prefix(rubric),
        validator=schema.validation_model(rubric),
    )


def render(p: Plan, ex: Extracted, key: str, model: str) -> GradeRequest:
    s = p.settings
    return GradeRequest(
        key=key, model=model, system=p.system, static_prefix=p.static_prefix,
        student_parts=p.prompts.student_parts(ex.text, ex.parts, ex.files),
        response_schema=p.response_schema, temperature=s.temperature, seed=s.seed,
        max_output_tokens=s.max_output_tokens, thinking_budget=s.thinking_budget,
    )


def validate(p: Plan, text: str) -> schema.ModelGrade:
    return schema.parse_with(p.validator, text)


def _request_record(req: GradeRequest) -> dict[str, Any]:
    """The request as stored: text in full, media by size and hash (not the bytes)."""
    parts = [
        {"text": pt.text} if pt.text is not None else
        {"mime_type": pt.mime_type, "bytes": len(pt.data or b""),
         "sha256": hashlib.sha256(pt.data or b"").hexdigest()}
        for pt in req.student_parts
    ]
    return {"key": req.key, "model": req.model, "student_parts": parts,
            "history": [t.model_dump() for t in req.history],
            "static_prefix_sha256": hashlib.sha256(req.static_prefix.encode()).hexdigest()}


class Runner:
    """Holds the run's shared state: plan, store, one backend, counters."""

    def __init__(self, p: Plan, store: Store, backend: Backend, backend_name: str, model: str,
                 on_outcome: Callable[[Outcome], None] | None):
        self.p, self.store, self.backend = p, store, backend
        self.backend_name, self.model = backend_name, model
        self.on_outcome = on_outcome
        self.run_id = store.begin_run(
            class_dir=str(p.class_dir.resolve()), backend=backend_name, model=model,
            rubric_path=str(p.rubric_path), rubric_hash=p.rubric_hash,
            prompt_hash=p.prompts.hash, schema_hash=p.schema_hash, sdk_version=_sdk_version(),
            grader_version=__version__,
            settings=p.settings.model_dump(mode="json", exclude={"api_key"}),
            rubric=p.rubric.model_dump(mode="json"),
        )
        self.summary = RunSummary(run_id=self.run_id, backend=backend_name, model=model,
                                  db=Path(store.path))

    def _finish(self, sub: Submission, submission_id: int | None, grade_id: int | None,
                outcome: Outcome) -> None:
        self.store.record_outcome(
            run_id=self.run_id, student_id=sub.student_id, submission_id=submission_id,
            grade_id=grade_id, status=outcome.status, reused=outcome.reused,
            reason=outcome.reason, message=outcome.message, name=sub.name, email=sub.email,
            source=sub.source,
        )
        s = self.summary
        s.students += 1
        s.reused += outcome.reused
        if outcome.status == "graded":
            s.graded += 1
        elif outcome.status == "flagged":
            s.flagged += 1
        else:
            s.failed += 1
        s.outcomes.append(outcome)
        if self.on_outcome:
            self.on_outcome(outcome)

    async def grade_one(self, sub: Submission) -> None:
        """extract -> render -> grade -> validate -> store, for one student."""
        p = self.p
        try:
            if _is_small_text(sub):  # microseconds: a thread hand-off would cost more
                ex = extract(sub, max_file_mb=p.settings.max_file_mb)
            else:  # PDFs, documents, notebooks: keep the event loop free
                ex = await asyncio.to_thread(extract, sub, max_file_mb=p.settings.max_file_mb)
        except SubmissionError as e:
            self._finish(sub, None, None, Outcome(sub.student_id, "flagged", reason=e.reason,
                                                  message=e.render()))
            return
        submission_id = self.store.upsert_submission(
            run_id=self.run_id, student_id=sub.student_id, name=sub.name, email=sub.email,
            source=sub.source, content_hash=ex.content_hash, files=ex.files, late=sub.late,
            notes=ex.notes,
        )
        key = grade_key(ex.content_hash, p.rubric_hash, p.prompts.hash, p.schema_hash, self.model)
        existing = None if p.settings.regrade else self.store.find_grade(key)
        if existing is not None:
            first_flag = self.store.conn.execute(
                "SELECT reason, message FROM flags WHERE grade_id=? ORDER BY id LIMIT 1",
                (existing["id"],)).fetchone()
            self._finish(sub, submission_id, existing["id"], Outcome(
                sub.student_id, "flagged" if first_flag else existing["status"], reused=True,
                reason=first_flag["reason"] if first_flag else None,
                message=first_flag["message"] if first_flag else None, total=existing["total"]))
            return
        request = render(p, ex, key, self.model)
        try:
            outcome, save = await self._grade(sub, key, submission_id, request)
        except BackendError as e:
            if e.run_wide:
                raise
            outcome = Outcome(sub.student_id, "failed", reason="backend_error",
                              message=e.render())
            save = None
        except SubmissionError as e:
            flag = FlagRow(e.reason, e.render())
            outcome = Outcome(sub.student_id, "flagged", reason=e.reason, message=e.render())
            save = (None, None, [flag])
        with self.store.transaction():  # the grade and its outcome land together or not at all
            grade_id = self._save(sub, submission_id, key, *save) if save else None
            self._finish(sub, submission_id, grade_id, outcome)

    async def _call(self, submission_id: int, key: str, n: int, req: GradeRequest
                    ) -> GradeResponse:
        try:
            resp = await self.backend.generate(req)
        except BackendError as e:
            self.store.record_attempt(
                run_id=self.run_id, submission_id=submission_id, key=key, n=n,
                request=_request_record(req), response_text=None, raw=None, error=e.render(),
                finish_reason=None, usage={}, model_version=None, latency_ms=0.0, retries=0)
            raise
        self.store.record_attempt(
            run_id=self.run_id, submission_id=submission_id, key=key, n=n,
            request=_request_record(req), response_text=resp.text, raw=resp.raw, error=None,
            finish_reason=resp.finish_reason, usage=resp.usage.model_dump(),
            model_version=resp.model_version, latency_ms=resp.latency_ms, retries=resp.retries)
        self.summary.usage = self.summary.usage + resp.usage
        self.summary.calls += 1
        return resp

    async def _grade(self, sub: Submission, key: str, submission_id: int, req: GradeRequest
                     ) -> tuple[Outcome, ToSave]:
        """grade + validate: ask, re-ask once on invalid output; return what to store."""
        paid = None if self.p.settings.regrade else self.store.paid_response(key)
        if paid is not None:
            resp = GradeResponse(text=paid["response_text"], finish_reason=paid["finish_reason"],
                                 model_version=paid["model_version"])
        else:
            resp = await self._call(submission_id, key, 1, req)
        mv = resp.model_version
        if resp.text is None:
            return self._blocked(sub, resp)
        try:
            result = validate(self.p, resp.text)
        except ValidationError as first:
            follow = (Turn(role="model", text=resp.text),
                      Turn(role="user", text=self.p.prompts.reask(schema_error_text(first))))
            resp = await self._call(submission_id, key, 2,
                                    req.model_copy(update={"history": follow}))
            mv = resp.model_version or mv
            if resp.text is None:
                return self._blocked(sub, resp)
            try:
                result = validate(self.p, resp.text)
            except ValidationError as second:
                msg = ("the model's output did not match the rubric's schema twice: "
                       + schema_error_text(second).replace("\n", "; ")
                       + " (raw responses are kept in the store's attempts table)")
                return (Outcome(sub.student_id, "flagged", reason="invalid_output", message=msg),
                        (None, mv, [FlagRow("invalid_output", msg)]))
        flags = []
        if result.needs_review:
            flags.append(FlagRow("needs_review",
                                 result.review_reason or "the model asked for a human review"))
        total = sum(c.score for c in result.criteria.values())
        outcome = Outcome(sub.student_id, "flagged" if flags else "graded",
                          reason=flags[0].reason if flags else None,
                          message=flags[0].message if flags else None, total=total)
        return outcome, (result, mv, flags)

    @staticmethod
    def _blocked(sub: Submission, resp: GradeResponse) -> tuple[Outcome, ToSave]:
        why = resp.blocked_reason or "EMPTY"
        reason = f"blocked_{why.lower()}"
        if why == "UNSUPPORTED_MEDIA":
            msg = ("the submission is only images/scanned pages and this model cannot read them;"
                   " grade it by hand or with --backend gemini")
        else:
            msg = (f"the model returned no usable output (finish reason {why})"
                   "; grade this student by hand, or rerun with --regrade after checking it")
        return (Outcome(sub.student_id, "flagged", reason=reason, message=msg),
                (None, resp.model_version, [FlagRow(reason, msg)]))

    def _save(self, sub: Submission, submission_id: int, key: str,
              result: schema.ModelGrade | None, model_version: str | None,
              flags: list[FlagRow]) -> int:
        rubric = self.p.rubric
        rows = []
        total = percent = None
        if result is not None:
            for c in rubric.all_criteria:
                r = result.criteria[c.id]
                rows.append(CriterionRow(c.id, r.score, c.max_points, r.justification,
                                         r.evidence, r.feedback))
            total = sum(r.score for r in rows)  # computed by code, never by the model
            percent = round(100.0 * total / rubric.max_total, 2)
        return self.store.save_grade(
            key=key, run_id=self.run_id, submission_id=submission_id, student_id=sub.student_id,
            status="graded" if result is not None else "flagged", max_total=rubric.max_total,
            total=total, percent=percent,
            overall_comment=result.overall_comment if result else None,
            needs_review=bool(result.needs_review) if result else True,
            review_reason=(result.review_reason if result else flags[0].message) or None,
            model=self.model, model_version=model_version, criteria=rows, flags=flags,
            regrade=self.p.settings.regrade,
        )

    async def run(self, subs: Iterator[Submission]) -> None:
        lock = asyncio.Lock()

        async def worker() -> None:
            while True:
                async with lock:
                    sub = next(subs, None)
                if sub is None:
                    return
                await self.grade_one(sub)

        n = max(1, self.p.settings.concurrency)
        try:
            # A TaskGroup cancels the other workers when one fails (a run-wide backend error),
            # so nothing is left talking to a client that is about to close.
            async with asyncio.TaskGroup() as tg:
                for _ in range(n):
                    tg.create_task(worker())
        except BaseExceptionGroup as group:
            raise group.exceptions[0] from None


_SLOW_SUFFIXES = {".pdf", ".docx", ".ipynb", ".png", ".jpg", ".jpeg", ".webp", ".gif"}


def _is_small_text(sub: Submission) -> bool:
    if len(sub.files) != 1:
        return False
    f = sub.files[0]
    try:
        return f.suffix.lower() not in _SLOW_SUFFIXES and f.stat().st_size < 64 * 1024
    except OSError:
        return False  # let extract() report it


def schema_error_text(err: ValidationError) -> str:
    lines = []
    for e in err.errors()[:20]:
        loc = ".".join(str(x) for x in e["loc"]) or "(top level)"
        lines.append(f"{loc}: {e['msg']}")
    return "\n".join(lines)


def _sdk_version() -> str | None:
    try:
        from google.genai import version

        return str(version.__version__)
    except Exception:  # pragma: no cover - SDK always installed, but version module may move
        return None


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



def run_class(class_dir: Path, settings: Settings, *, backend: Backend | None = None,
              on_outcome: Callable[[Outcome], None] | None = None,
              on_start: Callable[[int, str, str], None] | None = None) -> RunSummary:
    """Grade every submission in `class_dir`; resumable; returns the run's summary."""
    p = plan(class_dir, settings)
    subs = students(class_dir, settings)
    name = backend.name if backend is not None else auto_backend(settings)
    backend = backend if backend is not None else create(name, settings=settings)
    model = str(getattr(backend, "model", settings.model or "unknown"))
    if on_start:
        on_start(len(subs), name, model)
    started = time.perf_counter()
    with Store(db_path(class_dir, settings)) as store:
        runner = Runner(p, store, backend, name, model, on_outcome)
        status = "interrupted"
        try:
            asyncio.run(_run_and_close(runner, iter(subs), backend))
            status = "failed" if runner.summary.failed else "done"
        finally:
            store.finish_run(runner.run_id, status)
        store.carry_forward_reviews(runner.run_id)
        summary = runner.summary
        summary.wall_s = time.perf_counter() - started
        if settings.out is not None:
            summary.outputs = write_outputs(store, summary.run_id, settings.out)
    return summary


async def _run_and_close(runner: Runner, subs: Iterator[Submission], backend: Backend) -> None:
    try:
        await runner.run(subs)
    finally:
        await backend.aclose()
