"""Render the prompt for one submission from Jinja templates.

Layout: system instruction and rubric prefix (static, byte-identical for every student, so a
backend can cache it) first; the student's text last, fenced in <submission> markers and framed
as data. Templates live in `prompts/`; `--prompts DIR` overrides any of them by file name.

Templates (the defaults and any override) run in Jinja's immutable sandbox: they see only the
variables passed to them, cannot reach Python internals (`''.__class__`), the environment or
files, and cannot change what they are given. `check_templates` renders each one once with sample
data, so a broken template fails at plan time, before any model call.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from grader.errors import PromptError, RubricError
from grader.prompting.request import Part
from grader.prompting.rubric import Rubric

TEMPLATES = ("system.j2", "rubric.j2", "submission.j2", "reask.j2", "examples.j2")
VARIABLES = {"system.j2": "none", "rubric.j2": "rubric", "submission.j2": "text, files, "
             "media_count", "reask.j2": "error", "examples.j2": "examples (text, scores, "
             "comment)"}

# Neutralise our own delimiters inside student text so a submission cannot close the fence
# early and pose as instructions. Matching runs on a same-length "skeleton" of the text in which
# full-width forms and common look-alikes (Cyrillic/Greek letters, angle brackets, slashes) are
# mapped to ASCII, so `< / submission >`, `</ SUBMISSION>`, `＜／ｓｕｂｍｉｓｓｉｏｎ＞` and
# `<ѕubmission>` (Cyrillic s) are all caught; the opening bracket becomes `‹`.
_LOOKALIKES = {
    **{0xFF01 + i: chr(0x21 + i) for i in range(94)},  # full-width ASCII
    **dict.fromkeys(map(ord, "‹〈〈⟨﹤❮"), "<"),
    **dict.fromkeys(map(ord, "∕⁄⧸"), "/"),
    **{ord(k): v for k, v in zip("аеорсхѕіјӏԁԛԝ", "aeopcxsijldqw", strict=True)},  # Cyrillic
    **{ord(k): v for k, v in zip("οιν", "oiv", strict=True)},  # Greek
}
_GAP = r"[\s\u200b-\u200d\u2060\ufeff\u00ad]*"  # spaces and invisible characters
_FENCE = re.compile(
    rf"<{_GAP}(/?){_GAP}(submission|reference[\s_-]*answer|example[\s_-]*submission)",
    re.IGNORECASE)


def _points(value: float) -> str:
    return f"{value:g}"


_HAS_LOOKALIKE = re.compile("[" + "".join(re.escape(chr(c)) for c in _LOOKALIKES) + "]")


def lookalike_skeleton(text: str) -> str:
    """`text` with full-width forms and common look-alike letters mapped to ASCII (same length,
    so a position in the skeleton is the same position in `text`)."""
    return text.translate(_LOOKALIKES) if _HAS_LOOKALIKE.search(text) else text


def fence_marks(text: str) -> list[int]:
    """Where `text` holds a tag-like form of our delimiters (`</submission>`, ...)."""
    skeleton = text if text.isascii() else lookalike_skeleton(text)
    if "<" not in skeleton:
        return []
    return [m.start() for m in _FENCE.finditer(skeleton)]


def fence_safe(text: str) -> str:
    """`text` with every tag-like form of our delimiters defused (its `<` made `‹`)."""
    starts = fence_marks(text)
    if not starts:
        return text
    out, last = [], 0
    for i in starts:
        out.append(text[last:i] + "‹")
        last = i + 1
    return "".join(out) + text[last:]


# The fence of prompts/submission.j2 around the student's text.
SUBMISSION_OPEN, SUBMISSION_CLOSE = "<submission>\n", "\n</submission>"


def submitted_text(parts: Sequence[Mapping[str, Any]]) -> str | None:
    """The student's own text in the stored parts of a request (None when it has none).

    `Prompts.student_parts` lays them out as [graded examples], submission, [media]: the
    submission is the last text part, never the examples before it. Inside it, the text between
    the `<submission>` markers (all of the part when a custom template has none)."""
    body = next((p["text"] for p in reversed(parts) if isinstance(p.get("text"), str)), None)
    if body is None:
        return None
    start, end = body.find(SUBMISSION_OPEN), body.rfind(SUBMISSION_CLOSE)
    if start >= 0 and end > start:
        return body[start + len(SUBMISSION_OPEN):end]
    return body


def default_prompt_dir() -> Path:
    """The repo's prompts/ when running from a checkout; the packaged copy in a wheel."""
    checkout = Path(__file__).resolve().parents[2] / "prompts"
    if (checkout / "system.j2").is_file():
        return checkout
    return Path(str(resources.files("grader.templates")))


