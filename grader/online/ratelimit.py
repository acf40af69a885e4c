"""Client-side quota: requests and tokens per minute, and USD per rolling 10 minutes.

Gemini enforces quotas over sliding one-minute windows and answers 429 when a window is full.
A plain leaky bucket with burst = limit would overshoot such a window (a full burst plus the
drip), so both buckets are shaped to never admit more than the limit in any window:

- requests: strict spacing, one request every `period/rpm` seconds (plus 0.5% slack), no burst;
- tokens: a burst of a quarter of the limit, then a drip of three quarters of it per period.

Built on `aiolimiter` (maintained, loop-aware); one `Quota` per backend instance. `SpendRate`
(the spend-based limit) needs prices, so the call ledger, which knows them, holds it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from aiolimiter import AsyncLimiter

_SLACK = 1.005  # spacing margin so clock skew between us and the server never adds a request
# ...and never less than this, so network jitter cannot push a request into a short window.
_MIN_MARGIN_S = 0.05
_TOKEN_BURST_SHARE = 0.25


def estimate_tokens(chars: int) -> int:
    """Token estimate used for the tpm budget: about four characters a token."""
    return max(1, chars // 4)


class Quota:
    """Bounds requests and tokens per `period_s` (60 s by default). `None` = unbounded."""

    def __init__(self, rpm: int | None = None, tpm: int | None = None, *,
                 period_s: float = 60.0):
        if rpm is not None and rpm < 1:
            raise ValueError("rpm must be >= 1")
        if tpm is not None and tpm < 1:
            raise ValueError("tpm must be >= 1")
        self.rpm = rpm
        self.tpm = tpm
        self.period_s = period_s
        self._requests: AsyncLimiter | None = None
        if rpm is not None:
            # A burst of `b` on top of the spaced drip still fits any window, because the slack
            # leaves rpm * (1 - 1/_SLACK) requests unused per period; the burst lets a request
            # that was late (busy event loop) be made up for instead of lost.
            window = period_s + max(period_s * (_SLACK - 1), _MIN_MARGIN_S)
            spacing = window / rpm
            b = max(1, int(rpm * (1 - period_s / window)))
            self._requests = AsyncLimiter(b, b * spacing)
        self._token_burst = max(1.0, tpm * _TOKEN_BURST_SHARE) if tpm is not None else 0.0
        if tpm is not None:
            drip_per_s = tpm * (1 - _TOKEN_BURST_SHARE) / period_s
            self._tokens: AsyncLimiter | None = AsyncLimiter(
                self._token_burst, self._token_burst / drip_per_s
            )
        else:
            self._tokens = None

    @asynccontextmanager
    async def acquire(self, tokens: int = 0) -> AsyncIterator[None]:
        """Wait until one request of about `tokens` tokens fits, then run the block.

        A request bigger than the token burst waits for a full burst (it cannot be split)."""
        if self._tokens is not None and tokens > 0:
            await self._tokens.acquire(min(float(tokens), self._token_burst))
        if self._requests is not None:
            await self._requests.acquire(1)
        yield


class SpendRate:
    """At most `usd` spent per rolling `window_s` (Google's spend-based limit: $10, $50 or $200
    per 10 minutes for Tiers 1-3). A call waits until its worst case fits beside what calls
    answered in the window cost and what calls in flight may cost; `settle` books the real cost.
    Used from one event loop."""

    def __init__(self, usd: float, window_s: float = 600.0):
        if usd <= 0:
            raise ValueError("the spend limit must be above 0")
        self.limit = usd
        self.window_s = window_s
        self.reserved = 0.0
        self._spent: deque[tuple[float, float]] = deque()  # (when, usd)
        self._changed = asyncio.Event()

    def spent(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        while self._spent and self._spent[0][0] <= now - self.window_s:
            self._spent.popleft()
        return sum(usd for _, usd in self._spent)

    async def reserve(self, usd: float) -> None:
        if usd > self.limit:
            raise ValueError(f"one call may cost ${usd:.4f}, more than the whole spend limit "
                             f"of ${self.limit:g} per {self.window_s / 60:g} minutes")
        while True:
            now = time.monotonic()
            if self.spent(now) + self.reserved + usd <= self.limit:
                self.reserved += usd
                return
            changed = self._changed
            wait = self._spent[0][0] + self.window_s - now if self._spent else None
            with suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout=wait)

    def settle(self, reserved: float, actual: float) -> None:
        """The call is over: free its reservation and book what it cost (0 if it failed)."""
        self.reserved = max(0.0, self.reserved - reserved)
        if actual > 0:
            self._spent.append((time.monotonic(), actual))
        self._changed.set()
        self._changed = asyncio.Event()
