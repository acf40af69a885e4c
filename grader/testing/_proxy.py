"""A small HTTP proxy in front of a model server: it forwards every request, counts them by body,
and can be told to fail the next grading requests, so tests see what a real server did.

`with FaultProxy(upstream) as proxy:` listens on 127.0.0.1 (`proxy.url`); requests to it are
forwarded to `upstream` as they are. Counts (`stats()`): every request by path, every POST body
by its hash (`requests`), and every body the upstream answered 200 and the proxy delivered
(`answered`): a body answered twice was paid for twice. `inject(fault, times, after=)` makes the
next `times` chat completions (once `after` more have been answered) fail as a server or a
network fails:

- "503": the server is full (all its slots busy), with a Retry-After header;
- "not_json": a 200 whose body is not JSON (a captive portal, a proxy's error page);
- "refuse": the connection is dropped without an answer (the server went away).
"""

from __future__ import annotations

import hashlib
import http.client
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, Self
from urllib.parse import urlsplit

from grader.testing._serving import LocalServer

Fault = Literal["503", "not_json", "refuse"]
FAULTED_PATH = "/v1/chat/completions"
_HOP = {"connection", "keep-alive", "transfer-encoding", "host", "content-length",
        "proxy-connection", "te", "trailer", "upgrade", "server", "date"}


def body_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


@dataclass
class _Faults:
    kind: Fault | None = None
    left: int = 0
    armed_at: int = 0  # active once this many answers were delivered
    retry_after: float = 1.0


@dataclass
class ProxyStats:
    """A copy of the counts at one moment."""

    paths: Counter[str] = field(default_factory=Counter)
    requests: Counter[str] = field(default_factory=Counter)
    answered: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)

    @property
    def chat(self) -> int:
        return self.paths[FAULTED_PATH]


class FaultProxy(LocalServer):
    """The proxy; `upstream` is the server's root URL (http://host:port)."""

    host = "127.0.0.1"

    def __init__(self, upstream: str):
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._lock = threading.Lock()
        self._stats = ProxyStats()
        self._faults = _Faults()
        self._changed = threading.Condition(self._lock)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- control ------------------------------------------------------------------------------
    def inject(self, fault: Fault, times: int = 1, *, after: int = 0,
               retry_after: float = 1.0) -> None:
        """Fail the next `times` chat completions as `fault`, once `after` more requests have
        been answered."""
        with self._lock:
            answered = sum(self._stats.answered.values())
            self._faults = _Faults(fault, times, answered + after, retry_after)

    def clear(self) -> None:
        """No more faults: the server is back."""
        with self._lock:
            self._faults = _Faults()

    def stats(self) -> ProxyStats:
        with self._lock:
            s = self._stats
            return ProxyStats(Counter(s.paths), Counter(s.requests), Counter(s.answered),
                              Counter(s.faults))

    def wait_until(self, done: Callable[[ProxyStats], bool], timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not done(self._stats):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"proxy: condition not met within {timeout:g} s")
                self._changed.wait(left)

    # --- LocalServer --------------------------------------------------------------------------
    def start(self) -> Self:
        handler = type("Handler", (_Handler,), {"owner": self})
        self._server = ThreadingHTTPServer((self.host, 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="fault-proxy")
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def _bound_port(self) -> int | None:
        return int(self._server.server_address[1]) if self._server is not None else None

    # --- what the handler asks ----------------------------------------------------------------
    def _arrived(self, path: str, body: bytes) -> tuple[Fault, float] | None:
        """Count a request; the fault it gets (and its Retry-After), if any."""
        with self._lock:
            self._stats.paths[path] += 1
            if body:
                self._stats.requests[body_hash(body)] += 1
            f = self._faults
            if path != FAULTED_PATH or f.kind is None or f.left <= 0 \
                    or sum(self._stats.answered.values()) < f.armed_at:
                self._changed.notify_all()
                return None
            f.left -= 1
            self._stats.faults[f.kind] += 1
            self._changed.notify_all()
            return f.kind, f.retry_after

    def _delivered(self, body: bytes) -> None:
        with self._lock:
            self._stats.answered[body_hash(body)] += 1
            self._changed.notify_all()


class _Handler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._forward()

    def do_POST(self) -> None:
        self._forward()

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = self.path.split("?", 1)[0]
        got = self.owner._arrived(path, body)
        fault, retry_after = got if got is not None else (None, 0.0)
        if fault == "refuse":
            # drop the connection without a word: a reset, as from a server that went away
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        if fault == "503":
            self._send(503, b'{"error": {"message": "the server is busy: all slots are taken", '
                       b'"type": "unavailable_error"}}', "application/json",
                       {"Retry-After": f"{retry_after:g}"})
            return
        if fault == "not_json":
            self._send(200, b"<html><body>upstream hiccup</body></html>", "text/html", {})
            return
        try:
            status, headers, reply = self._upstream(body)
        except OSError as e:
            self._send(502, f'{{"error": {{"message": "proxy: {type(e).__name__}"}}}}'.encode(),
                       "application/json", {})
            return
        kind = headers.pop("content-type", "application/json")
        if self._send(status, reply, kind, headers) and status == 200 and body:
            self.owner._delivered(body)

    def _upstream(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(*self.owner.upstream, timeout=600)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            conn.request(self.command, self.path, body=body or None, headers=headers)
            r = conn.getresponse()
            reply = r.read()
            out = {k.lower(): v for k, v in r.getheaders() if k.lower() not in _HOP}
            return r.status, out, reply
        finally:
            conn.close()

    def _send(self, status: int, body: bytes, kind: str, headers: dict[str, str]) -> bool:
        """Write a response; False when the client was gone."""
        try:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True
            return False
        return True