@dataclass(frozen=True)
class Prompts:
    """Compiled templates plus their hash (part of every grade key)."""

    env: ImmutableSandboxedEnvironment
    sources: dict[str, str]
    hash: str

    def system(self) -> str:
        return self._render("system.j2")

    def static_prefix(self, rubric: Rubric) -> str:
        return self._render("rubric.j2", rubric=rubric)

    def student_parts(self, text: str, media: tuple[Part, ...], files: tuple[str, ...],
                      examples: Sequence[Mapping[str, Any]] = ()) -> tuple[Part, ...]:
        """The student's parts: the graded examples (when any), the submission, its media
        (`submitted_text` relies on this order)."""
        body = self._render("submission.j2", text=fence_safe(text), files=files,
                            media_count=len(media))
        if not examples:
            return (Part(text=body), *media)
        return (Part(text=self.examples(examples)), Part(text=body), *media)

    def examples(self, examples: Sequence[Mapping[str, Any]]) -> str:
        """The graded examples block; their text and comments are fenced like a submission."""
        return self._render("examples.j2", examples=[
            {"text": fence_safe(str(e["text"])), "comment": fence_safe(str(e["comment"])),
             "scores": dict(e["scores"])} for e in examples])

    def reask(self, error: str) -> str:
        return self._render("reask.j2", error=error)

    def _render(self, name: str, **ctx: object) -> str:
        try:
            return self.env.get_template(name).render(**ctx).strip() + "\n"
        except jinja2.UndefinedError as e:
            raise PromptError(f"template {name} uses an undefined variable: {e}",
                              fix=f"{name} may use only: {VARIABLES[name]} "
                                  "(docs/prompts.md)") from None
        except SecurityError as e:
            raise PromptError(f"template {name} tried something templates may not do: {e}",
                              fix=f"{name} may use only: {VARIABLES[name]}; templates cannot "
                                  "reach Python internals, files or the environment") from None
        except jinja2.TemplateError as e:
            raise PromptError(f"template {name} failed to render: {e}",
                              fix=f"fix the template syntax in {name}") from None
        except (ArithmeticError, LookupError, TypeError, ValueError, AttributeError) as e:
            raise PromptError(f"template {name} failed to render: {type(e).__name__}: {e}",
                              fix=f"fix the expression in {name}") from None


# Sample data for `check_templates`: both branches of submission.j2 (one file; several files
# with media) and a re-ask with a typical validation error.
_SAMPLE_TEXT = "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n"
_SAMPLE_ERROR = "criteria.correctness.score: Input should be less than or equal to 4"


def check_templates(prompts: Prompts, rubric: Rubric) -> None:
    """Render every template once with sample data (and the real rubric); raise PromptError
    naming the template and the fix when one fails. Call at plan time, before any model call."""
    prompts.system()
    prompts.static_prefix(rubric)
    prompts.student_parts(_SAMPLE_TEXT, (), ("fib.py",))
    prompts.student_parts(_SAMPLE_TEXT, (Part(mime_type="image/png", data=b"\x89PNG"),),
                          ("fib.py", "notes.md"))
    prompts.reask(_SAMPLE_ERROR)
    prompts.examples([{"text": _SAMPLE_TEXT, "comment": "Correct, but explain the loop.",
                       "scores": {c.id: 0.0 for c in rubric.all_criteria}}])


def check_prefix_size(system: str, static_prefix: str, *, max_tokens: int,
                      chars_per_token: float = 4.0) -> int:
    """Estimated tokens of the part every request repeats (system instruction + rendered rubric);
    raise RubricError when it is over `max_tokens` (pass the model's input limit minus room for a
    submission). The estimate is characters / `chars_per_token`."""
    tokens = int((len(system) + len(static_prefix)) / chars_per_token)
    if tokens > max_tokens:
        raise RubricError(
            f"the rendered rubric and instructions are about {tokens:,} tokens "
            f"({len(system) + len(static_prefix):,} characters), over the limit of "
            f"{max_tokens:,} tokens", fix="shorten the rubric (reference answers, exemplars, "
            "descriptions), or use a model with a longer context")
    return tokens


MAX_TEMPLATE_BYTES = 1024 * 1024


def _read_template(path: Path) -> str:
    try:
        if path.stat().st_size > MAX_TEMPLATE_BYTES:
            raise PromptError(f"template is over {MAX_TEMPLATE_BYTES // 1024} KB", path=path,
                              fix="a prompt template should be a few KB; check --prompts")
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise PromptError(f"cannot read template: {e}", path=path,
                          fix="save the template as UTF-8 text and make it readable") from None


def load_prompts(override_dir: Path | None = None) -> Prompts:
    """Load templates: files in `override_dir` replace the defaults of the same name."""
    dirs = [default_prompt_dir()]
    if override_dir is not None:
        if not override_dir.is_dir():
            raise PromptError("prompt folder not found", path=override_dir,
                              fix="pass --prompts DIR with a folder of .j2 templates")
        dirs.insert(0, override_dir)
    sources: dict[str, str] = {}
    for name in TEMPLATES:
        for d in dirs:
            f = d / name
            if f.is_file():
                sources[name] = _read_template(f)
                break
        else:
            raise PromptError(f"template {name} is missing", path=dirs[0],
                              fix=f"add {name} or remove --prompts")
    env = ImmutableSandboxedEnvironment(
        loader=jinja2.DictLoader(sources), undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, autoescape=False,
    )
    env.filters["points"] = _points
    digest = hashlib.sha256()
    for name in TEMPLATES:
        digest.update(name.encode() + b"\0" + sources[name].encode() + b"\0")
    return Prompts(env=env, sources=sources, hash=digest.hexdigest()[:16])
