"""`grade estimate CLASS_DIR`: what grading the class would cost and take, before any call.

Input tokens are counted with the API's countTokens when Gemini credentials are present (free,
and exactly what generateContent bills), else estimated locally (about four characters a token,
images and PDF pages at what Gemini 3 bills by default). Output cannot be counted before the
model writes it: the answer length and thinking tokens per level are the model table's stated
assumptions (`[estimate]` in models.toml). Each mode is one `Mode` in `MODES` (price multiplier
and time model). The cached mode prices the marking scheme as an explicit cache (`caching`): its
tokens at the cached-input price in every call, creating it once at the input price, and storage
per hour for the run's expected time; it applies only when the scheme reaches the model's
explicit-cache minimum.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit

from grader.backends import Backend, create
from grader.config import models
from grader.config.generation import Generation, configure
from grader.config.models import EstimateAssumptions, ModelTable, Pricing
from grader.config.settings import Settings, auto_backend, limits, server_url
from grader.grading import screen
from grader.grading.context import offline_context
from grader.grading.prepare import Prepared, prepare_offline
from grader.intake.isolation import Extractor
from grader.intake.limits import DEFAULT_LIMITS
from grader.online.budget import (
    CallCost,
    Expected,
    Spending,
    local_tokens,
    smallest_budget,
    usd_up,
)
from grader.online.caching import token_bound
from grader.online.ratelimit import MAX_IN_FLIGHT, quota_bound
from grader.prompting.planning import Plan, default_model, plan, prefix_request, students
from grader.prompting.request import GradeRequest, Usage

COUNT_IN_FLIGHT = 16  # countTokens calls at once (a quota of its own at Google)


@dataclass(frozen=True)
class Load:
    """What the class asks of the model: calls and tokens."""

    calls: int
    input_tokens: int
    answer_tokens: int
    thinking_tokens: int


@dataclass(frozen=True)
class Mode:
    """One way to send the class: its price multiplier and how long it takes (low, high s);
    `cached`: the marking scheme is sent as an explicit cache."""

    name: str
    pricing: models.Mode
    time: Callable[[Load, Settings, EstimateAssumptions, float | None], tuple[float, float]]
    note: str
    cached: bool = False


def _online_time(load: Load, s: Settings, a: EstimateAssumptions,
                 cost: float | None) -> tuple[float, float]:
    """The physical bound (`quota_bound`: one latency per wave in flight, a window's worth of
    requests or tokens per minute) or the spend-rate limit, whichever is slowest."""
    t = quota_bound(load.calls, a.seconds_per_call, in_flight=s.concurrency or MAX_IN_FLIGHT,
                    rpm=s.rpm, tpm=s.tpm, input_tokens=load.input_tokens)
    if s.spend_per_10min and cost:
        t = max(t, cost / s.spend_per_10min * 600.0)
    return t, t


def _flex_time(load: Load, s: Settings, a: EstimateAssumptions,
               cost: float | None) -> tuple[float, float]:
    low, high = a.flex_minutes
    waves = -(-load.calls // (s.concurrency or MAX_IN_FLIGHT))  # each wave queues
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
    Mode("cached", "standard", _online_time,
         "online with the marking scheme ({prefix:,} tokens) in an explicit cache: cached input "
         "in every call, created once, storage for the run's time; --cache auto", cached=True),
)


def _server_time(load: Load, s: Settings, a: EstimateAssumptions,
                 cost: float | None) -> tuple[float, float]:
    """A school's own server: one latency per wave of its parallel slots."""
    t = quota_bound(load.calls, a.seconds_per_call, in_flight=s.concurrency or s.server_slots,
                    rpm=s.rpm, tpm=s.tpm, input_tokens=load.input_tokens)
    return t, t


# `--backend openai`: the only mode (no tiers, batches or caches), priced only by grader.toml.
SERVER_MODE = Mode("online", "standard", _server_time,
                   "{slots} requests at once (the server's slots); {seconds:g} s a call "
                   "assumed, a Gemini figure: time a few students on your server")


@dataclass(frozen=True)
class Prefix:
    """The marking scheme every request repeats: its tokens, and the model's explicit-cache
    minimum (None: the model table has none)."""

    tokens: int
    minimum: int | None
    references: int = 0  # tokens of the reference files (part of `tokens`)

    @property
    def cacheable(self) -> bool:
        return self.minimum is not None and self.tokens >= self.minimum


@dataclass(frozen=True)
class ModeEstimate:
    mode: Mode
    cost_usd: float | None
    time_s: tuple[float, float]
    note: str


