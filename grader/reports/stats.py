"""Class statistics: distributions, item analysis and AI/teacher agreement.

Distributions are plain Python (a few thousand numbers per criterion); the quadratic weighted
kappa is `grader.quality.metrics.qwk` on the criterion's score grid, the same code as `grade eval`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from grader.config.generation import served_notice
from grader.config.models import Pricing, packaged, table
from grader.config.settings import SELF_HOSTED
from grader.grading.records import Run
from grader.prompting.rubric import Criterion
from grader.quality import metrics
from grader.review.final import FinalStudent
from grader.store import Store


@dataclass
class Summary:
    n: int
    mean: float | None
    median: float | None
    stdev: float | None
    minimum: float | None
    maximum: float | None


@dataclass
class Bin:
    label: str
    count: int


@dataclass
class CriterionStats:
    criterion: Criterion
    summary: Summary
    ai_mean: float | None
    mean_percent: float | None
    full_marks_share: float | None
    distribution: list[Bin]


@dataclass
class Agreement:
    criterion: Criterion
    n: int
    exact: float | None
    within_one: float | None
    mean_abs_change: float | None
    kappa: float | None


def summarize(values: Sequence[float]) -> Summary:
    if not values:
        return Summary(0, None, None, None, None, None)
    return Summary(
        n=len(values), mean=statistics.fmean(values), median=statistics.median(values),
        stdev=statistics.pstdev(values) if len(values) > 1 else 0.0,
        minimum=min(values), maximum=max(values),
    )


def histogram(values: Sequence[float], maximum: float, bins: int = 10) -> list[Bin]:
    """Equal-width bins over 0..maximum; the last bin includes the maximum."""
    counts = [0] * bins
    for v in values:
        i = int(v / maximum * bins) if maximum > 0 else 0
        counts[min(max(i, 0), bins - 1)] += 1
    width = maximum / bins
    return [Bin(f"{i * width:g}–{(i + 1) * width:g}", c) for i, c in enumerate(counts)]


def score_distribution(values: Sequence[float], crit: Criterion) -> list[Bin]:
    """Per-score counts for level criteria and small whole- or half-point scales (up to 21
    scores), else ten equal bins."""
    points = crit.allowed_points
    if points is None:
        for step in (1.0, 0.5):
            n = crit.max_points / step
            if (n.is_integer() and n <= 20
                    and all(float(v / step).is_integer() for v in values)):
                points = tuple(i * step for i in range(int(n) + 1))
                break
    if points is None:
        return histogram(values, crit.max_points)
    counts = dict.fromkeys(points, 0)
    for v in values:
        nearest = min(points, key=lambda p: abs(p - v))
        counts[nearest] += 1
    return [Bin(f"{p:g}", c) for p, c in counts.items()]


def criterion_stats(students: Sequence[FinalStudent]) -> list[CriterionStats]:
    if not students:
        return []
    out = []
    for i, crit_final in enumerate(students[0].criteria):
        crit = crit_final.criterion
        finals = [f for s in students if (f := s.criteria[i].final) is not None]
        ais = [a for s in students if (a := s.criteria[i].ai_score) is not None]
        summary = summarize(finals)
        out.append(CriterionStats(
            criterion=crit, summary=summary,
            ai_mean=statistics.fmean(ais) if ais else None,
            mean_percent=100.0 * summary.mean / crit.max_points if summary.mean is not None
            else None,
            full_marks_share=(sum(1 for f in finals if f >= crit.max_points) / len(finals))
            if finals else None,
            distribution=score_distribution(finals, crit),
        ))
    return out


def hardest(stats: Sequence[CriterionStats], n: int = 3) -> list[CriterionStats]:
    """Criteria with the lowest mean percent first (item difficulty)."""
    scored = [s for s in stats if s.mean_percent is not None]
    return sorted(scored, key=lambda s: s.mean_percent or 0.0)[:n]


def quadratic_weighted_kappa(a: Sequence[float], b: Sequence[float],
                             categories: Sequence[float] | None = None) -> float | None:
    """Cohen's kappa with quadratic weights over ordered categories
    (`grader.quality.metrics.qwk`, the same scikit-learn code `grade eval` uses); categories
    default to the values seen.

    Returns None when it is undefined: no pairs, or a single category (no expected disagreement).
    """
    if len(a) != len(b):
        raise ValueError("rating lists differ in length")
    grid = sorted(set(categories) if categories is not None else set(a) | set(b))
    return metrics.qwk(a, b, grid) if len(grid) > 1 else None


def agreement(students: Sequence[FinalStudent]) -> list[Agreement]:
    """Per criterion, over reviewed students: did the teacher keep the AI's score?"""
    reviewed = [s for s in students if s.reviewed or s.has_overrides]
    if not reviewed:
        return []
    out = []
    for i, crit_final in enumerate(reviewed[0].criteria):
        crit = crit_final.criterion
        pairs = [(c.ai_score, c.final) for s in reviewed
                 if (c := s.criteria[i]).ai_score is not None and c.final is not None]
        ai = [float(p[0]) for p in pairs if p[0] is not None]
        fin = [float(p[1]) for p in pairs if p[1] is not None]
        if not pairs:
            out.append(Agreement(crit, 0, None, None, None, None))
            continue
        diffs = [abs(x - y) for x, y in zip(ai, fin, strict=True)]
        out.append(Agreement(
            criterion=crit, n=len(pairs),
            exact=sum(1 for d in diffs if d == 0) / len(diffs),
            within_one=sum(1 for d in diffs if d <= 1) / len(diffs),
            mean_abs_change=statistics.fmean(diffs),
            kappa=metrics.qwk(ai, fin, metrics.score_grid(crit)),
        ))
    return out


