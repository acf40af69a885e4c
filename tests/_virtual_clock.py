"""An asyncio event loop on a virtual clock, for code that waits on the loop's clock (quotas,
backoff): `loop.time()` starts at 0, ticks a nanosecond per loop iteration, and when every task
waits for a timer it moves straight to that timer. So "how long did it wait" is a repeatable
number, whatever else the machine is doing, and a test of a one-second wait takes no second.

    assert run_virtual(some_coroutine()) == pytest.approx(1.0)   # seconds of virtual time

Only for code that does no real I/O: with nothing ready and no timer pending, the loop would
wait for ever, so it raises instead.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any

_TICK = 1e-9  # seconds a loop iteration takes on the virtual clock


class _Selector(selectors.DefaultSelector):
    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualClockLoop | None = None

    def select(self, timeout: float | None = None) -> list[Any]:
        ready = super().select(0)  # the loop's own wake-up pipe still works
        if timeout is None and not ready:
            raise RuntimeError("virtual clock: every task waits and no timer is pending "
                               "(the code under test waits on real I/O)")
        assert self.loop is not None
        # Like a real clock, it ticks at least once a loop iteration, so code that re-arms a
        # timer for "now plus a rounding error" makes progress instead of spinning.
        self.loop.now += _TICK if ready or not timeout else timeout
        return ready


class VirtualClockLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        selector = _Selector()
        super().__init__(selector)
        selector.loop = self
        self.now = 0.0

    def time(self) -> float:
        return self.now


def run_virtual(main: Coroutine[Any, Any, Any]) -> float:
    """Run `main` to completion on a fresh virtual-clock loop; returns the virtual seconds it
    took (its result is discarded: assert inside it)."""
    loop = VirtualClockLoop()
    try:
        loop.run_until_complete(main)
        return loop.time()
    finally:
        loop.close()
