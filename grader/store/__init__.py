"""The SQLite store: the only package that contains SQL, behind one façade, `Store`.

Two kinds of data are kept apart:

- **What was paid for** (`ledger`): `prefixes`, `requests` and `responses` form a
  content-addressed ledger keyed by the hash of the request as sent (insert-or-ignore, never
  updated or deleted); `attempts` records every request we sent (state `sent` is committed
  before it leaves), its usage and what became of it.
- **What a student got** (`grades`): `grades` are per-student versions keyed by (student,
  submission, grading fingerprint, sample, epoch, generation config), never deleted; `outcomes`
  say what happened to each student in each run; `decisions` (`review`) are the teacher's, per
  student and criterion, append-only.

`Store` is one class made of one module per topic (`runs`, `ledger`, `resources`, `batch`,
`grades`, `reports`, `review`, `tuning`, `quality`, `screening`) over `core` (the connection
and the one transaction idiom, `atomic()`: BEGIN at the outermost level, SAVEPOINT inside;
SQLite errors surface as `StoreError` with a fix). Methods take and return the small dataclasses of
`grader.grading.records`. `migrations` holds the numbered schema migrations, `locks` the run lock.
"""

from __future__ import annotations

from pathlib import Path

from grader.store.batch import Batches
from grader.store.core import grader_store_problem, now, unsaved_path
from grader.store.grades import Grades
from grader.store.quality import Quality
from grader.store.reports import Reports
from grader.store.resources import Resources
from grader.store.review import Review
from grader.store.runs import Runs
from grader.store.screening import Screening
from grader.store.tuning import Tuning


class Store(Runs, Batches, Grades, Reports, Resources, Review, Tuning, Quality, Screening):
    """One connection per process, used from one thread (the pipeline's event loop).

    `create=False` opens only an existing grader store (a path taken from a workbook must never
    turn some other SQLite file into one). The file is checked for damage when it is opened,
    and replies a run could not commit (disk full) are imported. If it vanishes while open
    (deleted, or its folder moved), the next write rewrites it from the open connection and
    carries on; `notices` says so."""

    def __init__(self, path: Path | str, *, create: bool = True):
        super().__init__(path, create=create)
        if self.path != ":memory:":
            self._import_unsaved()


__all__ = ["Store", "grader_store_problem", "now", "unsaved_path"]
