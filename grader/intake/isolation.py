"""Extraction with a time and memory budget per student.

PDF, Word and notebook parsers run over bytes the student controls, and one crafted file can take
gigabytes or minutes. `Extractor` runs those extractions in a few long-lived worker processes,
each with an address-space limit (RLIMIT_AS) and, per submission, a CPU-time limit (RLIMIT_CPU)
and a wall-clock timeout after which the worker is killed and replaced. A blow-up flags the
student instead of stopping the class:

- `timeout`  — the submission took more than `Limits.worker_cpu_s` CPU seconds or
  `Limits.worker_wall_s` wall-clock seconds to read;
- `oversized` — reading it needed more than `Limits.worker_memory_mb` of memory;
- `corrupt`  — the parser crashed the worker (a signal such as SIGSEGV).

Other files up to `Limits.light_max_bytes` (text, source code, small images) are read in the
caller's process: that takes microseconds, and a process hand-off would cost more. Library log
messages and warnings raised in a worker are sent back and logged at INFO on the
`grader.extract` logger, never printed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
import subprocess
import sys
import threading
import warnings
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from grader.errors import GraderError, SubmissionError
from grader.intake.discover import Submission
from grader.intake.extract import Extracted, NeedsWorker, extract
from grader.intake.limits import DEFAULT_LIMITS, MB, Limits

log = logging.getLogger("grader.extract")

HEAVY_SUFFIXES = frozenset({".pdf", ".docx", ".ipynb"})
_START_S = 60.0  # for a worker to start (Python and grader's imports)
_FIX_TIMEOUT = ("ask the student for a simpler file (for a PDF: print it to a new PDF), or grade "
                "this student by hand")


def is_light(sub: Submission, limits: Limits = DEFAULT_LIMITS) -> bool:
    """True when every file of `sub` is small and not a PDF, Word or notebook file by name
    (a text file whose bytes turn out to be a PDF is caught by `NeedsWorker`)."""
    for f in sub.files:
        if f.suffix.lower() in HEAVY_SUFFIXES:
            return False
        try:
            if os.lstat(f).st_size > limits.light_max_bytes:
                return False
        except OSError:
            continue  # extract() reports it
    return True


class _Logs(logging.Handler):
    """Collects what libraries log in the worker (pypdf warns about every odd object)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.lines) < 20:
            self.lines.append(f"{record.name}: {record.getMessage()}"[:300])


def _limit_memory(memory_bytes: int) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard == resource.RLIM_INFINITY or hard > memory_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, hard))


def _limit_cpu(seconds: int) -> None:
    """Allow `seconds` more CPU time from now; past it the kernel stops the worker (SIGXCPU)."""
    used = resource.getrusage(resource.RUSAGE_SELF)
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = int(used.ru_utime + used.ru_stime) + seconds
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def serve() -> None:
    """The worker's main loop (`python -I -c ... serve()`, memory limit in MB as argv[1]):
    extract one submission per message on stdin, reply on stdout, until stdin closes."""
    memory_bytes = int(sys.argv[1]) * MB
    receive = Connection(os.dup(0), writable=False)
    reply_to = Connection(os.dup(1), readable=False)
    quiet = os.open(os.devnull, os.O_RDWR)  # a library that prints cannot garble the replies
    os.dup2(quiet, 0)
    os.dup2(quiet, 1)
    _limit_memory(memory_bytes)
    logs = _Logs()
    logging.root.handlers = [logs]
    logging.root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    warnings.simplefilter("default")
    reply_to.send(("ready",))
    while True:
        try:
            sub, max_file_mb, limits = receive.recv()
        except (EOFError, OSError):
            return
        _limit_cpu(limits.worker_cpu_s)
        logs.lines = []
        reply: tuple[Any, ...]
        try:
            reply = ("ok", extract(sub, max_file_mb=max_file_mb, limits=limits), logs.lines)
        except SubmissionError as e:
            reply = ("flag", e.reason, e.message, e.path, e.fix, logs.lines)
        except MemoryError:
            reply = ("flag", "oversized", f"reading it needs more than {memory_bytes // MB:,} MB "
                     "of memory", None, _FIX_TIMEOUT, logs.lines)
        reply_to.send(reply)


# Only what Python needs to start: the worker never sees API keys or other secrets.
_ENV_KEPT = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "SYSTEMROOT")
_BOOT = "import sys; sys.path.insert(0, {root!r}); from " + __name__ + " import serve; serve()"


