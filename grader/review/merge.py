"""Three-way merge of a review workbook into the store: PURE policy, no I/O.

Every teacher cell of a workbook has three values: its *base* (what the cell held when the
workbook was written, recorded in the hidden metadata sheet), what the workbook holds now, and
what the store holds now. Like a version-control merge:

- the workbook did not change the cell (workbook == base): nothing to do, whatever the store
  holds now (so a partial or stale copy never clears what others imported since);
- the workbook changed it and the store did not (store == base): the change is applied;
- both changed it to the same value: nothing to do;
- both changed it to different values: a **conflict**, reported by cell and never applied
  unless forced.

A teacher value is tied to the AI's score it was decided against: if the AI's score changed since
the workbook was written (a regrade), a change to that criterion (or to the student's comment,
note or approval, which are tied to every score) is a conflict too. A workbook row whose student
handed in a different submission since is not applied at all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Token = Callable[[str, Any], Any]


@dataclass(frozen=True)
class Cell:
    """One teacher value read from the workbook. `criterion_id` is "" for student fields."""

    student_id: str
    criterion_id: str
    field: str  # score | feedback | comment | note | approved
    value: Any  # None: the cell is empty
    ref: str  # Summary!K4


@dataclass(frozen=True)
class Change:
    cell: Cell
    old: Any  # the store's value before the import


@dataclass(frozen=True)
class Conflict:
    cell: Cell
    stored: Any  # the store's value now
    why: str


Kind = Literal["unchanged", "same", "apply", "conflict"]


def classify(base: Any, workbook: Any, stored: Any) -> Kind:
    """The three-way rule on tokens (comparable stand-ins for values; None means empty)."""
    if workbook == base:
        return "unchanged"
    if workbook == stored:
        return "same"
    if stored == base:
        return "apply"
    return "conflict"


@dataclass
class StudentMerge:
    changes: list[Change]
    conflicts: list[Conflict]
    unchanged: int = 0  # cells the workbook did not change (or already stored)


def merge_student(cells: list[Cell], base: Mapping[str, Any], base_ai: Mapping[str, float],
                  stored: Mapping[tuple[str, str], Any], ai_now: Mapping[str, float],
                  token: Token, key: Callable[[str, str], str],
                  rescaled: Mapping[str, tuple[float, float]] | None = None,
                  last: Mapping[str, Any] | None = None) -> StudentMerge:
    """Merge one student's cells. `base`: base tokens by `key(criterion_id, field)`;
    `base_ai`/`ai_now`: the AI scores when the workbook was written and now; `stored`: the
    store's current teacher values by (criterion id, field); `rescaled`: criteria whose maximum
    changed since (a change to one, or to a student field, is then a conflict: the teacher
    decided on another scale); `last`: the tokens an earlier import of this same file stored,
    by key (`_since_last`)."""
    out = StudentMerge([], [])
    for cell in cells:
        now = stored.get((cell.criterion_id, cell.field))
        k = key(cell.criterion_id, cell.field)
        mine, was = token(cell.field, cell.value), base.get(k)
        if last is not None and k in last:
            kind, why = _since_last(was, last[k], mine, token(cell.field, now))
            if why is not None:
                out.conflicts.append(Conflict(cell, now, why))
                continue
        else:
            kind = classify(was, mine, token(cell.field, now))
        if kind in ("unchanged", "same"):
            out.unchanged += 1
            continue
        moved = _ai_moved(cell.criterion_id, base_ai, ai_now) \
            or _rescaled(cell.criterion_id, rescaled or {})
        if kind == "conflict":
            out.conflicts.append(Conflict(cell, now, "changed in the store since this workbook "
                                                     "was written"))
        elif moved:
            out.conflicts.append(Conflict(cell, now, moved))
        else:
            out.changes.append(Change(cell, now))
    return out


def _since_last(base: Any, last: Any, workbook: Any, stored: Any) -> tuple[Kind, str | None]:
    """A cell this file was imported with before: compared with what that import stored. Back
    to what the file was written with, it cannot be told whether it was cleared or is another
    copy of the workbook saved over this file: a conflict that asks (not applied, not
    ignored)."""
    if workbook == last:
        return "unchanged", None
    if workbook == stored:
        return "same", None
    if workbook == base:
        return "conflict", ("this file was imported with another value here, and the cell is "
                            "back to what the workbook was written with: undone, or another "
                            "copy of the workbook saved here?")
    return classify(last, workbook, stored), None


def _ai_moved(criterion_id: str, base_ai: Mapping[str, float],
              ai_now: Mapping[str, float]) -> str | None:
    """Why a teacher value decided against `base_ai` no longer fits (None: it still does)."""
    if criterion_id:
        was, now = base_ai.get(criterion_id), ai_now.get(criterion_id)
        if was == now:
            return None
        return f"the AI's score changed from {_num(was)} to {_num(now)} since this workbook " \
               "was written"
    if dict(base_ai) == dict(ai_now):
        return None
    moved = sorted(c for c in set(base_ai) | set(ai_now) if base_ai.get(c) != ai_now.get(c))
    return "the AI's scores changed since this workbook was written (" + ", ".join(moved) + ")"


def _rescaled(criterion_id: str, rescaled: Mapping[str, tuple[float, float]]) -> str | None:
    """Why a teacher value decided on the old scale no longer fits (None: it still does)."""
    hit = {criterion_id: rescaled[criterion_id]} if criterion_id in rescaled else (
        {} if criterion_id else dict(rescaled))
    if not hit:
        return None
    return "the maximum of " + ", ".join(f"{c} changed from {_num(a)} to {_num(b)}"
                                         for c, (a, b) in sorted(hit.items())) \
        + " since this workbook was written"


def _num(v: float | None) -> str:
    return "nothing" if v is None else f"{v:g}"
