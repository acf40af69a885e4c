"""SIGKILL `grade run` mid-class, rerun: every student graded exactly once, nobody paid twice."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from grader.testing.fake_gemini import FakeGemini

from _classgen import make_class


def count_grades(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM grades").fetchone()[0])
    except sqlite3.OperationalError:  # tables not created yet
        return 0


def grade_cmd(class_dir: Path, db: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "grader.cli", "run", str(class_dir), "--db", str(db),
            "--out", str(out), "--concurrency", "4"]


def test_sigkill_then_resume_grades_everyone_once(tmp_path: Path) -> None:
    n = 40
    class_dir = make_class(tmp_path, n)
    db, out = tmp_path / "g.sqlite", tmp_path / "out"
    env = {k: v for k, v in os.environ.items()
           if k not in ("GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI")}
    with FakeGemini(latency_ms=150, jitter_ms=50, seed=3) as fake:
        env.update(GEMINI_API_KEY="k", GOOGLE_GEMINI_BASE_URL=fake.url)
        proc = subprocess.Popen(grade_cmd(class_dir, db, out), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        fake.wait_for_requests(10 + 4)  # at --concurrency 4: at least 10 students graded
        assert proc.poll() is None, "run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        killed_at = count_grades(db)
        assert 10 <= killed_at < n

        done = subprocess.run(grade_cmd(class_dir, db, out), env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr + done.stdout
        assert f"{killed_at} reused" in done.stdout

        with sqlite3.connect(db) as conn:
            per_student = dict(conn.execute(
                "SELECT student_id, COUNT(*) FROM grades GROUP BY student_id"))
            graded = conn.execute("SELECT COUNT(*) FROM criterion_scores").fetchone()[0]
            last = conn.execute("SELECT MAX(run_id) FROM outcomes").fetchone()[0]
            outcomes = conn.execute("SELECT status, COUNT(*) FROM outcomes WHERE run_id=?"
                                    " GROUP BY status", (last,)).fetchall()
        assert len(per_student) == n and set(per_student.values()) == {1}
        assert graded == 2 * n  # no half-written grade: every grade has both criterion rows
        assert outcomes == [("graded", n)]
        billed = fake.stats()["billed_by_submission"]
        assert len(billed) == n
        assert max(billed.values()) == 1, {k: v for k, v in billed.items() if v > 1}