@dataclass(frozen=True)
class Checks:
    """What `--injection-check` adds: one small call per text sent (counted like the grading
    requests), the reply assumed `screen.REPLY_TOKENS` plus the thinking of its level; the
    cost is added to every mode's (in batch mode the checks are online calls, at the
    standard price)."""

    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: dict[str, float | None]  # mode name -> cost


@dataclass
class Estimate:
    prefix: Prefix
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
    notices: list[str] = field(default_factory=list)  # what the run would say first
    budget: float | None = None  # the smallest --budget that grades the class (None: no price)
    checks: Checks | None = None  # the model-based injection check (`--injection-check`)
    tier: str = "standard"
    server: str | None = None  # `--backend openai`: the server's address


def _requests(p: Plan, class_dir: Path, settings: Settings, gen: Generation, backend: str
              ) -> tuple[int, int, list[GradeRequest], tuple[str, ...], list[str]]:
    """How many students and rubric criteria there are, and every request the class would send
    to `backend` (first asks only; with the reference files, which `_prefix` counts once),
    prepared as the run prepares them (`prepare`): redacted as the run would redact them
    (countTokens is a call to Google: it gets no more of a student than the run would), with
    the graded examples the run would show; students flagged at intake or whose request would
    not be sent cost nothing. Then what the run would say about the roster, and the texts the
    model-based injection check would ask about."""
    subs = students(p)
    with Extractor(max_file_mb=settings.max_file_mb, limits=limits(settings)) as extractor:
        ctx = offline_context(p, gen, backend, subs, extractor)
        prepared = asyncio.run(prepare_offline(ctx, subs))
    sent = [got for got in prepared if isinstance(got, Prepared) and got.unsent is None]
    return (len(subs), len(p.rubric.all_criteria), [got.req for got in sent], ctx.notices,
            [got.screen_text for got in sent if got.screen_text is not None])


async def _count(backend: Backend, reqs: list[GradeRequest], concurrency: int) -> list[int]:
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(req: GradeRequest) -> int:
        async with gate:
            return await backend.count_tokens(req)

    try:
        return list(await asyncio.gather(*(one(r) for r in reqs)))
    finally:
        await backend.aclose()


def _prefix(p: Plan, gen: Generation, tbl: ModelTable, count: Callable[[list[GradeRequest]],
            list[int]] | None) -> Prefix:
    """The marking scheme's tokens: counted (countTokens) when it could reach the minimum,
    else its byte bound (a token covers at least one byte) or the local estimate."""
    bare = prefix_request(p, gen)
    full = prefix_request(p, gen, p.reference_parts())
    minimum = gen.row.cache_min_tokens if gen.row is not None else None
    bound = token_bound(full, tbl.media, DEFAULT_LIMITS.pdf_max_pages)
    if count is None or minimum is None or bound < minimum:
        tokens = [local_tokens(bare, tbl.media),
                  local_tokens(full, tbl.media, references=True)]
    else:
        tokens = count([bare, full] if full.reference_parts else [full])
        tokens = tokens if len(tokens) == 2 else tokens * 2
    return Prefix(tokens=tokens[1], minimum=minimum, references=tokens[1] - tokens[0])


def _cost(mode: Mode, pricing: Pricing, counts: list[int], prefix: Prefix, answer: int,
          thinking: int, hours: float, day: date) -> float | None:
    """What the class costs in `mode` (None: a price is missing, or caching cannot apply)."""
    cached = mode.cached and prefix.cacheable
    if mode.cached and not cached:
        return None
    costs = [pricing.cost(Usage(prompt_tokens=c + prefix.references, output_tokens=answer,
                                thinking_tokens=thinking,
                                cached_tokens=prefix.tokens if cached else 0), day)
             for c in counts]
    if any(c is None for c in costs):
        return None
    total = sum(c or 0.0 for c in costs)
    if cached:
        create = pricing.cache_create(prefix.tokens, day) or 0.0
        storage = (pricing.cache_storage_per_hour(prefix.tokens, day) or 0.0) * hours
        total += create + storage
    return total


