"""Which students a run grades, and how: a pure function of the teacher's flags and what the
store already holds for each student.

- A normal run reuses the newest grade version of a student's submission under the run's
  fingerprint, and grades everyone else.
- `--only ID…` grades just those students; the others keep what they have (or are skipped).
- `--regrade` and `--retry-flagged` grade again under a new *epoch*: the epoch salts the request
  hash, so the model is asked afresh instead of the response ledger answering. A run killed
  halfway is continued by running the same command: its epoch is reused, so versions it already
  stored count as done and replies it already paid for are reused.
- A student whose request shows other graded examples than their grade saw (`--exemplars`, a
  changed bank) is graded again; an unchanged request is answered by the response ledger.
- A student flagged for a reason a new generation config may cure (`CONFIG_SENSITIVE`) is graded
  again when the config changed.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from grader.errors import InputError
from grader.grading.policy import CONFIG_SENSITIVE
from grader.grading.records import GradeVersion


@dataclass(frozen=True)
class Selection:
    only: frozenset[str] | None = None
    regrade: bool = False
    retry_flagged: frozenset[str] | None = None  # None: off; empty: every flag reason

    @property
    def mode(self) -> str:
        if self.regrade:
            return "regrade"
        if self.retry_flagged is not None:
            return "retry_flagged"
        return "normal"

    def as_dict(self) -> dict[str, Any]:
        """What identifies this selection in the store (a rerun of the same command matches)."""
        out: dict[str, Any] = {}
        if self.only is not None:
            out["only"] = sorted(self.only)
        if self.retry_flagged is not None:
            out["retry_flagged"] = sorted(self.retry_flagged)
        return out


@dataclass(frozen=True)
class Reuse:
    grade: GradeVersion


@dataclass(frozen=True)
class Grade:
    epoch: int


@dataclass(frozen=True)
class Skip:
    reason: str
    message: str


Choice = Reuse | Grade | Skip


def check_selection(sel: Selection, ids: Collection[str],
                    flagged: Collection[str] | None) -> None:
    """Refuse `--only` ids that are no student of the class and `--retry-flagged` reasons no
    graded student is flagged for, naming the closest valid ones: a typo must not select
    nobody. `ids`: the class's student ids; `flagged`: the reasons its flagged grades carry
    (None: not known, as without a store; not checked)."""
    for given, valid, what, flag in ((sel.only, ids, "student id", "--only"),
                                     (sel.retry_flagged, flagged, "flag reason",
                                      "--retry-flagged")):
        if flag == "--only" and given is not None and not given:  # would select nobody
            raise InputError(f"{flag} names no {what} (it is empty)",
                             fix=f"pass one or more {what}s after {flag}, or leave it out")
        if valid is None:
            continue
        unknown = sorted(set(given or ()) - set(valid))
        if not unknown:
            continue
        hints = []
        for word in unknown:
            close = difflib.get_close_matches(word, list(valid), n=1, cutoff=0.5)
            hints.append(f"{word!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        listed = ", ".join(sorted(valid)[:12]) + (" ..." if len(valid) > 12 else "")
        known = (f"valid {what}s: {listed}" if valid else
                 "no grade is flagged" if flag == "--retry-flagged" else
                 f"the class has no {what}s")
        raise InputError(f"{flag}: no {what} {', '.join(hints)} in this class ({known})",
                         fix=f"correct the {what} after {flag}" + (
                             "; without a reason it retries every flagged student. A flag "
                             "raised while reading the files (binary, empty, missing, an "
                             "unreadable file) is no grade: fix the file and run `grade run` "
                             "again, which reads every file afresh"
                             if flag == "--retry-flagged" else ""))


def _retry_wanted(sel: Selection, prior: GradeVersion) -> bool:
    """`--retry-flagged`: every flagged grade; `--retry-flagged REASON`: every grade that
    carries the flag, whatever its status (an `injection_suspected` grade stands, graded)."""
    if sel.retry_flagged is None:
        return False
    if not sel.retry_flagged:
        return prior.status == "flagged"
    return any(f.reason in sel.retry_flagged for f in prior.flags)


def choose(sel: Selection, student_id: str, *, latest: GradeVersion | None,
           in_epoch: GradeVersion | None, run_epoch: int, config_hash: str,
           exemplars: str | None = None) -> Choice:
    """`latest`: the newest version for this submission; `in_epoch`: the newest one stored under
    this run's epoch (a regrade or retry being continued), or None; `exemplars`: the digest of
    the graded examples the student's request shows (None: none)."""
    if sel.only is not None and student_id not in sel.only:
        if latest is not None:
            return Reuse(latest)
        return Skip("not_selected", "not graded in this run: it was limited to --only "
                    "students; run without --only to grade everyone")
    if in_epoch is not None:
        return Reuse(in_epoch)
    if sel.regrade:
        return Grade(run_epoch)
    if latest is None:
        return Grade(0)
    if _retry_wanted(sel, latest):
        return Grade(run_epoch)
    if latest.exemplars_hash != exemplars:  # other examples: another prompt (the ledger
        return Grade(0)  # still answers a request it has seen)
    if (latest.status == "flagged" and latest.config_hash != config_hash
            and any(f.reason in CONFIG_SENSITIVE for f in latest.flags)):
        return Grade(0)
    return Reuse(latest)
