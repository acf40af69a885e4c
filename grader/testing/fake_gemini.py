"""A fake Gemini REST server (Developer API and Vertex AI) for tests and benchmarks.

The real google-genai client talks to it through `HttpOptions(base_url=...)` or
`GOOGLE_GEMINI_BASE_URL`, so the whole SDK path (serialisation, errors, timeouts) is exercised.
Answers are deterministic (see `_fake_content`); the model table's rules apply per model
(`_fake_rules`: Gemini 4's refusals, implicit caching, continuation segments), and models.list
and models.get list the table's current rows (`_fake_models`); quotas (requests and input
tokens per minute, spend per 10 minutes: `_fake_state`), faults and latency are configurable.
Request bodies are read in both proto3 JSON spellings, camelCase and snake_case (`_fake_json`),
as Google reads them.
Stdlib only: one thread per connection, keep-alive, sleeps never hold a lock.

    python -m grader.testing.fake_gemini --port 0 --latency-ms 1000 --rpm 600 --tpm 1000000
"""

from __future__ import annotations

import argparse
import contextlib
import select
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from grader.testing._fake_app import Call, FakeApp, Reply, error_reply, json_reply
from grader.testing._fake_content import submission_key
from grader.testing._fake_state import (
    ALL_FAULTS,
    CONTENT_FAULTS,
    NOT_RANDOM,
    RANDOM_FAULTS,
    TRANSIENT_FAULTS,
    FakeConfig,
    FakeState,
)
from grader.testing._serving import LocalServer

