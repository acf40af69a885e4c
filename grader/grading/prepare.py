"""One preparation per student, shared by every path: online grading, batch submit, the estimate
and the dry run.

`prepare(ctx, sub, store)` does everything between discovery and the request: extract (in the
run's worker for large or complex files), record the submission (when there is a store),
redact, pick the graded examples, render, hash the generation config, choose between reusing a
stored grade, skipping and grading, and judge what can be judged without a call (a request too
large to send, media the backend cannot read), and, with `injection_check`, ask the model
whether the text sent tries to steer its grade (`screen`). It returns a `Prepared` student,
ready to send, or a `Settled` one, whose outcome is known already. A check added here applies
everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from grader.errors import BackendError, SubmissionError
from grader.grading import exemplars, screen
from grader.grading.context import RunContext
from grader.grading.judge import Grounds
from grader.grading.policy import INFO_FLAGS, Verdict, decide
from grader.grading.records import FlagRow, OutcomeRecord, Reply, SubmissionRecord
from grader.grading.selection import Grade, Reuse, Skip, choose
from grader.intake import injection
from grader.intake.discover import Submission
from grader.intake.extract import Extracted
from grader.intake.limits import check_request_size
from grader.prompting.planning import body_hash, config_hash, input_flags, render
from grader.prompting.prompts import submitted_text
from grader.prompting.request import GradeRequest
from grader.store import Store

# What a backend that cannot read a submission's only content "replies": judged like a block.
UNREADABLE_MEDIA = Reply(None, "UNSUPPORTED_MEDIA", "UNSUPPORTED_MEDIA")


@dataclass(frozen=True)
class Prepared:
    """A student ready to send: `req` (redacted) under config hash `cfg`, graded in `epoch`.
    `unsent` is the verdict when the request is not sent at all (too large, nothing the
    backend reads); `mapping` turns the placeholders of the reply back into names."""

    sub: Submission
    ex: Extracted
    submission_id: int | None
    req: GradeRequest
    cfg: str
    epoch: int
    grounds: Grounds
    picked: exemplars.Picked = exemplars.NONE
    seen: str | None = None  # the digest of the graded examples the request shows
    mapping: Mapping[str, str] = field(default_factory=dict)
    unsent: Verdict | None = None
    # the text the model-based injection check asks about (`screen`), when it would ask: the
    # request is sent, has text, and the patterns did not already flag it
    screen_text: str | None = None

    @property
    def student_id(self) -> str:
        return self.sub.student_id


@dataclass(frozen=True)
class Settled:
    """A student whose outcome is known before any request: flagged at intake, not selected,
    a stored grade reused, or failed (the embedding call that picks the examples).
    `suspected`: a reused grade flagged `injection_suspected`."""

    record: OutcomeRecord
    total: float | None = None
    suspected: bool = False


async def prepare(ctx: RunContext, sub: Submission, store: Store | None = None
                  ) -> Prepared | Settled:
    """The student as `ctx`'s run would send it. With a `store`, the submission is recorded
    and stored grades are reused as the selection says; without one (estimates, dry runs),
    nothing is written and every selected student is prepared."""
    try:
        ex = await _extract(ctx, sub)
    except SubmissionError as e:
        only = ctx.selection.only
        if only is not None and sub.student_id not in only:  # --only: not this run's business
            return Settled(OutcomeRecord(
                run_id=ctx.run_id, student_id=sub.student_id, status="skipped",
                reason="not_selected", message="not graded in this run: it was limited to "
                "--only students", name=sub.name, email=sub.email, source=sub.source))
        return Settled(OutcomeRecord(
            run_id=ctx.run_id, student_id=sub.student_id, status="flagged", reason=e.reason,
            message=e.render(), name=sub.name, email=sub.email, source=sub.source))
    bh = body_hash(ex)
    sub_id = store.upsert_submission(SubmissionRecord(
        student_id=sub.student_id, name=sub.name, email=sub.email, source=sub.source,
        content_hash=ex.content_hash, body_hash=bh, files=ex.files, late=sub.late,
        notes=ex.notes)) if store is not None else None
    base = OutcomeRecord(run_id=ctx.run_id, student_id=sub.student_id, status="",
                         submission_id=sub_id, name=sub.name, email=sub.email,
                         source=sub.source)
    sent, mapping = (ctx.redactor.submission(ex, sub.student_id) if ctx.redactor is not None
                     else (ex, {}))
    try:
        picked = (await ctx.examples.choose(ex.text, sent.text, sub.student_id, bh)
                  if ctx.examples is not None else exemplars.NONE)
    except BackendError as e:  # embedding the texts failed: this student, not the run
        if e.run_wide:
            raise
        return Settled(replace(base, status="failed", reason="backend_error",
                             message=e.render()))
    req = render(ctx.p, sent, ctx.gen, references=ctx.references, examples=picked.shown)
    seen = picked.digest(req)
    cfg = config_hash(req, ctx.samples, seen)
    latest = in_epoch = None
    if store is not None and sub_id is not None:
        latest = store.latest_grade(student_id=sub.student_id, submission_id=sub_id,
                                    fingerprint=ctx.fingerprint, samples=ctx.samples)
        if ctx.epoch:
            in_epoch = store.latest_grade(
                student_id=sub.student_id, submission_id=sub_id, fingerprint=ctx.fingerprint,
                epoch=ctx.epoch, samples=ctx.samples)
    choice = choose(ctx.selection, sub.student_id, latest=latest, in_epoch=in_epoch,
                    run_epoch=ctx.epoch, config_hash=cfg, exemplars=seen)
    if isinstance(choice, Skip):
        return Settled(replace(base, status="skipped", reason=choice.reason,
                             message=choice.message))
    if isinstance(choice, Reuse):
        g = choice.grade
        first = next((f for f in g.flags if f.reason not in INFO_FLAGS), None)
        return Settled(replace(base, status=g.status, grade_id=g.id, reused=True,
                             reason=first.reason if first else None,
                             message=first.message if first else None), total=g.total,
                       suspected=any(f.reason == injection.FLAG for f in g.flags))
    assert isinstance(choice, Grade)
    unsent = _unsent(ctx, sub.student_id, req, ex, input_flags(ex))
    screen_text = sent.text if unsent is None and ex.has_text \
        and not injection.suspicious(ex.findings) else None
    if screen_text is not None and ctx.screen is not None:
        said = await ctx.screen.check(screen_text)  # the text as it is sent, alone
        if said is not None and said.injection:
            ex = ex.model_copy(update={"findings": (*ex.findings, screen.finding(said))})
    flags = input_flags(ex)
    grounds = Grounds(flags, quote_text(_as_stored(req)) if ex.has_text else None)
    return Prepared(sub=sub, ex=ex, submission_id=sub_id, req=req, cfg=cfg,
                    epoch=choice.epoch, grounds=grounds, picked=picked, seen=seen,
                    mapping=mapping, unsent=unsent, screen_text=screen_text)


async def prepare_offline(ctx: RunContext, subs: Sequence[Submission], *,
                          wanted: int | None = None) -> list[Prepared | Settled]:
    """The students as `ctx`'s run would prepare them, with no store written and no model called
    (estimates and dry runs); students the selection leaves out are not listed. `wanted`: stop
    after that many."""
    out: list[Prepared | Settled] = []
    for sub in subs:
        got = await prepare(ctx, sub)
        if isinstance(got, Settled) and got.record.status == "skipped":
            continue
        out.append(got)
        if wanted is not None and len(out) >= wanted:
            break
    return out


def quote_text(parts: Sequence[Mapping[str, Any]]) -> str | None:
    """The text evidence quotes are checked against: the submission as sent (redacted, between
    its markers, never the graded examples); None when the request also carries media, which
    quotes may be read from. `parts`: the student's parts as the ledger stores them."""
    if any(not isinstance(p.get("text"), str) for p in parts):
        return None
    return submitted_text(parts)


