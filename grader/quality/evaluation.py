"""`grade eval`: how well the model agrees with human graders on a class, measured.

For one run (default: the class's latest) the model's scores are compared with one human rater's
(the *reference*: `--rater`, else the rater with the most scores) per criterion and for the
total, with every figure of `grader.quality.metrics` (QWK on the score grid, MAE, Pearson, Spearman,
exact and adjacent agreement, bias, a confusion matrix, bootstrap 95% intervals, and the MAE of
always predicting the reference's mean, the baseline to beat). Every other rater (up to
MAX_RATERS - 1 of them, those with the most scores) is compared with the reference the same way
(human against human), so the model's figures sit beside how much people agree. A human total
is the rater's `total` row, else the sum of their criterion scores.

The run's answer groups (`review.groups`) are measured against the reference's totals: their
purity (the share of members whose human total is their group's most common one) and the review
decisions a teacher would make with groups (one per group, plus one per member off its group's
score) against one per student.

Flags are measured too: among the students the model's run flagged for review and among the
rest, the share whose total differs from the reference's by at least a point (a quarter of the
maximum when the maximum is below 4 points). Flags worth having catch more disagreements.

Several classes are evaluated in one call (one process: the statistics libraries load once);
when every class has the same criteria on the same grids, their pairs are also pooled.
"""

from __future__ import annotations

import csv
import difflib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grader.config.settings import Settings, db_path
from grader.errors import InputError, StoreError, some
from grader.escape import escape_cell
from grader.grading.records import HumanScore
from grader.prompting.rubric import Rubric
from grader.quality import metrics
from grader.quality.human import MAX_RATERS, TOTAL
from grader.quality.metrics import Figures
from grader.review import grouping
from grader.review import groups as groups_policy
from grader.review.final import FinalStudent, finals, load_rubric
from grader.store import Store
from grader.store.opening import class_run, class_store

MODEL = "AI"
CSV_FIELDS = (
    "class", "comparison", "grader", "reference", "criterion", "n", "qwk", "qwk_lo", "qwk_hi",
    "mae", "mae_lo", "mae_hi", "mae_share", "pearson", "pearson_lo", "pearson_hi", "spearman",
    "spearman_lo", "spearman_hi", "exact", "exact_lo", "exact_hi", "adjacent", "adjacent_lo",
    "adjacent_hi", "bias", "bias_lo", "bias_hi", "baseline_mae", "confusion", "notes",
    "groups", "group_purity", "group_decisions",  # the row of comparison "answer groups"
)
MAX_CLOSE = 10_000  # raters (most scores first) an unknown --rater is matched against
MAX_PRINTED_GRID = 12  # confusion matrices with more grid points go to the CSV only


@dataclass
class Row:
    """One comparison on one criterion (or `total`); `a`/`b` are the paired scores."""

    grader: str  # "AI" or a rater
    reference: str
    criterion: str
    title: str
    figures: Figures
    a: list[float] = field(default_factory=list, repr=False)
    b: list[float] = field(default_factory=list, repr=False)

    @property
    def comparison(self) -> str:
        return "model" if self.grader == MODEL else "human"


@dataclass
class FlagCatch:
    """Do the run's review flags point at the students the model got wrong?"""

    threshold: float
    flagged: int = 0
    flagged_disagree: int = 0
    unflagged: int = 0
    unflagged_disagree: int = 0

    @staticmethod
    def share(k: int, n: int) -> float | None:
        return k / n if n else None


@dataclass
class ClassEval:
    name: str
    run_id: int | None
    model: str
    reference: str
    raters: tuple[str, ...]
    rows: list[Row]
    flags: FlagCatch | None
    students: int  # with both a model grade and a reference score
    unmatched: int  # human-scored students with no model grade in the run
    groups: groups_policy.Figures | None = None  # the run's answer groups against the reference


def threshold(max_total: float) -> float:
    return min(1.0, max_total / 4)


