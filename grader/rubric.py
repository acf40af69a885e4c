"""The marking scheme: a YAML file validated by Pydantic.

A rubric is either single-question (top-level `criteria`) or multi-question (`questions`, each
with its own criteria). Criterion ids are unique across the whole rubric, so a grade is always
keyed by criterion id alone.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import RubricError, format_validation_error

Identifier = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,47}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Level(_Strict):
    points: float = Field(ge=0)
    descriptor: str


class Criterion(_Strict):
    id: Identifier
    title: str
    max_points: float = Field(gt=0)
    description: str = ""
    levels: tuple[Level, ...] = ()

    @model_validator(mode="after")
    def _levels_within_max(self) -> Criterion:
        for lv in self.levels:
            if lv.points > self.max_points:
                raise ValueError(
                    f"level points {lv.points:g} exceed max_points {self.max_points:g}"
                )
        if self.levels and len({lv.points for lv in self.levels}) != len(self.levels):
            raise ValueError("two levels have the same points; give each level distinct points")
        return self

    @property
    def allowed_points(self) -> tuple[float, ...] | None:
        """The only scores a level-based criterion may take, ascending; None when continuous."""
        if not self.levels:
            return None
        return tuple(sorted(lv.points for lv in self.levels))


class Exemplar(_Strict):
    """A graded example shown to the model (few-shot), never a real student of this run."""

    submission: str
    scores: dict[str, float]
    comment: str = ""


class Question(_Strict):
    id: Identifier
    prompt: str
    reference_answer: str | None = None
    criteria: tuple[Criterion, ...] = Field(min_length=1)


class Rubric(_Strict):
    title: str
    instructions: str = ""
    question: str | None = None
    reference_answer: str | None = None
    criteria: tuple[Criterion, ...] = ()
    questions: tuple[Question, ...] = ()
    exemplars: tuple[Exemplar, ...] = ()
    grade_bands: dict[str, float] = Field(
        default_factory=dict,
        description="band name -> minimum percent, e.g. {A: 85, B: 70}",
    )

    @model_validator(mode="after")
    def _shape(self) -> Rubric:
        if bool(self.criteria) == bool(self.questions):
            raise ValueError("give either `criteria` (one question) or `questions`, not both")
        ids = [c.id for c in self.all_criteria]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"criterion ids must be unique across the rubric; repeated: {dupes}")
        known = set(ids)
        for n, ex in enumerate(self.exemplars):
            unknown = set(ex.scores) - known
            if unknown:
                raise ValueError(f"exemplars.{n}.scores: unknown criterion ids {sorted(unknown)}")
        return self

    @property
    def all_criteria(self) -> tuple[Criterion, ...]:
        if self.criteria:
            return self.criteria
        return tuple(c for q in self.questions for c in q.criteria)

    @property
    def max_total(self) -> float:
        return sum(c.max_points for c in self.all_criteria)

    def criterion(self, cid: str) -> Criterion:
        for c in self.all_criteria:
            if c.id == cid:
                return c
        raise KeyError(cid)

    def band(self, percent: float) -> str | None:
        """The highest band whose minimum the percent reaches."""
        for name, minimum in sorted(self.grade_bands.items(), key=lambda kv: -kv[1]):
            if percent >= minimum:
                return name
        return None


def rubric_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_rubric(path: Path) -> tuple[Rubric, str]:
    """Load and validate a rubric; returns it with the hash of its file text."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RubricError(
            "rubric file not found", path=path,
            fix="pass --rubric FILE, or put rubric.yaml in the class folder or grader.toml",
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise RubricError(f"cannot read rubric: {e}", path=path,
                          fix="save the rubric as UTF-8 YAML") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise RubricError(f"not valid YAML: {e}", path=path,
                          fix="fix the YAML syntax at the line shown") from None
    if not isinstance(data, dict):
        raise RubricError("rubric must be a YAML mapping (title:, criteria:, ...)", path=path,
                          fix="see rubrics/ for examples")
    try:
        rubric = Rubric.model_validate(data)
    except ValidationError as e:
        raise RubricError(
            "invalid rubric:\n" + format_validation_error(e), path=path,
            fix="correct the fields listed above; see rubrics/ for a complete example",
        ) from None
    return rubric, rubric_hash(text)