@dataclass
class RunCost:
    """What a run's calls cost (each attempt priced when its reply arrived, from its usage and
    the model table's price of that day) and which models answered them."""

    cost_usd: float | None  # None: a local model, or no call had a price (caches included)
    unpriced: int  # answered calls the model table had no price for
    tier: str
    checked: str  # when the packaged model table was checked
    served: list[tuple[str, int, str | None]]  # (model version [stage], calls, notice or None)
    cache_usd: float = 0.0  # creating and keeping the run's explicit caches (in cost_usd)
    basis: str = ""  # where the prices came from, e.g. "model table prices, checked 2026-11-22"


def server_priced(run: Run) -> bool:
    """A run on a school's own server whose model had a price in grader.toml (the run's
    settings keep the `[grader.models]` rows it was priced by)."""
    overrides = run.settings.get("models") or None
    return run.backend == "openai" and Pricing.of_server(table(overrides), overrides,
                                                         run.model).known


def run_cost(store: Store, run: Run, usage: dict[str, float]) -> RunCost:
    served = []
    for m in store.served_models(run.id):
        label = (m.model_version or "unknown") + (f" [{m.model_status}]" if m.model_status else "")
        served.append((label, m.calls, served_notice(run.model, m.model_version,
                                                     m.model_status)))
    priced_here = server_priced(run)
    local = (run.backend in SELF_HOSTED and not priced_here) or run.model.endswith(".gguf")
    cost = float(usage.get("cost_usd", 0.0))
    unknown = local or (usage.get("unpriced", 0) > 0 and cost == 0.0)
    cache = float(usage.get("cache_create_usd", 0.0)) + float(usage.get("cache_storage_usd", 0.0))
    screen = float(usage.get("screen_usd", 0.0))  # the model-based injection checks
    return RunCost(
        cost_usd=None if unknown else cost + cache + screen,
        unpriced=int(usage.get("unpriced", 0)), tier="standard" if run.backend in SELF_HOSTED
        else str(run.settings.get("tier") or "standard"),
        checked=str(packaged().checked), served=served, cache_usd=cache,
        basis=f"the price set for {run.model} in grader.toml" if priced_here else
        f"model table prices, checked {packaged().checked}")


def fmt_num(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}".rstrip("0").rstrip(".") if digits else f"{value:.0f}"
