"""Benchmark the grading pipeline. Three measurements, all against the fake Gemini server or an
in-process stand-in, never real Gemini:

1. `--mode online` (default): N synthetic submissions graded through the real pipeline and the
   real google-genai client against the fake server (in its own process, so its CPU is not
   counted), with grader's own defaults unless `--concurrency` is given. Wall time is compared
   with the physical bound: the time the provider's quota windows and one model latency
   require, the least wall time any client could reach (`quota_bound` with nothing else in
   the way: a window's worth of requests or tokens a minute, the last wave one latency). The
   old figure, max(N*60/RPM, N*latency/concurrency), which counts our own concurrency as a
   bound, is printed beside it. Also prints process CPU per submission and peak RSS.

       python bench/bench_pipeline.py --n 1000 --latency-ms 5000 --rpm 3000 --tpm 10000000
       python bench/bench_pipeline.py --n 10000 --latency-ms 1000 --rpm 12000 --concurrency 256

2. `--mode instant`: the pipeline's own CPU per submission, measured directly: the same class
   graded with an in-process backend that answers at once with a valid reply (no HTTP, no SDK),
   so everything measured is discovery, extraction, rendering, hashing, the ledger (with each
   attempt priced as the default Gemini model, and `--budget` reservations when given),
   validation and SQLite. Median of `--repeat` runs.

       python bench/bench_pipeline.py --mode instant --n 1000 --repeat 3 [--budget 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import ClassVar

from grader.config.settings import DEFAULT_GEMINI_MODEL, Settings, resolve
from grader.online.pipeline import run_class
from grader.online.ratelimit import MAX_IN_FLIGHT, quota_bound
from grader.prompting.planning import plan
from grader.prompting.request import GradeRequest, GradeResponse, Usage
from grader.testing._fake_content import answer_text, read_prompt

RUBRIC = """\
title: Bench
question: Explain why binary encoding suits a congested network with perfect clocks.
reference_answer: Binary encoding uses one bit per baud and needs no clock recovery.
criteria:
  - {id: choice, title: Choice, max_points: 2}
  - {id: reasons, title: Reasons, max_points: 3}
  - {id: clarity, title: Clarity, max_points: 1,
     levels: [{points: 0, descriptor: unclear}, {points: 1, descriptor: clear}]}
