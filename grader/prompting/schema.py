"""The structured output a model must return, generated per rubric.

Two views of one shape: a plain JSON Schema (flat, no $ref) sent to the backend as
`response_json_schema` / a llama.cpp grammar, and a Pydantic model that validates what comes back.
Scores are bounded to 0..max, or to the allowed level points. Totals are never asked of the model.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from grader.prompting.rubric import Criterion, Rubric


class ChecklistAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    quote: str
    met: bool


class CriterionResult(BaseModel):
    """One criterion as the model answered it: a score, or (checklist criteria) an answer per
    item, from which code computes the score."""

    model_config = ConfigDict(extra="forbid")

    score: float | None = None
    justification: str
    evidence: list[str] = Field(default_factory=list)
    feedback: str
    items: dict[str, ChecklistAnswer] | None = None


class ModelGrade(BaseModel):
    """Validated model output, with criteria keyed by criterion id."""

    model_config = ConfigDict(extra="forbid")

    criteria: dict[str, CriterionResult]
    overall_comment: str
    needs_review: bool
    review_reason: str = ""


def _score_schema(c: Criterion) -> dict[str, Any]:
    allowed = c.allowed_points
    desc = f"points for '{c.title}'"
    if allowed is not None:
        return {"type": "number", "enum": list(allowed),
                "description": desc + "; one of the level points"}
    return {"type": "number", "minimum": 0, "maximum": c.max_points,
            "description": desc + f", from 0 to {c.max_points:g}"}


_JUSTIFICATION = {"type": "string", "description": "why this score, referring to the rubric"}
_FEEDBACK = {"type": "string", "description": "feedback to the student"}


def _checklist_schema(c: Criterion) -> dict[str, Any]:
    """A checklist criterion: a quote and a yes/no per item; no score (code sums the points)."""
    ids = [i.id for i in c.checklist]
    items = {i.id: {
        "type": "object",
        "properties": {
            "quote": {"type": "string", "description": "a short verbatim quote from the "
                      "submission showing the item is met; empty when it is not"},
            "met": {"type": "boolean", "description": f"the submission meets: {i.text}"},
        },
        "required": ["quote", "met"], "propertyOrdering": ["quote", "met"],
    } for i in c.checklist}
    return {
        "type": "object",
        "properties": {
            "justification": _JUSTIFICATION,
            "items": {"type": "object", "properties": items, "required": ids,
                      "propertyOrdering": ids},
            "feedback": _FEEDBACK,
        },
        "required": ["justification", "items", "feedback"],
        "propertyOrdering": ["justification", "items", "feedback"],
    }


def json_schema(rubric: Rubric) -> dict[str, Any]:
    """The JSON Schema for one grading response (stable key order, so its hash is stable)."""
    crit_props: dict[str, Any] = {}
    for c in rubric.all_criteria:
        if c.checklist:
            crit_props[c.id] = _checklist_schema(c)
            continue
        crit_props[c.id] = {
            "type": "object",
            "properties": {
                "score": _score_schema(c),
                "justification": _JUSTIFICATION,
                "evidence": {"type": "array", "items": {"type": "string"},
                             "description": "short verbatim quotes from the submission"},
                "feedback": _FEEDBACK,
            },
            "required": ["score", "justification", "evidence", "feedback"],
            "propertyOrdering": ["justification", "evidence", "score", "feedback"],
        }
    ids = [c.id for c in rubric.all_criteria]
    return {
        "type": "object",
        "properties": {
            "criteria": {"type": "object", "properties": crit_props, "required": ids,
                         "propertyOrdering": ids},
            "overall_comment": {"type": "string"},
            "needs_review": {"type": "boolean",
                             "description": "true when a human should check this grade"},
            "review_reason": {"type": "string"},
        },
        "required": ["criteria", "overall_comment", "needs_review", "review_reason"],
        "propertyOrdering": ["criteria", "overall_comment", "needs_review", "review_reason"],
    }


def strip_vendor_keys(schema: Any) -> Any:
    """Drop Gemini-only keys (propertyOrdering) for consumers that reject them."""
    if isinstance(schema, dict):
        return {k: strip_vendor_keys(v) for k, v in schema.items() if k != "propertyOrdering"}
    if isinstance(schema, list):
        return [strip_vendor_keys(v) for v in schema]
    return schema


def validation_model(rubric: Rubric) -> type[BaseModel]:
    """A Pydantic model for this rubric: exactly the rubric's criterion ids, bounded scores."""
    fields: dict[str, Any] = {}
    for c in rubric.all_criteria:
        if c.checklist:
            fields[c.id] = (_checklist_model(c), ...)
            continue
        allowed = c.allowed_points
        score_t: Any = (
            Literal[allowed] if allowed is not None
            else float
        )
        score_field = Field() if allowed is not None else Field(ge=0, le=c.max_points)
        crit_model = create_model(
            f"Criterion_{c.id}",
            __config__=ConfigDict(extra="forbid"),
            score=(score_t, score_field),
            justification=(str, ...),
            evidence=(list[str], ...),
            feedback=(str, ...),
        )
        fields[c.id] = (crit_model, ...)
    criteria_model = create_model(
        "Criteria", __config__=ConfigDict(extra="forbid"), **fields
    )
    return create_model(
        "Grade",
        __config__=ConfigDict(extra="forbid"),
        criteria=(criteria_model, ...),
        overall_comment=(str, ...),
        needs_review=(bool, ...),
        review_reason=(str, ""),
    )


def _checklist_model(c: Criterion) -> type[BaseModel]:
    answers: dict[str, Any] = {i.id: (ChecklistAnswer, ...) for i in c.checklist}
    items = create_model(f"Checklist_{c.id}", __config__=ConfigDict(extra="forbid"), **answers)
    return create_model(
        f"Criterion_{c.id}", __config__=ConfigDict(extra="forbid"),
        justification=(str, ...), items=(items, ...), feedback=(str, ...))


def parse_with(model: type[BaseModel], text: str) -> ModelGrade:
    """Validate raw model JSON with a prebuilt `validation_model` (build it once per run)."""
    checked = model.model_validate_json(text)
    return ModelGrade.model_validate(checked.model_dump())


def parse(rubric: Rubric, text: str) -> ModelGrade:
    """Validate raw model JSON against the rubric. Raises pydantic.ValidationError."""
    return parse_with(validation_model(rubric), text)
