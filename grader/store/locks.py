"""One grading run at a time per store: an advisory lock file next to the SQLite file.

`flock` is released by the kernel when the holder dies, even by SIGKILL, so a crashed run never
leaves the store locked. The file holds the holder's pid, command and start time, so a second
run can say who it is waiting for.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from grader.errors import StoreError
from grader.store.core import now


@dataclass(frozen=True)
class Holder:
    pid: int | None
    command: str
    since: str

    def describe(self) -> str:
        who = f"pid {self.pid}" if self.pid else "another process"
        return f"{self.command or 'grade'} ({who}, since {self.since or '?'})"


class StoreBusyError(StoreError):
    """Another run holds the store."""


class RunLock:
    def __init__(self, db_path: Path | str):
        self.path = Path(f"{db_path}.lock")
        self._fd: int | None = None

    def holder(self) -> Holder | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or not data:
            return None
        return Holder(data.get("pid"), str(data.get("command", "")), str(data.get("since", "")))

    def held(self) -> bool:
        """Whether a live process holds the lock (probed without taking it)."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops a shared lock we may have taken
        return False

    def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        command = " ".join(["grade", *sys.argv[1:3]]) if sys.argv else "grade"
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "command": command,
                                 "since": now()}).encode())
        self._fd = fd
        return True

    async def acquire(self, *, wait: bool,
                      on_wait: Callable[[Holder | None], None] | None = None,
                      poll_s: float = 0.25) -> None:
        """Take the lock; if another run holds it, wait for it (polling, so Ctrl-C and task
        cancellation work) or fail saying who holds it."""
        if self.try_acquire():
            return
        holder = self.holder()
        if not wait:
            raise StoreBusyError(
                f"the grade store is in use by {holder.describe() if holder else 'another run'}",
                path=self.path.with_suffix(""),
                fix="wait for that run to finish (or stop it), then run the command again")
        if on_wait is not None:
            on_wait(holder)
        while not self.try_acquire():
            await asyncio.sleep(poll_s)

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None
