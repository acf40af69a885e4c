"""Client-side quota: send as much as the provider's windows allow, and no more.

What binds a class is the provider's quota and one model latency, not a number of connections.
Gemini counts requests and tokens per minute over sliding windows and spending over a rolling
10 minutes, and answers a full window with 429 RESOURCE_EXHAUSTED and a RetryInfo delay. So by
default grader keeps as many requests in flight as those windows allow (at most `MAX_IN_FLIGHT`
connections, a safety ceiling), and adapts to what the service says:

- `Window`: a log of what the provider admitted in the last period, sliding as the provider's
  own window slides; a request waits only until it fits. Limits come from settings (`rpm`,
  `tpm`) or are learned from a 429 whose QuotaFailure names a per-minute limit (`QuotaHint`).
- AIMD on the requests in flight: a 429 halves the in-flight limit (once per wave: requests sent
  before the last cut do not cut it again) and holds new requests for the server's RetryInfo
  delay; each request answered raises the limit by one, back up to the ceiling.
- `concurrency`, when set, is the teacher's cap: the ceiling.
- `Pace`: requests leave no faster than this process can take their replies in. The provider
  answers a request one latency after it left, so requests sent faster than the event loop
  spends CPU on a student come back faster than it can store them; a kill -9 then loses replies
  already paid for (unread in the socket buffers) and the rerun pays for them again. Spacing
  requests by the CPU the loop spends per student costs no wall time when the loop is the
  bottleneck anyway, and about that CPU times N when it is not.

One `Quota` per backend instance; it works on whichever event loop calls it (`loop.time()`).
`SpendRate` (the spend-based limit) needs prices, so the call ledger, which knows them, holds it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Literal

# The most requests a run keeps in flight when `concurrency` is not set: a bound on sockets and
# on prepared requests held in memory, far above what one model latency and a quota window need
# for a class (a class of 1,000 at 5 s a call needs 1,000 only for the first five seconds).
MAX_IN_FLIGHT = 1024
_SLACK = 1.005  # a window entry is kept this much longer than the period, so clock skew...
_MIN_MARGIN_S = 0.05  # ...and network jitter never let us send into the provider's full window
_NO_DELAY_HOLD_S = 1.0  # a 429 without RetryInfo holds new requests this long


def estimate_tokens(chars: int) -> int:
    """Token estimate used for the tpm budget: about four characters a token."""
    return max(1, chars // 4)


def quota_bound(calls: int, seconds_per_call: float, *, in_flight: int, rpm: int | None = None,
                tpm: int | None = None, input_tokens: int = 0, period_s: float = 60.0) -> float:
    """The least wall time `calls` requests can take: one latency per wave of `in_flight`,
    and a window's worth of requests (or tokens) per period, the last wave still taking one
    latency. The physical bound any client meets; estimates and benchmarks measure by it."""
    if calls <= 0:
        return 0.0
    t = math.ceil(calls / max(1, in_flight)) * seconds_per_call
    if rpm:
        t = max(t, (math.ceil(calls / rpm) - 1) * period_s + seconds_per_call)
    if tpm and input_tokens:
        t = max(t, (math.ceil(input_tokens / tpm) - 1) * period_s + seconds_per_call)
    return t


@dataclass(frozen=True)
class QuotaHint:
    """What a 429 said about the limit it hit (google.rpc.QuotaFailure): its kind, its value
    and its period (None when the reply did not say)."""

    kind: Literal["requests", "tokens", "spend", "other"]
    limit: float | None = None
    period_s: float | None = None


class Window:
    """At most `limit` units (requests or tokens) admitted in any `period_s`; None = no limit.
    An entry leaves the window a period (and a little more: `_SLACK`, `_MIN_MARGIN_S`) after
    its request was answered: later than the provider's entry leaves, never earlier."""

    def __init__(self, limit: float | None, period_s: float = 60.0):
        if limit is not None and limit < 1:
            raise ValueError("a quota limit must be >= 1")
        self.limit = limit
        self.span = period_s + max(period_s * (_SLACK - 1), _MIN_MARGIN_S)
        self._log: deque[list[float]] = deque()  # [when, amount]; amount 0 once refused
        self.total = 0.0
        self.peak = 0.0  # the most this window ever held

    def _expire(self, now: float) -> None:
        while self._log and self._log[0][0] <= now - self.span:
            self.total -= self._log.popleft()[1]

    def wait_s(self, now: float, amount: float) -> float:
        """Seconds until `amount` more fits (0: now). Something larger than the whole limit
        goes alone, into an empty window (the provider then answers for it)."""
        self._expire(now)
        if self.limit is None or self.total + amount <= self.limit or not self.total:
            return 0.0
        left = self.total
        for when, weight in self._log:
            if when == math.inf:
                return math.inf  # a request still unanswered: wait for its reply
            left -= weight
            if left + amount <= self.limit or not left:
                return max(0.0, when + self.span - now)
        return 0.0  # pragma: no cover (the last entry always empties the window)

    def add(self, amount: float) -> list[float]:
        """Log a request leaving now. Until it is answered its time is unknown to us (a busy
        loop may write it out seconds after it was admitted, and the provider counts it when
        it arrives), so it does not leave the window before `settle` dates it."""
        entry = [math.inf, float(amount)]
        if self.limit is not None or amount:
            self._log.append(entry)
            self.total += amount
            self.peak = max(self.peak, self.total)
        return entry

    def settle(self, entry: list[float], now: float) -> None:
        """The request was answered: the provider counted it no later than now."""
        entry[0] = min(entry[0], now)

    def remove(self, entry: list[float], now: float) -> None:
        """The provider refused the request: it does not count in its window."""
        self.total -= entry[1]
        entry[1] = 0.0
        self.settle(entry, now)

    def learn(self, limit: float) -> None:
        """A 429 named this window's limit: never send above it again."""
        self.limit = limit if self.limit is None else min(self.limit, limit)


