"""Reports regenerated from the store alone (no model calls): workbook, HTML pages, exports.

`write_reports` computes final grades once (`grader.review.final.finals`) and feeds the same
list to the workbook and the HTML, so every output reflects the teacher's imported decisions.

For a large class the workbook is written by a second process while this one renders the HTML
pages (both are CPU-bound Python; on two cores this takes the reports from the sum of the two to
about the longer one). The child reads the store itself, so nothing large is pickled.

A workbook is never written over a teacher's edits: `review.xlsx` is replaced only while it is
byte-for-byte the file grader wrote there (its hash is kept in `.grader-workbooks`), and never
when it is the file being imported. Otherwise the fresh workbook goes to `review-updated.xlsx`
(or `review-updated-2.xlsx`, …), and the teacher's file stays as it is.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

from grader.prompting.rubric import Rubric
from grader.quality.evaluation import for_report
from grader.reports.excel import write_workbook
from grader.reports.html import student_filename, write_html
from grader.reports.stats import agreement, criterion_stats
from grader.review.final import FinalStudent, HandoutMode, finals, load_rubric, review_queue
from grader.store import Store

__all__ = ["workbook_target", "write_reports"]

WORKBOOK = "review.xlsx"
WRITTEN = ".grader-workbooks"  # {file name: sha256 of the workbook as grader wrote it}
_MAX_TRIES = 100
PARALLEL_FROM = 2000  # students from which the workbook gets its own process (when it can)


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


def as_written(path: Path) -> bool:
    """The workbook at `path` is byte for byte the one grader wrote there (nobody saved it
    since)."""
    return _written(path.parent).get(path.name) == _sha256(path)


def _workbook_names() -> list[str]:
    """review.xlsx, then review-updated.xlsx, review-updated-2.xlsx…: where grader writes a
    review workbook, in turn, when the ones before are the teacher's."""
    return [WORKBOOK, "review-updated.xlsx",
            *(f"review-updated-{i}.xlsx" for i in range(2, _MAX_TRIES + 1))]


def workbooks(out_dir: Path) -> list[Path]:
    """The review workbooks grader may have written in `out_dir`, in the order it names them."""
    return [out_dir / n for n in _workbook_names() if (out_dir / n).exists()]


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
    names = _workbook_names()
    for name in names[:-1]:
        path = out_dir / name
        if not path.exists():
            return path
        if not _same_file(path, keep) and written.get(name) == _sha256(path):
            return path
    return out_dir / names[-1]


def _remember(path: Path) -> None:
    written = _written(path.parent)
    written[path.name] = _sha256(path)
    tmp = path.parent / (WRITTEN + ".tmp")
    tmp.write_text(json.dumps(written, sort_keys=True, indent=0), encoding="utf-8")
    tmp.replace(path.parent / WRITTEN)


def _workbook(store: Store, run_id: int, target: Path,
              students: list[FinalStudent] | None = None) -> Path:
    rubric = load_rubric(store, run_id)
    students = review_queue(students if students is not None else finals(store, run_id, rubric))
    pages = {s.student_id: student_filename(s.student_id) for s in students}
    path = write_workbook(store, run_id, rubric, students, criterion_stats(students), target,
                          pages)
    _remember(path)
    return path


def _workbook_in_child(db: str, run_id: int, target: Path) -> Path:
    """The workbook, written by a separate process from its own connection to the store."""
    with Store(db) as store:
        return _workbook(store, run_id, target)


def _parallel(store: Store, students: int, parallel: bool | None) -> bool:
    """Whether the workbook gets its own process: asked for, or a large class on 2+ CPUs (a
    store in memory cannot be shared)."""
    if store.path == ":memory:":
        return False
    if parallel is not None:
        return parallel
    return students >= PARALLEL_FROM and (os.cpu_count() or 1) >= 2


def write_reports(store: Store, run_id: int, out_dir: Path, keep: Path | None = None,
                  parallel: bool | None = None, handouts: HandoutMode = "reviewed"
                  ) -> list[Path]:
    """Write the review workbook, report.html, students/ and handouts/; returns the paths
    written. `keep`: a workbook that must not be overwritten (the one being imported).
    `parallel`: write the workbook in a second process (default: for large classes).
    `handouts`: which handouts to write (`FinalStudent.handout`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rubric = load_rubric(store, run_id)
    target = workbook_target(out_dir, keep)
    if not _parallel(store, len(store.run_student_ids(run_id)), parallel):
        students = review_queue(finals(store, run_id, rubric))
        paths = [_workbook(store, run_id, target, students)]
        return paths + _html(store, run_id, rubric, students, out_dir, handouts)
    spawn = multiprocessing.get_context("spawn")  # never fork: the caller may hold threads
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        book: Future[Path] = pool.submit(_workbook_in_child, store.path, run_id, target)
        students = review_queue(finals(store, run_id, rubric))  # while the child starts
        html = _html(store, run_id, rubric, students, out_dir, handouts)
        return [book.result(), *html]


def _html(store: Store, run_id: int, rubric: Rubric, students: list[FinalStudent],
          out_dir: Path, handouts: HandoutMode) -> list[Path]:
    human = for_report(store, store.run(run_id).class_dir, rubric, students)
    return write_html(store, run_id, rubric, students, criterion_stats(students),
                      agreement(students), out_dir, human, handouts=handouts)
