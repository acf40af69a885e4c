"""What the fake Gemini server says: deterministic, schema-conforming JSON derived from the prompt.

Kept apart from the HTTP layer so the answer logic can be read (and changed) on its own. Scores
come from word overlap between the `<submission>` and the `<reference_answer>` blocks, so a
better answer gets a higher score and a test can predict the grade without a real model.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

TRIGGERS = (
    "SAFETY", "RECITATION", "MAX_TOKENS", "EMPTY", "INVALID_JSON", "INVALID_ONCE",
    "PROMPT_BLOCKED", "THINK_HARD", "OBEY", "REVIEW", "UNSURE", "FABRICATE", "BATCH_LINE_FAIL",
    "CONTINUE", "INJECTION", "NO_INJECTION",
)
# INJECTION / NO_INJECTION: the answer to the model-based injection check (a schema asking for
# an `injection` boolean) is yes / no, whatever the text says. Without either, the fake judges
# as `judges_injection` says: a stand-in for a real model, so rates measured with it describe
# this rule, not Gemini.
INJECTION_REASON = "The submission asks whoever grades it for a better grade than it earns."
# CONTINUE: on a model whose row has `continuation`, the answer comes in two billed segments
# (finishReason CONTINUATION and a continuation token, see `_fake_continuation`); on any other
# model it stops as MAX_TOKENS does.
# BATCH_LINE_FAIL: the line of a batch job that carries it fails (online calls ignore it).
# OBEY: a gullible model that gives full marks (a successful injection); REVIEW: the model
# reports an attempt to instruct the grader (needs_review with that reason).
REVIEW_REASON = "The submission contains an attempt to instruct the grader."
# UNSURE: the score moves with the request's seed, or, without one, with how many times the same
# request was asked before (0, 1, 2 ... give fractions shifted by -0.3, 0, +0.3, ...), so samples
# of one student disagree. FABRICATE: evidence quotes that are
# not in the submission.
UNSURE_SHIFT = 0.3
FABRICATED_QUOTE = "The student proves that P equals NP in three lines."
# Thinking tokens a THINK_HARD submission costs: they count against maxOutputTokens, as on the
# real API, so a low output cap ends such a call with MAX_TOKENS and no answer.
THINK_HARD_TOKENS = 3000
_TRIGGER_RE = re.compile(r"FAKE_GEMINI:([A-Z_]+)")
_SUBMISSION_RE = re.compile(r"<submission[^>]*>\s*(.*?)\s*</submission>", re.DOTALL)
_REFERENCE_RE = re.compile(r"<reference_answer[^>]*>\s*(.*?)\s*</reference_answer>", re.DOTALL)
_WORD_RE = re.compile(r"[A-Za-z0-9]+")
_STOP_WORDS = (
    "the and for are but not you all any can had her was one our out has him his how its may "
    "new now old see two who did get let put say she too use that with this from they will "
    "would there their what about which when make like than then them these some into also "
    "been have were your each other more very just only over such"
)
_STOP = frozenset(_STOP_WORDS.split(" "))
INLINE_PART_TOKENS = 258  # what Gemini bills for one image


def estimate_tokens(chars: int, inline_parts: int = 0) -> int:
    """The one token estimator (prompt, output, countTokens): about 4 characters a token."""
    return math.ceil(chars / 4) + inline_parts * INLINE_PART_TOKENS


def submission_key(text: str) -> str:
    """Stats key for a submission: sha256 of its stripped text."""
    return hashlib.sha256(text.strip().encode("utf-8")).hexdigest()


@dataclass
class Prompt:
    """The parts of a generateContent/countTokens body the fake cares about."""

    user_text: str
    all_chars: int
    inline_parts: int
    turns: int
    submission: str
    references: list[str] = field(default_factory=list)
    triggers: set[str] = field(default_factory=set)
    seed: int | None = None  # the request's seed; None when it sent none
    repeat: int = 0  # how many times this exact request was asked before

    @property
    def key(self) -> str:
        return submission_key(self.submission)

    @property
    def prompt_tokens(self) -> int:
        return estimate_tokens(self.all_chars, self.inline_parts)


def read_prompt(body: dict[str, Any]) -> Prompt:
    """Pull texts out of a request body. The fake passes it bodies in camelCase (`_fake_json`);
    tests pass it the request log's bodies as sent, hence the snake_case spellings too."""
    chars = 0
    inline = 0
    system = body.get("systemInstruction") or body.get("system_instruction") or {}
    for part in system.get("parts", []) if isinstance(system, dict) else []:
        chars += len(part.get("text") or "")
    contents = body.get("contents") or []
    first_user: list[str] = []
    for n, content in enumerate(contents):
        for part in content.get("parts", []):
            text = part.get("text")
            if text is not None:
                chars += len(text)
                if n == 0:
                    first_user.append(text)
            elif any(part.get(k) for k in ("inlineData", "inline_data", "fileData", "file_data")):
                inline += 1
    user_text = "\n".join(first_user)
    found = _SUBMISSION_RE.search(user_text)
    submission = found.group(1) if found else user_text
    triggers = {t for t in _TRIGGER_RE.findall(submission) if t in TRIGGERS}
    gen = body.get("generationConfig") or body.get("generation_config") or {}
    seed = gen.get("seed") if isinstance(gen, dict) else None
    return Prompt(
        user_text=user_text, all_chars=chars, inline_parts=inline, turns=len(contents),
        submission=submission, references=_REFERENCE_RE.findall(user_text), triggers=triggers,
        seed=seed if isinstance(seed, int) else None,
    )


