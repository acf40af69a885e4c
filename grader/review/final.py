"""Final grades: the teacher's value where one was decided, else the AI's.

This is the only place that combines AI scores with teacher decisions; grades.csv, the workbook,
the HTML reports and every gradebook export read `finals()` so they can never disagree. The rules
of what may leave live here too: which feedback a student reads (`FinalCriterion.feedback`: never
the AI's words under a score the teacher changed, unless the teacher kept them; nor its overall
comment then: `FinalStudent.overall_comment`), whether a grade
may leave for a gradebook (`FinalStudent.hold_reason`) and whether a handout is written
(`FinalStudent.handout`).

Teacher decisions belong to the student and criterion (the store keeps them append-only); one
entered for an answer group is stored for each member and yields to the member's own. A
decision applies to a result when the result is for the same submission and the AI said what it
said when the teacher decided (`ai_basis`): a regrade that keeps the AI's score keeps the
teacher's decision; a resubmission or a changed AI score does not.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from grader.grading.records import Decision, ItemRow, StudentResult
from grader.grading.uncertainty import spread_share
from grader.intake.injection import FLAG as INJECTION_FLAG
from grader.prompting.rubric import Criterion, Rubric
from grader.store import Store

# Which handouts are written: for grades a teacher reviewed or approved (the default), or for
# every grade that may leave (each page then says the grade is not yet reviewed).
HandoutMode = Literal["reviewed", "all"]  # as `Settings.handouts` and `--handouts`


@dataclass
class FinalCriterion:
    criterion: Criterion
    ai_score: float | None
    teacher_score: float | None
    justification: str
    evidence: list[str]
    ai_feedback: str
    teacher_feedback: str | None
    spread: float | None = None  # of the model's samples (None: one sample)
    samples: list[float] = field(default_factory=list)
    items: list[ItemRow] = field(default_factory=list)  # checklist criteria

    @property
    def final(self) -> float | None:
        return self.teacher_score if self.teacher_score is not None else self.ai_score

    @property
    def feedback(self) -> str:
        """What the student reads for this criterion: the teacher's feedback where they wrote
        or kept some; else the AI's, unless the teacher changed the score (the AI's words were
        written for the AI's score: they wait for the teacher, `feedback_held`)."""
        if self.teacher_feedback:
            return self.teacher_feedback
        return "" if self.overridden else self.ai_feedback

    @property
    def feedback_held(self) -> bool:
        """The teacher changed the score and neither kept nor replaced the AI's feedback: it is
        not shown to the student until they do (on the workbook's Feedback sheet)."""
        return self.overridden and not self.teacher_feedback and bool(self.ai_feedback)

    @property
    def overridden(self) -> bool:
        return self.teacher_score is not None and self.teacher_score != self.ai_score


