"""Bounds on the work a piece of code does, for tests that must not depend on a quiet machine:
bytes it read, memory it allocated at its peak, and audit events (folders listed, files opened)
it raised. Each is the same number however busy the machine is, unlike a duration.

    with bytes_read() as read:
        extract(sub)
    assert read.total < 1 * MB
"""

from __future__ import annotations

import sys
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Measured:
    total: int = 0
    events: list[tuple[Any, ...]] = field(default_factory=list)


def _rchar() -> int:
    """Bytes this process has read through read(2) and friends (Linux /proc/self/io)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise RuntimeError("/proc/self/io has no rchar line")


@contextmanager
def bytes_read() -> Iterator[Measured]:
    """Bytes this process read inside the block (files, pipes and sockets alike)."""
    m = Measured()
    start = _rchar()
    try:
        yield m
    finally:
        m.total = _rchar() - start


@contextmanager
def peak_allocated() -> Iterator[Measured]:
    """The peak of Python memory allocated inside the block, above what was held before it."""
    m = Measured()
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base, _ = tracemalloc.get_traced_memory()
    try:
        yield m
    finally:
        _, peak = tracemalloc.get_traced_memory()
        m.total = peak - base
        if not was_tracing:
            tracemalloc.stop()


_recording: list[tuple[str, list[tuple[Any, ...]]]] = []


def _hook(event: str, args: tuple[Any, ...]) -> None:
    for name, sink in _recording:
        if event == name:
            sink.append(args)


sys.addaudithook(_hook)  # audit hooks cannot be removed: this one records only when asked


@contextmanager
def audit_events(name: str) -> Iterator[Measured]:
    """The audit events `name` (e.g. "os.scandir", "open") raised inside the block, with their
    arguments; `total` is how many."""
    m = Measured()
    entry = (name, m.events)
    _recording.append(entry)
    try:
        yield m
    finally:
        _recording.remove(entry)
        m.total = len(m.events)
