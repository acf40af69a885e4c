"""Answer groups: similar answers of a class grouped, so a teacher decides a group once. PURE
policy, no I/O (the store glue is `grader.review.grouping`).

- **Similarity** is the cosine of the answers' TF-IDF rows (`embeddings.tfidf`, the TF-IDF the
  graded examples use), or of any unit vectors the caller passes (`group(vectors=...)`).
- **Byte-identical answers always share a group**: they are one *unit* before anything is
  compared.
- **Grouping** is deterministic leader clustering: units in order (the most repeated first,
  then by student id) join the group whose centre (the mean of its members' vectors) they are
  most similar to, when that similarity is at least `threshold` (`group_similarity`); else they
  start a group of their own. Comparing with a group's centre, not with its nearest member,
  keeps a chain of small steps from joining unlike answers.
- A group's **representative** is the member nearest its centre (ties: the smallest id); groups
  are labelled G1, G2, ... from the largest (ties: the representative's id).
- **`inconsistent_with_group`**: a graded member whose AI total differs from the median of its
  group's graded members by more than `max_gap` of the maximum total (`group_max_gap`): the
  model graded the same answer two ways. The flag names the group's other scores.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from grader.grading.embeddings import Rows, tfidf
from grader.grading.records import FlagRow

FLAG = "inconsistent_with_group"
SHOWN_SCORES = 8  # the other members' scores named in a flag


@dataclass(frozen=True)
class Answer:
    """One student's answer: its text as graded and the AI's scores (None: no grade)."""

    student_id: str
    text: str
    scores: Mapping[str, float] = field(default_factory=dict)
    total: float | None = None


@dataclass(frozen=True)
class Group:
    label: str  # G1, G2, ... (the largest first)
    members: tuple[str, ...]  # student ids, sorted
    representative: str

    @property
    def size(self) -> int:
        return len(self.members)


def _units(answers: Sequence[Answer]) -> list[list[Answer]]:
    """Byte-identical answers as one unit each: the most repeated first, then by student id."""
    by_text: dict[str, list[Answer]] = {}
    for a in sorted(answers, key=lambda a: a.student_id):
        by_text.setdefault(a.text, []).append(a)
    return sorted(by_text.values(), key=lambda u: (-len(u), u[0].student_id))


def unit_vectors(texts: Sequence[str]) -> Any:
    """TF-IDF unit rows of `texts` (a dense matrix; zero rows when no text has a word)."""
    model = tfidf(texts)
    if model is None:
        return np.zeros((len(texts), 1))
    return model[1].dense()


def _rows(answers_texts: Sequence[str], vectors: Mapping[str, Any] | None) -> Rows | Any:
    """One unit row per text: sparse TF-IDF rows, or the given vectors stacked (dense)."""
    if vectors is not None:
        return np.stack([np.asarray(vectors[t], dtype=np.float64) for t in answers_texts])
    model = tfidf(answers_texts)
    if model is None:
        return np.zeros((len(answers_texts), 1))
    return model[1]


_BLOCK = 64  # rows whose dot products with the rows before them are computed at once


def _dot_blocks(matrix: Rows | Any) -> Iterator[Any]:
    """For each row i, in order: its dot products with rows 0..i (a dense vector), computed a
    block of rows at a time (one matrix product per block, not per row)."""
    n = len(matrix)
    own: Any = np.zeros(n)
    if isinstance(matrix, Rows):  # a word of one text only adds to that text's own product
        shared = np.bincount(matrix.indices, minlength=matrix.width)[matrix.indices] > 1
        own = np.bincount(matrix.row_of()[~shared], weights=matrix.data[~shared] ** 2,
                          minlength=n)
        matrix = matrix.only(shared)
    for a in range(0, n, _BLOCK):
        b = min(n, a + _BLOCK)
        if isinstance(matrix, Rows):
            block = matrix.take(slice(a, b)).dot(matrix.take(slice(0, b)))
        else:
            block = matrix[a:b] @ matrix[:b].T
        for k in range(b - a):
            block[k, a + k] += own[a + k]
            yield block[k, :a + k + 1]


def group(answers: Sequence[Answer], threshold: float,
          vectors: Mapping[str, Any] | None = None) -> list[Group]:
    """The groups of `answers` (see the module docstring). `vectors`: a unit vector per
    distinct text to compare by (embeddings); None: TF-IDF of the texts themselves.

    A group's centre is never built: the similarity of a unit with a group is the weighted sum
    of its dot products with the group's members over the norm of the group's sum, and that
    norm is kept up to date as units join; the dot products come a block of rows at a time."""
    units = _units(answers)
    if not units:
        return []
    matrix = _rows([u[0].text for u in units], vectors)
    weights = np.array([len(u) for u in units], dtype=np.float64)
    of_unit = np.zeros(len(units), dtype=np.int64)  # each unit's group
    norms_sq: list[float] = []  # per group: the squared norm of its weighted sum
    for i, dots in enumerate(_dot_blocks(matrix)):
        self_sq = float(dots[i])
        best, best_sim = -1, -np.inf
        if norms_sq and i:
            sums = np.bincount(of_unit[:i], weights=weights[:i] * dots[:i],
                               minlength=len(norms_sq))
            norm = np.sqrt(np.maximum(np.array(norms_sq), 0.0))
            sims = np.divide(sums, norm, out=np.zeros_like(sums), where=norm > 0)
            top = float(sims.max())
            best = int(np.flatnonzero(sims >= top - 1e-12)[0])  # the first on a tie
            best_sim = float(sims[best])
            gained = float(sums[best])
        if best >= 0 and best_sim >= threshold and self_sq > 0:
            norms_sq[best] += 2 * weights[i] * gained + weights[i] ** 2 * self_sq
            of_unit[i] = best
        else:
            of_unit[i] = len(norms_sq)
            norms_sq.append(weights[i] ** 2 * self_sq)
    out = []
    for g in range(len(norms_sq)):
        members = [int(i) for i in np.flatnonzero(of_unit == g)]
        rep_unit = _nearest_centre(matrix, members, weights, norms_sq[g],
                                   [units[i][0].student_id for i in members])
        ids = tuple(sorted(a.student_id for i in members for a in units[i]))
        out.append(Group("", ids, units[members[rep_unit]][0].student_id))
    out.sort(key=lambda g: (-g.size, g.representative))
    return [Group(f"G{n}", g.members, g.representative) for n, g in enumerate(out, start=1)]


def _nearest_centre(matrix: Rows | Any, members: list[int], weights: Any, norm_sq: float,
                    ids: list[str]) -> int:
    """The index (in `members`) of the member nearest its group's centre (ties: smallest id):
    each member's dot product with the group's weighted sum, over that sum's norm."""
    if len(members) == 1:
        return 0
    norm = float(np.sqrt(max(norm_sq, 0.0)))
    w = weights[members]
    if isinstance(matrix, Rows):
        rows = matrix.take(members)
        at = rows.row_of()
        total = np.bincount(rows.indices, weights=rows.data * w[at], minlength=rows.width)
        dots = np.bincount(at, weights=rows.data * total[rows.indices], minlength=len(members))
    else:
        rows = matrix[members]
        dots = rows @ (w @ rows)
    to_centre = dots / norm if norm else np.zeros(len(members))
    return min(range(len(members)), key=lambda k: (-round(float(to_centre[k]), 9), ids[k]))