def human_tables(humans: Sequence[HumanScore], rubric: Rubric
                  ) -> dict[str, dict[str, dict[str, float]]]:
    """rater -> criterion id or total -> student -> score (totals summed where not given)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for h in humans:
        out.setdefault(h.rater, {}).setdefault(h.criterion_id, {})[h.student_id] = h.score
    ids = [c.id for c in rubric.all_criteria]
    for table in out.values():
        totals = table.setdefault(TOTAL, {})
        students = set.intersection(*(set(table.get(cid, {})) for cid in ids)) if ids else set()
        for sid in students - set(totals):
            totals[sid] = sum(table[cid][sid] for cid in ids)
    return out


def ai_table(students: Sequence[FinalStudent]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for s in students:
        for c in s.criteria:
            if c.ai_score is not None:
                out.setdefault(c.criterion.id, {})[s.student_id] = float(c.ai_score)
        if s.result.total is not None and all(c.ai_score is not None for c in s.criteria):
            out.setdefault(TOTAL, {})[s.student_id] = float(s.result.total)
    return out


def _pairs(x: dict[str, float], y: dict[str, float]) -> tuple[list[float], list[float]]:
    common = sorted(set(x) & set(y))
    return [x[s] for s in common], [y[s] for s in common]


def score_targets(rubric: Rubric) -> list[tuple[str, str, tuple[float, ...], float]]:
    """(id, title, grid, max) for every criterion, then the total."""
    out = [(c.id, c.title, metrics.score_grid(c), c.max_points) for c in rubric.all_criteria]
    out.append((TOTAL, "Total", metrics.total_grid(rubric), rubric.max_total))
    return out


def rater_counts(humans: Sequence[HumanScore]) -> dict[str, int]:
    """Scores per rater."""
    counts: dict[str, int] = {}
    for h in humans:
        counts[h.rater] = counts.get(h.rater, 0) + 1
    return counts


def by_count(counts: dict[str, int]) -> list[str]:
    """The raters, most scores first (ties by name)."""
    return sorted(counts, key=lambda r: (-counts[r], r))


def pick_reference(humans: Sequence[HumanScore], rater: str | None,
                   where: Path | str | None = None) -> str:
    """`rater`, else the rater with the most scores. An unknown `rater` is refused naming the
    closest rater and a few others, never all of them: a store can hold thousands (one
    red-team import named 1.5 million, and listing them printed 14 MB)."""
    counts = rater_counts(humans)
    if rater is not None:
        if rater not in counts:
            ranked = by_count(counts)
            close = difflib.get_close_matches(rater, ranked[:MAX_CLOSE], n=1, cutoff=0.5)
            near = f"did you mean {close[0]!r}? " if close else ""
            raise InputError(
                f"no human scores by rater {rater[:80]!r} for this class; {near}it has "
                f"{len(counts):,} raters", path=where,
                fix=f"pass --rater with one of {some(ranked)} (most scores "
                    "first), or leave --rater out to use the rater with the most scores")
        return rater
    return by_count(counts)[0]


def evaluate(rubric: Rubric, students: Sequence[FinalStudent], humans: Sequence[HumanScore], *,
             name: str, run_id: int | None = None, model: str = "", rater: str | None = None,
             resamples: int = metrics.RESAMPLES, seed: int = metrics.SEED,
             where: Path | str | None = None,
             groups: Sequence[groups_policy.Group] = ()) -> ClassEval:
    """Every agreement figure of one run against the human scores (see the module docstring).
    Besides the reference, the MAX_RATERS - 1 raters with the most scores are compared with
    it, however many the store holds: each costs a bootstrap per criterion."""
    reference = pick_reference(humans, rater, where)
    tables = human_tables(humans, rubric)
    ref = tables[reference]
    ai = ai_table(students)
    rows: list[Row] = []
    graders: list[tuple[str, dict[str, dict[str, float]]]] = [(MODEL, ai)]
    others = [r for r in by_count(rater_counts(humans)) if r != reference][:MAX_RATERS - 1]
    graders += [(r, tables[r]) for r in sorted(others)]
    for grader, table in graders:
        for cid, title, grid, top in score_targets(rubric):
            a, b = _pairs(table.get(cid, {}), ref.get(cid, {}))
            fig = metrics.compare(a, b, grid, top, resamples=resamples, seed=seed,
                                  labels=(grader, reference))
            rows.append(Row(grader, reference, cid, title, fig, a, b))
    scored = {h.student_id for h in humans if h.rater == reference}
    graded = {s.student_id for s in students if any(c.ai_score is not None for c in s.criteria)}
    catch = FlagCatch(threshold(rubric.max_total))
    ref_total = ref.get(TOTAL, {})
    for s in students:
        mine, theirs = ai.get(TOTAL, {}).get(s.student_id), ref_total.get(s.student_id)
        if mine is None or theirs is None:
            continue
        off = abs(mine - theirs) >= catch.threshold - 1e-9
        if s.flagged:
            catch.flagged += 1
            catch.flagged_disagree += off
        else:
            catch.unflagged += 1
            catch.unflagged_disagree += off
    return ClassEval(name=name, run_id=run_id, model=model, reference=reference,
                     raters=tuple(sorted(tables)), rows=rows,
                     flags=catch if catch.flagged + catch.unflagged else None,
                     students=len(scored & graded), unmatched=len(scored - graded),
                     groups=groups_policy.figures(groups, ref_total) if groups else None)


def pooled(evals: Sequence[ClassEval], rubrics: Sequence[Rubric], *,
           resamples: int = metrics.RESAMPLES, seed: int = metrics.SEED) -> ClassEval | None:
    """All classes' pairs together, when every class has the same criteria on the same grids
    (None otherwise: pooling scores on different scales would mean nothing)."""
    if len(evals) < 2:
        return None
    shapes = {tuple((cid, grid, top) for cid, _, grid, top in score_targets(r)) for r in rubrics}
    if len(shapes) != 1:
        return None
    targets = {cid: (grid, top) for cid, _, grid, top in score_targets(rubrics[0])}
    merged: dict[tuple[str, str], Row] = {}
    for ev in evals:
        for row in ev.rows:
            key = (row.comparison if row.grader != MODEL else MODEL, row.criterion)
            if key not in merged:
                merged[key] = Row(row.grader if row.grader == MODEL else "other raters",
                                  "reference raters", row.criterion, row.title, row.figures)
            merged[key].a += row.a
            merged[key].b += row.b
    for (_, cid), row in merged.items():
        grid, top = targets[cid]
        row.figures = metrics.compare(row.a, row.b, grid, top, resamples=resamples, seed=seed,
                                      labels=(row.grader, row.reference))
    catch = FlagCatch(evals[0].flags.threshold if evals[0].flags else 0.0)
    for ev in evals:
        if ev.flags:
            catch.flagged += ev.flags.flagged
            catch.flagged_disagree += ev.flags.flagged_disagree
            catch.unflagged += ev.flags.unflagged
            catch.unflagged_disagree += ev.flags.unflagged_disagree
    figs = [e.groups for e in evals if e.groups is not None and e.groups.students]
    group_figs = groups_policy.Figures(
        *(sum(getattr(f, k) for f in figs) for k in ("groups", "students", "agreeing",
                                                      "decisions"))) if figs else None
    return ClassEval(name=f"pooled ({len(evals)} classes)", run_id=None,
                     model=", ".join(sorted({e.model for e in evals})),
                     reference="reference raters",
                     raters=tuple(sorted({r for e in evals for r in e.raters})),
                     rows=list(merged.values()),
                     flags=catch if catch.flagged + catch.unflagged else None,
                     students=sum(e.students for e in evals),
                     unmatched=sum(e.unmatched for e in evals), groups=group_figs)


def load(class_dir: Path, settings: Settings, *, run_id: int | None = None,
         rater: str | None = None) -> tuple[ClassEval, Rubric]:
    """Evaluate one class from its store."""
    path = db_path(class_dir, settings)
    with class_store(class_dir, settings) as store:
        run = class_run(store, class_dir, run_id)
        if run is None:
            raise StoreError("the store holds no run of this class", path=path,
                             fix=f"run `grade run {class_dir}` first")
        humans = store.human_scores(run.class_dir)
        if not humans:
            raise InputError("no human scores for this class", path=class_dir,
                             fix=f"import them with `grade human import FILE {class_dir}` "
                                 "(columns student_id, criterion, score, rater)")
        rubric = load_rubric(store, run.id)
        students = list(finals(store, run.id, rubric))
        groups = grouping.current(store, run.id, class_dir)
    return evaluate(rubric, students, humans, name=class_dir.resolve().name, run_id=run.id,
                    model=f"{run.backend}:{run.model}", rater=rater, where=class_dir,
                    groups=groups), rubric


def run_eval(class_dirs: Sequence[Path], settings_for: Callable[[Path], Settings], *,
             run_id: int | None = None, rater: str | None = None,
             csv_path: Path | None = None) -> list[str]:
    """`grade eval`: evaluate each class (and the pool of them); the printed blocks."""
    if len(class_dirs) > 1 and run_id is not None:
        raise InputError("--run names one class's run",
                         fix="give --run with one CLASS_DIR, or leave it out to use each "
                             "class's latest run")
    loaded = [load(d, settings_for(d), run_id=run_id, rater=rater) for d in class_dirs]
    evals = [ev for ev, _ in loaded]
    pool = pooled(evals, [r for _, r in loaded])
    every = [*evals, *([pool] if pool else [])]
    if csv_path is not None:
        write_csv(every, csv_path)
    return [render_text(ev) for ev in every]


def for_report(store: Store, class_dir: str, rubric: Rubric,
               students: Sequence[FinalStudent]) -> ClassEval | None:
    """The report's section: None when the class has no human scores."""
    humans = store.human_scores(class_dir)
    if not humans:
        return None
    return evaluate(rubric, students, humans, name=Path(class_dir).name)


