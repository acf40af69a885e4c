"""One judgment of a student's replies, shared by online grading and batch collecting.

`judge(policy, replies, grounds)` validates the latest reply against the rubric's schema, decides
whether to ask again (invalid output: the one re-ask; thinking that used the whole output cap:
more room), and on a verdict checks its evidence quotes against the submission as sent
(`evidence_not_found`), keeping intake's flags; totals are the policy's, computed by code.
`kept(policy, verdicts)` is the grade kept from a student's samples. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from grader.grading.policy import Policy, Reask, Reconfigure, Verdict, decide
from grader.grading.records import FlagRow, Reply
from grader.grading.uncertainty import check_evidence, combine


@dataclass(frozen=True)
class Grounds:
    """What a student's replies are judged against besides the rubric: the flags intake raised
    and the text evidence quotes must come from (None: not checked, e.g. a submission with
    images the quotes may be read from)."""

    flags: tuple[FlagRow, ...] = ()
    quote_text: str | None = None


def judge(policy: Policy, replies: Sequence[Reply], grounds: Grounds
          ) -> Verdict | Reask | Reconfigure:
    """The verdict on one sample's replies so far, or what to ask next."""
    decided = decide(policy, replies, grounds.flags)
    if isinstance(decided, Verdict):
        return check_evidence(policy, decided, grounds.quote_text)
    return decided


def kept(policy: Policy, verdicts: Sequence[Verdict]) -> Verdict:
    """The grade kept for a student: the one sample's verdict, or the samples combined."""
    return verdicts[0] if len(verdicts) == 1 else combine(policy, verdicts)