@dataclass
class FinalStudent:
    result: StudentResult
    criteria: list[FinalCriterion]
    band: str | None
    teacher_comment: str | None = None  # feedback to the student (reaches them)
    private_note: str | None = None  # the teacher's own note: never shown to a student
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
    def overall_comment(self) -> str:
        """The model's overall comment as the student may read it: held back once the teacher
        changed a score, as a criterion's feedback is (it was written for the model's total;
        the teacher's own comment, `teacher_comment`, reaches the student instead)."""
        return "" if self.comment_held else (self.result.overall_comment or "")

    @property
    def comment_held(self) -> bool:
        """The model wrote an overall comment and the teacher changed a score."""
        return bool(self.result.overall_comment) and any(c.overridden for c in self.criteria)

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
        """approved; reviewed (the teacher scored a criterion or wrote to the student: a
        private note alone is no review); needs review (flagged, and neither approved nor
        scored on every criterion: it may not leave yet); else pending (the AI's grade, which
        no teacher looked at)."""
        if self.approved:
            return "approved"
        if self.flagged and not self.reviewed:
            return "needs review"
        if self.reviewed or self.has_overrides or self.teacher_comment:
            return "reviewed"
        return "pending"

    @property
    def teacher_checked(self) -> bool:
        """A teacher approved or reviewed this grade (`review_status`)."""
        return self.review_status in ("approved", "reviewed")

    def hold_reason(self, approved_only: bool = False) -> str | None:
        """Why this grade may not leave for a gradebook (None: it may): every export's rule,
        whose core (`exportable`) handouts follow too."""
        if self.final_total is None:
            what = self.result.reason or self.result.status
            return f"no complete grade ({what}); score every criterion in review.xlsx"
        if not self.exportable:
            reasons = ", ".join(dict.fromkeys(f.reason for f in self.result.flags)) \
                or "needs review"
            return (f"flagged ({reasons}) and not reviewed; approve it (or score every "
                    "criterion) in review.xlsx")
        if approved_only and not self.approved:
            return "not approved (--approved-only); mark it Approved in review.xlsx"
        if self.result.source == "canvas" and self.student_id.startswith("anon_"):
            return ("an anonymous Canvas download: Canvas takes no imported grade for an "
                    "assignment while it is anonymous; post the grades in Canvas, download the "
                    "submissions again and rerun `grade run`")
        return None

    def handout(self, mode: HandoutMode = "reviewed") -> bool:
        """Whether a handout (the student's page) is written: for a grade that may leave, by
        the exports' rule (`exportable`), and by default only once a teacher reviewed or
        approved it; `mode="all"` writes every grade that may leave (its page then says it is
        not yet reviewed, `provisional`)."""
        return self.exportable and (mode == "all" or self.teacher_checked)

    @property
    def provisional(self) -> bool:
        """No teacher reviewed or approved this grade yet: a handout of it says so."""
        return not self.teacher_checked

    @property
    def held_feedback(self) -> list[str]:
        """The criteria whose AI feedback waits for the teacher (`FinalCriterion.feedback_held`)."""
        return [c.criterion.id for c in self.criteria if c.feedback_held]

    @property
    def injection_suspected(self) -> bool:
        return any(f.reason == INJECTION_FLAG for f in self.result.flags)

    @property
    def flag_text(self) -> str:
        return "; ".join(f"{f.reason}: {f.message}" for f in self.result.flags)

    @property
    def uncertainty(self) -> float:
        """0..1: the largest spread of the model's samples on a criterion, as a share of the
        criterion's maximum (0 when one sample was asked)."""
        return spread_share(self.result.criteria)


def review_queue(students: Iterable[FinalStudent]) -> list[FinalStudent]:
    """The order a teacher reviews in: students suspected of an injection attempt first, then
    the other students who need a look (the most uncertain first), then the rest; student-id
    order otherwise."""
    return sorted(students, key=lambda s: (not s.injection_suspected, not s.flagged,
                                           -s.uncertainty, s.student_id))


def load_rubric(store: Store, run_id: int) -> Rubric:
    return Rubric.model_validate(store.run(run_id).rubric)


def criterion_basis(score: float | None, max_points: float | None = None) -> str | None:
    """`Decision.ai_basis` for a criterion field: the AI's score the teacher saw, and what the
    criterion was out of (a JSON number alone: a decision made before maxima were kept)."""
    if score is None:
        return None
    return json.dumps(float(score) if max_points is None else [float(score), float(max_points)])


def student_basis(result: StudentResult) -> str:
    """`Decision.ai_basis` for a student field (comment, note, approval): every AI score, each
    with what its criterion was out of."""
    return json.dumps({c.criterion_id: [float(c.score), float(c.max_points)]
                       for c in result.criteria}, sort_keys=True)


def _same(basis: Any, score: float | None, max_points: float | None) -> bool:
    """The AI said `score` (out of `max_points`) as `basis` records: [score, max], or a bare
    score (kept before maxima were: the score alone is compared)."""
    if isinstance(basis, list) and len(basis) == 2:
        return score is not None and float(basis[0]) == score \
            and max_points is not None and float(basis[1]) == max_points
    return basis is not None and score is not None and float(basis) == score


def applies(d: Decision, result: StudentResult, ai: dict[str, float]) -> bool:
    """The decision was made for this result: the same submission, and the AI's scores (and
    the criteria's maxima: a rescaled criterion is another scale) as the teacher saw them."""
    if d.submission_id != result.submission_id:
        return False
    basis = json.loads(d.ai_basis) if d.ai_basis is not None else None
    maxima = {c.criterion_id: float(c.max_points) for c in result.criteria}
    if d.criterion_id:
        mine = ai.get(d.criterion_id)
        if basis is None:
            return mine is None
        return _same(basis, mine, maxima.get(d.criterion_id))
    basis = basis or {}
    return set(basis) == set(ai) and all(_same(v, ai[k], maxima.get(k))
                                         for k, v in basis.items())


