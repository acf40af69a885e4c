"""Grading policy: what to do with what came back. Pure functions, no I/O.

`decide()` takes the replies for one student so far and says either "re-ask once with these
turns", "ask again once with more room to think" (a reply cut off because thinking used the whole
output cap) or the final `Verdict` (scores, totals computed by code, flags). The online worker pool,
the batch collector and the local backend all call it, so a reply is judged the same way
whichever path it came by; retries, quota, the ledger and storage stay outside.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from grader.grading.records import CriterionRow, FlagRow, ItemRow, Reply
from grader.intake import injection
from grader.prompting import schema
from grader.prompting.request import Turn
from grader.prompting.rubric import Rubric

# Flags from the uncertainty checks (`uncertainty.py`): the grade stands, a human should look.
REVIEW_FLAGS = frozenset({"score_spread", "near_band_boundary", "sample_failed",
                          "evidence_not_found"})
# Flags that say something about the input or the grade's certainty but leave a valid grade
# standing (status stays "graded"; the student still needs a look before export).
# `injection_suspected` is one: the work was graded on its merits (hidden text removed, the
# model told to ignore instructions in it), so the score is a real grade for the teacher to
# confirm, not a failed one; the flag keeps the student out of exports until approved and first
# in the review queue.
INFO_FLAGS = frozenset({"identical_to", "partial_submission", "truncated",
                        injection.FLAG, "score_jump"}) | REVIEW_FLAGS
# Flags a different generation config (output-token cap, thinking) may cure: a rerun with a
# changed config grades these students again without --retry-flagged.
CONFIG_SENSITIVE = frozenset({"blocked_max_tokens", "request_rejected"})


@dataclass(frozen=True)
class Reconfigure:
    """Ask again (same conversation) with a larger output cap or a lower thinking level."""

    max_output_tokens: int
    thinking_level: str | None


def more_room(max_output_tokens: int, thinking_level: str | None, output_limit: int | None,
              lower_level: str | None) -> Reconfigure | None:
    """The one retry after a thinking cut-off: double the output cap (up to the model's limit,
    or without bound when the limit is unknown); at the limit, one thinking level lower; None
    when neither is possible."""
    if output_limit is None or max_output_tokens < output_limit:
        cap = 2 * max_output_tokens
        return Reconfigure(cap if output_limit is None else min(cap, output_limit),
                           thinking_level)
    if lower_level is not None:
        return Reconfigure(max_output_tokens, lower_level)
    return None


@dataclass(frozen=True)
class Policy:
    """What judging a reply needs; built once per run."""

    rubric: Rubric
    validator: type[BaseModel]
    reask_prompt: Callable[[str], str]
    max_reasks: int = 1
    on_thinking_cut: Reconfigure | None = None  # None: flag a thinking cut-off at once
    max_spread: float = 0.25  # share of a criterion's max the samples may differ by, unflagged
    quote_similarity: float = 90.0  # percent, for an evidence quote that is not verbatim


@dataclass(frozen=True)
class Reask:
    """Ask again: the conversation continues with these turns (it ends with a user turn)."""

    history: tuple[Turn, ...]


@dataclass(frozen=True)
class Verdict:
    status: str  # graded | flagged
    criteria: tuple[CriterionRow, ...] = ()
    total: float | None = None
    percent: float | None = None
    overall_comment: str | None = None
    needs_review: bool = True
    review_reason: str | None = None
    flags: tuple[FlagRow, ...] = ()
    model_version: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def reason(self) -> str | None:
        """The flag that decides the student's outcome (None when cleanly graded)."""
        blocking = [f for f in self.flags if f.reason not in INFO_FLAGS]
        return blocking[0].reason if blocking else None

    @property
    def message(self) -> str | None:
        blocking = [f for f in self.flags if f.reason not in INFO_FLAGS]
        return blocking[0].message if blocking else None


def schema_error_text(err: ValidationError) -> str:
    lines = []
    for e in err.errors()[:20]:
        loc = ".".join(str(x) for x in e["loc"]) or "(top level)"
        lines.append(f"{loc}: {e['msg']}")
    return "\n".join(lines)


def flagged(reason: str, message: str, *, model_version: str | None = None,
            input_flags: Sequence[FlagRow] = ()) -> Verdict:
    """A verdict with no usable AI grade."""
    return Verdict(status="flagged", needs_review=True, review_reason=message,
                   flags=(FlagRow(reason, message), *input_flags), model_version=model_version)