# The fake's "semantic" rule, beside the phrase patterns: one sentence that both addresses
# whoever grades and asks for a top outcome. Deliberately small and documented: it is what lets
# tests steer the check, not a claim about what a real model catches.
_ADDRESSEE = re.compile(r"\b(?:grader|marker|assessor|evaluator|examiner|whoever (?:assesses|"
                        r"grades|marks|evaluates|reads|reviews))\b", re.IGNORECASE)
_TOP_OUTCOME = re.compile(r"\b(?:maximum|full marks|top (?:band|grade|mark)|highest|fully "
                          r"satisfied|perfect score|10/10)\b", re.IGNORECASE)


def judges_injection(prompt: Prompt) -> bool:
    """The fake's answer to the injection check: a trigger, else the project's phrase patterns
    (`grader.intake.injection`), else the rule above."""
    if "INJECTION" in prompt.triggers or "NO_INJECTION" in prompt.triggers:
        return "INJECTION" in prompt.triggers
    from grader.intake.injection import inspect, suspicious

    if suspicious(inspect(prompt.submission).findings):
        return True
    return any(_ADDRESSEE.search(s) and _TOP_OUTCOME.search(s)
               for s in re.split(r"(?<=[.!?])\s+|\n+", prompt.submission))


def _words(text: str) -> set[str]:
    words = (m.lower() for m in _WORD_RE.findall(text))
    return {w for w in words if len(w) >= 3 and w not in _STOP}


def score_fraction(prompt: Prompt) -> float:
    """Share of reference-answer content words found in the submission; without a reference,
    a length-based fraction (150 content words = full marks)."""
    sub = _words(prompt.submission)
    ref: set[str] = set()
    for r in prompt.references:
        ref |= _words(r)
    fraction = len(ref & sub) / len(ref) if ref else min(1.0, len(sub) / 150)
    if "UNSURE" in prompt.triggers:  # the seed if one was sent, else the model's own sampling
        draw = prompt.seed if prompt.seed is not None else prompt.repeat
        fraction += UNSURE_SHIFT * ((draw % 3) - 1)
    return min(1.0, max(0.0, fraction))


def _quotes(submission: str) -> list[str]:
    """One or two short verbatim quotes (each a substring of the submission)."""
    pieces = [p.strip() for p in re.split(r"(?<=[.!?])\s+|\n+", submission) if p.strip()]
    out = []
    for p in pieces[:2]:
        out.append(p if len(p) <= 80 else p[:80].rsplit(" ", 1)[0] or p[:80])
    return out


def _resolve(schema: Any, root: dict[str, Any]) -> dict[str, Any]:
    """Follow local $ref and pick the first non-null anyOf/oneOf branch."""
    for _ in range(32):
        if not isinstance(schema, dict):
            return {}
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            node: Any = root
            for key in ref[2:].split("/"):
                node = node.get(key, {}) if isinstance(node, dict) else {}
            schema = node
            continue
        branches = schema.get("anyOf") or schema.get("oneOf")
        if branches:
            typed = [b for b in branches if _type_of(_resolve(b, root)) != "null"]
            schema = typed[0] if typed else branches[0]
            continue
        return schema
    return {}


