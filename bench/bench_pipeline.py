"""Benchmark: grade N synthetic submissions through the real pipeline against the fake Gemini
server (run in its own process, so its CPU is not counted), and compare wall time with the
lower bound set by quota and latency:  bound = max(N*60/RPM, N*latency/concurrency).

    python bench/bench_pipeline.py [--n 1000] [--latency-ms 1000] [--rpm 3000] [--concurrency 64]

Prints wall time, the bound, bound/wall, the pipeline process's CPU time per submission, and its
peak RSS. All figures are against the fake server, not real Gemini.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from grader.pipeline import run_class
from grader.settings import resolve

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
         "--latency-ms", str(args.latency_ms), "--rpm", str(args.rpm), "--seed", "1"],
        stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    url = line.split()[-1]
    return proc, url


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--latency-ms", type=float, default=1000)
    ap.add_argument("--rpm", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=64)
    args = ap.parse_args()

    server, url = start_server(args)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            class_dir = make_class(Path(tmp), args.n)
            settings = resolve({
                "backend": "gemini", "api_key": "bench", "base_url": url,
                "concurrency": args.concurrency, "rpm": args.rpm,
                "db": str(Path(tmp) / "bench.sqlite"),
            }, env={})
            cpu0 = time.process_time()
            t0 = time.perf_counter()
            summary = run_class(class_dir, settings)
            wall = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
    finally:
        server.terminate()
        server.wait()
    n = args.n
    bound = max(n * 60 / args.rpm, n * args.latency_ms / 1000 / args.concurrency)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"fake server: N={n} latency={args.latency_ms:g} ms rpm={args.rpm} "
          f"concurrency={args.concurrency}")
    print(f"graded={summary.graded} flagged={summary.flagged} failed={summary.failed} "
          f"calls={summary.calls}")
    print(f"wall time          {wall:8.2f} s")
    print(f"bound              {bound:8.2f} s  = max(N*60/RPM, N*latency/concurrency)")
    print(f"bound / wall       {bound / wall:8.3f}   (target >= 0.9)")
    print(f"CPU / submission   {1000 * cpu / n:8.3f} ms (target <= 2 ms; pipeline process only)")
    print(f"peak RSS           {rss_mb:8.1f} MB (target <= 300 MB)")
    print(f"python {sys.version.split()[0]}, pid {os.getpid()}")


if __name__ == "__main__":
    main()
