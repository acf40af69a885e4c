"""Benchmark: grade N synthetic submissions through the real pipeline against the fake Gemini
server (run in its own process, so its CPU is not counted), and compare wall time with the
lower bound set by quota and latency:  bound = max(N*60/RPM, N*latency/concurrency).

CPU: the whole process's CPU per submission, and the pipeline's own share = that minus a
baseline run of google-genai sending the same requests at the same concurrency under the same
quota limiter (the SDK's request building and parsing is most of the total).

    python bench/bench_pipeline.py [--n 1000] [--latency-ms 1000] [--rpm 3000] [--concurrency 64]

Prints wall time, the bound, bound/wall, the pipeline process's CPU time per submission, and its
peak RSS. All figures are against the fake server, not real Gemini.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from google import genai
from google.genai import types

from grader.discover import discover
from grader.extract import extract
from grader.pipeline import plan, render, run_class
from grader.ratelimit import Quota
from grader.settings import DEFAULT_GEMINI_MODEL, Settings, resolve

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


async def _sdk_alone(class_dir: Path, settings: Settings, url: str, concurrency: int) -> float:
    """Baseline: the same requests sent with google-genai directly, at the same concurrency and
    under the same quota limiter (so the traffic has the same shape). Returns its CPU seconds;
    the pipeline's own cost is the difference."""
    p = plan(class_dir, settings)
    client = genai.Client(api_key="bench", http_options=types.HttpOptions(
        base_url=url, api_version="v1beta"))
    quota = Quota(rpm=settings.rpm, tpm=settings.tpm)
    requests = iter([render(p, extract(sub), sub.student_id, DEFAULT_GEMINI_MODEL)
                     for sub in discover(class_dir)])
    config = types.GenerateContentConfig(
        system_instruction=p.system, response_mime_type="application/json",
        response_json_schema=p.response_schema, temperature=settings.temperature,
        seed=settings.seed, max_output_tokens=settings.max_output_tokens)
    lock = asyncio.Lock()
    cpu0 = time.process_time()

    async def worker() -> None:
        while True:
            async with lock:
                req = next(requests, None)
            if req is None:
                return
            parts = [types.Part(text=req.static_prefix)]
            parts += [types.Part(text=pt.text) for pt in req.student_parts]
            async with quota.acquire():
                await client.aio.models.generate_content(
                    model=req.model, contents=[types.Content(role="user", parts=parts)],
                    config=config)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    await client.aio.aclose()
    return time.process_time() - cpu0


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
            import grader.backends.gemini  # noqa: F401  one-time import, not per-submission cost

            cpu0 = time.process_time()
            t0 = time.perf_counter()
            summary = run_class(class_dir, settings)
            wall = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
            cpu_sdk = asyncio.run(_sdk_alone(class_dir, settings, url, args.concurrency))
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
    print(f"CPU / submission   {1000 * cpu / n:8.3f} ms whole process (pipeline + SDK + HTTP)")
    print(f"  SDK alone        {1000 * cpu_sdk / n:8.3f} ms same requests: google-genai + quota")
    print(f"  pipeline's own   {1000 * (cpu - cpu_sdk) / n:8.3f} ms (target <= 2 ms)")
    print(f"peak RSS           {rss_mb:8.1f} MB (target <= 300 MB)")
    print(f"python {sys.version.split()[0]}, pid {os.getpid()}")


if __name__ == "__main__":
    main()
