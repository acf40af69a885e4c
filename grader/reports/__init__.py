"""Reports regenerated from the store alone (no model calls): workbook, HTML pages, exports.

`write_reports` computes final grades once (`grader.final.finals`) and feeds the same list to the
workbook and the HTML, so every output reflects the teacher's imported decisions.

A workbook is never written over a teacher's edits: `review.xlsx` is replaced only while it is
byte-for-byte the file grader wrote there (its hash is kept in `.grader-workbooks`), and never
when it is the file being imported. Otherwise the fresh workbook goes to `review-updated.xlsx`
(or `review-updated-2.xlsx`, …), and the teacher's file stays as it is.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..final import finals, load_rubric
from ..store import Store
from .excel import write_workbook
from .html import student_filename, write_html
from .stats import agreement, criterion_stats

__all__ = ["workbook_target", "write_reports"]

WORKBOOK = "review.xlsx"
WRITTEN = ".grader-workbooks"  # {file name: sha256 of the workbook as grader wrote it}
_MAX_TRIES = 100


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _written(out_dir: Path) -> dict[str, str]:
    try:
        data = json.loads((out_dir / WRITTEN).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _same_file(a: Path, b: Path | None) -> bool:
    if b is None:
        return False
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def workbook_target(out_dir: Path, keep: Path | None = None) -> Path:
    """Where the fresh workbook goes: the first of review.xlsx, review-updated.xlsx,
    review-updated-2.xlsx… that is absent, or unchanged since grader wrote it and not `keep`."""
    written = _written(out_dir)
    for i in range(_MAX_TRIES):
        name = WORKBOOK if i == 0 else ("review-updated.xlsx" if i == 1
                                        else f"review-updated-{i}.xlsx")
        path = out_dir / name
        if not path.exists():
            return path
        if not _same_file(path, keep) and written.get(name) == _sha256(path):
            return path
    return out_dir / f"review-updated-{_MAX_TRIES}.xlsx"


def _remember(path: Path) -> None:
    written = _written(path.parent)
    written[path.name] = _sha256(path)
    tmp = path.parent / (WRITTEN + ".tmp")
    tmp.write_text(json.dumps(written, sort_keys=True, indent=0), encoding="utf-8")
    tmp.replace(path.parent / WRITTEN)


def write_reports(store: Store, run_id: int, out_dir: Path, keep: Path | None = None
                  ) -> list[Path]:
    """Write the review workbook, report.html, students/ and handouts/; returns the paths
    written. `keep`: a workbook that must not be overwritten (the one being imported)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rubric = load_rubric(store, run_id)
    students = list(finals(store, run_id, rubric))
    stats = criterion_stats(students)
    agree = agreement(students)
    pages = {s.student_id: student_filename(s.student_id) for s in students}
    target = workbook_target(out_dir, keep)
    paths = [write_workbook(store, run_id, rubric, students, stats, target, pages)]
    _remember(target)
    paths += write_html(store, run_id, rubric, students, stats, agree, out_dir)
    return paths