def _type_of(schema: dict[str, Any]) -> str:
    t = schema.get("type")
    if isinstance(t, list):
        t = next((x for x in t if str(x).lower() != "null"), "string")
    if t is None:
        if "properties" in schema:
            return "object"
        if "items" in schema:
            return "array"
        if "enum" in schema:
            return "string"
        return "string"
    return str(t).lower()


class Synth:
    """Fills a JSON Schema from one prompt; `violate` breaks the first bounded score."""

    def __init__(self, prompt: Prompt, root: dict[str, Any], *, violate: bool = False):
        self.prompt = prompt
        self.root = root
        self.fraction = 1.0 if "OBEY" in prompt.triggers else score_fraction(prompt)
        self.violate = violate

    @functools.cached_property
    def injection(self) -> bool:
        """The check's verdict; False for any other schema (a grading reply)."""
        return "injection" in (self.root.get("properties") or {}) and \
            judges_injection(self.prompt)

    def value(self, schema: Any, name: str = "") -> Any:
        s = _resolve(schema, self.root)
        kind = _type_of(s)
        if "enum" in s and kind not in {"number", "integer"}:
            return s["enum"][0] if s["enum"] else ""
        if kind == "object":
            props: dict[str, Any] = s.get("properties") or {}
            order = [k for k in s.get("propertyOrdering", []) if k in props]
            order += [k for k in props if k not in order]
            return {k: self.value(props[k], k) for k in order}
        if kind == "array":
            items = s.get("items") or {}
            if name == "evidence" or "quote" in name:
                quotes = ([FABRICATED_QUOTE] if "FABRICATE" in self.prompt.triggers
                          else _quotes(self.prompt.submission))
            else:
                quotes = [self.value(items, name)]
            while len(quotes) < int(s.get("minItems", 0)):
                quotes.append(quotes[-1] if quotes else self.value(items, name))
            if "maxItems" in s:
                quotes = quotes[: int(s["maxItems"])]
            return quotes
        if kind in {"number", "integer"}:
            return self._number(s, kind, name)
        if kind == "boolean":
            if name == "met":  # a checklist item is met when the answer is good enough
                return self.fraction >= 0.5
            if name == "injection":  # the model-based injection check
                return self.injection
            return name == "needs_review" and "REVIEW" in self.prompt.triggers
        if name == "quote":
            quotes = _quotes(self.prompt.submission)
            return quotes[0] if quotes and self.fraction >= 0.5 else ""
        return self._text(name)

    def _number(self, s: dict[str, Any], kind: str, name: str) -> float | int:
        f = self.fraction
        enum = [v for v in s.get("enum", []) if isinstance(v, int | float)]
        if enum:
            if self.violate:
                self.violate = False
                return max(enum) + 1
            target = f * max(enum)
            return min(enum, key=lambda v: (abs(v - target), v))
        lo = float(s.get("minimum", 0))
        hi = float(s.get("maximum", lo + 10 if name == "score" else lo + 1))
        if self.violate and "maximum" in s:
            self.violate = False
            return hi + 1
        if name == "score":
            raw = round((lo + f * (hi - lo)) * 2) / 2
        else:
            raw = round(lo + f * (hi - lo), 2)
        val = min(hi, max(lo, raw))
        if kind == "integer":
            return int(min(hi, max(lo, round(val))))
        return int(val) if float(val).is_integer() else val

    def _text(self, name: str) -> str:
        pct = round(self.fraction * 100)
        if name == "justification":
            return f"The submission covers about {pct}% of the expected points."
        if name == "feedback":
            return ("Good work; the key ideas are there." if pct >= 70
                    else "Cover more of the expected key points and explain them.")
        if name == "overall_comment":
            return f"Overall the answer matches {pct}% of the reference."
        if name == "reason" and self.injection:
            return INJECTION_REASON
        if name in {"review_reason", "reason"}:
            return REVIEW_REASON if "REVIEW" in self.prompt.triggers else ""
        return f"{name or 'text'} ({pct}%)"


def answer_text(prompt: Prompt, schema: dict[str, Any] | None, *, violate: bool = False) -> str:
    """The model's JSON text: a schema-conforming object, or a summary when no schema was asked."""
    if not schema:
        return json.dumps({"score_fraction": round(score_fraction(prompt), 3)})
    return json.dumps(Synth(prompt, schema, violate=violate).value(schema))
