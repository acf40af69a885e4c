"""How long `grade eval` takes over every SAF answer (about 2,500, 26 classes).

Converts SAF v2 (bench/saf_to_class.py) into a temporary folder, fills each class's store with a
synthetic finished run (the model's score is the tutor's, moved by 0, 1 or 2 levels at random,
seeded; some students flagged), imports the tutors' scores with `grade human import`'s code, then
times one `grade eval` process over all 26 classes (statistics, bootstrap intervals with 1,000
resamples per figure, the CSV), from process start to exit:

    .venv/bin/python bench/bench_eval.py [--saf ../shared/datasets/saf-v2]

The figures it prints about agreement are about synthetic scores, not about any model.
"""

from __future__ import annotations

import argparse
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from grader.config.settings import resolve
from grader.grading.records import (
    CriterionRow,
    FlagRow,
    GradeRecord,
    OutcomeRecord,
    RunInfo,
    SubmissionRecord,
)
from grader.prompting.rubric import Rubric
from grader.quality.human import import_scores
from grader.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parent))
from saf_to_class import SAF, convert


def fill(class_dir: Path, human_csv: Path, rng: random.Random) -> int:
    """One finished synthetic run of the class; returns the number of students."""
    rubric = Rubric.model_validate(yaml.safe_load((class_dir / "rubric.yaml").read_text("utf-8")))
    crit = rubric.criteria[0]
    levels = sorted(lv.points for lv in crit.levels)
    tutor = {}
    for line in human_csv.read_text("utf-8").splitlines()[1:]:
        sid, _, score, _ = line.split(",")
        tutor[sid] = float(score)
    store = Store(class_dir / ".grader" / "grader.sqlite")
    with store.atomic():
        run = store.begin_run(RunInfo(
            class_dir=str(class_dir.resolve()), backend="synthetic", model="synthetic",
            rubric_path="rubric.yaml", rubric_hash="r", prompt_hash="p", schema_hash="s",
            fingerprint="f", config_hash="c", sdk_version=None, grader_version="bench",
            settings={}, rubric=rubric.model_dump(mode="json")))
        for sid, score in sorted(tutor.items()):
            i = levels.index(score)
            shift = rng.choices((0, 1, 2), weights=(6, 3, 1))[0] * rng.choice((-1, 1))
            ai = levels[min(len(levels) - 1, max(0, i + shift))]
            flagged = rng.random() < (0.7 if abs(shift) == 2 else 0.1)
            sub = store.upsert_submission(SubmissionRecord(
                student_id=sid, name=None, email=None, source="file", content_hash=sid,
                body_hash=sid, files=[f"{sid}.txt"], late=False))
            gid = store.save_grade(GradeRecord(
                student_id=sid, submission_id=sub, fingerprint="f", sample=0, epoch=0,
                config_hash="c", run_id=run.id, status="graded", max_total=crit.max_points,
                total=ai, percent=100 * ai / crit.max_points, overall_comment="",
                needs_review=False, review_reason=None, model="synthetic", model_version=None,
                criteria=[CriterionRow(crit.id, ai, crit.max_points, "", [], "")],
                flags=[FlagRow("score_spread", "synthetic")] if flagged else []))
            store.record_outcome(OutcomeRecord(run_id=run.id, student_id=sid,
                                               submission_id=sub, grade_id=gid,
                                               status="graded"))
        store.finish_run(run.id, "done")
    store.close()
    import_scores(human_csv, class_dir, resolve({}, class_dir=class_dir))
    return len(tutor)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--saf", type=Path, default=SAF)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        root = Path(tmp)
        rows = convert(args.saf, root)
        rng = random.Random(13)
        classes = sorted((root / "classes").iterdir())
        answers = sum(fill(c, root / "human" / f"{c.name}.csv", rng) for c in classes)
        print(f"{len(classes)} SAF classes, {answers} answers with a synthetic model grade and "
              f"the tutors' scores ({sum(r['moved'] for r in rows)} moved to the grid)")
        grade = Path(sys.executable).with_name("grade")
        t0 = time.perf_counter()
        done = subprocess.run([str(grade), "eval", *map(str, classes), "--csv",
                               str(root / "eval.csv")], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if done.returncode:
            sys.exit(f"grade eval failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        rows_out = len((root / "eval.csv").read_text("utf-8").splitlines()) - 1
        print(f"grade eval over {len(classes)} classes ({answers} answers): {wall:.2f} s wall, "
              f"process start to exit, peak RSS {peak:.0f} MB; {rows_out} CSV rows "
              f"(target: <= 10 s)")


if __name__ == "__main__":
    main()
