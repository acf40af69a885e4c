"""How far two graders agree on one criterion: the figures of `grade eval`, of the calibration
gate and of the report's agreement section. Pure functions of two score lists.

Scores are compared on the criterion's *score grid* (`score_grid`): its level points, the sums
its checklist items can reach, or half points 0..max (what the prompt allows). Category figures
(QWK, exact and adjacent agreement, the confusion matrix) use a score's position on the grid, a
score between grid points counting as the nearest one; point figures (MAE, bias, correlations)
use the scores as given.

Point estimates come from scikit-learn and SciPy: `cohen_kappa_score(weights="quadratic")`,
`mean_absolute_error`, `accuracy_score`, `confusion_matrix`, `scipy.stats.pearsonr` and
`spearmanr`. A figure that is undefined for the data (every score equal, fewer than two pairs)
is None with a note saying why; it is never replaced by a made-up number.

Bootstrap 95% intervals: the pairs are resampled with replacement (seeded), and each figure's
2.5th and 97.5th percentiles over the resamples are the interval (resamples where the figure is
undefined are left out). Per resample the figures are computed on whole arrays at once:
correlations with `scipy.stats.pearsonr(axis=1)` (Spearman: on `scipy.stats.rankdata` ranks), and
QWK in its closed form over grid positions, 2·cov(a, b) / (var a + var b + (mean a − mean b)²)
with population moments, which is the same number as `cohen_kappa_score(weights="quadratic")`
(tests/test_metrics.py checks every resample of a case against it) at a thousandth of the cost.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from grader.prompting.rubric import Criterion, Rubric

RESAMPLES = 1000
SEED = 0
MAX_GRID = 2000  # grid points; beyond this a total's grid falls back to half points
# Elements of one resample batch (resamples x pairs): bounds memory for large classes.
_BATCH_ELEMENTS = 2_000_000
FIGURES = ("qwk", "mae", "pearson", "spearman", "exact", "adjacent", "bias")


def _rounded(values: Sequence[float]) -> tuple[float, ...]:
    return tuple(sorted({round(float(v), 9) for v in values}))


def _half_points(maximum: float) -> tuple[float, ...]:
    steps = math.floor(maximum * 2 + 1e-9)
    points = [n / 2 for n in range(steps + 1)]
    if not math.isclose(points[-1], maximum):
        points.append(maximum)
    return _rounded(points)


def _sums(parts: Sequence[Sequence[float]]) -> tuple[float, ...] | None:
    """Every total the parts can add up to, or None when there are more than MAX_GRID."""
    totals = {0.0}
    for options in parts:
        totals = {round(t + p, 9) for t in totals for p in options}
        if len(totals) > MAX_GRID:
            return None
    return tuple(sorted(totals))


def score_grid(c: Criterion) -> tuple[float, ...]:
    """The scores criterion `c` can take, ascending."""
    if c.allowed_points is not None:
        return _rounded(c.allowed_points)
    if c.checklist:
        sums = _sums([(0.0, item.points) for item in c.checklist])
        if sums is not None:
            return sums
    return _half_points(c.max_points)


def total_grid(rubric: Rubric) -> tuple[float, ...]:
    """The totals a rubric can produce (sums of its criteria's grids; half points 0..max when
    that set would be larger than MAX_GRID)."""
    sums = _sums([score_grid(c) for c in rubric.all_criteria])
    return sums if sums is not None else _half_points(rubric.max_total)


def positions(values: Sequence[float] | np.ndarray, grid: Sequence[float]) -> np.ndarray:
    """Each value's index on the grid (the nearest grid point; the lower one on a tie)."""
    g = np.asarray(grid, dtype=float)
    v = np.asarray(values, dtype=float)
    right = np.clip(np.searchsorted(g, v), 1, max(len(g) - 1, 1))
    left = right - 1
    if len(g) == 1:
        return np.zeros(len(v), dtype=int)
    nearer_left = np.abs(v - g[left]) <= np.abs(g[right] - v)
    return np.where(nearer_left, left, right).astype(int)


@dataclass
class Figures:
    """Agreement of `a` (the grader under test: the model, or a second rater) with `b` (the
    reference human) on one criterion or the total."""

    n: int
    max_points: float
    grid: tuple[float, ...]
    qwk: float | None = None
    mae: float | None = None
    pearson: float | None = None
    spearman: float | None = None
    exact: float | None = None
    adjacent: float | None = None
    bias: float | None = None  # mean of a - b: positive when `a` scores higher
    baseline_mae: float | None = None  # MAE of always predicting the mean of b
    ci: dict[str, tuple[float, float] | None] = field(default_factory=dict)
    confusion: list[list[int]] = field(default_factory=list)  # rows: b's grid, columns: a's
    notes: list[str] = field(default_factory=list)

    @property
    def mae_share(self) -> float | None:
        return None if self.mae is None or not self.max_points else self.mae / self.max_points

    def value(self, name: str) -> float | None:
        v = getattr(self, name)
        return None if v is None else float(v)