"""


def make_class(root: Path, n: int) -> Path:
    class_dir = root / "class"
    class_dir.mkdir()
    (class_dir / "rubric.yaml").write_text(RUBRIC)
    for i in range(n):
        (class_dir / f"s{i:05d}.txt").write_text(
            f"Answer {i}: binary encoding, one bit per baud, clocks are perfect. " * 3)
    return class_dir


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "grader.testing.fake_gemini", "--port", "0",
         "--latency-ms", str(args.latency_ms), "--rpm", str(args.rpm), "--seed", "1",
         *(["--tpm", str(args.tpm)] if args.tpm else []),
         *(["--spend-limit-usd", str(args.spend_limit)] if args.spend_limit else [])],
        stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    return proc, line.split()[-1]


class InstantBackend:
    """Answers every request at once with one valid reply prepared up front (its cost is not
    part of the measurement): what is left is the pipeline's own work. It calls itself the
    Gemini backend of the default model, so the run is configured and every attempt priced
    exactly as a real Gemini run."""

    name: ClassVar[str] = "gemini"
    model = DEFAULT_GEMINI_MODEL

    def __init__(self, reply: str):
        self.reply = reply

    async def generate(self, request: GradeRequest) -> GradeResponse:
        return GradeResponse(text=self.reply, finish_reason="STOP",
                             model_version=DEFAULT_GEMINI_MODEL, model_status="STABLE",
                             usage=Usage(prompt_tokens=300, output_tokens=120,
                                         thinking_tokens=600))

    async def count_tokens(self, request: GradeRequest) -> int:
        return 300

    async def aclose(self) -> None:
        return None


def canned_reply(class_dir: Path, settings: Settings) -> str:
    p = plan(class_dir, settings)
    body = {"contents": [{"role": "user", "parts": [{"text": p.static_prefix},
                                                    {"text": "<submission>\nbinary encoding, "
                                                     "one bit per baud\n</submission>"}]}]}
    return answer_text(read_prompt(body), p.response_schema)


def _proc_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) another process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def instant(args: argparse.Namespace) -> None:
    per_sub = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            class_dir = make_class(Path(tmp), args.n)
            settings = resolve({"db": str(Path(tmp) / "bench.sqlite"),
                                "concurrency": args.concurrency, "budget": args.budget},
                               env={})
            backend = InstantBackend(canned_reply(class_dir, settings))
            c0 = cpu_s()
            summary = run_class(class_dir, settings, backend=backend)
            per_sub.append(1000 * (cpu_s() - c0) / args.n)
            assert summary.graded == args.n, summary
            assert summary.cost_usd, summary  # every attempt was priced
    budget = f" budget=${args.budget:g}" if args.budget else ""
    print(f"in-process instant backend: N={args.n} concurrency={args.concurrency}{budget}")
    print("pipeline's own CPU per submission: "
          + ", ".join(f"{v:.3f}" for v in per_sub)
          + f" ms; median {statistics.median(per_sub):.3f} ms (target <= 2 ms)")


def online(args: argparse.Namespace) -> None:
    server, url = start_server(args)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            class_dir = make_class(Path(tmp), args.n)
            given = {"backend": "gemini", "api_key": "bench", "base_url": url, "rpm": args.rpm,
                     "tpm": args.tpm, "db": str(Path(tmp) / "bench.sqlite")}
            if args.concurrency:
                given["concurrency"] = args.concurrency
            settings = resolve(given, env={})
            import grader.backends.gemini  # noqa: F401  one-time import, not per-submission cost

            c0 = cpu_s()
            t0 = time.perf_counter()
            summary = run_class(class_dir, settings)
            wall = time.perf_counter() - t0
            cpu = cpu_s() - c0
        server_cpu = _proc_cpu_s(server.pid)
    finally:
        server.terminate()
        server.wait()
    n, latency = args.n, args.latency_ms / 1000
    physical = quota_bound(n, latency, in_flight=n, rpm=args.rpm)
    conc = args.concurrency or MAX_IN_FLIGHT
    old = max(n * 60 / args.rpm, n * latency / conc)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"fake server: N={n} latency={args.latency_ms:g} ms rpm={args.rpm} "
          f"tpm={args.tpm or '-'} spend limit={args.spend_limit or '-'}; grader concurrency="
          f"{args.concurrency or 'its default'}")
    print(f"graded={summary.graded} flagged={summary.flagged} failed={summary.failed} "
          f"calls={summary.calls} retries={summary.retries}")
    print(f"wall time          {wall:8.2f} s")
    print(f"physical bound     {physical:8.2f} s  = quota windows and one latency")
    print(f"wall / bound       {wall / physical:8.3f}")
    print(f"old figure         {old:8.2f} s  = max(N*60/RPM, N*latency/concurrency); "
          f"old bound / wall {old / wall:.3f}")
    print(f"CPU / submission   {1000 * cpu / n:8.3f} ms whole process (pipeline + SDK + HTTP)")
    print(f"peak RSS           {rss_mb:8.1f} MB")
    print(f"fake server CPU    {server_cpu:8.1f} s (its own process, not counted above)")
    print(json.dumps({"n": n, "wall_s": round(wall, 2), "bound_s": round(physical, 2),
                      "wall_over_bound": round(wall / physical, 3),
                      "old_ratio": round(old / wall, 3), "cpu_ms": round(1000 * cpu / n, 3),
                      "rss_mb": round(rss_mb, 1)}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["online", "instant"], default="online")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--latency-ms", type=float, default=1000)
    ap.add_argument("--rpm", type=int, default=3000)
    ap.add_argument("--tpm", type=int, default=None)
    ap.add_argument("--spend-limit", type=float, default=None, help="the fake's USD per 10 min")
    ap.add_argument("--concurrency", type=int, default=None, help="default: grader's own")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--budget", type=float, default=None,
                    help="instant mode: also reserve and settle every call against a budget")
    args = ap.parse_args()
    asyncio.set_event_loop_policy(None)
    (instant if args.mode == "instant" else online)(args)


if __name__ == "__main__":
    main()
