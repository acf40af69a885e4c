"""Money per run: what each call costs, the `--budget` ceiling and the spend-rate limit.

Every call reserves its worst case before it is sent (every input token fresh and the whole
output cap used: thinking and answer share `max_output_tokens`) and settles to its real cost,
computed from the reply's usage at the model table's price of the day, when the reply arrives.
Reservations are taken before the request leaves, so the budget holds with any number of
requests in flight: spent + reserved never exceeds it. A call that cannot fit waits while other
calls are in flight (their settlement frees money) and otherwise raises `BudgetExceeded`.

The input bound is deliberately loose: a token covers at least one byte of UTF-8, so a request's
text cannot cost more tokens than its bytes (plus a little per turn); an image counts what Gemini 3
bills by default, a PDF as many pages as intake allows.
"""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass
from datetime import date

from grader.config.models import Media, Pricing, today
from grader.errors import BudgetExceeded, ConfigError
from grader.intake.limits import DEFAULT_LIMITS
from grader.online.ratelimit import SpendRate
from grader.prompting.request import GradeRequest, Part, Usage

TURN_OVERHEAD_TOKENS = 64  # role markers and framing per content turn, generously


class Budget:
    """A ceiling in USD for one run; used from one event loop."""

    def __init__(self, limit_usd: float):
        self.limit = limit_usd
        self.spent = 0.0
        self.reserved = 0.0
        self._changed = asyncio.Event()

    async def reserve(self, usd: float) -> None:
        while True:
            if self.spent + self.reserved + usd <= self.limit:
                self.reserved += usd
                return
            if self.reserved <= 0 or self.spent + usd > self.limit:
                raise BudgetExceeded(
                    f"the run's budget of ${self.limit:g} is reached: ${self.spent:.4f} spent, "
                    f"and this call could cost up to ${usd:.4f}",
                    fix="rerun with a larger --budget: grades and replies already paid for are "
                    "reused, only the students not yet graded are sent")
            changed = self._changed
            await changed.wait()  # a call in flight settles, freeing part of its reservation

    def settle(self, reserved: float, actual: float) -> None:
        self.reserved = max(0.0, self.reserved - reserved)
        self.spent += actual
        self._changed.set()
        self._changed = asyncio.Event()


def static_bound(req: GradeRequest, media: Media | None = None) -> int:
    """The part of `input_bound` every request of a run shares: system, rubric prefix, the
    rubric's reference files, and the response schema (in case it is billed as input)."""
    return (len(req.system.encode("utf-8", "surrogatepass"))
            + len(req.static_prefix.encode("utf-8", "surrogatepass"))
            + len(json.dumps(req.response_schema).encode())
            + sum(_media_bound(p, media) for p in req.reference_parts if media is not None))


def _media_bound(p: Part, media: Media) -> int:
    return (media.pdf_page_tokens * DEFAULT_LIMITS.pdf_max_pages
            if p.mime_type == "application/pdf" else media.image_tokens)


def input_bound(req: GradeRequest, media: Media, static: int | None = None) -> int:
    """Tokens the request's input cannot exceed (see the module docstring). `static`: the
    request's `static_bound`, when already known."""
    texts = [*(t.text for t in req.history),
             *(p.text for p in req.student_parts if p.text is not None)]
    tokens = static_bound(req, media) if static is None else static
    tokens += sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
    tokens += TURN_OVERHEAD_TOKENS * (2 + len(req.history))
    tokens += sum(_media_bound(p, media) for p in req.student_parts if p.data is not None)
    return tokens


@dataclass(frozen=True)
class Hold:
    """Money set aside for one call in flight."""

    usd: float
    day: date


class Spending:
    """One run's prices, budget and spend-rate limit, as the call ledger uses them."""

    def __init__(self, pricing: Pricing, media: Media, *, budget: float | None = None,
                 per_10min: float | None = None):
        self.pricing = pricing
        self.media = media
        self.budget = Budget(budget) if budget is not None else None
        self.rate = SpendRate(per_10min) if per_10min is not None else None
        self.cost = 0.0  # what this run's answered calls cost
        self.unpriced = 0  # answered calls the table has no price for

    def worst_case(self, req: GradeRequest, day: date) -> float:
        usd = self.pricing.worst_case(input_bound(req, self.media), req.max_output_tokens, day)
        return math.inf if usd is None else usd

    async def reserve(self, req: GradeRequest) -> Hold | None:
        """Before a call: set its worst case aside (waits, or raises BudgetExceeded)."""
        if self.budget is None and self.rate is None:
            return None
        day = today()
        usd = self.worst_case(req, day)
        if self.budget is not None:
            await self.budget.reserve(usd)
        if self.rate is not None:
            try:
                await self.rate.reserve(usd)
            except BaseException as e:
                if self.budget is not None:
                    self.budget.settle(usd, 0.0)
                if isinstance(e, ValueError):
                    raise ConfigError(str(e), fix="raise spend_per_10min in grader.toml, or "
                                      "lower --max-output-tokens (a call's worst case counts "
                                      "the whole output cap)") from None
                raise
        return Hold(usd, day)

    def settle(self, hold: Hold | None, usage: Usage | None) -> float | None:
        """After a call: its real cost (None when unpriced; a failed call, `usage` None, is
        booked as free), and the reservation given back."""
        day = hold.day if hold is not None else today()
        actual = self.pricing.cost(usage, day) if usage is not None else 0.0
        if usage is not None:
            if actual is None:
                self.unpriced += 1
            else:
                self.cost += actual
        if hold is not None:
            if self.budget is not None:
                self.budget.settle(hold.usd, actual or 0.0)
            if self.rate is not None:
                self.rate.settle(hold.usd, actual or 0.0)
        return actual
