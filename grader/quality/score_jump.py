"""After the model: is a grade far above those of the most similar submissions?

A student whose submission carries weak signs of an injection attempt (a quoted injection
phrase, an HTML comment, zero-width characters; `injection.Finding.suspicious` is False) is
flagged `injection_suspected` only if the model then gave them a score well above the
submissions most like theirs: the combination, not either alone, is the signal. A student already
flagged gets the jump added as evidence (`score_jump`). Similarity is word overlap (Jaccard) of
the submissions as sent; it runs once at the end of a run, only when there are such students.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from grader.grading.records import FlagRow
from grader.intake import injection
from grader.prompting.prompts import submitted_text
from grader.store import Store

JUMP_POINTS = 30.0  # percentage points above the neighbours' median
NEIGHBOURS = 5
MIN_NEIGHBOURS = 3
MIN_SIMILARITY = 0.1
_WORD = re.compile(r"[^\W\d_]{3,}")


@dataclass(frozen=True)
class Candidate:
    """A student graded in this run with injection evidence or signs of it."""

    grade_id: int
    findings: tuple[injection.Finding, ...]
    flagged: bool  # already `injection_suspected`


@dataclass(frozen=True)
class Jump:
    percent: float
    median: float
    neighbours: int

    def describe(self) -> str:
        return (f"the AI score ({self.percent:g}%) is {self.percent - self.median:.0f} points "
                f"above the median ({self.median:g}%) of the {self.neighbours} most similar "
                "submissions")


def content_words(text: str) -> frozenset[str]:
    """The words of a submission (3+ letters, lower case)."""
    return frozenset(w.lower() for w in _WORD.findall(text))


def jump(percent: float, words: frozenset[str],
         others: Sequence[tuple[float, frozenset[str]]]) -> Jump | None:
    """The jump over the most similar submissions, when it is at least `JUMP_POINTS`."""
    scored = []
    for p, w in others:
        union = len(words | w)
        sim = len(words & w) / union if union else 0.0
        if sim >= MIN_SIMILARITY:
            scored.append((sim, p))
    scored.sort(reverse=True)
    near = [p for _, p in scored[:NEIGHBOURS]]
    if len(near) < MIN_NEIGHBOURS:
        return None
    median = statistics.median(near)
    return Jump(percent, median, len(near)) if percent - median >= JUMP_POINTS else None


def check_run(store: Store, run_id: int, candidates: Mapping[str, Candidate]) -> list[str]:
    """Add `score_jump` (and, for weak evidence, `injection_suspected`) to candidates whose
    score jumps; returns the students newly flagged `injection_suspected`."""
    if not candidates:
        return []
    # each student's own text: never the graded examples the request also carried, which
    # would make students shown the same examples look alike
    sent = store.sent_parts(run_id)
    words = {sid: (p, content_words(submitted_text(parts) or ""))
             for sid, (p, parts) in sent.items()}
    newly = []
    for sid, cand in candidates.items():
        if sid not in words:
            continue
        percent, mine = words[sid]
        others = [v for other, v in words.items() if other != sid]
        found = jump(percent, mine, others)
        if found is None:
            continue
        flags = [FlagRow("score_jump", found.describe())]
        if not cand.flagged:
            flags.append(FlagRow(injection.FLAG, injection.evidence(
                cand.findings, jump=found.describe())))
            newly.append(sid)
        store.add_flags(cand.grade_id, run_id, sid, flags)
    return newly
