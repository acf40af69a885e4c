"""report: the last pipeline step. Writes every output of a run from the store alone, so
`grade report` can regenerate them without calling a model (and `grade review import` refreshes
them after the teacher's decisions)."""

from __future__ import annotations

import csv
from pathlib import Path

from grader.config.settings import Settings, out_dir
from grader.errors import StoreError
from grader.escape import escape_cell
from grader.outputs import mark_output_folder
from grader.review.final import HandoutMode, finals, load_rubric
from grader.review.grouping import Grouping, ensure
from grader.store import Store
from grader.store.opening import class_run, class_store


def grades_csv(store: Store, run_id: int, out: Path) -> Path:
    """OUT/grades.csv: one row per student. `ai_*` columns are the model's scores, `final_*` the
    values that count (the teacher's where one was decided, else the AI's)."""
    rubric = load_rubric(store, run_id)
    ids = [c.id for c in rubric.all_criteria]
    out.mkdir(parents=True, exist_ok=True)
    path = out / "grades.csv"
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["student_id", "name", "status", "review_status",
                    *(f"ai_{i}" for i in ids), *(f"final_{i}" for i in ids),
                    "ai_total", "final_total", "max_total", "final_percent", "band", "flags"])
        for s in finals(store, run_id, rubric):
            r = s.result
            flags = "; ".join(f"{f.reason}: {f.message}" for f in r.flags)
            row = [r.student_id, r.name or "", r.status, s.review_status,
                   *(_num(c.ai_score) for c in s.criteria), *(_num(c.final) for c in s.criteria),
                   _num(s.ai_total), _num(s.final_total), _num(rubric.max_total),
                   _num(s.final_percent), s.band or "", flags]
            w.writerow([escape_cell(v) for v in row])
    tmp.replace(path)
    return path


def _num(v: float | None) -> str:
    return "" if v is None else f"{v:g}"


def regenerate(class_dir: Path, settings: Settings, run_id: int | None = None) -> list[Path]:
    """`grade report`: rewrite all outputs of a run (default: the class's latest) from the store."""
    with class_store(class_dir, settings) as store:
        run = class_run(store, class_dir, run_id)
        if run is None:
            raise StoreError("the store holds no runs", path=store.path,
                             fix=f"run `grade run {class_dir}` first")
        return write_outputs(store, run.id, out_dir(class_dir, settings),
                             handouts=settings.handouts, grouping=Grouping.of(settings))


def write_outputs(store: Store, run_id: int, out: Path, keep: Path | None = None,
                  handouts: HandoutMode = "reviewed", grouping: Grouping | None = None
                  ) -> list[Path]:
    """grades.csv plus the review workbook and HTML reports, in a folder marked as ours (so it
    is never read as a student's submission). `keep`: a workbook never to overwrite;
    `handouts`: which handouts to write (`FinalStudent.handout`); `grouping`: group the run's
    answers afresh so (None: keep the run's answer groups, computing them once if it has
    none, `grouping.ensure`)."""
    from grader.reports import write_reports  # imported here: only needed for output

    ensure(store, run_id, grouping, Path(store.run(run_id).class_dir))
    mark_output_folder(out, Path(store.run(run_id).class_dir))
    return [grades_csv(store, run_id, out),
            *write_reports(store, run_id, out, keep, handouts=handouts)]
