"""The calibration gate `grade run` checks before a full run (see `grader.quality.calibration`).

Pure: it reads a stored `Calibration` and the bar (`calibration_min_qwk`). A criterion fails when
its QWK is below the bar, or when no student of the sample got a model grade on it; a QWK that is
undefined because teacher and model gave everyone the same score is agreement and passes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from grader.config.settings import Settings
from grader.errors import CalibrationError
from grader.grading.records import Calibration
from grader.quality.human import TOTAL


def below_bar(figures: dict[str, dict[str, Any]], bar: float
              ) -> list[tuple[str, dict[str, Any]]]:
    """The criteria that fail the bar, the worst first (no graded pair counts as worst)."""
    bad = [(cid, f) for cid, f in figures.items() if cid != TOTAL and (
        not f.get("n") or (f.get("qwk") is not None and f["qwk"] < bar))]
    return sorted(bad, key=lambda kv: (-math.inf if not kv[1].get("n") else kv[1]["qwk"],
                                       kv[0]))


def describe(failing: Sequence[tuple[str, dict[str, Any]]]) -> str:
    parts = []
    for cid, f in failing:
        if not f.get("n"):
            parts.append(f"{cid} (no graded student to compare)")
            continue
        exact = f.get("exact")
        parts.append(f"{cid} QWK {f['qwk']:.2f}"
                     + (f", exact {100 * exact:.0f}%" if exact is not None else ""))
    return "; ".join(parts)


def check_gate(cal: Calibration | None, settings: Settings, class_dir: str) -> None:
    """Raise CalibrationError when the class's calibration for this fingerprint is below the
    bar (the caller skips this under --force or for a run limited with --only)."""
    if cal is None:
        return
    bar = settings.calibration_min_qwk
    failing = below_bar(cal.figures, bar)
    if not failing:
        return
    raise CalibrationError(
        f"the calibration of this class is below the bar (calibration_min_qwk = {bar:g}): "
        f"{describe(failing)}, on {len(cal.students)} students scored blind by {cal.rater} "
        f"({cal.created_at})", path=class_dir,
        fix="reword those criteria in the rubric (the model reads them differently from you), "
            f"then run `grade calibrate {class_dir}` again; or pass --force to grade anyway")
