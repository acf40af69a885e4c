"""A run's answer groups in the store: computed from the answers as they were graded (the text
the requests carried, redacted as sent), saved with each member's `inconsistent_with_group`
flag (the store's results carry it from then on, like any flag), and read back for the Groups
sheet of review.xlsx and for `grade eval`. The grouping policy itself is `review.groups`.

Groups are computed after grading and by `grade report` (with the class's `group_similarity`
and `group_max_gap`); any other writer of the outputs (`grade review import`, a collected batch
job) keeps the run's groups as they are, or computes them once if the run has none.

A decision entered for a group is stored for each member it was made for (`Decision.group`);
`group_values` reads a group's current value back from them: a value every member holds (the
newest group decision that still applies to each), the value the Groups sheet shows and the
import's three-way merge compares with. A member without it (one who joined the group since,
or whose AI score changed) leaves the cell empty, so the sheet never shows a value that did not
reach everyone, and entering it again is a change that stores it for them all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grader.grading.records import Decision, GroupMember, StudentResult
from grader.prompting.prompts import submitted_text
from grader.review.final import layers
from grader.review.groups import Answer, Group, group, inconsistent
from grader.store import Store

if TYPE_CHECKING:
    from grader.config.settings import Settings


@dataclass(frozen=True)
class Grouping:
    """How a run's answers are grouped (`Settings.group_similarity`, `.group_max_gap`)."""

    similarity: float = 0.6
    max_gap: float = 0.25

    @classmethod
    def of(cls, settings: Settings) -> Grouping:
        return cls(settings.group_similarity, settings.group_max_gap)


def answers(store: Store, run_id: int, results: Iterable[StudentResult] | None = None
            ) -> list[Answer]:
    """The run's answers with a text as graded (media-only work and work never sent has none,
    and is in no group), with the AI's scores."""
    out = []
    for r in results if results is not None else store.results(run_id):
        text = answer_text(store, r)
        if text:
            out.append(Answer(r.student_id, text, {c.criterion_id: float(c.score)
                                                    for c in r.criteria},
                              r.total if r.grade_id is not None else None))
    return out


def answer_text(store: Store, r: StudentResult) -> str:
    """A student's answer as graded: the text their request carried ("" when none)."""
    if r.submission_id is None:
        return ""
    sent = store.sent_text(r.submission_id, r.grade_id)
    return (submitted_text(sent.parts) or "").strip() if sent is not None else ""


def regroup(store: Store, run_id: int, how: Grouping) -> list[Group]:
    """Group the run's answers and save the groups (with their flags) in the store."""
    results = list(store.results(run_id))
    found = answers(store, run_id, results)
    groups = group(found, how.similarity)
    maxima = [r.max_total for r in results if r.max_total]
    flags = inconsistent(groups, found, max(maxima) if maxima else 0.0, how.max_gap)
    store.save_groups(run_id, [
        GroupMember(sid, g.label, sid == g.representative,
                    flags[sid].message if sid in flags else None)
        for g in groups for sid in g.members])
    return groups


def stored(store: Store, run_id: int) -> list[Group]:
    """The run's groups as last saved, G1 first."""
    members: dict[str, list[GroupMember]] = {}
    for m in store.answer_groups(run_id):
        members.setdefault(m.label, []).append(m)
    return [Group(label, tuple(sorted(m.student_id for m in ms)),
                  next((m.student_id for m in ms if m.representative), ms[0].student_id))
            for label, ms in members.items()]


def ensure(store: Store, run_id: int, how: Grouping | None, class_dir: Path | None = None
           ) -> list[Group]:
    """The run's groups: computed with `how` when given; else the saved ones, computed with the
    class's settings when the run has none yet."""
    if how is None:
        saved = stored(store, run_id)
        if saved:
            return saved
        how = class_grouping(class_dir)
    return regroup(store, run_id, how)


def current(store: Store, run_id: int, class_dir: Path | None = None) -> list[Group]:
    """The run's groups as saved; computed with the class's settings, and not saved, when the
    run has none (a run from before answer groups)."""
    saved = stored(store, run_id)
    if saved:
        return saved
    return group(answers(store, run_id), class_grouping(class_dir).similarity)


def class_grouping(class_dir: Path | None) -> Grouping:
    """The class's grouping settings (its grader.toml, GRADER_GROUP_*), else the defaults."""
    from grader.config.settings import resolve

    s = resolve(class_dir=class_dir if class_dir is not None and class_dir.is_dir() else None)
    return Grouping(s.group_similarity, s.group_max_gap)


def group_values(decisions: Mapping[str, Sequence[Decision]],
                 results: Mapping[str, StudentResult], g: Group
                 ) -> dict[tuple[str, str], Any]:
    """A group's current teacher values per (criterion id or "", field): the value of the
    newest decision entered for a group that still applies to its member, where every member
    with a result holds one and all hold the same value."""
    held = [layers(decisions.get(sid, ()), r)[1]
            for sid in g.members if (r := results.get(sid)) is not None]
    if not held:
        return {}
    return {k: v for k, v in held[0].items() if all(k in h and h[k] == v for h in held[1:])}
