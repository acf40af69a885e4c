"""What a run killed halfway may have left on the service: a cache or file whose row was
written (state `creating` or `uploading`) but whose creation was never recorded. It may or may
not exist; the only way to find it is its display name, which the row holds."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol


class _Listed(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def display_name(self) -> str | None: ...


class Strays:
    """Deletes, by display name, what the service holds of half-made rows: everything is
    listed once, when the first such row is met, so a run with none lists nothing."""

    def __init__(self, list_all: Callable[[], Awaitable[Sequence[_Listed]]],
                 delete: Callable[[str], Awaitable[bool]]):
        self._list, self._delete = list_all, delete
        self._by_display: dict[str, str] | None = None

    async def delete(self, display_name: str) -> None:
        if self._by_display is None:
            self._by_display = {x.display_name or "": x.name for x in await self._list()}
        name = self._by_display.get(display_name)
        if name is not None:
            await self._delete(name)
