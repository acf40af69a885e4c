"""`grade run --dry-run`: render the first prompts and estimate their size, calling no model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import exemplars, models
from .errors import GraderError
from .generation import configure
from .isolation import Extractor
from .planning import Plan, body_hash, default_model, offline_examples, plan, render, students
from .settings import Settings, auto_backend, limits


@dataclass
class DryRunItem:
    student_id: str
    prompt_tokens: int | None
    flagged: str | None
    prompt: str


def dry_run(class_dir: Path, settings: Settings, n: int = 3) -> tuple[Plan, list[DryRunItem]]:
    """Render the prompts of the first `n` students as they would be sent (redacted, unless
    redaction is off) and estimate their size; no model call."""
    p = plan(class_dir, settings)
    backend = auto_backend(settings)
    gen = configure(settings, default_model(backend, settings), backend,
                    models.table(settings.models))
    items = []
    subs = students(class_dir, settings, p.assignment_files)
    redactor, examples = offline_examples(p, class_dir, settings, subs, backend)
    with Extractor(max_file_mb=settings.max_file_mb, limits=limits(settings)) as extractor:
        extracted = []
        for sub in subs[:n]:
            try:
                extracted.append((sub, extractor.extract(sub)))
            except GraderError as e:
                items.append(DryRunItem(sub.student_id, None, e.render(), ""))
    for sub, ex in extracted:
        sent = redactor.submission(ex, sub.student_id)[0] if redactor else ex
        picked = (examples.pick(ex.text, sub.student_id, body_hash(ex)) if examples is not None
                  else exemplars.NONE)
        req = render(p, sent, gen, examples=picked.shown)
        student = "".join(pt.text or "" for pt in req.student_parts)
        media = sum(258 for pt in req.student_parts if pt.text is None)
        items.append(DryRunItem(sub.student_id,
                                len(req.system + req.static_prefix + student) // 4 + media,
                                None, req.static_prefix + student))
    return p, items
