"""The client-side quota (`grader.online.ratelimit.Quota`), pure policy on a virtual clock: it
fills the windows it knows, learns a window from a 429, halves what it keeps in flight on a 429
(once a wave) and holds for the server's delay, and grows back one request per reply."""

from __future__ import annotations

import asyncio

import pytest

from grader.online.ratelimit import MAX_IN_FLIGHT, Quota, QuotaHint, quota_bound

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
