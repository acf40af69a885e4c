"""What the test servers (the fake Gemini server, the GCS emulator) share: each runs on
127.0.0.1 in a background thread, is a context manager, and says where it listens."""

from __future__ import annotations

import time
from typing import Self


class LocalServer:
    """`with Server() as s:` starts it and stops it; `s.url` is where it listens. Subclasses
    set `host`, and define `start`, `stop` and `_bound_port` (None while not running)."""

    host: str

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def _bound_port(self) -> int | None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        port = self._bound_port()
        if port is None:
            name = type(self).__name__
            raise RuntimeError(f"{name} is not running; use `with {name}() as server:`")
        return port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def serve_until_interrupted(self, announce: str) -> int:
        """On the command line: start, print `announce` (where it listens), serve until
        Ctrl-C, stop. Returns the exit code."""
        self.start()
        print(announce.format(url=self.url), flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()
        return 0
