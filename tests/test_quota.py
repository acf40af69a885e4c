"""The client-side quota (`grader.online.ratelimit.Quota`), pure policy on a virtual clock: it
fills the windows it knows, learns a window from a 429, halves what it keeps in flight on a 429
(once a wave) and holds for the server's delay, and grows back one request per reply."""

from __future__ import annotations

import asyncio

import pytest

from grader.online.ratelimit import MAX_IN_FLIGHT, Pace, Quota, QuotaHint, quota_bound

from _virtual_clock import run_virtual


def test_the_ceiling_bounds_what_is_in_flight_and_replies_keep_it_full() -> None:
    async def go() -> None:
        quota = Quota(ceiling=4)

        async def one() -> None:
            async with quota.acquire():
                await asyncio.sleep(1.0)

        await asyncio.gather(*(one() for _ in range(10)))
        assert quota.stats.peak_in_flight == 4 and quota.stats.sent == 10
        assert quota.limit == 4  # replies grew it back to the ceiling, never past it

    assert run_virtual(go()) == pytest.approx(3.0, abs=0.01)  # waves of 4, 4, 2


def test_a_429_halves_the_in_flight_limit_once_a_wave_holds_and_replies_grow_it_back() -> None:
    async def go() -> None:
        quota = Quota(ceiling=16)
        loop = asyncio.get_running_loop()
        slots = []
        for _ in range(8):
            cm = quota.acquire()
            slots.append((cm, await cm.__aenter__()))
        assert quota.in_flight == 8
        # two 429s of requests sent before the cut: one cut (8 in flight → limit 4)
        slots[0][1].refused(QuotaHint("other"), retry_after=2.0)
        slots[1][1].refused(QuotaHint("other"), retry_after=2.0)
        assert quota.limit == 4 and quota.stats.cuts == 1 and quota.stats.refused == 2
        for cm, _ in slots[:2]:
            await cm.__aexit__(None, None, None)
        # held for the server's delay: the next request leaves at 2 s, not before
        t0 = loop.time()
        while quota.in_flight >= quota.limit:  # wait for room: replies come back
            cm, _ = slots.pop()
            await cm.__aexit__(None, None, None)
        async with quota.acquire():
            assert loop.time() - t0 == pytest.approx(2.0, abs=0.01)
        # the replies grew the limit back by one each (the refused did not)
        assert quota.limit > 4
        while slots:
            cm, _ = slots.pop()
            await cm.__aexit__(None, None, None)
        assert quota.in_flight == 0

    run_virtual(go())


def test_a_429_naming_a_per_minute_request_limit_is_learned_with_what_was_sent_before() -> None:
    starts: list[float] = []

    async def go() -> None:
        quota = Quota()  # no limit known
        loop = asyncio.get_running_loop()
        for _ in range(5):
            async with quota.acquire():
                starts.append(loop.time())
        async with quota.acquire() as slot:  # the 6th: the provider says 5 a minute
            slot.refused(QuotaHint("requests", 5, 60.0), retry_after=0.5)
        assert quota.rpm == 5
        for _ in range(5):  # the five sent at 0 still count: the window frees at 60 s
            async with quota.acquire():
                starts.append(loop.time())

    run_virtual(go())
    assert starts[:5] == pytest.approx([0.0] * 5, abs=0.01)
    assert starts[5] == pytest.approx(60.3, abs=0.01)  # the refused one did not count


def test_a_token_limit_is_learned_and_a_request_larger_than_it_goes_alone() -> None:
    async def go() -> None:
        quota = Quota(tpm=1000, period_s=1.0)
        loop = asyncio.get_running_loop()
        async with quota.acquire(600):
            pass
        async with quota.acquire(5000):  # larger than the limit: waits for an empty window
            assert loop.time() == pytest.approx(1.05, abs=0.01)
        async with quota.acquire(100):  # the window is full of the large one
            assert loop.time() == pytest.approx(2.1, abs=0.01)

    run_virtual(go())


def test_the_physical_bound() -> None:
    # a class that fits one window and the ceiling: one latency
    assert quota_bound(1000, 5.0, in_flight=MAX_IN_FLIGHT, rpm=3000) == 5.0
    # 1,000 at 600 a minute: two windows, the last wave one latency after the second opens
    assert quota_bound(1000, 5.0, in_flight=MAX_IN_FLIGHT, rpm=600) == 65.0
    # a cap on requests in flight: one latency a wave
    assert quota_bound(300, 5.0, in_flight=8) == 38 * 5.0
    assert quota_bound(10, 1.0, in_flight=64, tpm=1000, input_tokens=2500) == 121.0
    assert quota_bound(0, 5.0, in_flight=8) == 0.0


class _Cpu:
    """A CPU clock that advances `per_unit` seconds each time it is read (once per unit of
    work: a request sent or a reply taken in), plus `spike` once at the given read."""

    def __init__(self, per_unit: float, spike: float = 0.0, at: int = -1):
        self.t, self.per_unit, self.spike, self.at, self.reads = 0.0, per_unit, spike, at, 0

    def __call__(self) -> float:
        self.reads += 1
        self.t += self.per_unit + (self.spike if self.reads == self.at else 0.0)
        return self.t


def _paced_class(cpu: _Cpu, n: int) -> tuple[Pace, float]:
    async def go() -> Pace:
        quota = Quota()
        quota.pace = Pace(cpu=cpu)

        async def one() -> None:
            async with quota.acquire():
                await asyncio.sleep(1.0)

        await asyncio.gather(*(one() for _ in range(n)))
        return quota.pace

    pace: Pace | None = None

    async def keep() -> None:
        nonlocal pace
        pace = await go()

    wall = run_virtual(keep())
    assert pace is not None
    return pace, wall


def test_requests_leave_no_faster_than_the_loop_takes_replies_in() -> None:
    """5 ms of CPU per student (2.5 ms a request, 2.5 ms a reply): once two samples of 16
    are in (the 33rd send), the 34th leaves at once and the other 66 of 100 leave 5 ms apart,
    so replies come back no faster than they can be stored (a kill -9 finds few unread)."""
    pace, wall = _paced_class(_Cpu(0.0025), 100)
    assert pace.interval == pytest.approx(0.005)
    assert wall == pytest.approx(1.0 + 66 * 0.005, abs=0.001)


def test_a_one_off_cost_does_not_slow_the_class() -> None:
    """A first connection that costs 0.5 s of CPU lands in one sample; the least of the
    samples is the interval."""
    pace, _ = _paced_class(_Cpu(0.0025, spike=0.5, at=3), 100)
    assert pace.interval == pytest.approx(0.005)
