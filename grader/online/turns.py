"""Turns: the online run's work that can wait, one piece per pass of the event loop.

A reply that has arrived is paid for, and until it is committed a crash would buy it again.
The rest of a student's work (judging a reply and storing the grade, preparing and sending the
next student) can wait. Without turns, a burst of replies is judged and the next students are
sent in one pass of the loop (tens of milliseconds at hundreds of replies a second), and a
reply that arrives meanwhile waits for the whole pass before it is read and committed.

`Turns.take()` waits for the caller's turn: turns are given one at a time, one per pass, in the
order they were asked for. Each pass of the loop also reads the sockets that became ready and
runs the steps that do not take turns (a reply read and committed), so those wait for at most
one piece of deferred work instead of all of them. When nothing else is ready a turn costs one
pass of an idle loop (microseconds).
"""

from __future__ import annotations

import asyncio
from collections import deque


class Turns:
    """One per run, used from its event loop. `take()` returns when it is the caller's turn."""

    def __init__(self) -> None:
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._giver: asyncio.Task[None] | None = None

    async def take(self) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(fut)
        if self._giver is None or self._giver.done():
            self._giver = asyncio.create_task(self._give())
        await fut

    async def _give(self) -> None:
        while self._waiting:
            fut = self._waiting.popleft()
            if fut.done():  # its caller was cancelled: the next one's turn, in this pass
                continue
            fut.set_result(None)
            # two passes: one reads what the sockets brought in meanwhile, the next resumes the
            # tasks it woke (a reply read to the end and committed); then the next turn
            await asyncio.sleep(0)
            await asyncio.sleep(0)

    def close(self) -> None:
        """Cancel the giver (the run is over; no caller waits)."""
        if self._giver is not None:
            self._giver.cancel()
