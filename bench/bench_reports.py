"""Benchmark: review workbook + HTML reports + all gradebook exports for a large class.

    .venv/bin/python bench/bench_reports.py [--students 10000] [--criteria 6] [--keep DIR]

The synthetic store is built in a child process so the peak RSS printed here is that of report
generation alone. For a large class the workbook is written by a child process too: the check
adds the largest child's peak (the store builder's or the workbook writer's, whichever is
larger) to this process's. Targets (issue 3): <= 20 s wall time, <= 600 MB peak RSS.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

TARGET_S, TARGET_MB = 20.0, 600.0


def _build(db: Path, students: int, criteria: int) -> None:
    """The synthetic store, plus the class roster and a Canvas gradebook export the LMS
    exports check every student against."""
    from _synthetic import build

    run = build(db, n=students, k=criteria)
    roster = ["id,name,email,SIS User ID"]
    gradebook = ["Student,ID,SIS User ID,SIS Login ID,Section,Essay (4411)",
                 "    Points Possible,,,,,100"]
    for i, sid in enumerate(run.student_ids):
        roster.append(f"{sid},Student {i},{sid}@school.test,SIS-{sid}")
        gradebook.append(f"Student {i},{100000 + i},SIS-{sid},,Section 1,")
    (db.parent / "roster.csv").write_text("\n".join(roster) + "\n", encoding="utf-8")
    (db.parent / "gradebook.csv").write_text("\n".join(gradebook) + "\n", encoding="utf-8")
    run.store.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--students", type=int, default=10_000)
    ap.add_argument("--criteria", type=int, default=6)
    ap.add_argument("--keep", type=Path, help="write outputs here instead of a temp folder")
    ap.add_argument("--build-only", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.build_only:
        _build(args.build_only, args.students, args.criteria)
        return 0

    from grader.reports import write_reports
    from grader.reports.export import FORMATS, ExportOptions, export_gradebook
    from grader.store import Store

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.sqlite"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--build-only", str(db), "--students",
                        str(args.students), "--criteria", str(args.criteria)], check=True)
        print(f"synthetic store: {args.students} students x {args.criteria} criteria in "
              f"{time.perf_counter() - t0:.1f} s (child process, not counted)")
        out = args.keep or Path(tmp) / "out"
        store = Store(db)
        load0 = f"{os.getloadavg()[0]:.2f}"
        kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        paths = write_reports(store, 1, out, handouts="all")  # every page: the worst case
        t_reports = time.perf_counter() - t0
        cpu_reports = time.process_time() - cpu0
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_child = kids.ru_utime + kids.ru_stime - kids0.ru_utime - kids0.ru_stime
        t1 = time.perf_counter()
        opts = ExportOptions(roster=Path(tmp) / "roster.csv",
                             canvas_gradebook=Path(tmp) / "gradebook.csv")
        for fmt in FORMATS:
            paths.append(export_gradebook(store, 1, fmt, out, opts).path)  # type: ignore[arg-type]
        t_exports = time.perf_counter() - t1
        wall = time.perf_counter() - t0
        store.close()
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        child_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        xlsx_mb = (out / "review.xlsx").stat().st_size / 1e6
        pages = sum(1 for p in paths if p.parent.name in ("students", "handouts"))
        print(f"write_reports (xlsx + report.html + {pages} student pages, teacher and "
              "student views): "
              f"{t_reports:.2f} s; exports (canvas, moodle, csv): {t_exports:.2f} s")
        print(f"CPU of write_reports: this process {cpu_reports:.2f} s (HTML), workbook child "
              f"{cpu_child:.2f} s")
        print(f"review.xlsx {xlsx_mb:.1f} MB; report.html "
              f"{(out / 'report.html').stat().st_size / 1e6:.1f} MB")
        ok = wall <= TARGET_S and peak_mb + child_mb <= TARGET_MB
        print(f"wall time {wall:.2f} s (target <= {TARGET_S:g} s); peak RSS {peak_mb:.0f} MB "
              f"+ largest child {child_mb:.0f} MB = {peak_mb + child_mb:.0f} MB "
              f"(target <= {TARGET_MB:g} MB): {'OK' if ok else 'OVER TARGET'}")
        print(f"load average before/after: {load0} / {os.getloadavg()[0]:.2f} on "
              f"{os.cpu_count()} CPUs (other work on the machine slows this down)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
