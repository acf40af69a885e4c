"""Benchmark batch grading: N synthetic submissions submitted as batch jobs in file mode (a JSONL
file uploaded through the Files API) and collected, against the fake Gemini server (in its own
process, so its CPU and memory are not counted; never real Gemini).

Each phase is a `grade batch ...` process of its own; for each the script prints the local wall
time and that process's peak RSS (from wait4). The collect phase includes the fake answering
every line of the jobs (it does so when a job is first seen finished) and the download of the
results files.

    python bench/bench_batch.py --n 10000

Targets (issue 12): <= 30 s per phase and <= 400 MB peak RSS.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import make_class  # the same synthetic class as the online bench


def start_server() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "grader.testing.fake_gemini", "--port", "0"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip().split()[-1]


def phase(name: str, args: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(wall s, peak RSS MB, output) of one `grade batch` process."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "grader.cli", "batch", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{name} failed:\n{out}")
    return wall, usage.ru_maxrss / 1024, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000)
    a = ap.parse_args()
    server, url = start_server()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            class_dir = make_class(root, a.n)
            db = root / "g.sqlite"
            env = {**os.environ, "GEMINI_API_KEY": "bench", "GOOGLE_GEMINI_BASE_URL": url}
            common = [str(class_dir), "--db", str(db), "--out", str(root / "out")]
            print(f"{a.n} submissions, file mode, fake Gemini server at {url}; "
                  f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
            rows = []
            for name, args in (("submit", ["submit", *common, "--batch-mode", "file"]),
                               ("collect", ["collect", *common])):
                wall, rss, out = phase(name, args, env)
                rows.append((name, wall, rss))
                print(f"  {name:8s} wall {wall:6.1f} s   peak RSS {rss:6.0f} MB   "
                      f"| {out.strip().splitlines()[0]}")
            with sqlite3.connect(db) as conn:
                stored = conn.execute("SELECT COUNT(*) FROM grades").fetchone()[0]
                jobs = conn.execute("SELECT COUNT(*) FROM batch_jobs").fetchone()[0]
            print(f"  grades stored: {stored} of {a.n}, in {jobs} job(s); "
                  f"load average after: {os.getloadavg()[0]:.2f}")
            ok = all(w <= 30 and r <= 400 for _, w, r in rows) and stored == a.n
            print("targets (<= 30 s and <= 400 MB per phase, every grade stored): "
                  + ("met" if ok else "NOT met"))
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
