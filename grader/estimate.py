"""`grade estimate CLASS_DIR`: what grading the class would cost and take, before any call.

Input tokens are counted with the API's countTokens when Gemini credentials are present (free,
and exactly what generateContent bills), else estimated locally (about four characters a token,
images and PDF pages at what Gemini 3 bills by default). Output cannot be counted before the
model writes it: the answer length and thinking tokens per level are the model table's stated
assumptions (`[estimate]` in models.toml). Each mode is one `Mode` in `MODES` (price multiplier
and time model), so a new one (cached, after issue 11) is one more entry.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from . import models
from .backends import Backend, create
from .errors import GraderError
from .generation import Generation, configure
from .isolation import Extractor
from .limits import check_request_size
from .models import EstimateAssumptions, ModelTable, Pricing
from .pipeline import default_model, plan, render, students
from .request import GradeRequest, Usage
from .settings import Settings, auto_backend, limits

_PDF_PAGE = re.compile(rb"/Type\s*/Page(?!s)")


@dataclass(frozen=True)
class Load:
    """What the class asks of the model: calls and tokens."""

    calls: int
    input_tokens: int
    answer_tokens: int
    thinking_tokens: int


@dataclass(frozen=True)
class Mode:
    """One way to send the class: its price multiplier and how long it takes (low, high s)."""

    name: str
    pricing: models.Mode
    time: Callable[[Load, Settings, EstimateAssumptions, float | None], tuple[float, float]]
    note: str


def _online_time(load: Load, s: Settings, a: EstimateAssumptions,
                 cost: float | None) -> tuple[float, float]:
    """Bounded by calls in flight, the RPM/TPM quota and the spend-rate limit, whichever is
    slowest."""
    t = load.calls * a.seconds_per_call / s.concurrency
    if s.rpm:
        t = max(t, load.calls * 60.0 / s.rpm)
    if s.tpm:
        t = max(t, load.input_tokens * 60.0 / s.tpm)
    if s.spend_per_10min and cost:
        t = max(t, cost / s.spend_per_10min * 600.0)
    return t, t


def _flex_time(load: Load, s: Settings, a: EstimateAssumptions,
               cost: float | None) -> tuple[float, float]:
    low, high = a.flex_minutes
    waves = -(-load.calls // s.concurrency)  # each call queues, `concurrency` at a time
    floor = _online_time(load, s, a, cost)[0]
    return max(floor, waves * low * 60.0), max(floor, waves * high * 60.0)


def _batch_time(load: Load, s: Settings, a: EstimateAssumptions,
                cost: float | None) -> tuple[float, float]:
    return 0.0, a.batch_hours * 3600.0


MODES: tuple[Mode, ...] = (
    Mode("online", "standard", _online_time,
         "calls in flight, quota and spend limit; {seconds:g} s a call assumed"),
    Mode("flex", "flex", _flex_time,
         "half price; each call may queue {flex} minutes (Google's target), --tier flex"),
    Mode("batch", "batch", _batch_time,
         "half price; Google's target is {hours:g} h, usually much sooner"),
)


@dataclass(frozen=True)
class ModeEstimate:
    mode: Mode
    cost_usd: float | None
    time_s: tuple[float, float]
    note: str


@dataclass
class Estimate:
    model: str
    thinking_level: str | None
    students: int
    sent: int
    flagged: int
    counted_by: str
    load: Load
    thinking_per_call: int
    day: date
    price: models.Price | None
    checked: date
    assumptions: EstimateAssumptions
    modes: list[ModeEstimate] = field(default_factory=list)


def local_tokens(req: GradeRequest, media: models.Media) -> int:
    """About four characters a token; images and PDF pages as Gemini 3 bills them."""
    chars = len(req.system) + len(req.static_prefix)
    chars += sum(len(p.text or "") for p in req.student_parts)
    tokens = -(-chars // 4)
    for p in req.student_parts:
        if p.data is not None:
            pages = len(_PDF_PAGE.findall(p.data)) or 1
            tokens += (media.pdf_page_tokens * pages if p.mime_type == "application/pdf"
                       else media.image_tokens)
    return tokens


def _requests(class_dir: Path, settings: Settings, gen: Generation
              ) -> tuple[int, int, list[GradeRequest]]:
    """How many students and rubric criteria there are, and every request the class would send
    (first asks only)."""
    p = plan(class_dir, settings)
    subs = students(class_dir, settings)
    out = []
    max_bytes = limits(settings).max_request_bytes
    with Extractor(max_file_mb=settings.max_file_mb, limits=limits(settings)) as extractor:
        for sub in subs:
            try:
                req = render(p, extractor.extract(sub), gen)
                check_request_size(req, max_bytes=max_bytes, student=sub.student_id)
            except GraderError:
                continue  # flagged at intake: never sent, costs nothing
            out.append(req)
    return len(subs), len(p.rubric.all_criteria), out


async def _count(backend: Backend, reqs: list[GradeRequest], concurrency: int) -> list[int]:
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(req: GradeRequest) -> int:
        async with gate:
            return await backend.count_tokens(req)

    try:
        return list(await asyncio.gather(*(one(r) for r in reqs)))
    finally:
        await backend.aclose()


def estimate(class_dir: Path, settings: Settings, *, day: date | None = None) -> Estimate:
    """Project the class's cost and time in every mode of `MODES`."""
    tbl: ModelTable = models.table(settings.models)
    name = auto_backend(settings)
    api = name in ("gemini", "vertex", "enterprise")
    model = default_model(name if api else "gemini", settings)
    gen = configure(settings, model, name if api else "gemini", tbl)
    total, n_crit, reqs = _requests(class_dir, settings, gen)
    if api and reqs:
        counts = asyncio.run(_count(create(name, settings=settings), reqs, settings.concurrency))
        counted_by = "countTokens"
    else:
        counts = [local_tokens(r, tbl.media) for r in reqs]
        counted_by = ("local estimate (no Gemini credentials): about 4 characters a token, "
                      f"{tbl.media.image_tokens} an image, {tbl.media.pdf_page_tokens} a PDF page")
    a = tbl.estimate
    answer = a.answer_tokens_per_criterion * n_crit + a.answer_tokens_fixed
    thinking = a.thinking_tokens.get(gen.thinking_level, 0) if gen.thinking_level else 0
    load = Load(calls=len(reqs), input_tokens=sum(counts), answer_tokens=answer * len(reqs),
                thinking_tokens=thinking * len(reqs))
    day = day or models.today()
    out = Estimate(model=gen.model, thinking_level=gen.thinking_level, students=total,
                   sent=len(reqs), flagged=total - len(reqs), counted_by=counted_by, load=load,
                   thinking_per_call=thinking, day=day,
                   price=Pricing.of(tbl, gen.model).price(day), checked=tbl.checked,
                   assumptions=a)
    for mode in MODES:
        pricing = Pricing.of(tbl, gen.model, mode.pricing)
        costs = [pricing.cost(Usage(prompt_tokens=c, output_tokens=answer,
                                    thinking_tokens=thinking), day) for c in counts]
        cost = None if any(c is None for c in costs) else sum(c or 0.0 for c in costs)
        note = mode.note.format(seconds=a.seconds_per_call, hours=a.batch_hours,
                                flex=f"{a.flex_minutes[0]:g}-{a.flex_minutes[1]:g}")
        out.modes.append(ModeEstimate(mode, cost, mode.time(load, settings, a, cost), note))
    return out


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def render_text(e: Estimate, class_dir: Path) -> str:
    """The report `grade estimate` prints."""
    a = e.assumptions
    level = f", thinking {e.thinking_level}" if e.thinking_level else ""
    lines = [
        f"estimate for {class_dir}: {e.sent} of {e.students} students would be sent to "
        f"{e.model}{level}; {e.flagged} would be flagged before any call (no cost)",
        f"input: {e.load.input_tokens:,} tokens ({e.counted_by})",
        f"output: ~{e.load.answer_tokens:,} answer tokens (assumed {a.answer_tokens_per_criterion}"
        f" a criterion + {a.answer_tokens_fixed}) + ~{e.load.thinking_tokens:,} thinking tokens "
        f"(assumed {e.thinking_per_call} a call at this level; Google publishes no such "
        "figure)",
    ]
    if e.price is None:
        lines.append(f"prices: {e.model} has no price in the model table (checked {e.checked})"
                     "; costs are unknown")
    else:
        lines.append(f"prices: {e.model} on {e.day}: ${e.price.input:g} input, "
                     f"${e.price.output:g} output (incl. thinking) per 1M tokens; model table "
                     f"checked {e.checked} ({e.price.source})")
    lines.append(f"{'mode':<8}{'cost':>12}  time")
    for m in e.modes:
        cost = "unknown" if m.cost_usd is None else f"${m.cost_usd:.4f}"
        low, high = m.time_s
        when = (f"~{duration(high)}" if low == high else
                f"up to {duration(high)}" if low == 0 else f"{duration(low)} to {duration(high)}")
        lines.append(f"{m.mode.name:<8}{cost:>12}  {when} ({m.note})")
    lines.append("not included: re-asks after invalid output, retries after a thinking cut-off, "
                 "and students already graded in the store (reused at no cost)")
    return "\n".join(lines)
