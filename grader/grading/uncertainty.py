"""How sure a grade is, and which students a human should look at. Pure functions, no I/O.

The checks `judge` (online grading and batch collecting alike) applies to one student's
verdicts (one per sample, each from `grading.decide`) before the grade is kept:

- **Several samples** (`--samples K`): per criterion the median of the samples' scores (the lower
  middle one when K is even, so the score is always one the model gave), its spread (max − min)
  and every sample's score; the total is the sum of the medians (computed here, as always); the
  justification, evidence and feedback come from the sample closest to the median. A sample that
  ended without a usable grade (its re-ask failed too, or the model was blocked) is left out and
  flags the student `sample_failed`; when none is usable, the first sample's verdict stands.
- **Review flags** (the grade stands; the student is sent to the teacher): `score_spread` when a
  criterion's samples differ by more than `max_spread` of its maximum; `near_band_boundary` when
  the total is within the spread of the samples' totals of a grade-band boundary;
  `evidence_not_found` when an evidence quote does not occur in the submission (ignoring case
  and spacing; failing that, a fuzzy match of at least `quote_similarity` percent with
  rapidfuzz's `partial_ratio`, so small slips in a quote pass and invented ones do not).

`check_evidence` runs on every sample's verdict, `combine` on several samples.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from dataclasses import replace

from rapidfuzz import fuzz

from grader.grading.policy import Policy, Verdict
from grader.grading.records import CriterionRow, FlagRow
from grader.prompting.rubric import Rubric

MIN_QUOTE_CHARS = 4  # shorter pieces of a quote ("a", "n=1") say nothing and are not checked
_ELLIPSIS = re.compile(r"\.\.\.+|…|\[\.\.\.\]")
_QUOTE_MARKS = " \"'`“”‘’«»"
SHOWN_QUOTES = 3


def normalize(text: str) -> str:
    """Case-folded, with every run of whitespace made one space."""
    return " ".join(text.casefold().split())


def quote_found(quote: str, haystack: str, similarity: float) -> bool:
    """Does `quote` occur in `haystack` (already `normalize`d)? Each piece of a quote elided with
    "..." is looked up on its own."""
    for piece in _ELLIPSIS.split(quote):
        q = normalize(piece).strip(_QUOTE_MARKS)
        if len(q) < MIN_QUOTE_CHARS or q in haystack:
            continue
        if fuzz.partial_ratio(q, haystack, score_cutoff=similarity) == 0:
            return False
    return True


def evidence_flags(criteria: Sequence[CriterionRow], text: str,
                   similarity: float) -> tuple[FlagRow, ...]:
    """One `evidence_not_found` flag naming the quotes (per criterion) missing from `text`."""
    haystack = normalize(text)
    missing = [(c.criterion_id, q) for c in criteria for q in c.evidence
               if not quote_found(q, haystack, similarity)]
    if not missing:
        return ()
    shown = "; ".join(f"{cid}: \u201c{q[:80]}\u201d" for cid, q in missing[:SHOWN_QUOTES])
    more = f" and {len(missing) - SHOWN_QUOTES} more" if len(missing) > SHOWN_QUOTES else ""
    return (FlagRow("evidence_not_found",
                    f"{len(missing)} evidence quote(s) do not occur in the submission ({shown}"
                    f"{more}); check that the grade rests on what the student wrote"),)


def _points(values: Sequence[float]) -> str:
    return ", ".join(f"{v:g}" for v in values)


def _unique(flags: Sequence[FlagRow]) -> tuple[FlagRow, ...]:
    seen: set[tuple[str, str]] = set()
    out = []
    for f in flags:
        if (f.reason, f.message) not in seen:
            seen.add((f.reason, f.message))
            out.append(f)
    return tuple(out)


def band_flags(rubric: Rubric, total: float, totals: Sequence[float]) -> tuple[FlagRow, ...]:
    """`near_band_boundary` when `total` is within the spread of `totals` of a band's minimum."""
    spread = max(totals) - min(totals)
    if spread <= 0 or not rubric.max_total:
        return ()
    for name, minimum in sorted(rubric.grade_bands.items(), key=lambda kv: -kv[1]):
        boundary = minimum / 100.0 * rubric.max_total
        if minimum > 0 and abs(total - boundary) <= spread:
            return (FlagRow("near_band_boundary",
                            f"the total {total:g} is within {spread:g} points (the spread of the "
                            f"samples' totals {_points(totals)}) of the boundary of band {name} "
                            f"({minimum:g}% = {boundary:g} points)"),)
    return ()


def combine(policy: Policy, verdicts: Sequence[Verdict]) -> Verdict:
    """One verdict from several samples of the same student (see the module docstring)."""
    usable = [v for v in verdicts if v.criteria]
    if not usable:
        return verdicts[0]
    rubric = policy.rubric
    flags: list[FlagRow] = []
    for k, v in enumerate(verdicts):
        if not v.criteria:
            flags.append(FlagRow("sample_failed",
                                 f"sample {k + 1} of {len(verdicts)} gave no usable grade "
                                 f"({v.reason}: {v.message}); the others were combined"))
    rows = []
    for i, c in enumerate(rubric.all_criteria):
        scores = [v.criteria[i].score for v in usable]
        median = statistics.median_low(scores)
        spread = max(scores) - min(scores)
        nearest = min(usable, key=lambda v: abs(v.criteria[i].score - median))
        rows.append(replace(nearest.criteria[i], score=median, spread=spread,
                            samples=tuple(scores)))
        if spread > policy.max_spread * c.max_points:
            flags.append(FlagRow("score_spread",
                                 f"{c.id}: the {len(scores)} samples scored {_points(scores)} "
                                 f"(spread {spread:g} of max {c.max_points:g}); grade it by hand"))
    total = float(sum(r.score for r in rows))
    totals = [float(v.total or 0.0) for v in usable]
    flags.extend(band_flags(rubric, total, totals))
    central = min(usable, key=lambda v: abs(float(v.total or 0.0) - total))
    review = next((v for v in usable if v.needs_review), None)
    model_flags = [f for v in usable for f in v.flags]
    return Verdict(
        status="flagged" if review else "graded", criteria=tuple(rows), total=total,
        percent=round(100.0 * total / rubric.max_total, 2),
        overall_comment=central.overall_comment, needs_review=review is not None,
        review_reason=review.review_reason if review else None,
        flags=_unique([*model_flags, *flags]), model_version=usable[0].model_version)


def check_evidence(policy: Policy, v: Verdict, text: str | None) -> Verdict:
    """`v` with an `evidence_not_found` flag when one of its quotes is not in `text` (the
    submission as extracted; None when it cannot be checked, e.g. images the quotes may come
    from)."""
    if not v.criteria or not text:
        return v
    extra = evidence_flags(v.criteria, text, policy.quote_similarity)
    return replace(v, flags=(*v.flags, *extra)) if extra else v


def spread_share(criteria: Sequence[CriterionRow]) -> float:
    """How unsure a grade is, 0..1: the largest criterion spread as a share of its maximum
    (0 for a single sample)."""
    return max((c.spread / c.max_points for c in criteria
                if c.spread is not None and c.max_points), default=0.0)