class _Worker:
    """One worker process, started with `python -I` (no environment, no current folder on the
    import path) and the same grader package as the caller."""

    def __init__(self, memory_mb: int):
        to_child, self_in = os.pipe()
        self_out, from_child = os.pipe()
        root = str(Path(__file__).resolve().parents[2])  # the folder that holds grader/
        env = {k: os.environ[k] for k in _ENV_KEPT if k in os.environ}
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-c", _BOOT.format(root=root), str(memory_mb)],
                stdin=to_child, stdout=from_child, stderr=subprocess.DEVNULL, env=env,
                close_fds=True)
        finally:
            os.close(to_child)
            os.close(from_child)
        self.send = Connection(self_in, readable=False)
        self.receive = Connection(self_out, writable=False)

    def kill(self) -> int | None:
        """Stop the worker at once; returns its exit code (negative: the signal)."""
        self.proc.kill()
        code = self.proc.wait(10)
        self.close()
        return code

    def close(self) -> None:
        self.send.close()
        self.receive.close()

    def stop(self) -> None:
        self.close()  # the worker exits at end of input
        try:
            self.proc.wait(2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


class Extractor:
    """Extract submissions with the budget above; thread-safe, at most `workers` processes.

        with Extractor(max_file_mb=settings.max_file_mb) as ex:
            extracted = await ex.aextract(sub)   # or ex.extract(sub) from a thread
    """

    def __init__(self, *, max_file_mb: float = 20.0, limits: Limits = DEFAULT_LIMITS,
                 workers: int | None = None):
        self.max_file_mb = max_file_mb
        self.limits = limits
        self._slots = threading.BoundedSemaphore(workers or max(1, min(4, os.cpu_count() or 1)))
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()

    def __enter__(self) -> Extractor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for w in idle:
            w.stop()

    def _in_process(self, sub: Submission) -> Extracted | None:
        if not is_light(sub, self.limits):
            return None
        try:
            return extract(sub, max_file_mb=self.max_file_mb, limits=self.limits,
                           allow_heavy=False)
        except NeedsWorker:
            return None

    def extract(self, sub: Submission) -> Extracted:
        """Extract `sub` (blocking); raises SubmissionError for every kind of bad input."""
        done = self._in_process(sub)
        return done if done is not None else self.isolated(sub)

    async def aextract(self, sub: Submission) -> Extracted:
        """Extract `sub`: small text on the event loop, the rest in a worker via a thread."""
        done = self._in_process(sub)
        return done if done is not None else await asyncio.to_thread(self.isolated, sub)

    def isolated(self, sub: Submission) -> Extracted:
        """Extract `sub` in a worker process, whatever its files."""
        with self._slots:
            with self._lock:
                worker = self._idle.pop() if self._idle else None
            if worker is None or worker.proc.poll() is not None:
                worker = self._start()
            ready = False
            try:
                worker.send.send((sub, self.max_file_mb, self.limits))
                ready = worker.receive.poll(self.limits.worker_wall_s)
                reply = worker.receive.recv() if ready else None
            except (EOFError, OSError):
                reply = None
            if reply is None:
                raise self._failure(sub, worker.kill(), timed_out=not ready)
            with self._lock:
                self._idle.append(worker)
        for line in reply[-1]:
            log.info("%s: %s", sub.student_id, line)
        if reply[0] == "ok":
            result: Extracted = reply[1]
            return result
        _, reason, message, path, fix, _ = reply
        raise SubmissionError(reason, message, path=path or _where(sub), fix=fix)

    def _start(self) -> _Worker:
        """A new worker, once it is ready (its start-up is not part of any student's budget)."""
        worker = _Worker(self.limits.worker_memory_mb)
        try:
            started = worker.receive.poll(_START_S) and worker.receive.recv() == ("ready",)
        except (EOFError, OSError):
            started = False
        if not started:
            code = worker.kill()
            raise GraderError(f"the file-reading worker process did not start (exit code {code})",
                              fix=f"check that {sys.executable} starts and can import grader, "
                                  "then rerun")
        return worker

    def _failure(self, sub: Submission, code: int | None, *, timed_out: bool) -> SubmissionError:
        lim = self.limits
        where = _where(sub)
        if timed_out or code == -signal.SIGXCPU:
            return SubmissionError(
                "timeout", f"reading the submission took more than {lim.worker_wall_s:g} s (or "
                f"{lim.worker_cpu_s} s of CPU time); it was stopped", path=where,
                fix=_FIX_TIMEOUT)
        if code == -signal.SIGKILL:  # not ours: the system ran out of memory
            return SubmissionError(
                "oversized", "reading the submission was stopped by the system (out of memory)",
                path=where, fix=_FIX_TIMEOUT)
        how = (f"signal {signal.Signals(-code).name}" if code is not None and code < 0
               and -code in signal.valid_signals() else f"exit code {code}")
        return SubmissionError(
            "corrupt", f"the file reader crashed on this submission ({how})", path=where,
            fix="ask the student to re-save the files and resubmit, or grade this student by "
                "hand")


def _where(sub: Submission) -> Path | str:
    return sub.files[0] if len(sub.files) == 1 else sub.student_id
