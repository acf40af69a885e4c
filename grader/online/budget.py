"""Money per run: what each call costs, the `--budget` ceiling and the spend-rate limit.

The rule (`Budget.reserve`): a call is sent only when its worst case fits in what is left of the
budget beside the worst cases of the calls in flight, so the run never spends more than its
budget, whatever the calls then cost:

    spent (settled, real costs) + held (worst cases of the calls in flight) + this call's
    worst case <= budget

A call's worst case is every input token fresh (bounded by the request's bytes, see below) and
its whole output cap used (thinking and answer share `max_output_tokens`); when its reply
arrives the hold is replaced by the real cost, from the reply's usage at the model table's price
of the day. The worst case of the configured cap (8,192 tokens: about $0.03 with the default
model) is many times what a grading call is expected to cost, so far from the ceiling calls go
out at once, and close to it the rule would starve the run of students it can pay for. So:

1. while the call fits with its own output cap, it is sent;
2. else, while other calls are in flight, it waits: each one that settles frees its hold, and
   most of it (their real cost is then known);
3. else (nothing in flight, so `spent` is all there is) it is sent with a smaller output cap,
   the largest that fits, provided that cap leaves half again the answer and thinking tokens
   the model table's `[estimate]` expects of it (`Expected`, `SHRUNK_CAP_ROOM`). The smaller
   cap is part of the request's ledger key (a different cap is a different request); a reply
   cut at it skips the student (reason `budget`) rather than flagging them; a retry after a
   thinking cut-off is never sent with a smaller cap (it asked for more room);
4. else the money is really gone for this call: `BudgetExceeded` (its student is skipped with
   reason `budget`). That is raised at once when even the smallest cap would not fit beside what
   is already spent, since settling calls can only add to it.

Step 3 is why a budget never skips a student it could pay for at the expected cost: a student is
skipped only when nothing is in flight and the budget left is below the least its call may hold.
Hence the smallest budget that grades a class (`smallest_budget`, printed by `grade estimate`):
the expected cost of every call, plus, for the call that happens to go last, the difference
between the least it may hold and its expected cost.

The input bound is deliberately loose: a token covers at least one byte of UTF-8, so a request's
text cannot cost more tokens than its bytes (plus a little per turn); an image counts what Gemini 3
bills by default, a PDF as many pages as intake allows.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date

from grader.config.models import EstimateAssumptions, Media, Pricing, today
from grader.errors import BudgetExceeded, ConfigError
from grader.intake.limits import DEFAULT_LIMITS
from grader.online.ratelimit import SpendRate
from grader.prompting.request import GradeRequest, Part, Usage

TURN_OVERHEAD_TOKENS = 64  # role markers and framing per content turn, generously
# A call sent with a smaller output cap (rule 3) keeps at least this many times the answer and
# thinking tokens it is expected to produce.
SHRUNK_CAP_ROOM = 1.5
MIN_SHRUNK_CAP = 64  # and never below the smallest --max-output-tokens
_PDF_PAGE = re.compile(rb"/Type\s*/Page(?!s)")


@dataclass(frozen=True)
class Expected:
    """What a grading call is expected to write: the model table's `[estimate]` assumptions
    (answer tokens per criterion plus a fixed part, thinking tokens per level)."""

    answer_tokens: int
    thinking_tokens: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, a: EstimateAssumptions, criteria: int) -> Expected:
        return cls(a.answer_tokens_per_criterion * criteria + a.answer_tokens_fixed,
                   {level: n for level, n in a.thinking_tokens.items()})

    def thinking(self, level: str | None) -> int:
        return self.thinking_tokens.get(level, 0) if level else 0

    def output(self, level: str | None) -> int:
        """Answer and thinking tokens at this thinking level."""
        return self.answer_tokens + self.thinking(level)

    def least_cap(self, req: GradeRequest) -> int:
        """The smallest output cap the request may be sent with (rule 3), at most its own."""
        return min(req.max_output_tokens, max(MIN_SHRUNK_CAP, math.ceil(
            SHRUNK_CAP_ROOM * self.output(req.thinking_level))))


@dataclass(frozen=True)
class Quote:
    """What one call may cost: `usd(cap)` is its worst case with that output cap (the input at
    its bound, every output token billed); `least` the smallest cap it may be sent with."""

    input_usd: float
    output_usd: float  # per output token
    cap: int
    least: int

    def usd(self, cap: int) -> float:
        return self.input_usd + cap * self.output_usd

    def largest_cap(self, usd: float) -> int:
        """The largest output cap whose worst case fits in `usd` (at most `cap`)."""
        if self.output_usd <= 0:
            return self.cap
        cap = min(self.cap, math.floor((usd - self.input_usd) / self.output_usd) + 1)
        while cap > 0 and self.usd(cap) > usd:  # the division may round either way
            cap -= 1
        return cap


@dataclass(frozen=True)
class CallCost:
    """One call's money: what it is expected to cost, and the least the budget must hold for it
    (its worst case with the smallest output cap it may be sent with)."""

    expected_usd: float
    least_usd: float


def usd_up(usd: float) -> str:
    """A budget to pass to --budget: rounded up to a hundredth of a cent."""
    return f"{math.ceil(usd * 1e4 - 1e-6) / 1e4:.4f}"


def smallest_budget(calls: Iterable[CallCost]) -> float:
    """The smallest budget that sends every one of `calls` under `Budget`'s rule, if each costs
    what it is expected to: all the expected costs, plus the largest gap between the least a
    call may hold and its expected cost (that call may be the last one, sent with nothing else
    in flight). 0 for no calls."""
    calls = list(calls)
    if not calls:
        return 0.0
    return (sum(c.expected_usd for c in calls)
            + max(0.0, max(c.least_usd - c.expected_usd for c in calls)))


class Budget:
    """A ceiling in USD for one run; used from one event loop. See the module docstring for the
    rule: spent + held never exceeds `limit`."""

    def __init__(self, limit_usd: float):
        self.limit = limit_usd
        self.spent = 0.0
        self.reserved = 0.0  # the worst cases of the calls in flight
        self.inflight = 0
        self._changed = asyncio.Event()

    async def reserve(self, q: Quote) -> tuple[int, float]:
        """Hold a call's worst case: (the output cap it may be sent with, the USD held). Waits
        while it fits only with a smaller cap and other calls are in flight; raises
        `BudgetExceeded` when it cannot be paid for."""
        while True:
            free = self.limit - self.spent - self.reserved
            full = q.usd(q.cap)
            if full <= free:
                return self._hold(q.cap, full)
            least = q.usd(q.least)
            if self.spent + least > self.limit:  # settling calls cannot make room for it
                raise BudgetExceeded(
                    f"the run's budget of ${self.limit:g} is spent: ${self.spent:.4f} spent and "
                    f"${self.reserved:.4f} held by calls in flight, and this call may cost up to "
                    f"${least:.4f} even with its smallest output cap ({q.least:,} tokens)",
                    fix="rerun with a larger --budget (the run's summary says how much): "
                    "grades and replies already paid for are reused, only the students not yet "
                    "graded are sent")
            if self.inflight == 0:  # all settled: send it with the largest cap that fits
                cap = q.largest_cap(free)
                return self._hold(cap, q.usd(cap))
            changed = self._changed
            await changed.wait()  # a call in flight settles, freeing (most of) its hold

    def _hold(self, cap: int, usd: float) -> tuple[int, float]:
        self.reserved += usd
        self.inflight += 1
        return cap, usd

    def pay(self, usd: float) -> None:
        """Money spent outside a call (the context cache: its creation and storage), checked
        by its payer beforehand; it counts as spent, so the calls' rule still holds."""
        self.spent += usd

    def settle(self, reserved: float, actual: float) -> None:
        self.inflight = max(0, self.inflight - 1)
        self.reserved = max(0.0, self.reserved - reserved) if self.inflight else 0.0
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