@dataclass
class QuotaStats:
    """What the quota did in a run: requests sent and refused (429), the most in flight, the
    in-flight limit's cuts, and its trace: (loop time, in flight, limit) at every change."""

    sent: int = 0
    refused: int = 0
    cuts: int = 0
    peak_in_flight: int = 0
    trace: list[tuple[float, int, float]] = field(default_factory=list)

    TRACE_MAX = 10_000  # points kept (a long run keeps its first ones)


class Pace:
    """Requests leave at most one per `interval`: the CPU this thread spends per student (one
    request sent and its reply taken in), measured as the run goes. Each sample covers
    `SAMPLE` sends and replies; the interval is the least of the last `KEEP` samples, so a
    one-off cost (the first connection, a cache upload) does not slow the class down. Until two
    samples exist requests are not spaced (a class's first few replies are at risk)."""

    SAMPLE = 16
    KEEP = 4

    def __init__(self, cpu: Callable[[], float] = time.thread_time):
        self._cpu = cpu
        self.interval = 0.0
        self._next = 0.0  # loop time before which the next request does not leave
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._units = 0  # requests sent and replies taken in
        self._mark: tuple[float, int] | None = None  # (CPU, units) at the last sample
        self._samples: deque[float] = deque(maxlen=self.KEEP)

    async def turn(self) -> None:
        """Wait for this request's turn to leave (first come, first served)."""
        loop = asyncio.get_running_loop()
        if self._lock is None or self._loop is not loop:
            self._lock, self._loop, self._next = asyncio.Lock(), loop, 0.0
        async with self._lock:
            now = loop.time()
            if self._next > now:
                await asyncio.sleep(self._next - now)
            # by the schedule, not by when the sleep ended: a busy loop wakes late, and that
            # lateness must not add up request after request
            self._next = max(self._next, now) + self.interval
        self.count()

    def count(self) -> None:
        """One more unit of work (a request sent or a reply taken in)."""
        self._units += 1
        cpu = self._cpu()
        if self._mark is None:
            self._mark = (cpu, self._units)
            return
        cpu0, units0 = self._mark
        if self._units - units0 >= self.SAMPLE:
            self._samples.append(2 * (cpu - cpu0) / (self._units - units0))
            self._mark = (cpu, self._units)
            if len(self._samples) >= 2:
                self.interval = min(self._samples)


class Slot:
    """One request admitted by a `Quota`: `refused()` when the provider answered 429."""

    def __init__(self, quota: Quota, wave: int, entries: tuple[list[float], list[float]]):
        self.quota, self.wave, self.entries = quota, wave, entries
        self.refused_by: QuotaHint | None = None

    def refused(self, hint: QuotaHint | None, retry_after: float | None) -> None:
        self.refused_by = hint or QuotaHint("other")
        self.quota._refused(self, self.refused_by, retry_after)


