"""`grade run --dry-run`: render the first prompts and estimate their size, calling no model."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from grader.config import models
from grader.config.generation import configure
from grader.config.settings import Settings, auto_backend, limits
from grader.grading.context import offline_context
from grader.grading.prepare import Settled, prepare_offline
from grader.intake.isolation import Extractor
from grader.prompting.planning import Plan, default_model, plan, students


@dataclass
class DryRunItem:
    student_id: str
    prompt_tokens: int | None
    flagged: str | None
    prompt: str


@dataclass
class DryRun:
    plan: Plan
    items: list[DryRunItem]
    notices: tuple[str, ...] = ()  # what the run would say first (the roster)


def dry_run(class_dir: Path, settings: Settings, n: int = 3) -> DryRun:
    """The first `n` students the run would grade (`--only` and the other selections applied),
    prepared as the run prepares them (redacted unless redaction is off, with their graded
    examples), their prompts rendered and their size estimated; no model call, nothing
    written."""
    p = plan(class_dir, settings)
    backend = auto_backend(settings)
    gen = configure(settings, default_model(backend, settings), backend,
                    models.table(settings.models))
    subs = students(p)
    with Extractor(max_file_mb=settings.max_file_mb, limits=limits(settings)) as extractor:
        ctx = offline_context(p, gen, backend, subs, extractor)
        prepared = asyncio.run(prepare_offline(ctx, subs, wanted=n))
    items = []
    for got in prepared:
        if isinstance(got, Settled):
            items.append(DryRunItem(got.record.student_id, None,
                                    got.record.message or got.record.status, ""))
            continue
        if got.unsent is not None:
            items.append(DryRunItem(got.student_id, None,
                                    got.unsent.message or got.unsent.status, ""))
            continue
        req = got.req
        student = "".join(pt.text or "" for pt in req.student_parts)
        media = sum(258 for pt in req.student_parts if pt.text is None)
        items.append(DryRunItem(got.student_id,
                                len(req.system + req.static_prefix + student) // 4 + media,
                                None, req.static_prefix + student))
    return DryRun(p, items, ctx.notices)