__all__ = ["Call", "FakeApp", "FakeConfig", "FakeGemini", "Reply", "error_reply", "json_reply",
           "main"]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 300  # idle keep-alive connections are closed after this
    # Headers and body go out as two writes; with Nagle's algorithm on, the body would wait for
    # the client's delayed ACK (~40 ms) before leaving. Real API front ends do not add that.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request logging: 1000s of lines would drown test output."""

    def _peer_closed(self) -> bool:
        """True when the client has closed its end (EOF pending, nothing else to read)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _dispatch(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        call = Call(method=method, path=parts.path, query=parse_qs(parts.query),
                    headers={k.lower(): v for k, v in self.headers.items()}, raw=raw,
                    client_gone=self._peer_closed)
        reply = self.server.app.handle(call)
        try:
            self.send_response(reply.status)
            headers = {"Content-Type": "application/json; charset=UTF-8", **reply.headers}
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (timeout); nothing to tell it


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, host: str, port: int, app: FakeApp):
        self.app = app
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__((host, port), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Close every open client connection, as a server that goes away does."""
        with self.connections_lock:
            open_now = list(self.connections)
        for conn in open_now:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up between requests (a cancelled run, a killed process) is
        normal traffic, not a server error: say nothing. Anything else is reported."""
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)


class FakeGemini(LocalServer):
    """The fake server in a background thread. Use as a context manager:

        with FakeGemini(latency_ms=0) as fake:
            client = genai.Client(api_key="k", http_options=HttpOptions(base_url=fake.url))
    """

    TRANSIENT_FAULTS = TRANSIENT_FAULTS
    CONTENT_FAULTS = CONTENT_FAULTS
    ALL_FAULTS = ALL_FAULTS

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, latency_ms: float = 0.0,
                 jitter_ms: float = 0.0, rpm: int | None = None, rpm_window_s: float = 60.0,
                 tpm: int | None = None,
                 fail_rate: float = 0.0, fault_kinds: list[str] | tuple[str, ...] | None = None,
                 hang_s: float = 30.0, fault_retry_delay_s: float = 1.0, seed: int = 0,
                 api_key: str | None = None, model_version: str | None = None,
                 listed_extra: Sequence[str] = (), listed_hidden: Sequence[str] = ()):
        """`listed_extra` / `listed_hidden`: model ids models.list and models.get show beyond
        the model table's current rows, and ids they hide (see `_fake_models`)."""
        self.state = FakeState(FakeConfig())
        changes: dict[str, Any] = dict(
            latency_ms=latency_ms, jitter_ms=jitter_ms, rpm=rpm, rpm_window_s=rpm_window_s,
            tpm=tpm, fail_rate=fail_rate, hang_s=hang_s, fault_retry_delay_s=fault_retry_delay_s,
            seed=seed, api_key=api_key, model_version=model_version,
            listed_extra=listed_extra, listed_hidden=listed_hidden,
        )
        if fault_kinds is not None:
            changes["fault_kinds"] = fault_kinds
        self.state.configure(changes)
        self.app = FakeApp(self.state)
        self.host, self._port = host, port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle --------------------------------------------------------------------------
    def start(self) -> FakeGemini:
        self.state.stop.clear()
        self._server = _Server(self.host, self._port, self.app)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name="fake-gemini", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: the listening socket and every open connection are closed, so clients
        see the connection refused or reset, as when a real server goes away."""
        self.state.stop.set()  # wake sleeping/hanging handlers
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.drop_connections()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _bound_port(self) -> int | None:
        return int(self._server.server_address[1]) if self._server is not None else None

    # --- what tests use ---------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """Environment that points the SDK (and grader) at this server."""
        return {"GOOGLE_GEMINI_BASE_URL": self.url, "GOOGLE_VERTEX_BASE_URL": self.url}

    def stats(self) -> dict[str, Any]:
        """Counters since the last reset: requests by endpoint and status, billed calls and
        tokens, spend, caches, files, calls in flight, 429s by quota window (`rejected`: rpm,
        tpm, spend), the most requests and input tokens one window held (`rpm_peak`,
        `tpm_peak`), implicit-cache hits and their tokens (`implicit_cache_hits`,
        `implicit_cached_tokens`) and continuation segments offered and requested
        (`continuations_offered`, `continuations_requested`)."""
        return self.state.snapshot()

    def wait_until(self, test: Callable[[dict[str, Any]], bool], *,
                   timeout: float = 60.0) -> dict[str, Any]:
        """Block until `test(stats())` holds, checked again each time a request starts or
        ends, and return those stats. `timeout` only stops a hang: past it, TimeoutError."""
        state = self.state
        with state.changed:
            if not state.changed.wait_for(lambda: test(state.stats.to_json()), timeout):
                raise TimeoutError(f"the fake's stats did not reach the condition within "
                                   f"{timeout:g} s: {state.stats.to_json()}")
            return state.stats.to_json()

    def wait_for_requests(self, n: int, endpoint: str = "generateContent", *,
                          timeout: float = 60.0) -> dict[str, Any]:
        """Block until the fake has received `n` calls of `endpoint` since its last reset.

        A run at `--concurrency c` sends its k-th request only after finishing k - c students,
        so waiting for n + c requests means at least n grades are in the store."""
        return self.wait_until(lambda s: s["by_endpoint"].get(endpoint, 0) >= n, timeout=timeout)

    def configure(self, **changes: Any) -> None:
        self.state.configure(changes)

    @property
    def config(self) -> FakeConfig:
        return self.state.config

    def reset_stats(self) -> None:
        self.state.reset()

    def inject(self, *faults: str) -> None:
        """Script the next generateContent calls, in order (e.g. "503", "429", "hang", "403")."""
        self.state.inject(list(faults))

    def inject_for(self, endpoint: str, *faults: str) -> None:
        """Script the next calls of a cache or file endpoint, in order (e.g.
        `inject_for("cachedContents.create", "403")`; endpoints are `cachedContents.<op>` and
        `files.<op>` with op create/get/list/patch/delete, upload/get/list/delete/download)."""
        self.state.inject_for(endpoint, list(faults))

    def advance(self, *, hours: float = 0.0, seconds: float = 0.0) -> None:
        """Move the fake's clock ahead: caches past their TTL and files past 48 h are gone, and
        the quota windows (requests and input tokens per minute, spend per 10 minutes) move
        on."""
        self.state.advance(hours * 3600 + seconds)

    def expire_caches(self, name: str | None = None) -> int:
        """Expire one cache (or every one) now, as the clock would; returns how many."""
        return self.app.caches.expire(name)

    def caches(self) -> list[dict[str, Any]]:
        """The live caches, as the API describes them."""
        from grader.testing._fake_caches import cache_json

        with self.state.lock:
            self.app.caches.sweep()
            return [cache_json(c) for c in self.state.caches.values()]

    def files(self) -> list[dict[str, Any]]:
        """The live files (uploaded and generated), as the API describes them."""
        with self.state.lock:
            self.app.files.sweep()
            return [f.to_json() for f in self.state.files.values()]

    def file_bytes(self, name: str) -> bytes:
        """What was uploaded as file `name` (`files/abc`); KeyError when it is gone."""
        with self.state.lock:
            return bytes(self.state.files[name].data)

    def put_file(self, data: bytes, *, mime_type: str = "application/jsonl",
                 display_name: str = "") -> dict[str, Any]:
        """Add a generated (downloadable) file, as a batch job's results are."""
        f = self.app.files.add(data, mime_type, display_name, f"{self.host}:{self.port}",
                               source="GENERATED")
        return f.to_json()

    def requests(self) -> list[dict[str, Any]]:
        """Recent model API calls (path, endpoint, vertex, body), oldest first."""
        with self.state.lock:
            return list(self.state.recent)

    @staticmethod
    def submission_key(text: str) -> str:
        """The key of `stats()["billed_by_submission"]` for a submission text."""
        return submission_key(text)