def inconsistent(groups: Sequence[Group], answers: Sequence[Answer], max_total: float,
                 max_gap: float) -> dict[str, FlagRow]:
    """The `inconsistent_with_group` flag of each member graded apart from its group."""
    totals = {a.student_id: a.total for a in answers}
    out: dict[str, FlagRow] = {}
    for g in groups:
        graded = [(sid, totals[sid]) for sid in g.members if totals.get(sid) is not None]
        if len(graded) < 2:
            continue
        centre = statistics.median(t for _, t in graded if t is not None)
        for sid, total in graded:
            assert total is not None
            if abs(total - centre) <= max_gap * max_total + 1e-9:
                continue
            others = [(o, t) for o, t in graded if o != sid]
            shown = ", ".join(f"{o} {t:g}" for o, t in others[:SHOWN_SCORES])
            more = (f" and {len(others) - SHOWN_SCORES} more" if len(others) > SHOWN_SCORES
                    else "")
            out[sid] = FlagRow(FLAG, (
                f"the AI's total {total:g} differs from its answer group {g.label}'s (the "
                f"median {centre:g} of its {g.size} similar answers; the others: {shown}{more}) "
                "by more than "
                f"{max_gap:g} of the maximum {max_total:g}: the model graded the same answer "
                "two ways; decide it by hand (the Groups sheet shows the group)"))
    return out


def ranges(group_: Group, answers: Mapping[str, Answer], criterion: str | None = None
           ) -> tuple[float, float] | None:
    """The (lowest, highest) AI score of a group's graded members on `criterion` (None: the
    total); None when no member has one."""
    values = []
    for sid in group_.members:
        a = answers.get(sid)
        if a is None:
            continue
        v = a.total if criterion is None else a.scores.get(criterion)
        if v is not None:
            values.append(float(v))
    return (min(values), max(values)) if values else None


@dataclass(frozen=True)
class Figures:
    """How well groups hold answers a human scored alike (`grade eval`): over the members
    with a label (a human score), the groups holding one, the share of members whose label is
    their group's most common one (purity), and the decisions a teacher makes with groups (one
    per group, plus one for each member off its group's most common label) against one per
    student."""

    groups: int
    students: int
    agreeing: int  # members whose label is their group's most common one
    decisions: int

    @property
    def purity(self) -> float | None:
        return self.agreeing / self.students if self.students else None


def figures(groups: Sequence[Group], labels: Mapping[str, float]) -> Figures:
    hit = n = count = 0
    for g in groups:
        values = [labels[sid] for sid in g.members if sid in labels]
        if not values:
            continue
        counts: dict[float, int] = {}
        for v in values:
            counts[v] = counts.get(v, 0) + 1
        hit += max(counts.values())
        n += len(values)
        count += 1
    return Figures(count, n, hit, count + n - hit)