def _as_stored(req: GradeRequest) -> list[dict[str, Any]]:
    return [{"text": p.text} if p.text is not None else {"mime_type": p.mime_type}
            for p in req.student_parts]


def _unsent(ctx: RunContext, student_id: str, req: GradeRequest, ex: Extracted,
            flags: tuple[FlagRow, ...]) -> Verdict | None:
    """The verdict of a student whose request is not sent: too large to send, or nothing in it
    the backend reads; None when it goes out."""
    try:
        check_request_size(req, max_bytes=ctx.max_request_bytes, student=student_id)
    except SubmissionError as e:
        return Verdict(status="flagged", flags=(FlagRow(e.reason, e.render()), *flags),
                       review_reason=e.render())
    if ctx.reads is not None and not ex.has_text \
            and not any(p.mime_type in ctx.reads for p in ex.parts):
        judged = decide(ctx.policy, [UNREADABLE_MEDIA], flags)
        assert isinstance(judged, Verdict)
        return judged
    return None


async def _extract(ctx: RunContext, sub: Submission) -> Extracted:
    """Small text on the event loop (microseconds); PDFs, documents, notebooks and large files
    in the run's worker process with a time and memory budget."""
    try:
        return await ctx.extractor.aextract(sub)
    except SubmissionError:
        raise
    except Exception as e:  # a parser bug must cost one student a flag, not the class
        raise SubmissionError(
            "corrupt", f"the files could not be read ({type(e).__name__}: {e})",
            path=sub.student_id, fix="open the files by hand; grade this student manually or "
            "ask for a resubmission") from None
