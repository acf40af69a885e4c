"""`grade status`: a plain-text account of what the store holds for a class."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from .errors import StoreError
from .pipeline import db_path
from .settings import Settings
from .store import Store


def class_status(class_dir: Path, settings: Settings) -> str:
    path = db_path(class_dir, settings)
    if not path.exists():
        raise StoreError("no grade store yet", path=path,
                         fix=f"run `grade run {class_dir}` first, or pass --db PATH")
    with Store(path) as store:
        run = store.latest_run(str(class_dir.resolve())) or store.latest_run()
        if run is None:
            return f"{path}: no runs yet"
        counts: Counter[str] = Counter()
        flags: Counter[str] = Counter()
        for r in store.results(run["id"]):
            counts[r.status] += 1
            flags.update(f.reason for f in r.flags)
        usage = store.usage(run["id"])
        graded = store.conn.execute("SELECT COUNT(*) FROM grades").fetchone()[0]
        lines = [
            f"store: {path}",
            f"runs: {len(store.runs())}; grades stored: {graded}",
            f"latest run {run['id']} ({run['status']}), started {run['started_at']}, "
            f"{run['backend']}:{run['model']}",
            "students: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
            f"tokens: prompt {usage['prompt_tokens']}, output {usage['output_tokens']}, "
            f"cached {usage['cached_tokens']} in {usage['calls']} calls",
        ]
        if flags:
            lines.append("flags: " + ", ".join(f"{k} {v}" for k, v in flags.most_common()))
        return "\n".join(lines)