def estimate(class_dir: Path, settings: Settings, *, day: date | None = None) -> Estimate:
    """Project the class's cost and time in every mode of `MODES`."""
    tbl: ModelTable = models.table(settings.models)
    name = auto_backend(settings)
    api = name in ("gemini", "vertex", "enterprise")
    server = name == "openai"  # a school's own server: its tokenizer counts, grader.toml prices
    kind = name if api or server else "gemini"
    model = default_model(kind, settings)
    gen = configure(settings, model, kind, tbl)
    p = plan(class_dir, settings)
    total, n_crit, sent, notices, texts = _requests(p, class_dir, settings, gen, kind)
    reqs = [r.model_copy(update={"reference_parts": ()}) for r in sent]  # counted once
    made: list[Backend] = []

    def count(batch: list[GradeRequest]) -> list[int]:
        made.append(create(name, settings=settings))
        return asyncio.run(_count(made[-1], batch, settings.concurrency or (
            settings.server_slots if server else COUNT_IN_FLIGHT)))

    prefix = _prefix(p, gen, tbl, count if api and reqs else None)
    if (api or server) and reqs:
        counts = count(reqs)
        counted_by = str(getattr(made[-1], "counted_by", "countTokens"))
    else:
        counts = [local_tokens(r, tbl.media) for r in reqs]
        counted_by = ("local estimate (no Gemini credentials): about 4 characters a token, "
                      f"{tbl.media.image_tokens} an image, {tbl.media.pdf_page_tokens} a PDF page")
    a = tbl.estimate
    level = screen.lowest_thinking(gen)
    check_reqs = [screen.request(gen.model, t, level, screen.cap_for(level, a.thinking_tokens))
                  for t in texts] if settings.injection_check else []
    check_counts = (count(check_reqs) if api or server else
                    [local_tokens(r, tbl.media) for r in check_reqs]) if check_reqs else []
    check_out = screen.REPLY_TOKENS + (a.thinking_tokens.get(level, 0) if level and not server
                                       else 0)
    day = day or models.today()

    def checks(pricing: Pricing) -> float | None:
        costs = [pricing.cost(Usage(prompt_tokens=c, output_tokens=check_out), day)
                 for c in check_counts]
        return None if any(c is None for c in costs) else sum(c or 0.0 for c in costs)

    def plus(cost: float | None, more: float | None) -> float | None:
        return None if cost is None or more is None else cost + more
    expected = Expected.of(a, n_crit)
    answer, thinking = expected.answer_tokens, expected.thinking(gen.thinking_level)
    k = settings.samples  # each student is asked `samples` times, and each ask is billed
    load = Load(calls=len(reqs) * k,
                input_tokens=(sum(counts) + prefix.references * len(reqs)) * k,
                answer_tokens=answer * len(reqs) * k, thinking_tokens=thinking * len(reqs) * k)
    budget_calls: list[tuple[GradeRequest, int, int, int | None]] = [
        # quoted as sent, with the reference files (the run holds their worst case too)
        (r, c, prefix.references, None) for _ in range(k)
        for r, c in zip(sent, counts, strict=True)]
    counts = counts * k  # a count per call, as `_cost` prices them
    budget_calls += [(r, c, 0, check_out) for r, c in zip(check_reqs, check_counts, strict=True)]
    out = Estimate(prefix=prefix, model=gen.model, thinking_level=gen.thinking_level,
                   students=total,
                   sent=len(reqs), flagged=total - len(reqs), counted_by=counted_by, load=load,
                   thinking_per_call=thinking, day=day,
                   price=Pricing.of(tbl, gen.model).price(day), checked=tbl.checked,
                   assumptions=a, notices=list(notices))
    if server:
        pricing = Pricing.of_server(tbl, settings.models, gen.model)
        cost = _cost(SERVER_MODE, pricing, counts, prefix, answer, 0, 0.0, day)
        if check_reqs:
            out.checks = Checks(len(check_reqs), sum(check_counts), check_out * len(check_reqs),
                                {SERVER_MODE.name: checks(pricing)})
            cost = plus(cost, out.checks.cost_usd[SERVER_MODE.name])
        out.server, out.price = urlsplit(server_url(settings)).netloc, pricing.price(day)
        out.notices = [*gen.notices, *out.notices]  # counting sends the work there too
        out.modes.append(ModeEstimate(SERVER_MODE, cost, _server_time(load, settings, a, cost),
                                      SERVER_MODE.note.format(
                                          slots=settings.concurrency or settings.server_slots,
                                          seconds=a.seconds_per_call)))
        out.budget = _smallest_budget(Spending(pricing, tbl.media, expected=expected),
                                      budget_calls, day)
        return out
    hours = _online_time(load, settings, a, None)[1] / 3600
    if check_reqs:  # online calls in every mode: a batch run checks before it submits
        out.checks = Checks(len(check_reqs), sum(check_counts), check_out * len(check_reqs), {
            m.name: checks(Pricing.of(tbl, gen.model, "standard" if m.pricing == "batch"
                                      else m.pricing)) for m in MODES})
    for mode in MODES:
        pricing = Pricing.of(tbl, gen.model, mode.pricing)
        cost = _cost(mode, pricing, counts, prefix, answer, thinking, hours, day)
        if out.checks is not None and cost is not None:
            cost = plus(cost, out.checks.cost_usd[mode.name])
        note = mode.note.format(seconds=a.seconds_per_call, hours=a.batch_hours,
                                flex=f"{a.flex_minutes[0]:g}-{a.flex_minutes[1]:g}",
                                prefix=prefix.tokens)
        if mode.cached and gen.row is not None and not gen.row.explicit_cache:
            note = (f"not available: {gen.model} has no explicit cache; its implicit cache may "
                    "serve the marking scheme, a saving not counted here")
        elif mode.cached and not prefix.cacheable:
            note = (f"not available: the marking scheme is about {prefix.tokens:,} tokens, "
                    + (f"below {gen.model}'s explicit-cache minimum of {prefix.minimum:,}"
                       if prefix.minimum is not None else "and the model table has no cache "
                       f"minimum for {gen.model}") + "; implicit caching may still apply")
        out.modes.append(ModeEstimate(mode, cost, mode.time(load, settings, a, cost), note))
    out.tier = settings.tier
    out.budget = _smallest_budget(Spending(Pricing.of(tbl, gen.model, settings.tier), tbl.media,
                                           expected=expected), budget_calls, day)
    return out


