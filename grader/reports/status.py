"""`grade status`: a plain-text account of what the store holds for a class."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from grader.config.settings import Settings, db_path
from grader.reports.stats import run_cost
from grader.store.locks import RunLock
from grader.store.opening import class_run, class_store


def class_status(class_dir: Path, settings: Settings) -> str:
    path = db_path(class_dir, settings)
    with class_store(class_dir, settings) as store:
        run = class_run(store, class_dir, takes_run=False)
        if run is None:
            return f"{path}: no runs yet"
        counts: Counter[str] = Counter()
        flags: Counter[str] = Counter()
        for r in store.results(run.id):
            counts[r.status] += 1
            flags.update(f.reason for f in r.flags)
        usage = store.usage(run.id)
        state = run.status
        lock = RunLock(path)
        alive = lock.held()
        if run.status == "running":
            holder = lock.holder()
            state = (f"running now ({holder.describe() if holder else 'another process'})"
                     if alive else "running, or killed before it could say so")
        lines = [
            f"store: {path}",
            f"runs: {len(store.runs())}; grade versions stored: {store.grade_count()}",
            f"latest run {run.id} ({state}{', ' + run.mode if run.mode != 'normal' else ''}), "
            f"started {run.started_at}, {run.backend}:{run.model}",
            "students: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
            f"tokens: prompt {usage['prompt_tokens']:g}, output {usage['output_tokens']:g}, "
            f"thinking {usage['thinking_tokens']:g}, cached {usage['cached_tokens']:g} in "
            f"{usage['calls']:g} calls ({usage['retries']:g} retries)",
        ]
        cost = run_cost(store, run, usage)
        if cost.cost_usd is not None:
            tier = "" if cost.tier == "standard" else f", {cost.tier} tier"
            more = f"; {cost.unpriced} calls without a price" if cost.unpriced else ""
            cache = (f"; of which the context cache ${cost.cache_usd:.4f} (creation and "
                     "storage)" if usage.get("caches") else "")
            lines.append(f"cost: ${cost.cost_usd:.4f} (model table prices, checked "
                         f"{cost.checked}{tier}{more}{cache})")
        for label, calls, note in cost.served:
            if note:
                lines.append(f"served: {label} for {calls} calls: {note}")
        if flags:
            lines.append("flags: " + ", ".join(f"{k} {v}" for k, v in flags.most_common()))
        lost = store.unanswered(run.class_dir, include_running=not alive)
        if lost:
            who = ", ".join(sorted({u.student_id or "?" for u in lost}))
            lines.append(
                f"sent but never answered: {len(lost)} request(s) (runs "
                f"{', '.join(str(r) for r in sorted({u.run_id for u in lost}))}; {who}): the "
                "process stopped while they were in flight, and the service may have billed "
                "them; the next run asks again")
        return "\n".join(lines)