class Quota:
    """Requests and tokens per `period_s` (60 s by default; None = not known until a 429 says),
    and the adaptive in-flight limit (see the module docstring), at most `ceiling`."""

    def __init__(self, rpm: int | None = None, tpm: int | None = None, *,
                 period_s: float = 60.0, ceiling: int = MAX_IN_FLIGHT):
        if rpm is not None and rpm < 1:
            raise ValueError("rpm must be >= 1")
        if tpm is not None and tpm < 1:
            raise ValueError("tpm must be >= 1")
        if ceiling < 1:
            raise ValueError("the in-flight ceiling must be >= 1")
        self.requests = Window(rpm, period_s)
        self.tokens = Window(tpm, period_s)
        self.period_s = period_s
        self.ceiling = ceiling
        self.limit = float(ceiling)  # requests in flight allowed now
        self.in_flight = 0
        self.hold_until = 0.0  # no request leaves before this (a 429's RetryInfo)
        self._wave = 0  # how many times the limit was cut: the wave a request is sent in
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.pace = Pace()
        self.stats = QuotaStats()

    @property
    def rpm(self) -> float | None:
        return self.requests.limit

    @property
    def tpm(self) -> float | None:
        return self.tokens.limit

    @asynccontextmanager
    async def acquire(self, tokens: int = 0) -> AsyncIterator[Slot]:
        """Wait until one request of about `tokens` tokens may leave, then run the block; a
        block that ends normally (the request answered) raises the in-flight limit by one."""
        slot = await self._admit(max(0, tokens))
        try:
            await self.pace.turn()
            yield slot
        except BaseException:
            self._release(slot, grew=False)
            raise
        self._release(slot, grew=slot.refused_by is None)

    async def _admit(self, tokens: int) -> Slot:
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            wait = max(self.hold_until - now, self.requests.wait_s(now, 1),
                       self.tokens.wait_s(now, tokens))
            if wait <= 0 and self.in_flight < self.limit:
                break
            await self._sleep(loop, wait if 0 < wait < math.inf else None)
        self.in_flight += 1
        self.stats.sent += 1
        self.stats.peak_in_flight = max(self.stats.peak_in_flight, self.in_flight)
        self._trace(now)
        return Slot(self, self._wave, (self.requests.add(1), self.tokens.add(tokens)))

    async def _sleep(self, loop: asyncio.AbstractEventLoop, timeout: float | None) -> None:
        """Until something changes (a request ends, a 429 arrives) or `timeout` passes."""
        waiter: asyncio.Future[None] = loop.create_future()
        if len(self._waiters) > 4 * self.ceiling:  # those that timed out, left behind
            self._waiters = deque(w for w in self._waiters if not w.done())
        self._waiters.append(waiter)
        try:
            with suppress(TimeoutError):
                await asyncio.wait_for(waiter, timeout)
        finally:
            if not waiter.done():
                waiter.cancel()

    def _wake(self, n: int) -> None:
        """Wake the `n` longest waiting requests (first come, first served): one per free
        place, so a thousand waiting requests are not all woken by each reply."""
        while n > 0 and self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.get_loop().call_soon_threadsafe(_settle, w)
                n -= 1

    def _release(self, slot: Slot, *, grew: bool) -> None:
        now = _now()
        self.requests.settle(slot.entries[0], now)
        self.tokens.settle(slot.entries[1], now)
        self.in_flight -= 1
        self.pace.count()
        if grew and self.limit < self.ceiling:
            self.limit = min(float(self.ceiling), self.limit + 1)
        self._trace(now)
        self._wake(max(1, int(self.limit) - self.in_flight))

    def _refused(self, slot: Slot, hint: QuotaHint, retry_after: float | None) -> None:
        now = _now()
        self.stats.refused += 1
        self.requests.remove(slot.entries[0], now)
        self.tokens.remove(slot.entries[1], now)
        per_minute = hint.period_s is not None and abs(hint.period_s - self.period_s) < 1
        if hint.limit and per_minute and hint.kind in ("requests", "tokens"):
            (self.requests if hint.kind == "requests" else self.tokens).learn(hint.limit)
        self.hold_until = max(self.hold_until, now + (
            retry_after if retry_after is not None else _NO_DELAY_HOLD_S))
        if slot.wave == self._wave:  # sent under the current limit: cut it, once a wave
            self.limit = max(1.0, min(self.limit, float(self.in_flight)) / 2)
            self._wave += 1
            self.stats.cuts += 1
        self._trace(now)  # nothing can leave sooner now: no one is woken

    def _trace(self, now: float) -> None:
        if len(self.stats.trace) < QuotaStats.TRACE_MAX:
            self.stats.trace.append((now, self.in_flight, self.limit))


def _settle(w: asyncio.Future[None]) -> None:
    if not w.done():
        w.set_result(None)


def _now() -> float:
    """The running loop's clock (the clock `acquire` waits on), else the monotonic clock."""
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()


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
