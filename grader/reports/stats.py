"""Class statistics: distributions, item analysis and AI/teacher agreement.

Plain Python on purpose: the inputs are a few thousand numbers per criterion, and owning the
quadratic weighted kappa keeps its definition (category index distance) explicit and tested.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from ..final import FinalStudent
from ..rubric import Criterion

# USD per million tokens (input, output incl. thinking, cached input). An estimate for the report
# only; unknown models show no cost rather than a wrong one.
PRICES_PER_MTOK: dict[str, tuple[float, float, float]] = {
    "gemini-2.5-pro": (1.25, 10.0, 0.125),
    "gemini-2.5-flash": (0.30, 2.50, 0.03),
    "gemini-2.5-flash-lite": (0.10, 0.40, 0.01),
    "gemini-2.0-flash": (0.10, 0.40, 0.025),
}


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
    """Cohen's kappa with quadratic weights (i-j)^2/(k-1)^2 over ordered category indices.

    Returns None when it is undefined: no pairs, or a single category (no expected disagreement).
    """
    if len(a) != len(b):
        raise ValueError("rating lists differ in length")
    if not a:
        return None
    cats = sorted(set(categories) if categories is not None else set(a) | set(b))
    index = {c: i for i, c in enumerate(cats)}
    k = len(cats)
    if k < 2:
        return None
    n = len(a)
    observed = [[0.0] * k for _ in range(k)]
    for x, y in zip(a, b, strict=True):
        observed[index[x]][index[y]] += 1
    hist_a = [sum(row) for row in observed]
    hist_b = [sum(observed[i][j] for i in range(k)) for j in range(k)]
    num = den = 0.0
    for i in range(k):
        for j in range(k):
            w = (i - j) ** 2 / (k - 1) ** 2
            num += w * observed[i][j]
            den += w * hist_a[i] * hist_b[j] / n
    if den == 0:
        return None
    return 1.0 - num / den


def _categories(crit: Criterion, values: Sequence[float]) -> list[float]:
    if crit.allowed_points is not None:
        return sorted(set(crit.allowed_points) | set(values))
    if all(float(v).is_integer() for v in values) and crit.max_points.is_integer():
        return [float(p) for p in range(int(crit.max_points) + 1)]
    return sorted(set(values))


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
            kappa=quadratic_weighted_kappa(ai, fin, _categories(crit, ai + fin)),
        ))
    return out


def cost_usd(model: str, usage: dict[str, float],
             price_per_mtok: Sequence[float] | None = None) -> float | None:
    """Estimated spend for a run; None for models without a known price (local: 0).
    `price_per_mtok` (the run's `price_per_mtok` setting) wins over the built-in table."""
    if model.startswith("local") or model.endswith(".gguf"):
        return 0.0
    price = (tuple(price_per_mtok) if price_per_mtok else next(
        (p for name, p in sorted(PRICES_PER_MTOK.items(), key=lambda kv: -len(kv[0]))
         if model.startswith(name)), None))
    if price is None:
        return None
    inp, outp, cached = price
    prompt = float(usage.get("prompt_tokens", 0))
    cache = float(usage.get("cached_tokens", 0))
    output = float(usage.get("output_tokens", 0)) + float(usage.get("thinking_tokens", 0))
    return (max(prompt - cache, 0.0) * inp + cache * cached + output * outp) / 1e6


def fmt_num(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}".rstrip("0").rstrip(".") if digits else f"{value:.0f}"
