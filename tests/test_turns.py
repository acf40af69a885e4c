"""`online.turns.Turns`: the work that can wait goes one piece per pass of the event loop, in
the order it asked, and what a piece sets going (a reply read, then its task woken: two passes)
is done before the next piece starts."""

from __future__ import annotations

import asyncio

from grader.online.turns import Turns


def test_one_piece_at_a_time_and_what_came_in_first() -> None:
    seen: list[str] = []

    async def piece(turns: Turns, name: str) -> None:
        await turns.take()
        seen.append(name)
        loop = asyncio.get_running_loop()

        def read() -> None:  # as a socket read does: its task is woken in the next pass
            seen.append(f"{name} read")
            loop.call_soon(seen.append, f"{name} committed")

        loop.call_soon(read)

    async def main() -> None:
        turns = Turns()
        await asyncio.gather(*(piece(turns, n) for n in "ABC"))

    asyncio.run(main())
    assert seen == ["A", "A read", "A committed", "B", "B read", "B committed",
                    "C", "C read", "C committed"]


def test_a_cancelled_waiter_gives_its_turn_to_the_next() -> None:
    seen: list[str] = []

    async def main() -> None:
        turns = Turns()

        async def piece(name: str) -> None:
            await turns.take()
            seen.append(name)

        tasks = [asyncio.create_task(piece(n)) for n in "ABC"]
        await asyncio.sleep(0)  # all three are waiting
        tasks[1].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        turns.close()

    asyncio.run(main())
    assert seen == ["A", "C"]
