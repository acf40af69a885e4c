"""Pure grading policy (grading.decide) and run selection (selection.choose): fast unit tests."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from grader.grading.policy import (
    Policy,
    Reask,
    Reconfigure,
    Verdict,
    decide,
    more_room,
    rejected,
)
from grader.grading.records import FlagRow, GradeVersion, Reply
from grader.grading.selection import Grade, Reuse, Selection, Skip, choose
from grader.prompting import schema
from grader.prompting.rubric import Criterion, Level, Rubric

RUBRIC = Rubric(title="t", criteria=(
    Criterion(id="a", title="A", max_points=4),
    Criterion(id="b", title="B", max_points=2, levels=(
        Level(points=0, descriptor="no"), Level(points=2, descriptor="yes"))),
))
POLICY = Policy(rubric=RUBRIC, validator=schema.validation_model(RUBRIC),
                reask_prompt=lambda err: f"fix: {err}")


def answer(a: float = 3, b: float = 2, review: bool = False) -> str:
    crit = {"justification": "j", "evidence": ["q"], "feedback": "f"}
    return json.dumps({"criteria": {"a": {**crit, "score": a}, "b": {**crit, "score": b}},
                       "overall_comment": "ok", "needs_review": review,
                       "review_reason": "unsure" if review else ""})


def test_valid_reply_is_graded_with_totals_by_code() -> None:
    v = decide(POLICY, [Reply(answer(3.5, 2), model_version="m-1")])
    assert isinstance(v, Verdict) and v.status == "graded"
    assert v.total == 5.5 and v.percent == pytest.approx(91.67)
    assert [c.criterion_id for c in v.criteria] == ["a", "b"]
    assert v.reason is None and v.model_version == "m-1"


def test_invalid_reply_is_reasked_once_then_flagged() -> None:
    bad = Reply(answer(9, 2))  # 9 is over the maximum of 4
    first = decide(POLICY, [bad])
    assert isinstance(first, Reask)
    assert [t.role for t in first.history] == ["model", "user"]  # ends with a user turn
    assert "criteria.a.score" in first.history[1].text
    second = decide(POLICY, [bad, Reply(answer(3, 1))])  # 1 is not a level of b
    assert isinstance(second, Verdict) and second.reason == "invalid_output"
    assert second.total is None and second.status == "flagged"
    fixed = decide(POLICY, [bad, Reply(answer(3, 0))])
    assert isinstance(fixed, Verdict) and fixed.status == "graded" and fixed.total == 3


def test_blocked_and_review_and_input_flags() -> None:
    v = decide(POLICY, [Reply(None, "MAX_TOKENS", "MAX_TOKENS")])
    assert isinstance(v, Verdict) and v.reason == "blocked_max_tokens"
    partial = FlagRow("partial_submission", "graded without x.bin")
    v = decide(POLICY, [Reply(answer())], [partial])
    assert isinstance(v, Verdict) and v.status == "graded"  # an input flag keeps the grade
    assert partial in v.flags and v.reason is None
    v = decide(POLICY, [Reply(answer(review=True))], [partial])
    assert isinstance(v, Verdict) and v.status == "flagged" and v.reason == "needs_review"
    assert rejected("too big").reason == "request_rejected"


CUT = Reply(None, "MAX_TOKENS", "MAX_TOKENS", thinking_tokens=2000, output_tokens=0)
ROOMY = replace(POLICY, on_thinking_cut=Reconfigure(max_output_tokens=4000, thinking_level="low"))


def test_a_thinking_cut_off_is_retried_once_with_more_room_then_flagged() -> None:
    assert decide(ROOMY, [CUT]) == Reconfigure(4000, "low")
    v = decide(ROOMY, [CUT, Reply(answer(4, 2))])
    assert isinstance(v, Verdict) and v.status == "graded" and v.total == 6
    v = decide(ROOMY, [CUT, CUT])
    assert isinstance(v, Verdict) and v.reason == "blocked_max_tokens"
    assert "also when asked again" in (v.message or "")
    # without room to give (policy says none), the first cut-off is flagged at once
    v = decide(POLICY, [CUT])
    assert isinstance(v, Verdict) and v.reason == "blocked_max_tokens"
    assert "also when asked again" not in (v.message or "")


def test_an_answer_that_is_itself_too_long_is_not_retried() -> None:
    long = Reply(None, "MAX_TOKENS", "MAX_TOKENS", thinking_tokens=600, output_tokens=7592)
    v = decide(ROOMY, [long])
    assert isinstance(v, Verdict) and v.reason == "blocked_max_tokens"


def test_the_reask_still_counts_answers_after_a_thinking_retry() -> None:
    bad = Reply(answer(9, 2))
    first = decide(ROOMY, [CUT, bad])
    assert isinstance(first, Reask) and first.history[0].text == bad.text
    v = decide(ROOMY, [CUT, bad, Reply(answer(3, 0))])
    assert isinstance(v, Verdict) and v.status == "graded"


def test_more_room_doubles_the_cap_up_to_the_limit_then_lowers_thinking() -> None:
    assert more_room(8192, "low", 65536, None) == Reconfigure(16384, "low")
    assert more_room(40000, "medium", 65536, "low") == Reconfigure(65536, "medium")
    assert more_room(65536, "medium", 65536, "low") == Reconfigure(65536, "low")
    assert more_room(65536, "low", 65536, None) is None
    assert more_room(1000, None, None, None) == Reconfigure(2000, None)


def version(status: str = "graded", reasons: tuple[str, ...] = (), cfg: str = "c1",
            epoch: int = 0) -> GradeVersion:
    return GradeVersion(id=7, run_id=1, status=status, total=1.0, epoch=epoch, config_hash=cfg,
                        flags=[FlagRow(r, r) for r in reasons])


def pick(sel: Selection, latest: GradeVersion | None, *, in_epoch: GradeVersion | None = None,
         sid: str = "ada", cfg: str = "c1") -> object:
    return choose(sel, sid, latest=latest, in_epoch=in_epoch, run_epoch=9, config_hash=cfg)


def test_selection_normal_run_reuses_and_grades_the_rest() -> None:
    done = version()
    assert pick(Selection(), done) == Reuse(done)
    assert pick(Selection(), None) == Grade(0)


def test_selection_only() -> None:
    sel = Selection(only=frozenset({"bob"}))
    done = version()
    assert pick(sel, done) == Reuse(done)
    assert isinstance(pick(sel, None), Skip)
    assert pick(sel, done, sid="bob") == Reuse(done)  # --only alone does not pay again
    assert pick(Selection(only=frozenset({"bob"}), regrade=True), done, sid="bob") == Grade(9)


def test_selection_regrade_is_resumable() -> None:
    old, new = version(), version(epoch=9)
    assert pick(Selection(regrade=True), old) == Grade(9)
    assert pick(Selection(regrade=True), new, in_epoch=new) == Reuse(new)


def test_selection_retry_flagged_by_reason() -> None:
    safety = version("flagged", ("blocked_safety",))
    review = version("flagged", ("needs_review",))
    assert pick(Selection(retry_flagged=frozenset()), safety) == Grade(9)
    only_safety = Selection(retry_flagged=frozenset({"blocked_safety"}))
    assert pick(only_safety, safety) == Grade(9)
    assert pick(only_safety, review) == Reuse(review)
    assert pick(only_safety, version()) == Reuse(version())  # graded: nothing to retry
    # a flag on a grade that stands (graded) is retried when its reason is named, not otherwise
    suspect = version("graded", ("injection_suspected",))
    assert pick(Selection(retry_flagged=frozenset({"injection_suspected"})), suspect) == Grade(9)
    assert pick(Selection(retry_flagged=frozenset()), suspect) == Reuse(suspect)


def test_selection_config_change_retries_config_sensitive_flags_only() -> None:
    cut = version("flagged", ("blocked_max_tokens",), cfg="c1")
    assert pick(Selection(), cut, cfg="c1") == Reuse(cut)
    assert pick(Selection(), cut, cfg="c2") == Grade(0)
    safety = version("flagged", ("blocked_safety",), cfg="c1")
    assert pick(Selection(), safety, cfg="c2") == Reuse(safety)
    assert pick(Selection(), version(cfg="c1"), cfg="c2") == Reuse(version(cfg="c1"))