def blocked(reply: Reply, input_flags: Sequence[FlagRow] = (), *, retried: bool = False
            ) -> Verdict:
    why = reply.blocked_reason or "EMPTY"
    if why == "UNSUPPORTED_MEDIA":
        msg = ("the submission is only images/scanned pages and this model cannot read them;"
               " grade it by hand or with --backend gemini")
    elif reply.finish_reason == "CONTINUATION":
        msg = ("the model's answer went past one output segment and it asked to continue "
               "(finish reason CONTINUATION)" + (", also when asked again with more room"
                                                  if retried else "")
               + "; grader does not chain billed segments: grade this student by hand, or rerun "
               "with --retry-flagged blocked_max_tokens and a lower --thinking level")
    elif reply.cut_by_thinking:
        msg = (f"the model spent its whole output allowance thinking ({reply.thinking_tokens} "
               "thinking tokens) and wrote no answer"
               + (", also when asked again with more room" if retried else "")
               + "; rerun with a higher --max-output-tokens or a lower --thinking level")
    else:
        msg = (f"the model returned no usable output (finish reason {why}); grade this student"
               " by hand, or rerun with --retry-flagged after checking it")
    return flagged(f"blocked_{why.lower()}", msg, model_version=reply.model_version,
                   input_flags=input_flags)


def rejected(message: str, input_flags: Sequence[FlagRow] = ()) -> Verdict:
    """The service refused this one request (a deterministic 4xx): flag it, do not fail it."""
    return flagged("request_rejected", f"the service refused the request: {message}",
                   input_flags=input_flags)


def graded(rubric: Rubric, result: schema.ModelGrade, model_version: str | None,
           input_flags: Sequence[FlagRow] = ()) -> Verdict:
    """A valid reply: scores in rubric order, totals computed here (never by the model); a
    checklist criterion scores the sum of the points of the items the model found met."""
    rows = []
    for c in rubric.all_criteria:
        r = result.criteria[c.id]
        if c.checklist:
            answers = r.items or {}
            marks = [ItemRow(i.id, answers[i.id].met, answers[i.id].quote) for i in c.checklist]
            score = float(sum(i.points for i, m in zip(c.checklist, marks, strict=True)
                              if m.met))
            rows.append(CriterionRow(c.id, score, c.max_points, r.justification,
                                     [m.quote for m in marks if m.met and m.quote.strip()],
                                     r.feedback, items=marks))
            continue
        assert r.score is not None  # the validation model requires it for scored criteria
        rows.append(CriterionRow(c.id, r.score, c.max_points, r.justification, r.evidence,
                                 r.feedback))
    total = sum(r.score for r in rows)
    flags: list[FlagRow] = []
    steered = result.needs_review and injection.model_reports_injection(result.review_reason)
    if result.needs_review and not steered:
        flags.append(FlagRow("needs_review",
                             result.review_reason or "the model asked for a human review"))
    flags.extend(_with_model_reason(input_flags, result.review_reason) if steered
                 else input_flags)
    return Verdict(
        status="flagged" if result.needs_review and not steered else "graded",
        criteria=tuple(rows),
        total=total, percent=round(100.0 * total / rubric.max_total, 2),
        overall_comment=result.overall_comment, needs_review=bool(result.needs_review),
        review_reason=result.review_reason or None, flags=tuple(flags),
        model_version=model_version)


def _with_model_reason(flags: Sequence[FlagRow], reason: str) -> list[FlagRow]:
    """The model says the submission tried to steer the grade: that joins (or becomes) the
    `injection_suspected` evidence instead of a separate `needs_review` flag."""
    out = list(flags)
    for i, f in enumerate(out):
        if f.reason == injection.FLAG:
            out[i] = FlagRow(f.reason, f"{f.message}; the model reported: “{reason}”")
            return out
    out.insert(0, FlagRow(injection.FLAG, injection.evidence((), model_reason=reason)))
    return out


def decide(policy: Policy, replies: Sequence[Reply],
           input_flags: Sequence[FlagRow] = ()) -> Verdict | Reask | Reconfigure:
    """Judge the latest reply: a verdict, one re-ask quoting the validation errors, or one
    retry with more room after a thinking cut-off."""
    reply = replies[-1]
    version = next((r.model_version for r in reversed(replies) if r.model_version), None)
    if reply.text is None:
        cuts = sum(1 for r in replies if r.cut_by_thinking)
        if reply.cut_by_thinking and cuts == 1 and policy.on_thinking_cut is not None:
            return policy.on_thinking_cut
        return blocked(Reply(None, reply.finish_reason, reply.blocked_reason, version,
                             reply.thinking_tokens, reply.output_tokens), input_flags,
                       retried=cuts > 1)
    answered = [r for r in replies if r.text is not None]  # a cut-off reply is not a turn
    try:
        result = schema.parse_with(policy.validator, reply.text)
    except ValidationError as err:
        if len(answered) <= policy.max_reasks:
            first = answered[0].text or ""
            return Reask((Turn(role="model", text=first),
                          Turn(role="user", text=policy.reask_prompt(schema_error_text(err)))))
        msg = ("the model's output did not match the rubric's schema twice: "
               + schema_error_text(err).replace("\n", "; ")
               + " (raw responses are kept in the store's responses table)")
        return flagged("invalid_output", msg, model_version=version, input_flags=input_flags)
    return graded(policy.rubric, result, version, input_flags)
