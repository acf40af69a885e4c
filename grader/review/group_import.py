"""The Groups sheet's cells imported: a value entered for an answer group becomes one teacher
decision per member (`Decision.group` = the group's label), three-way merged like any cell.

- A group cell's *base* is what it showed when the workbook was written (the metadata sheet
  records it with the group's members), its *store* value what the group's members hold now
  from group decisions (`grouping.group_values`): the same rule as a student's cell
  (`merge.classify`), so two TAs' copies merge as they do on the Summary sheet, and the same
  group cell changed both ways is a conflict.
- A change is stored for each member listed when the workbook was written whose submission and
  AI scores are still the ones the workbook showed (like a Summary row); the others are
  counted, not changed.
- It *reaches* a member unless the member has a value of their own in that column (stored, or
  imported in the same workbook): a member's own decision always wins (`final.effective`).
- *Approved* entered for a group does not approve a member flagged `inconsistent_with_group`
  whose scores are still the AI's: the model graded that answer apart from its group, the
  flag asks for a decision on the student's own row, and the group's approval would pass a
  score unlike the one the teacher approved for the others. It is stored for none of them and
  counted; once the teacher scored every criterion of such a member (on the row, or by the
  group's score cells), the group's approval reaches them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from grader.grading.records import Decision
from grader.review.final import FinalStudent, effective, layers
from grader.review.grouping import group_values
from grader.review.groups import FLAG as GROUP_FLAG
from grader.review.groups import Group
from grader.review.merge import Cell, Change, Conflict, merge_student
from grader.review.workbook import WorkbookMeta


@dataclass(frozen=True)
class Reach:
    """One group cell applied: how many members it reached and why the others were not."""

    cell: Cell
    members: int
    reached: int
    own: int  # members with a value of their own in that column
    moved: int  # members whose submission or AI scores changed since the workbook
    flagged: int = 0  # inconsistent_with_group members an Approved for the group left alone


@dataclass
class GroupMerge:
    changes: list[Change] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    unchanged: int = 0
    reaches: list[Reach] = field(default_factory=list)


def merge_groups(cells: Mapping[str, list[Cell]], meta: WorkbookMeta,
                 current: Mapping[str, FinalStudent],
                 decisions: Mapping[str, Sequence[Decision]],
                 token: Any, key: Any, force: bool,
                 rescaled: Mapping[str, tuple[float, float]] | None = None,
                 last: Mapping[str, Mapping[str, Any]] | None = None) -> GroupMerge:
    """Merge the Groups sheet's cells (per label) against the store's group values, as
    `merge_student` merges a student's (`rescaled`, `last`: per label)."""
    out = GroupMerge()
    results = {sid: fs.result for sid, fs in current.items()}
    for label, group_cells in cells.items():
        members, base = meta.groups[label]
        shown = tuple(sid for sid in members if still_shown(sid, meta, current)) or members
        stored = group_values(decisions, results, Group(label, shown, shown[0]))
        merged = merge_student(group_cells, base, {}, stored, {}, token, key, rescaled,
                               (last or {}).get(label))
        out.unchanged += merged.unchanged
        out.changes += merged.changes
        if force:
            out.changes += [Change(c.cell, c.stored) for c in merged.conflicts]
        else:
            out.conflicts += merged.conflicts
    return out


def still_shown(sid: str, meta: WorkbookMeta, current: Mapping[str, FinalStudent]) -> bool:
    """The member's submission and AI scores are the ones the workbook was written with."""
    fs = current.get(sid)
    if fs is None or sid not in meta.base:
        return False
    sub, base = meta.base[sid]
    ai_now = {c.criterion.id: float(c.ai_score) for c in fs.criteria if c.ai_score is not None}
    return sub == fs.result.submission_id and base.get("ai", ai_now) == ai_now


def reach(change: Change, meta: WorkbookMeta, current: Mapping[str, FinalStudent],
          after: Mapping[str, Sequence[Decision]]
          ) -> tuple[list[str], list[str], Reach]:
    """(the members a group change is stored for, those it reaches, the counts); `after`:
    every student's decisions once this import's own (Summary, Feedback) ones are added."""
    cell = change.cell
    members = meta.groups[cell.student_id][0]
    shown = [sid for sid in members if still_shown(sid, meta, current)]
    kept = [sid for sid in shown if not (cell.field == "approved" and cell.value
                                         and _unscored_flagged(current[sid], after, change))]
    reached = [sid for sid in kept if layers(after.get(sid, ()), current[sid].result)[0].get(
        (cell.criterion_id, cell.field)) is None]
    return kept, reached, Reach(cell, len(members), len(reached), len(kept) - len(reached),
                                len(members) - len(shown), len(shown) - len(kept))


def _unscored_flagged(fs: FinalStudent, after: Mapping[str, Sequence[Decision]],
                      change: Change) -> bool:
    """A member flagged `inconsistent_with_group` some criterion of whom still has only the AI's
    score once this import's decisions (their own, and the group's score cells) are counted."""
    if not any(f.reason == GROUP_FLAG for f in fs.result.flags):
        return False
    values = effective(after.get(fs.student_id, ()), fs.result)
    return any(values.get((c.criterion.id, "score")) is None for c in fs.criteria)
