"""`grade eval CLASS_DIR --compare RUN_A RUN_B` through the CLI on a hand-made store: each run's
figures equal scikit-learn's, the difference is B − A, the paired interval brackets it, a run
compared with itself differs by exactly 0, and unknown runs are refused."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from sklearn.metrics import cohen_kappa_score, mean_absolute_error

from grader.cli import cli
from grader.grading.records import (
    CriterionRow,
    GradeRecord,
    OutcomeRecord,
    RunInfo,
    SubmissionRecord,
)
from grader.prompting.rubric import Rubric
from grader.quality.metrics import paired
from grader.store import Store

RUBRIC = {"title": "Hand-made", "criteria": [
    {"id": "a", "title": "Argument", "max_points": 4},
    {"id": "b", "title": "Bits", "max_points": 2,
     "levels": [{"points": p, "descriptor": str(p)} for p in (0, 1, 2)]}]}
STUDENTS = [f"s{i}" for i in range(10)]
HUMAN = {"a": [0, 1, 1, 2, 4, 4, 3, 2, 3, 1], "b": [0, 1, 2, 1, 1, 0, 2, 2, 1, 0]}
RUN_A = {"a": [2, 2, 3, 3, 3, 2, 4, 1, 1, 3], "b": [1, 1, 1, 2, 2, 1, 1, 0, 0, 2]}
RUN_B = {"a": [0, 1, 2, 2, 4, 3, 3, 2, 3, 1], "b": [0, 1, 2, 1, 1, 1, 2, 2, 1, 0]}


def _add_run(store: Store, class_dir: Path, scores: dict[str, list[int]]) -> int:
    run = store.begin_run(RunInfo(
        class_dir=str(class_dir.resolve()), backend="gemini", model="m", rubric_path="r",
        rubric_hash="r", prompt_hash="p", schema_hash="s", fingerprint=f"f{len(store.runs())}",
        config_hash="c", sdk_version=None, grader_version="0", settings={},
        rubric=Rubric.model_validate(RUBRIC).model_dump(mode="json")))
    for i, sid in enumerate(STUDENTS):
        sub = store.upsert_submission(SubmissionRecord(
            student_id=sid, name=None, email=None, source="file", content_hash=sid,
            body_hash=sid, files=[f"{sid}.txt"], late=False))
        crits = [CriterionRow(c, float(scores[c][i]), m, "j", [], "f")
                 for c, m in (("a", 4.0), ("b", 2.0))]
        total = sum(c.score for c in crits)
        gid = store.save_grade(GradeRecord(
            student_id=sid, submission_id=sub, fingerprint=f"f{run.id}", sample=0, epoch=0,
            config_hash="c", run_id=run.id, status="graded", max_total=6, total=total,
            percent=100 * total / 6, overall_comment="", needs_review=False,
            review_reason=None, model="m", model_version=None, criteria=crits))
        store.record_outcome(OutcomeRecord(run_id=run.id, student_id=sid, submission_id=sub,
                                           grade_id=gid, status="graded"))
    store.finish_run(run.id, "done")
    return run.id


def cli_run(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return r.exit_code, r.output


@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[Path, Path]:
    class_dir = tmp_path / "hw"
    class_dir.mkdir()
    (class_dir / "rubric.yaml").write_text(yaml.safe_dump(RUBRIC), encoding="utf-8")
    db = tmp_path / "g.sqlite"
    with Store(db) as store:
        assert (_add_run(store, class_dir, RUN_A), _add_run(store, class_dir, RUN_B)) == (1, 2)
    scores = tmp_path / "human.csv"
    with scores.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["student_id", "criterion", "score", "rater"])
        for cid, values in HUMAN.items():
            for sid, v in zip(STUDENTS, values, strict=True):
                w.writerow([sid, cid, v, "ann"])
    code, out = cli_run("human", "import", str(scores), str(class_dir), "--db", str(db))
    assert code == 0, out
    return class_dir, db


def test_compare_two_runs(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    class_dir, db = two_runs
    table = tmp_path / "cmp.csv"
    code, out = cli_run("eval", str(class_dir), "--db", str(db), "--compare", "1", "2",
                        "--csv", str(table))
    assert code == 0, out
    assert "run 1 (gemini:m) = A, run 2 (gemini:m) = B, against ann" in out
    with table.open(newline="", encoding="utf-8") as fh:
        rows = {r["criterion"]: r for r in csv.DictReader(fh)}
    assert set(rows) == {"a", "b", "total"}
    for cid in ("a", "b"):
        r = rows[cid]
        qa = cohen_kappa_score(RUN_A[cid], HUMAN[cid], weights="quadratic")
        qb = cohen_kappa_score(RUN_B[cid], HUMAN[cid], weights="quadratic")
        assert float(r["qwk_a"]) == pytest.approx(qa, abs=1e-6)
        assert float(r["qwk_b"]) == pytest.approx(qb, abs=1e-6)
        assert float(r["qwk_diff"]) == pytest.approx(qb - qa, abs=1e-6)
        assert float(r["mae_diff"]) == pytest.approx(
            mean_absolute_error(HUMAN[cid], RUN_B[cid])
            - mean_absolute_error(HUMAN[cid], RUN_A[cid]), abs=1e-6)
        assert float(r["qwk_diff_lo"]) <= float(r["qwk_diff"]) <= float(r["qwk_diff_hi"])
        assert float(r["mae_diff_hi"]) < 0  # B is clearly closer to the human here
        assert r["n"] == "10"


def test_a_run_against_itself_differs_by_zero(two_runs: tuple[Path, Path]) -> None:
    class_dir, db = two_runs
    code, out = cli_run("eval", str(class_dir), "--db", str(db), "--compare", "2", "2")
    assert code == 0, out
    assert "+0.00 [+0.00, +0.00]" in out
    code, out = cli_run("eval", str(class_dir), "--db", str(db), "--compare", "1", "9")
    assert code == 2 and "no run 9" in out


def test_paired_is_deterministic_and_resamples_students_together() -> None:
    ref = [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]
    a = [1, 1, 2, 2, 3, 1, 1, 2, 2, 3]
    first = paired(a, ref, ref, (0, 1, 2, 3, 4), resamples=500, seed=3)
    assert first == paired(a, ref, ref, (0, 1, 2, 3, 4), resamples=500, seed=3)
    assert first.b["qwk"] == 1.0 and first.b["mae"] == 0.0
    assert first.diff["mae"] == pytest.approx(-np.mean(np.abs(np.subtract(a, ref))))
    lo, hi = first.ci["mae"]
    assert lo <= first.diff["mae"] <= hi < 0