def local_tokens(req: GradeRequest, media: Media, *, references: bool = False) -> int:
    """The request's input tokens, estimated here: about four characters a token; images and
    PDF pages as Gemini 3 bills them (a PDF's pages counted in its bytes). `references`: with
    the rubric's reference files."""
    chars = len(req.system) + len(req.static_prefix)
    chars += sum(len(p.text or "") for p in req.student_parts)
    chars += sum(len(t.text) for t in req.history)
    tokens = -(-chars // 4)
    for p in (*(req.reference_parts if references else ()), *req.student_parts):
        if p.data is not None:
            pages = len(_PDF_PAGE.findall(p.data)) or 1
            tokens += (media.pdf_page_tokens * pages if p.mime_type == "application/pdf"
                       else media.image_tokens)
    return tokens


@dataclass(frozen=True)
class Hold:
    """Money set aside for one call in flight; `cap`: the output cap it may be sent with."""

    usd: float
    day: date
    cap: int


class Spending:
    """One run's prices, budget and spend-rate limit, as the call ledger uses them. `expected`:
    what a call is expected to write (without it, a call is never sent with a smaller cap)."""

    def __init__(self, pricing: Pricing, media: Media, *, budget: float | None = None,
                 per_10min: float | None = None, expected: Expected | None = None):
        self.pricing = pricing
        self.media = media
        self.expected = expected
        self.budget = Budget(budget) if budget is not None else None
        self.rate = SpendRate(per_10min) if per_10min is not None else None
        self.cost = 0.0  # what this run's answered calls cost
        self.unpriced = 0  # answered calls the table has no price for
        self.shrunk = 0  # calls sent with a smaller output cap to fit the budget
        self.refused: list[CallCost] = []  # the calls the budget could not pay for

    def quote(self, req: GradeRequest, day: date, *, shrink: bool = True) -> Quote:
        """The call's worst case per output cap, and the least cap it may be sent with."""
        tokens = input_bound(req, self.media)
        base = self.pricing.worst_case(tokens, 0, day)
        full = self.pricing.worst_case(tokens, req.max_output_tokens, day)
        cap = req.max_output_tokens
        least = self.expected.least_cap(req) if shrink and self.expected is not None else cap
        if base is None or full is None:
            return Quote(math.inf, 0.0, cap, cap)
        return Quote(base, (full - base) / cap, cap, least)

    def expected_output(self, req: GradeRequest) -> int:
        """Answer and thinking tokens the call is expected to write (0: no assumption)."""
        return self.expected.output(req.thinking_level) if self.expected is not None else 0

    def expected_cost(self, req: GradeRequest, day: date) -> float:
        """What the call is expected to cost: its input estimated here (`local_tokens`), its
        output as the model table's `[estimate]` assumes."""
        usd = self.pricing.cost(Usage(prompt_tokens=local_tokens(req, self.media, references=True),
                                      output_tokens=self.expected_output(req)), day)
        return 0.0 if usd is None else usd

    def needed(self) -> float | None:
        """The budget a rerun needs to send every call this run could not pay for (None: none
        was refused), if they cost what they are expected to (`smallest_budget`)."""
        return smallest_budget(self.refused) if self.refused else None

    def cut_short(self, req: GradeRequest, cap: int) -> BudgetExceeded:
        """The error for a call sent with a smaller cap (`cap`) whose reply was cut at it: its
        student is skipped, and the budget a rerun needs counts its whole worst case."""
        day = today()
        q = self.quote(req, day, shrink=False)
        self.refused.append(CallCost(self.expected_cost(req, day), q.usd(q.cap)))
        return BudgetExceeded(
            f"the reply was cut at the smaller output cap the budget left room for ({cap:,} "
            f"tokens instead of {req.max_output_tokens:,}); it is kept in the store, not graded",
            fix="rerun with a larger --budget (the run's summary says how much)")

    async def reserve(self, req: GradeRequest, *, shrink: bool = True) -> Hold | None:
        """Before a call: set its worst case aside (waits, or raises BudgetExceeded). `shrink`:
        the call may be sent with a smaller output cap (`Hold.cap`) when only that fits."""
        if self.budget is None and self.rate is None:
            return None
        day = today()
        q = self.quote(req, day, shrink=shrink)
        cap, usd = q.cap, q.usd(q.cap)
        if self.budget is not None:
            try:
                cap, usd = await self.budget.reserve(q)
            except BudgetExceeded:
                self.refused.append(CallCost(self.expected_cost(req, day), q.usd(q.least)))
                raise
            self.shrunk += cap < q.cap
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
        return Hold(usd, day, cap)

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
