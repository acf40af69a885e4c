"""report: the last pipeline step. Writes every output of a run from the store alone, so
`grade report` can regenerate them without calling a model."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ._escape import escape_cell
from .errors import StoreError
from .rubric import Rubric
from .settings import Settings
from .store import Store


def grades_csv(store: Store, run_id: int, out_dir: Path) -> Path:
    """OUT/grades.csv: one row per student — id, name, each criterion, total, percent, flags."""

    rubric = Rubric.model_validate(json.loads(store.run(run_id)["rubric_json"]))
    ids = [c.id for c in rubric.all_criteria]
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "grades.csv"
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["student_id", "name", "status", *ids, "total", "max_total", "percent",
                    "flags"])
        for r in store.results(run_id):
            scores = {c.criterion_id: c.score for c in r.criteria}
            flags = "; ".join(f"{f.reason}: {f.message}" for f in r.flags)
            row = [r.student_id, r.name or "", r.status, *(scores.get(i, "") for i in ids),
                   _num(r.total), _num(r.max_total or rubric.max_total), _num(r.percent), flags]
            w.writerow([escape_cell(v) for v in row])
    tmp.replace(path)
    return path


def _num(v: float | None) -> str:
    return "" if v is None else f"{v:g}"


def regenerate(class_dir: Path, settings: Settings, run_id: int | None = None) -> list[Path]:
    """`grade report`: rewrite all outputs of a run (default: the class's latest) from the store."""
    from .pipeline import db_path

    path = db_path(class_dir, settings)
    if not path.exists():
        raise StoreError("no grade store yet", path=path,
                         fix=f"run `grade run {class_dir}` first, or pass --db PATH")
    out_dir = settings.out or Path("reports") / class_dir.resolve().name
    with Store(path) as store:
        if run_id is None:
            run = store.latest_run(str(class_dir.resolve())) or store.latest_run()
            if run is None:
                raise StoreError("the store holds no runs", path=path,
                                 fix=f"run `grade run {class_dir}` first")
            run_id = int(run["id"])
        return write_outputs(store, run_id, out_dir)


def write_outputs(store: Store, run_id: int, out_dir: Path) -> list[Path]:
    """grades.csv plus the review workbook and HTML reports."""
    from .reports import write_reports  # imported here: openpyxl is only needed for output

    return [grades_csv(store, run_id, out_dir), *write_reports(store, run_id, out_dir)]
