"""Final grades: the teacher's value where one was imported, else the AI's.

This is the only place that combines AI scores with teacher overrides; the workbook, the HTML
reports and every gradebook export read `finals()` so they can never disagree.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .rubric import Criterion, Rubric
from .store import Store, StudentResult


@dataclass
class FinalCriterion:
    criterion: Criterion
    ai_score: float | None
    teacher_score: float | None
    justification: str
    evidence: list[str]
    ai_feedback: str
    teacher_feedback: str | None

    @property
    def final(self) -> float | None:
        return self.teacher_score if self.teacher_score is not None else self.ai_score

    @property
    def feedback(self) -> str:
        return self.teacher_feedback if self.teacher_feedback else self.ai_feedback

    @property
    def overridden(self) -> bool:
        return self.teacher_score is not None and self.teacher_score != self.ai_score


@dataclass
class FinalStudent:
    result: StudentResult
    criteria: list[FinalCriterion]
    band: str | None
    teacher_comment: str | None = None
    approved: bool | None = None
    has_overrides: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def student_id(self) -> str:
        return self.result.student_id

    @property
    def flagged(self) -> bool:
        """Needs a human: not cleanly graded by the model, or the model asked for review."""
        r = self.result
        return r.status != "graded" or r.needs_review or bool(r.flags)

    @property
    def reviewed(self) -> bool:
        """The teacher approved the row, or scored every criterion themselves."""
        if self.approved:
            return True
        return bool(self.criteria) and all(c.teacher_score is not None for c in self.criteria)

    @property
    def ai_total(self) -> float | None:
        return self.result.total

    @property
    def max_total(self) -> float:
        return sum(c.criterion.max_points for c in self.criteria)

    @property
    def final_total(self) -> float | None:
        finals = [c.final for c in self.criteria]
        if not finals or any(f is None for f in finals):
            return None
        return float(sum(f for f in finals if f is not None))

    @property
    def final_percent(self) -> float | None:
        total = self.final_total
        if total is None or not self.max_total:
            return None
        return round(100.0 * total / self.max_total, 2)

    @property
    def exportable(self) -> bool:
        """A grade may leave for a gradebook: complete, and either clean or reviewed."""
        return self.final_total is not None and (not self.flagged or self.reviewed)

    @property
    def review_status(self) -> str:
        if self.approved:
            return "approved"
        if self.reviewed or self.has_overrides or self.teacher_comment:
            return "reviewed"
        if self.flagged:
            return "needs review"
        return "pending"

    @property
    def flag_text(self) -> str:
        return "; ".join(f"{f.reason}: {f.message}" for f in self.result.flags)


def load_rubric(store: Store, run_id: int) -> Rubric:
    return Rubric.model_validate(json.loads(store.run(run_id)["rubric_json"]))


def _overrides(store: Store, run_id: int) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for row in store.conn.execute(
        "SELECT student_id, criterion_id, teacher_score, teacher_feedback FROM overrides"
        " WHERE run_id=?", (run_id,)):
        out.setdefault(row["student_id"], {})[row["criterion_id"]] = (
            row["teacher_score"], row["teacher_feedback"])
    return out


def _reviews(store: Store, run_id: int) -> dict[str, tuple[str | None, bool | None]]:
    return {
        row["student_id"]: (row["teacher_comment"],
                            None if row["approved"] is None else bool(row["approved"]))
        for row in store.conn.execute(
            "SELECT student_id, teacher_comment, approved FROM reviews WHERE run_id=?",
            (run_id,))
    }


def finals(store: Store, run_id: int, rubric: Rubric | None = None) -> Iterator[FinalStudent]:
    """Every student of the run, in student-id order, with final values resolved."""
    rubric = rubric or load_rubric(store, run_id)
    overrides = _overrides(store, run_id)
    reviews = _reviews(store, run_id)
    for res in store.results(run_id):
        by_id = {c.criterion_id: c for c in res.criteria}
        ovr = overrides.get(res.student_id, {})
        crits = []
        for crit in rubric.all_criteria:
            ai = by_id.get(crit.id)
            t_score, t_fb = ovr.get(crit.id, (None, None))
            crits.append(FinalCriterion(
                criterion=crit, ai_score=ai.score if ai else None, teacher_score=t_score,
                justification=ai.justification if ai else "", evidence=ai.evidence if ai else [],
                ai_feedback=ai.feedback if ai else "", teacher_feedback=t_fb,
            ))
        comment, approved = reviews.get(res.student_id, (None, None))
        fs = FinalStudent(result=res, criteria=crits, band=None, teacher_comment=comment,
                          approved=approved,
                          has_overrides=any(v[0] is not None for v in ovr.values()))
        pct = fs.final_percent
        fs.band = rubric.band(pct) if pct is not None else None
        yield fs