def qwk(a: Sequence[float], b: Sequence[float], grid: Sequence[float]) -> float | None:
    """Quadratic weighted kappa of two score lists on `grid` (scikit-learn); None when it is
    undefined (no pairs, or both graders gave one and the same grid point to everyone)."""
    if len(a) != len(b):
        raise ValueError("rating lists differ in length")
    if not a:
        return None
    from sklearn.metrics import cohen_kappa_score

    labels = list(range(len(grid)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 0/0 when undefined: reported as None
        k = float(cohen_kappa_score(positions(a, grid), positions(b, grid), labels=labels,
                                    weights="quadratic"))
    return None if math.isnan(k) else k


def _correlation(kind: str, a: np.ndarray, b: np.ndarray) -> float | None:
    from scipy import stats

    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    fn = stats.pearsonr if kind == "pearson" else stats.spearmanr
    value = float(fn(a, b).statistic)
    return None if math.isnan(value) else value


def _constant_note(who: str, values: np.ndarray) -> str:
    return f"every {who} score is {values[0]:g}"


def compare(a: Sequence[float], b: Sequence[float], grid: Sequence[float], max_points: float, *,
            resamples: int = RESAMPLES, seed: int = SEED, labels: tuple[str, str] = ("AI",
            "human")) -> Figures:
    """Every agreement figure of `a` against `b`, with bootstrap 95% intervals."""
    from sklearn.metrics import accuracy_score, confusion_matrix, mean_absolute_error

    if len(a) != len(b):
        raise ValueError("rating lists differ in length")
    grid = _rounded(grid)
    fig = Figures(n=len(a), max_points=float(max_points), grid=grid)
    if not a:
        fig.notes.append("no student has both scores")
        return fig
    va, vb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    pa, pb = positions(va, grid), positions(vb, grid)
    fig.qwk = qwk(list(va), list(vb), grid)
    fig.mae = float(mean_absolute_error(vb, va))
    fig.baseline_mae = float(mean_absolute_error(vb, np.full_like(vb, vb.mean())))
    fig.bias = float(np.mean(va - vb))
    fig.exact = float(accuracy_score(pb, pa))
    fig.adjacent = float(np.mean(np.abs(pa - pb) <= 1))
    fig.pearson = _correlation("pearson", va, vb)
    fig.spearman = _correlation("spearman", va, vb)
    fig.confusion = confusion_matrix(pb, pa, labels=list(range(len(grid)))).tolist()
    const_a, const_b = np.ptp(va) == 0, np.ptp(vb) == 0
    if fig.qwk is None:
        fig.notes.append(f"QWK undefined: every score is {grid[int(pa[0])]:g} for both "
                         f"{labels[0]} and {labels[1]} (nothing varies, so there is no "
                         "chance agreement to compare with)")
    if fig.pearson is None:
        why = ("fewer than two pairs" if len(va) < 2 else
               "; ".join(_constant_note(who, v) for who, v, c in
                         ((labels[0], va, const_a), (labels[1], vb, const_b)) if c))
        fig.notes.append(f"correlations undefined: {why}")
    fig.ci = bootstrap(va, vb, pa, pb, resamples=resamples, seed=seed,
                       defined={name: fig.value(name) is not None for name in FIGURES})
    return fig


def _qwk_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """QWK of each row pair of grid positions (closed form; equals cohen_kappa_score)."""
    mx, my = x.mean(axis=1), y.mean(axis=1)
    cov = ((x - mx[:, None]) * (y - my[:, None])).mean(axis=1)
    den = x.var(axis=1) + y.var(axis=1) + (mx - my) ** 2
    out = np.full(len(x), np.nan)
    np.divide(2 * cov, den, out=out, where=den > 0)
    return out


def _batch_figures(va: np.ndarray, vb: np.ndarray, pa: np.ndarray, pb: np.ndarray,
                   idx: np.ndarray) -> dict[str, np.ndarray]:
    from scipy import stats

    a, b = va[idx], vb[idx]
    xa, xb = pa[idx].astype(float), pb[idx].astype(float)
    out = {"mae": np.abs(a - b).mean(axis=1), "bias": (a - b).mean(axis=1),
           "exact": (xa == xb).mean(axis=1), "adjacent": (np.abs(xa - xb) <= 1).mean(axis=1),
           "qwk": _qwk_rows(xa, xb)}
    if idx.shape[1] >= 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # constant resamples: nan, left out below
            out["pearson"] = np.asarray(stats.pearsonr(a, b, axis=1).statistic)
            out["spearman"] = np.asarray(stats.pearsonr(
                stats.rankdata(a, axis=1), stats.rankdata(b, axis=1), axis=1).statistic)
    return out


def bootstrap(va: np.ndarray, vb: np.ndarray, pa: np.ndarray, pb: np.ndarray, *,
              resamples: int, seed: int, defined: dict[str, bool]
              ) -> dict[str, tuple[float, float] | None]:
    """Percentile 95% intervals of every figure over `resamples` paired resamples."""
    n = len(va)
    if resamples <= 0 or n < 2:
        return dict.fromkeys(FIGURES)
    rng = np.random.default_rng(seed)
    per_batch = max(1, _BATCH_ELEMENTS // n)
    chunks: dict[str, list[np.ndarray]] = {}
    done = 0
    while done < resamples:
        size = min(per_batch, resamples - done)
        idx = rng.integers(0, n, size=(size, n))
        for name, values in _batch_figures(va, vb, pa, pb, idx).items():
            chunks.setdefault(name, []).append(values)
        done += size
    out: dict[str, tuple[float, float] | None] = {}
    for name in FIGURES:
        values = np.concatenate(chunks[name]) if name in chunks else np.array([])
        values = values[np.isfinite(values)]
        if not defined.get(name, True) or len(values) < max(10, resamples // 10):
            out[name] = None
            continue
        lo, hi = np.percentile(values, [2.5, 97.5])
        out[name] = (float(lo), float(hi))
    return out


def as_dict(fig: Figures) -> dict[str, Any]:
    """The figures as one flat row (CSV, JSON), interval bounds as `<figure>_lo/_hi`."""
    row: dict[str, Any] = {"n": fig.n}
    for name in FIGURES:
        row[name] = fig.value(name)
        bounds = fig.ci.get(name)
        row[f"{name}_lo"], row[f"{name}_hi"] = bounds if bounds else (None, None)
        if name == "mae":
            row["mae_share"] = fig.mae_share
    row["baseline_mae"] = fig.baseline_mae
    return row


PAIRED = ("qwk", "mae", "exact")  # the figures `grade eval --compare` reports per criterion


@dataclass
class Paired:
    """Two graders (`a`, `b`: e.g. a run without and a run with graded examples) against the
    same reference on the same students: each one's figure, and b − a with a paired bootstrap
    95% interval (students resampled together, so both graders see the same resample)."""

    n: int
    a: dict[str, float | None] = field(default_factory=dict)
    b: dict[str, float | None] = field(default_factory=dict)
    diff: dict[str, float | None] = field(default_factory=dict)
    ci: dict[str, tuple[float, float] | None] = field(default_factory=dict)


def paired(a: Sequence[float], b: Sequence[float], ref: Sequence[float], grid: Sequence[float],
           *, resamples: int = RESAMPLES, seed: int = SEED) -> Paired:
    """QWK, MAE and exact agreement of `a` and of `b` with `ref`, and their difference b − a."""
    if not len(a) == len(b) == len(ref):
        raise ValueError("rating lists differ in length")
    out = Paired(n=len(a))
    if not a:
        return out
    grid = _rounded(grid)
    vr = np.asarray(ref, dtype=float)
    pr = positions(vr, grid)
    arrays = []
    for side, values in (("a", a), ("b", b)):
        v = np.asarray(values, dtype=float)
        p = positions(v, grid)
        arrays.append((v, p))
        fig = {"qwk": qwk(list(v), list(vr), grid), "mae": float(np.abs(v - vr).mean()),
               "exact": float(np.mean(p == pr))}
        getattr(out, side).update(fig)
    for name in PAIRED:
        x, y = out.a[name], out.b[name]
        out.diff[name] = None if x is None or y is None else y - x
    out.ci = dict.fromkeys(PAIRED)
    if resamples <= 0 or len(a) < 2:
        return out
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(resamples, len(a)))
    fa = _batch_figures(arrays[0][0], vr, arrays[0][1], pr, idx)
    fb = _batch_figures(arrays[1][0], vr, arrays[1][1], pr, idx)
    for name in PAIRED:
        d = fb[name] - fa[name]
        d = d[np.isfinite(d)]
        if out.diff[name] is None or len(d) < max(10, resamples // 10):
            continue
        lo, hi = np.percentile(d, [2.5, 97.5])
        out.ci[name] = (float(lo), float(hi))
    return out