def _fault_kinds(text: str) -> list[str]:
    """--fault-kinds: only what `fail_rate` may draw (RANDOM_FAULTS), refused by argparse
    with the choices, not by a traceback once the server starts."""
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    bad = [k for k in kinds if k not in RANDOM_FAULTS]
    if bad or not kinds:
        scripted = [k for k in bad if k in NOT_RANDOM]
        raise argparse.ArgumentTypeError(
            f"{', '.join(bad) or 'nothing'} cannot be drawn at random; use some of "
            f"{','.join(RANDOM_FAULTS)}" + (" (expire_cache is scripted only: "
                                           "FakeGemini.inject or POST /_fake/inject)"
                                           if scripted else ""))
    return kinds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m grader.testing.fake_gemini",
                                description="Fake Gemini REST server for tests and benchmarks.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--jitter-ms", type=float, default=0.0)
    p.add_argument("--rpm", type=int, default=None)
    p.add_argument("--rpm-window-s", type=float, default=60.0,
                   help="the window of --rpm and --tpm")
    p.add_argument("--tpm", type=int, default=None,
                   help="input tokens per window: answer 429 to a call that would go over")
    p.add_argument("--fail-rate", type=float, default=0.0)
    p.add_argument("--fault-kinds", default=None, type=_fault_kinds,
                   help=f"what --fail-rate draws, comma-separated, from "
                        f"{','.join(RANDOM_FAULTS)} (online calls and batch lines)")
    p.add_argument("--hang-s", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--api-key", default=None, help="reject other Developer API keys")
    p.add_argument("--spend-limit-usd", type=float, default=None,
                   help="answer 429 (spend-based) once calls in 10 minutes cost this much")
    p.add_argument("--listed-extra", default="",
                   help="comma-separated model ids models.list shows beyond the model table's")
    p.add_argument("--listed-hidden", default="",
                   help="comma-separated model ids models.list and models.get hide")
    a = p.parse_args(argv)
    kinds = a.fault_kinds
    fake = FakeGemini(host=a.host, port=a.port, latency_ms=a.latency_ms, jitter_ms=a.jitter_ms,
                      rpm=a.rpm, rpm_window_s=a.rpm_window_s, tpm=a.tpm, fail_rate=a.fail_rate,
                      fault_kinds=kinds, hang_s=a.hang_s, seed=a.seed, api_key=a.api_key,
                      listed_extra=[m for m in a.listed_extra.split(",") if m],
                      listed_hidden=[m for m in a.listed_hidden.split(",") if m])
    if a.spend_limit_usd is not None:
        fake.configure(spend_limit_usd=a.spend_limit_usd)
    return fake.serve_until_interrupted("{url}")


if __name__ == "__main__":
    sys.exit(main())