def layers(decisions: Sequence[Decision], result: StudentResult
           ) -> tuple[dict[tuple[str, str], Any], dict[tuple[str, str], Any]]:
    """(the student's own values, their answer group's values) per (criterion id or "",
    field): in each, the newest decision of that kind that applies to this result (a cleared
    value is None)."""
    own, grouped, _ = _layers(decisions, result)
    return own, grouped


def _layers(decisions: Sequence[Decision], result: StudentResult
            ) -> tuple[dict[tuple[str, str], Any], dict[tuple[str, str], Any],
                       set[tuple[str, str]]]:
    """`layers`, and the keys whose newest applying decision is the student's own."""
    ai = {c.criterion_id: float(c.score) for c in result.criteria}
    own: dict[tuple[str, str], Any] = {}
    grouped: dict[tuple[str, str], Any] = {}
    newest_own: set[tuple[str, str]] = set()
    for d in reversed(decisions):
        key = (d.criterion_id, d.field)
        out = own if d.group is None else grouped
        if key not in out and applies(d, result, ai):
            out[key] = json.loads(d.value) if d.value is not None else None
            if d.group is None and key not in grouped:
                newest_own.add(key)
    return own, grouped, newest_own


def effective(decisions: Sequence[Decision], result: StudentResult
              ) -> dict[tuple[str, str], Any]:
    """The teacher's current value per (criterion id or "", field) for this result: the
    student's own value where they have one, else the one entered for their answer group
    (`review.grouping`), else none: a member's own value always wins, entered before or after
    the group's. Clearing a member's own cell after the group's value was entered is their
    own decision too (back to the AI's score); a group value entered after the clear reaches
    them again."""
    own, grouped, newest_own = _layers(decisions, result)
    values = dict(grouped)
    values.update({k: v for k, v in own.items()
                   if v is not None or k not in grouped or k in newest_own})
    return values


def finals(store: Store, run_id: int, rubric: Rubric | None = None) -> Iterator[FinalStudent]:
    """Every student of the run, in student-id order, with final values resolved."""
    rubric = rubric or load_rubric(store, run_id)
    decisions = store.decisions()
    for res in store.results(run_id):
        by_id = {c.criterion_id: c for c in res.criteria}
        teacher = effective(decisions.get(res.student_id, ()), res)
        crits = []
        for crit in rubric.all_criteria:
            ai = by_id.get(crit.id)
            t_score = teacher.get((crit.id, "score"))
            crits.append(FinalCriterion(
                criterion=crit, ai_score=ai.score if ai else None,
                teacher_score=float(t_score) if t_score is not None else None,
                justification=ai.justification if ai else "", evidence=ai.evidence if ai else [],
                ai_feedback=ai.feedback if ai else "",
                teacher_feedback=teacher.get((crit.id, "feedback")),
                spread=ai.spread if ai else None, samples=list(ai.samples) if ai else [],
                items=list(ai.items) if ai else [],
            ))
        approved = teacher.get(("", "approved"))
        fs = FinalStudent(result=res, criteria=crits, band=None,
                          teacher_comment=teacher.get(("", "comment")),
                          private_note=teacher.get(("", "note")),
                          approved=None if approved is None else bool(approved),
                          has_overrides=any(c.teacher_score is not None for c in crits))
        pct = fs.final_percent
        fs.band = rubric.band(pct) if pct is not None else None
        yield fs


def carried_over(store: Store, before: int, after: int) -> tuple[int, int]:
    """(students with a teacher decision on run `before`, how many of them keep one on run
    `after`): a decision carries over to the same submission whose AI score it was made on
    is unchanged."""
    decisions = store.decisions()
    had = {r.student_id for r in store.results(before)
           if effective(decisions.get(r.student_id, ()), r)}
    kept = {r.student_id for r in store.results(after)
            if r.student_id in had and effective(decisions.get(r.student_id, ()), r)}
    return len(had), len(kept)
