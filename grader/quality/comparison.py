"""`grade eval CLASS_DIR --compare RUN_A RUN_B`: did a change (graded examples, a tuned model)
move the model's agreement with the human scores?

Both runs are measured against the same human rater (`--rater`, else the one with most scores)
on the students that have a score by that rater and a model grade in both runs, per criterion
and for the total: QWK, MAE and exact agreement of each run, and the difference B − A with a
paired bootstrap 95% interval (`metrics.paired`: students are resampled together). An interval
that excludes 0 is a difference these students support; one that includes 0 is not evidence
either way — small classes rarely settle small differences.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grader.config.settings import Settings, db_path
from grader.errors import InputError
from grader.escape import escape_cell
from grader.grading.exemplars import same_scheme
from grader.grading.records import Run
from grader.quality import metrics
from grader.quality.evaluation import ai_table, human_tables, pick_reference, score_targets
from grader.quality.metrics import Paired
from grader.review.final import finals, load_rubric
from grader.store.opening import class_store

CSV_FIELDS = ("class", "run_a", "run_b", "reference", "criterion", "n",
              *(f"{f}_{s}" for f in metrics.PAIRED for s in ("a", "b", "diff", "diff_lo",
                                                              "diff_hi")))


@dataclass
class Compared:
    name: str
    run_a: Run
    run_b: Run
    reference: str
    rows: list[tuple[str, str, Paired]]  # criterion id (or total), title, figures


def compare_runs(class_dir: Path, settings: Settings, run_a: int, run_b: int, *,
                 rater: str | None = None, resamples: int = metrics.RESAMPLES,
                 seed: int = metrics.SEED) -> Compared:
    path = db_path(class_dir, settings)
    with class_store(class_dir, settings) as store:
        runs = {r.id: r for r in store.runs()}
        for rid in (run_a, run_b):
            if rid not in runs:
                raise InputError(f"the store has no run {rid}", path=path,
                                 fix="pass two run ids of this store to --compare "
                                     "(`grade status` lists them)")
        ra, rb = runs[run_a], runs[run_b]
        rubric, other = load_rubric(store, run_a), load_rubric(store, run_b)
        if not same_scheme(rubric, other):
            raise InputError(f"runs {run_a} and {run_b} grade different criteria", path=path,
                             fix="compare two runs of the same rubric")
        humans = store.human_scores(ra.class_dir)
        if not humans:
            raise InputError("no human scores for this class", path=class_dir,
                             fix=f"import them with `grade human import FILE {class_dir}`")
        table_a = ai_table(list(finals(store, run_a, rubric)))
        table_b = ai_table(list(finals(store, run_b, rubric)))
    reference = pick_reference(humans, rater, class_dir)
    ref = human_tables(humans, rubric)[reference]
    rows = []
    for cid, title, grid, _top in score_targets(rubric):
        x, y, r = table_a.get(cid, {}), table_b.get(cid, {}), ref.get(cid, {})
        common = sorted(set(x) & set(y) & set(r))
        rows.append((cid, title, metrics.paired(
            [x[s] for s in common], [y[s] for s in common], [r[s] for s in common], grid,
            resamples=resamples, seed=seed)))
    return Compared(class_dir.resolve().name, ra, rb, reference, rows)


def _num(v: float | None, signed: bool = False) -> str:
    return "–" if v is None else f"{v:+.2f}" if signed else f"{v:.2f}"


def _diff(p: Paired, name: str) -> str:
    ci = p.ci.get(name)
    return _num(p.diff.get(name), signed=True) + (
        f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci is not None else "")


def render(c: Compared) -> str:
    a, b = c.run_a, c.run_b
    lines = [f"{c.name}: run {a.id} ({a.backend}:{a.model}) = A, run {b.id} "
             f"({b.backend}:{b.model}) = B, against {c.reference}",
             f"  {'criterion':<16}{'n':>5}  {'QWK A':>6}{'QWK B':>7}  {'ΔQWK [95% CI]':<24}"
             f"{'MAE A':>6}{'MAE B':>7}  {'ΔMAE [95% CI]':<24}{'exact A':>8}{'exact B':>8}  "
             "Δexact [95% CI]"]
    for cid, _title, p in c.rows:
        lines.append(
            f"  {cid[:15]:<16}{p.n:>5}  {_num(p.a.get('qwk')):>6}{_num(p.b.get('qwk')):>7}  "
            f"{_diff(p, 'qwk'):<24}{_num(p.a.get('mae')):>6}{_num(p.b.get('mae')):>7}  "
            f"{_diff(p, 'mae'):<24}{_num(p.a.get('exact')):>8}{_num(p.b.get('exact')):>8}  "
            f"{_diff(p, 'exact')}")
    lines.append("  Δ = B − A: higher QWK and exact, lower MAE are better; an interval that "
                 "includes 0 is not evidence of a difference")
    return "\n".join(lines)


def write_csv(c: Compared, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        w.writeheader()
        for cid, _title, p in c.rows:
            row: dict[str, Any] = {"class": c.name, "run_a": c.run_a.id, "run_b": c.run_b.id,
                                   "reference": c.reference, "criterion": cid, "n": p.n}
            for f in metrics.PAIRED:
                ci = p.ci.get(f)
                row |= {f"{f}_a": p.a.get(f), f"{f}_b": p.b.get(f), f"{f}_diff": p.diff.get(f),
                        f"{f}_diff_lo": ci[0] if ci else None,
                        f"{f}_diff_hi": ci[1] if ci else None}
            w.writerow({k: escape_cell("" if v is None else round(v, 6)
                                       if isinstance(v, float) else v) for k, v in row.items()})
    tmp.replace(path)
    return path
