"""The bundled model through an OpenAI-compatible server (`--backend openai` against
llama-cpp-python's server) beside the same model in-process (`--backend local`), on the same
answers: seconds per student and how often the two grade alike.

Both runs go through the whole pipeline (`run_class`: intake, prompts, the judge, the store),
with redaction off so both send byte-identical prompts, greedy decoding (both backends' default)
and the same schema grammar. The server gets as many threads as the in-process model.

    .venv/bin/python bench/bench_openai_local.py [--class-dir samples/intro-python]
        [--limit 6] [--threads 2] [--max-output-tokens 512] [--keep FOLDER]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time
from pathlib import Path

from grader.config.settings import resolve
from grader.online.pipeline import RunSummary, run_class
from grader.testing._llama_server import LlamaServer

ROOT = Path(__file__).resolve().parents[1]


def scores(db: Path) -> dict[str, dict[str, float]]:
    """Each student's AI score per criterion in the store's latest run (graded or flagged)."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT o.student_id, c.criterion_id, c.score FROM outcomes o "
            "JOIN criterion_scores c ON c.grade_id = o.grade_id "
            "WHERE o.run_id = (SELECT MAX(id) FROM runs)").fetchall()
    out: dict[str, dict[str, float]] = {}
    for sid, cid, score in rows:
        out.setdefault(sid, {})[cid] = score
    return out


def answers(db: Path) -> dict[str, str]:
    """The model's first answer to each student (the reply text as stored)."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT a.student_id, r.text FROM attempts a JOIN responses r "
            "ON r.attempt_id = a.id ORDER BY a.id").fetchall()
    out: dict[str, str] = {}
    for sid, text in rows:
        out.setdefault(sid, text or "")
    return out


def grade(class_dir: Path, work: Path, limit: int, **flags: object) -> tuple[RunSummary, Path]:
    db = work / f"{flags['backend']}.sqlite"
    settings = resolve({**flags, "db": db, "limit": limit, "redact": False},
                       class_dir=class_dir)
    start = time.perf_counter()
    summary = run_class(class_dir, settings)
    summary.wall_s = time.perf_counter() - start
    return summary, db


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--class-dir", type=Path, default=ROOT / "samples" / "intro-python")
    ap.add_argument("--limit", type=int, default=6)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--max-output-tokens", type=int, default=512)
    ap.add_argument("--n-ctx", type=int, default=4096)
    ap.add_argument("--keep", type=Path, help="keep both stores in this folder")
    a = ap.parse_args()
    common = {"max_output_tokens": a.max_output_tokens}
    with tempfile.TemporaryDirectory() as tmp:
        work = a.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        local, local_db = grade(a.class_dir, work, a.limit, backend="local", n_ctx=a.n_ctx,
                                n_threads=a.threads, **common)
        with LlamaServer(n_ctx=a.n_ctx, n_threads=a.threads) as server:
            served, served_db = grade(
                a.class_dir, work, a.limit, backend="openai", base_url=f"{server.url}/v1",
                model=server.model, response_format="json_object", **common)
        mine, theirs = scores(local_db), scores(served_db)
        text_local, text_served = answers(local_db), answers(served_db)
    both = sorted(set(mine) & set(theirs))
    pairs = [(mine[s][c], theirs[s].get(c)) for s in both for c in mine[s]]
    same = sum(1 for x, y in pairs if y is not None and x == y)
    diff = [abs(x - y) for x, y in pairs if y is not None]
    identical = sum(1 for s in both if text_local.get(s) == text_served.get(s))
    print(f"class {a.class_dir} (first {a.limit} students), {a.threads} threads, "
          f"max {a.max_output_tokens} output tokens, n_ctx {a.n_ctx}")
    for label, s in (("local (in-process llama.cpp)", local),
                     ("openai (llama-cpp-python server)", served)):
        sent = max(1, s.students - s.reused)
        print(f"  {label:<34} {s.students} students: graded {s.graded}, flagged {s.flagged}, "
              f"failed {s.failed}; {s.wall_s:.1f} s, {s.wall_s / sent:.1f} s a student; "
              f"{s.calls} calls, prompt {s.usage.prompt_tokens} / output "
              f"{s.usage.output_tokens} tokens")
    print(f"  agreement: {same}/{len(pairs)} criterion scores equal "
          f"({100 * same / max(1, len(pairs)):.0f}%), mean |difference| "
          f"{sum(diff) / max(1, len(diff)):.2f} points; first answers byte-identical for "
          f"{identical}/{len(both)} students")


if __name__ == "__main__":
    main()
