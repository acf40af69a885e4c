"""Render the prompt for one submission from Jinja templates.

Layout: system instruction and rubric prefix (static, byte-identical for every student, so a
backend can cache it) first; the student's text last, fenced in <submission> markers and framed
as data. Templates live in `prompts/`; `--prompts DIR` overrides any of them by file name.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import jinja2

from .errors import PromptError
from .request import Part
from .rubric import Rubric

TEMPLATES = ("system.j2", "rubric.j2", "submission.j2", "reask.j2")

# Neutralise our own delimiters inside student text so a submission cannot close the fence
# early and pose as instructions.
_FENCE = re.compile(r"<(/?)\s*(submission|reference_answer|example_submission)\b", re.IGNORECASE)


def _points(value: float) -> str:
    return f"{value:g}"


def fence_safe(text: str) -> str:
    return _FENCE.sub(lambda m: f"‹{m.group(1)}{m.group(2)}", text)


def default_prompt_dir() -> Path:
    """The repo's prompts/ when running from a checkout; the packaged copy in a wheel."""
    checkout = Path(__file__).resolve().parent.parent / "prompts"
    if (checkout / "system.j2").is_file():
        return checkout
    return Path(str(resources.files("grader.templates")))


@dataclass(frozen=True)
class Prompts:
    """Compiled templates plus their hash (part of every grade key)."""

    env: jinja2.Environment
    sources: dict[str, str]
    hash: str

    def system(self) -> str:
        return self._render("system.j2")

    def static_prefix(self, rubric: Rubric) -> str:
        return self._render("rubric.j2", rubric=rubric)

    def student_parts(self, text: str, media: tuple[Part, ...], files: tuple[str, ...]
                      ) -> tuple[Part, ...]:
        body = self._render("submission.j2", text=fence_safe(text), files=files,
                            media_count=len(media))
        return (Part(text=body), *media)

    def reask(self, error: str) -> str:
        return self._render("reask.j2", error=error)

    def _render(self, name: str, **ctx: object) -> str:
        try:
            return self.env.get_template(name).render(**ctx).strip() + "\n"
        except jinja2.UndefinedError as e:
            raise PromptError(f"template {name} uses an undefined variable: {e}",
                              fix="only use the variables documented in README: Prompts") from None
        except jinja2.TemplateError as e:
            raise PromptError(f"template {name} failed to render: {e}",
                              fix="fix the template syntax") from None


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
                sources[name] = f.read_text(encoding="utf-8")
                break
        else:
            raise PromptError(f"template {name} is missing", path=dirs[0],
                              fix=f"add {name} or remove --prompts")
    env = jinja2.Environment(
        loader=jinja2.DictLoader(sources), undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, autoescape=False,
    )
    env.filters["points"] = _points
    digest = hashlib.sha256()
    for name in TEMPLATES:
        digest.update(name.encode() + b"\0" + sources[name].encode() + b"\0")
    return Prompts(env=env, sources=sources, hash=digest.hexdigest()[:16])
