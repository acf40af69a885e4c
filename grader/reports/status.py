"""`grade status`: a plain-text account of what the store holds for a class: the latest run,
its cost, and where its review stands (approved, reviewed, needs review, pending), what an export
would withhold and why, which handouts the reports write, and which AI feedback waits for the
teacher under a changed score; all of it by the rules of `grader.review.final`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from grader.config.settings import Settings, db_path
from grader.reports.stats import run_cost
from grader.review.final import FinalStudent, HandoutMode, finals
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
            lines.append(f"cost: ${cost.cost_usd:.4f} ({cost.basis}{tier}{more}{cache})")
        elif run.backend == "openai":
            lines.append("cost: local, unpriced (the school's own model server)")
        for label, calls, note in cost.served:
            if note:
                lines.append(f"served: {label} for {calls} calls: {note}")
        if flags:
            lines.append("flags: " + ", ".join(f"{k} {v}" for k, v in flags.most_common()))
        lines += review_lines(list(finals(store, run.id)), settings.handouts)
        waiting = store.batch_jobs(run.class_dir, open_only=True)
        if waiting:
            lines.append(
                f"batch jobs still open: {len(waiting)} ({sum(j.requests for j in waiting)} "
                "request(s)): their students are not sent again; `grade batch collect` stores "
                "their grades")
        lost = store.unanswered(run.class_dir, include_running=not alive)
        if lost:
            who = ", ".join(sorted({u.student_id or "?" for u in lost}))
            lines.append(
                f"sent but never answered: {len(lost)} request(s) (runs "
                f"{', '.join(str(r) for r in sorted({u.run_id for u in lost}))}; {who}): the "
                "process stopped while they were in flight, and the service may have billed "
                "them; the next run asks again")
        return "\n".join(lines)


MAX_IDS = 10
REVIEW_STATES = ("approved", "reviewed", "needs review", "pending")


def _ids(ids: Sequence[str]) -> str:
    more = f" and {len(ids) - MAX_IDS} more" if len(ids) > MAX_IDS else ""
    return ", ".join(ids[:MAX_IDS]) + more


def review_lines(students: Sequence[FinalStudent], handouts: HandoutMode = "reviewed"
                 ) -> list[str]:
    """Review progress, what an export would withhold (and why), the handouts, and the AI
    feedback waiting for the teacher, for the students of one run."""
    if not students:
        return []
    states = Counter(s.review_status for s in students)
    lines = ["review: " + ", ".join(f"{states.get(k, 0)} {k}" for k in REVIEW_STATES)
             + f" (of {len(students)} students)"]
    held: dict[str, list[str]] = {}
    for s in students:
        why = s.hold_reason()
        if why is not None:
            held.setdefault(why, []).append(s.student_id)
    leaving = [s for s in students if s.hold_reason() is None]
    unreviewed = sum(1 for s in leaving if s.review_status == "pending")
    withheld = sum(len(v) for v in held.values())
    lines.append(f"export: {len(leaving)} grade(s) would be exported"
                 + (f" ({unreviewed} never reviewed by a teacher)" if unreviewed else "")
                 + (f"; {withheld} withheld:" if withheld else "; none withheld"))
    lines += [f"  {_ids(ids)}: {why}" for why, ids in held.items()]
    not_approved = [s.student_id for s in leaving if not s.approved]
    if not_approved:
        lines.append(f"  with --approved-only, {len(not_approved)} more withheld (not approved): "
                     + _ids(not_approved))
    written = sum(1 for s in students if s.handout(handouts))
    stamped = sum(1 for s in students if s.handout(handouts) and s.provisional)
    waiting = sum(1 for s in leaving if not s.handout(handouts))
    line = f"handouts (--handouts {handouts}): {written} student page(s)"
    if stamped:
        line += f", {stamped} of them stamped \"not yet reviewed\""
    if waiting:
        line += (f"; {waiting} grade(s) that may leave wait for a review (--handouts all "
                 "writes them, stamped \"not yet reviewed\")")
    lines.append(line)
    waits = [(s.student_id, s.held_feedback) for s in students if s.held_feedback]
    if waits:
        n = sum(len(c) for _, c in waits)
        lines.append(f"AI feedback waiting under a score the teacher changed: {n} "
                     f"{'criterion' if n == 1 else 'criteria'} of {len(waits)} student(s), "
                     "not shown to the student until kept or replaced in review.xlsx "
                     "(Feedback sheet): "
                     + _ids([f"{sid} ({', '.join(c)})" for sid, c in waits]))
    return lines
