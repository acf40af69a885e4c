"""A synthetic graded run written through the real Store API (tests and bench/bench_reports.py).

N students x K criteria with deterministic pseudo-random scores; some students are flagged
(by the model, or at ingest with no grade at all), and some carry hostile text in every field
that reaches a report: formula injection for xlsx/csv, script/markup injection for HTML.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grader.grading.records import (
    Answer,
    CriterionRow,
    FlagRow,
    GradeRecord,
    OutcomeRecord,
    RequestRecord,
    RunInfo,
    SubmissionRecord,
)
from grader.prompting.request import GradeResponse, Usage
from grader.store import Store

EVIL = (
    '=HYPERLINK("http://x","y")',
    "=cmd|' /C calc'!A0",
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "+1+1",
    "-2+3",
    "@SUM(A1:A2)",
    "\tTAB",
    "\rCR",
)
FORMULA_EVIL = tuple(e for e in EVIL if e[0] in "=+-@\t\r")
HTML_EVIL = ("<script>alert(1)</script>", "<img src=x onerror=alert(1)>")


def rubric_dict(k: int = 6) -> dict[str, Any]:
    criteria: list[dict[str, Any]] = [{
        "id": "c1", "title": "Thesis & argument", "max_points": 4,
        "levels": [{"points": p, "descriptor": f"level {p}"} for p in (0, 1, 2, 3, 4)],
    }]
    for i in range(2, k + 1):
        criteria.append({"id": f"c{i}", "title": f"Criterion {i}", "max_points": 10})
    return {"title": "Essay <b>1</b>", "criteria": criteria,
            "grade_bands": {"A": 85, "B": 70, "C": 50, "F": 0}}


@dataclass
class SyntheticRun:
    store: Store
    run_id: int
    student_ids: list[str]
    evil_ids: list[str]
    flagged_ids: list[str]
    ungraded_ids: list[str]


def _evil(i: int, slot: int) -> str:
    return EVIL[(i + slot) % len(EVIL)]


def build(store_path: Path | str, n: int = 30, k: int = 6, seed: int = 7,
          evil_every: int = 5, flag_every: int = 7, ungraded_every: int = 11,
          class_dir: str = "/classes/essay1") -> SyntheticRun:
    """Fill a store with one finished run. Students i % evil_every == 0 get hostile text."""
    rng = random.Random(seed)
    store = Store(store_path)
    store.conn.execute("PRAGMA synchronous=OFF")
    rubric = rubric_dict(k)
    run_id = store.begin_run(RunInfo(
        class_dir=class_dir, backend="gemini", model="gemini-2.5-flash",
        rubric_path="rubric.yaml", rubric_hash="r" * 16, prompt_hash="p" * 16,
        schema_hash="s" * 16, fingerprint="f" * 64, config_hash="c" * 64,
        sdk_version="3.4.0", grader_version="0.1.0", settings={"concurrency": 8},
        rubric=rubric,
    )).id
    ids, evil_ids, flagged_ids, ungraded_ids = [], [], [], []
    for i in range(n):
        sid = "-007" if i == 1 else f"s{i:05d}"
        evil = i % evil_every == 0
        name = f"{_evil(i, 0)} Student {i}" if evil else f"Student {i}"
        if evil and i % 2 == 0:
            name = _evil(i, 0)
        ids.append(sid)
        if evil:
            evil_ids.append(sid)
        sub_id = store.upsert_submission(SubmissionRecord(
            student_id=sid, name=name, email=f"{sid}@school.test", source="folder",
            content_hash=f"h{i}", body_hash=f"b{i}", files=[f"{sid}/essay.txt"],
            late=i % 13 == 0,
        ))
        if i % ungraded_every == 10:
            reason, msg = "empty", _evil(i, 3) if evil else "the submission is empty"
            store.record_outcome(OutcomeRecord(
                run_id=run_id, student_id=sid, submission_id=sub_id, status="flagged",
                reason=reason, message=msg))
            flagged_ids.append(sid)
            ungraded_ids.append(sid)
            continue
        crits = []
        for c in rubric["criteria"]:
            mx = float(c["max_points"])
            score = float(rng.choice([0, 1, 2, 3, 4])) if c.get("levels") else float(
                min(mx, max(0, round(rng.gauss(mx * 0.7, mx * 0.2)))))
            text = _evil(i, len(crits)) if evil else "clear and well supported"
            crits.append(CriterionRow(
                criterion_id=c["id"], score=score, max_points=mx,
                justification=f"{text}" if evil else f"Justification {i}/{c['id']}: {text}.",
                evidence=[_evil(i, 1) if evil else f"quote {i}", "second quote"],
                feedback=_evil(i, 2) if evil else f"Keep going on {c['title']}.",
            ))
        total = sum(c.score for c in crits)
        mxt = sum(float(c["max_points"]) for c in rubric["criteria"])
        flagged = i % flag_every == 3
        flags = [FlagRow("low_confidence", _evil(i, 4) if evil else "model unsure")] if flagged \
            else []
        request = RequestRecord(hash=f"req{i}", prefix_hash=None, model="gemini-2.5-flash",
                                body={"parts": [{"text": f"essay {i}"}]})
        attempt = store.begin_attempt(run_id=run_id, student_id=sid, submission_id=sub_id,
                                      request=request, sample=0, n=1)
        store.answer_attempt(attempt, request.hash, Answer(GradeResponse(
            text="{}", finish_reason="STOP", model_version="gemini-2.5-flash-001",
            usage=Usage(prompt_tokens=1200, output_tokens=300, thinking_tokens=100,
                        cached_tokens=800), latency_ms=1500.0)))
        gid = store.save_grade(GradeRecord(
            student_id=sid, submission_id=sub_id, fingerprint="f" * 64, sample=0, epoch=0,
            config_hash="c" * 64, run_id=run_id, status="flagged" if flagged else "graded",
            max_total=mxt, total=total, percent=round(100 * total / mxt, 2),
            overall_comment=_evil(i, 5) if evil else "Solid work overall.",
            needs_review=flagged, review_reason="low confidence" if flagged else None,
            model="gemini-2.5-flash", model_version="gemini-2.5-flash-001", criteria=crits,
            flags=flags, attempt_ids=[attempt],
        ))
        store.record_outcome(OutcomeRecord(
            run_id=run_id, student_id=sid, submission_id=sub_id, grade_id=gid,
            status="flagged" if flagged else "graded"))
        if flagged:
            flagged_ids.append(sid)
    store.finish_run(run_id, "done")
    store.conn.execute("PRAGMA synchronous=NORMAL")
    return SyntheticRun(store, run_id, ids, evil_ids, flagged_ids, ungraded_ids)


def require_tool(name: str, package: str) -> str:
    """The tool's path; skip locally when missing, but fail under CI where it must exist."""
    import os
    import shutil

    import pytest

    path = shutil.which(name)
    if path is None:
        msg = f"`{name}` not installed (Debian package `{package}`; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(msg + " — required when CI is set")
        pytest.skip(msg)
    return path


