"""llama-cpp-python's OpenAI-compatible server (`python -m llama_cpp.server`) on the bundled
SmolLM2 model, in a child process: the real server `--backend openai` is tested against.

`with LlamaServer() as server:` starts it on a free port, waits until /v1/models answers, and
stops it; `server.url` is its root (the API is under `/v1`), `server.model` the name it serves.
It needs the `local` extra with llama-cpp-python's server dependencies
(`llama-cpp-python[server]`).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Self

from grader.backends._local_models import packaged_model_path
from grader.testing._serving import LocalServer

START_TIMEOUT_S = 120.0


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the server binds it a moment later)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class LlamaServer(LocalServer):
    """The server in a child process; `model` is the alias it serves the GGUF under."""

    host = "127.0.0.1"

    def __init__(self, model_path: Path | None = None, *, model: str = "smollm2",
                 n_ctx: int = 4096, n_threads: int | None = None):
        self.model_path = model_path or packaged_model_path()
        self.model = model
        self.n_ctx = n_ctx
        self.n_threads = n_threads or os.cpu_count() or 1
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> Self:
        port = free_port(self.host)
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (kept open while it runs)
        threads = str(self.n_threads)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model_path),
             "--model_alias", self.model, "--host", self.host, "--port", str(port),
             "--n_ctx", str(self.n_ctx), "--n_threads", threads, "--n_threads_batch", threads],
            stdout=self._log, stderr=subprocess.STDOUT)
        self._port = port
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                log = self.log()
                self.stop()
                raise RuntimeError(f"llama_cpp.server exited at start:\n{log[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/v1/models", timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"llama_cpp.server did not answer within {START_TIMEOUT_S:g} s")

    def log(self) -> str:
        """What the server printed so far."""
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def stop(self) -> None:
        proc, self._proc, self._port = self._proc, None, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def _bound_port(self) -> int | None:
        return self._port