def _smallest_budget(spending: Spending, sent: list[tuple[GradeRequest, int, int, int | None]],
                     day: date) -> float | None:
    """The smallest `--budget` that grades the class under the budget's rule
    (`budget.smallest_budget`): each call's expected cost and the least it may hold (its input
    bound and its smallest output cap); None without a price. `sent`: each call's request, its
    counted tokens, the reference files' tokens it also carries, and its assumed output (None:
    a grading call's, from the model table)."""
    calls = []
    for req, tokens, references, output in sent:
        out = spending.expected_output(req) if output is None else output
        usd = spending.pricing.cost(Usage(prompt_tokens=tokens + references, output_tokens=out),
                                    day)
        if usd is None:
            return None
        q = spending.quote(req, day)
        calls.append(CallCost(usd, q.usd(q.least)))
    return smallest_budget(calls)


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
        f" a criterion + {a.answer_tokens_fixed})" + ("" if e.server is not None else
        f" + ~{e.load.thinking_tokens:,} thinking tokens (assumed {e.thinking_per_call} a call "
        "at this level; Google publishes no such figure)"),
    ]
    if e.server is not None and e.price is None:
        lines.append(f"prices: local, unpriced: {e.model} runs on the school's own model server "
                     f"at {e.server}, so no cost is counted (set a price under "
                     f'[grader.models."{e.model}"] in grader.toml to count it)')
    elif e.server is not None and e.price is not None:
        lines.append(f"prices: {e.model} on the school's own model server at {e.server}: "
                     f"${e.price.input:g} input, ${e.price.output:g} output per 1M tokens, set "
                     f"in grader.toml ({e.price.source})")
    elif e.price is None:
        lines.append(f"prices: {e.model} has no price in the model table (checked {e.checked})"
                     "; costs are unknown")
    else:
        lines.append(f"prices: {e.model} on {e.day}: ${e.price.input:g} input, "
                     f"${e.price.output:g} output (incl. thinking) per 1M tokens; model table "
                     f"checked {e.checked} ({e.price.source})")
    if e.checks is not None:
        lines.append(
            f"injection check (--injection-check): {e.checks.calls} more calls, "
            f"{e.checks.input_tokens:,} input tokens ({e.counted_by.split(' (')[0]}), "
            f"~{e.checks.output_tokens:,} output tokens (assumed {screen.REPLY_TOKENS} a reply"
            " and the thinking of its level); included in every mode's cost below, at the "
            "standard price in batch mode (the checks are online calls); a text checked "
            "before is not asked again")
    lines.append(f"{'mode':<8}{'cost':>12}  time")
    for m in e.modes:
        if m.mode.cached and not e.prefix.cacheable:
            lines.append(f"{m.mode.name:<8}{'-':>12}  {m.note}")
            continue
        cost = ("unpriced" if e.server is not None else "unknown") if m.cost_usd is None \
            else f"${m.cost_usd:.4f}"
        low, high = m.time_s
        when = (f"~{duration(high)}" if low == high else
                f"up to {duration(high)}" if low == 0 else f"{duration(low)} to {duration(high)}")
        lines.append(f"{m.mode.name:<8}{cost:>12}  {when} ({m.note})")
    if e.budget is not None and e.sent:
        tier = "" if e.tier == "standard" else f" at the {e.tier} tier"
        lines.append(
            f"budget: `grade run --budget {usd_up(e.budget)}` is the "
            f"smallest that grades all {e.sent} students sent{tier}, if their calls cost what is "
            "assumed above: their cost, plus room for the last call's worst case (its input "
            "bounded by its bytes, its output cap cut to half again the output assumed)")
    lines.append("not included: re-asks after invalid output, retries after a thinking cut-off, "
                 "and students already graded in the store (reused at no cost)")
    lines += [f"note: {n}" for n in e.notices]
    return "\n".join(lines)