def rerun(store: Store, run_id: int, *, resubmit: tuple[str, ...] = (),
          regrade: dict[str, dict[str, float]] | None = None) -> int:
    """A later run of the same class: every student keeps their grade, except those in
    `resubmit` (a new submission and grade) and those in `regrade` (same submission, a new grade
    version with these AI scores). Returns the new run's id."""
    old = store.run(run_id)
    regrade = regrade or {}
    new_id = store.begin_run(RunInfo(
        class_dir=old.class_dir, backend=old.backend, model=old.model,
        rubric_path=old.rubric_path, rubric_hash=old.rubric_hash, prompt_hash=old.prompt_hash,
        schema_hash=old.schema_hash, fingerprint=old.fingerprint or "", config_hash="c" * 64,
        sdk_version=old.sdk_version, grader_version=old.grader_version, settings=old.settings,
        rubric=old.rubric)).id
    for res in list(store.results(run_id)):
        sub_id, gid = res.submission_id, res.grade_id
        crits = list(res.criteria)
        if res.student_id in resubmit:
            sub_id = store.upsert_submission(SubmissionRecord(
                student_id=res.student_id, name=res.name, email=res.email, source="folder",
                content_hash=f"new-{res.student_id}", body_hash=f"new-{res.student_id}",
                files=res.files, late=False))
        if res.student_id in resubmit or res.student_id in regrade:
            scores = regrade.get(res.student_id, {})
            crits = [CriterionRow(c.criterion_id, scores.get(c.criterion_id, c.score),
                                  c.max_points, c.justification, c.evidence, c.feedback)
                     for c in crits]
            total = sum(c.score for c in crits)
            mxt = res.max_total or 1.0
            assert sub_id is not None
            gid = store.save_grade(GradeRecord(
                student_id=res.student_id, submission_id=sub_id, fingerprint=old.fingerprint
                or "", sample=0, epoch=new_id, config_hash="c" * 64, run_id=new_id,
                status="graded", max_total=mxt, total=total,
                percent=round(100 * total / mxt, 2), overall_comment=res.overall_comment,
                needs_review=False, review_reason=None, model=old.model, model_version=None,
                criteria=crits))
        store.record_outcome(OutcomeRecord(
            run_id=new_id, student_id=res.student_id, submission_id=sub_id, grade_id=gid,
            status=res.status if gid == res.grade_id else "graded", reason=res.reason,
            message=res.message))
    store.finish_run(new_id, "done")
    return new_id
