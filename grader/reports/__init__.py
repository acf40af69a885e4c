"""Reports regenerated from the store alone (no model calls): workbook, HTML pages, exports.

`write_reports` computes final grades once (`grader.final.finals`) and feeds the same list to the
workbook and the HTML, so every output reflects the teacher's imported decisions.
"""

from __future__ import annotations

from pathlib import Path

from ..evaluation import for_report
from ..final import finals, load_rubric, review_queue
from ..store import Store
from .excel import write_workbook
from .html import write_html
from .stats import agreement, criterion_stats

__all__ = ["write_reports"]


def write_reports(store: Store, run_id: int, out_dir: Path) -> list[Path]:
    """Write review.xlsx, report.html and students/<id>.html; returns the paths written.
    Rows are in review order: students suspected of an injection attempt first."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rubric = load_rubric(store, run_id)
    students = review_queue(list(finals(store, run_id, rubric)))
    stats = criterion_stats(students)
    agree = agreement(students)
    human = for_report(store, store.run(run_id).class_dir, rubric, students)
    paths = [write_workbook(store, run_id, rubric, students, stats, out_dir / "review.xlsx")]
    paths += write_html(store, run_id, rubric, students, stats, agree, out_dir, human)
    return paths