# --- output --------------------------------------------------------------------------------


def _num(v: float | None, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.0f}%"


def _ci(f: Figures, name: str, digits: int = 2) -> str:
    bounds = f.ci.get(name)
    return "" if bounds is None else f" [{bounds[0]:.{digits}f}, {bounds[1]:.{digits}f}]"


def confusion_text(row: Row) -> str | None:
    """The confusion matrix over the grid points either grader used (rows: the reference,
    columns: the grader); None when that is over MAX_PRINTED_GRID points."""
    f = row.figures
    used = [i for i in range(len(f.confusion))
            if any(f.confusion[i]) or any(r[i] for r in f.confusion)]
    if not used or len(used) > MAX_PRINTED_GRID:
        return None
    width = max(5, *(len(f"{f.grid[i]:g}") + 1 for i in used))
    lines = [f"  {row.criterion}: rows {row.reference}, columns {row.grader}",
             "  " + " " * 7 + "".join(f"{f.grid[i]:>{width}g}" for i in used)]
    for i in used:
        lines.append(f"  {f.grid[i]:>7g}" + "".join(f"{f.confusion[i][j]:>{width}d}"
                                                    for j in used))
    return "\n".join(lines)


def render_text(ev: ClassEval) -> str:
    """The printed report of one class (or of the pooled classes)."""
    run = f"run {ev.run_id}, " if ev.run_id is not None else ""
    lines = [f"{ev.name} ({run}{ev.model}): {ev.students} students with a model grade and "
             f"a score by {ev.reference}; raters: {some(ev.raters, MAX_RATERS)}"]
    if len(ev.raters) > MAX_RATERS:
        lines.append(f"  human against human: the {MAX_RATERS - 1} other raters with the most "
                     f"scores are compared with {ev.reference}, not all {len(ev.raters):,}")
    if ev.unmatched:
        lines.append(f"  {ev.unmatched} human-scored students have no model grade in this run")
    head = (f"  {'grader':<14}{'criterion':<16}{'n':>5}  {'QWK [95% CI]':<22}"
            f"{'MAE (of max) [95% CI]':<30}{'Pearson':>8}{'Spearman':>9}{'exact':>7}"
            f"{'adjacent':>9}{'bias':>7}  always-mean MAE")
    # adjacent: at most one grid step apart (half a point on a criterion without levels)
    lines.append(head)
    for r in ev.rows:
        f = r.figures
        mae = f"{_num(f.mae)} ({_pct(f.mae_share)}){_ci(f, 'mae')}" if f.mae is not None else "–"
        lines.append(
            f"  {r.grader[:13]:<14}{r.criterion[:15]:<16}{f.n:>5}  "
            f"{_num(f.qwk) + _ci(f, 'qwk'):<22}{mae:<30}{_num(f.pearson):>8}"
            f"{_num(f.spearman):>9}{_pct(f.exact):>7}{_pct(f.adjacent):>9}"
            f"{'–' if f.bias is None else f'{f.bias:+.2f}':>7}  {_num(f.baseline_mae)}")
    notes = [f"  {r.grader} / {r.criterion}: {n}" for r in ev.rows for n in r.figures.notes]
    if notes:
        lines.append("notes:")
        lines += notes
    if ev.flags:
        c = ev.flags
        off = f"off by ≥ {c.threshold:g} point{'' if c.threshold == 1 else 's'}"
        lines.append(
            f"flags: {c.flagged} flagged students, "
            f"{_pct(c.share(c.flagged_disagree, c.flagged))} of them {off} from {ev.reference}"
            f" on the total; {c.unflagged} not flagged, "
            f"{_pct(c.share(c.unflagged_disagree, c.unflagged))} {off}")
    if ev.groups is not None and ev.groups.students:
        g = ev.groups
        lines.append(
            f"answer groups: {g.groups} groups of {g.students} students scored by "
            f"{ev.reference}; purity {_pct(g.purity)} (members whose total by {ev.reference} "
            f"is their group's most common); review decisions: {g.decisions} by group (one per "
            f"group, one more per member off its group's score) vs {g.students} one per "
            "student")
    shown = [t for r in ev.rows if r.grader == MODEL and (t := confusion_text(r))]
    if shown:
        lines.append("confusion matrices (counts):")
        lines += shown
    return "\n".join(lines)


def csv_rows(ev: ClassEval) -> list[dict[str, Any]]:
    out = []
    for r in ev.rows:
        f = r.figures
        row = {"class": ev.name, "comparison": r.comparison, "grader": r.grader,
               "reference": r.reference, "criterion": r.criterion, **metrics.as_dict(f),
               "confusion": json.dumps({"grid": list(f.grid), "rows": "reference",
                                        "columns": "grader", "counts": f.confusion}),
               "notes": "; ".join(f.notes)}
        out.append(row)
    g = ev.groups
    if g is not None and g.students:
        out.append({"class": ev.name, "comparison": "answer groups", "grader": "groups",
                    "reference": ev.reference, "criterion": "total", "n": g.students,
                    "groups": g.groups, "group_purity": g.purity,
                    "group_decisions": g.decisions,
                    "notes": "purity: members whose total is their group's most common; "
                             "decisions: one per group, one more per member off its score"})
    return out


def write_csv(evals: Sequence[ClassEval], path: Path) -> Path:
    """One row per class, comparison and criterion (plus `total`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        w.writeheader()
        for ev in evals:
            for row in csv_rows(ev):
                w.writerow({k: escape_cell(_plain(v)) for k, v in row.items()})
    tmp.replace(path)
    return path


def _plain(v: Any) -> Any:
    return "" if v is None else round(v, 6) if isinstance(v, float) else v
