"""Human graders' scores: the reference `grade eval` and the calibration gate compare the model
with. They are data of their own, not teacher decisions (those are anchored on the AI's number).

`grade human import FILE CLASS_DIR` reads a CSV or Excel file in long form, one score a row:
`student_id`, `criterion` (a criterion id of the class's rubric, or `total`), `score`, `rater`;
other columns are ignored (the calibration workbook shows the submission beside them). Headers
are matched ignoring case and spaces. Every row is checked first (the criterion exists, the score
is a number within the criterion's range and one of its levels, nothing repeated) and any problem
is reported with its row or cell before anything is stored. The file is stored with its SHA-256:
importing the same file again changes nothing; a later file's score for the same student,
criterion and rater replaces the earlier one; several raters may score the same students.

A file is bounded before it is read: an .xlsx by its zip directory (`unpacked_problem`, shared
with `grade review import`), then every file by the rows its class can need (`RowCap`: each
student, criterion and the total, by up to MAX_RATERS raters); reading stops past the cap.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grader.config.settings import Settings, db_path, rubric_path
from grader.errors import InputError
from grader.escape import unescape_text
from grader.grading.records import HumanScore
from grader.intake.discover import clean_id, discover
from grader.prompting.rubric import Rubric, load_rubric
from grader.store import Store

TOTAL = "total"
COLUMNS = ("student_id", "criterion", "score", "rater")
SCORES_SHEET = "Scores"
MAX_FILE_MB = 50
MAX_LISTED = 25
MAX_RATER_CHARS = 80
# Raters one file may give each student's criterion, on average: a class marked by a team, or by
# peers, has a handful; a file with more is not this class's scores (one red-team file held 1.5
# million rows, each by its own rater, and `grade eval` then ran for minutes).
MAX_RATERS = 20
MAX_BLANK_ROWS = 10_000  # empty rows a file may hold between and below its scores


class HumanImportError(InputError):
    """The human-scores file cannot be imported; the message lists every bad row."""


@dataclass(frozen=True)
class HumanImport:
    path: Path
    rows: int
    students: int
    raters: tuple[str, ...]
    stored: bool  # False: this exact file was imported before (nothing changed)


@dataclass(frozen=True)
class RowCap:
    """The most score rows one file may hold for a class: every student, every criterion and
    the total, each by up to MAX_RATERS raters. Reading stops once a file passes it, so a file
    of millions of rows costs no more than the largest file the class could need."""

    students: int  # in the class folder and in the store's runs of the class
    criteria: int  # the rubric's criteria and the total

    @property
    def rows(self) -> int:
        return max(self.students, 1) * self.criteria * MAX_RATERS

    def explain(self) -> str:
        who = (f"{self.students:,} students" if self.students else
               "no students yet (no submissions in the class folder, no run in the store), "
               "counted as 1")
        return f"{who} × {self.criteria} criteria (with {TOTAL}) × {MAX_RATERS} raters"


def class_cap(class_dir: Path, settings: Settings, rubric: Rubric) -> RowCap:
    """The class's RowCap: its students are those of the class folder (and roster) and those
    any run of it in the store graded, so scores imported before the first run are bounded by
    the folder, and scores for a folder since emptied by the store."""
    ids: set[str] = set()
    # no submissions (the store may still know the class), or a bad roster: the store's count
    with contextlib.suppress(InputError):
        ids.update(s.student_id for s in discover(class_dir, settings.roster))
    db = db_path(class_dir, settings)
    if db.is_file():
        with Store(db, create=False) as store:
            ids |= store.class_student_ids(str(class_dir.resolve()))
    return RowCap(len(ids), len(rubric.all_criteria) + 1)


def _key(header: Any) -> str:
    return "_".join(str(header or "").strip().lower().split())


def _csv_rows(data: bytes, path: Path) -> Iterator[tuple[str, list[Any]]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise HumanImportError("the file is not UTF-8 text", path=path,
                               fix="save the CSV as UTF-8 (Excel: CSV UTF-8)") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        for n, row in enumerate(reader, start=1):
            yield f"line {n}", list(row)
    except csv.Error as e:
        raise HumanImportError(f"line {reader.line_num}: not readable as CSV ({e})", path=path,
                               fix="save it again as CSV UTF-8 (one score a row, no cell over "
                                   "128 KB), or as .xlsx") from None


def _xlsx_rows(data: bytes, path: Path) -> Iterator[tuple[str, list[Any]]]:
    """The sheet's rows, parsed only as they are asked for: the zip directory is checked before
    openpyxl opens the file (an .xlsx bomb of a few hundred KB unpacks to hundreds of MB), the
    workbook is opened read-only (rows streamed, not loaded), and after the header only the
    header's columns are read, so the caller's cap on rows bounds the work."""
    from openpyxl import load_workbook

    from grader.review.workbook import unpacked_problem

    problem = unpacked_problem(data)
    if problem is not None:
        raise HumanImportError(problem, path=path,
                               fix="check you passed the scores file; if so, export the scores "
                                   "as CSV (one score a row) and import the .csv")
    try:
        wb = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as e:  # openpyxl raises many types for a damaged file
        raise HumanImportError(f"not a readable Excel workbook ({type(e).__name__})", path=path,
                               fix="save it again as .xlsx, or export the scores as CSV") from None
    try:
        ws = wb[SCORES_SHEET] if SCORES_SHEET in wb.sheetnames else wb.worksheets[0]
        first = list(next(ws.iter_rows(max_row=1, values_only=True), ()))
        yield f"{ws.title}!row 1", first
        width = max((i + 1 for i, h in enumerate(first) if _key(h)), default=1)
        for n, row in enumerate(ws.iter_rows(min_row=2, max_col=width, values_only=True),
                                start=2):
            yield f"{ws.title}!row {n}", list(row)
    except HumanImportError:
        raise
    except Exception as e:  # a damaged sheet fails as it is parsed
        raise HumanImportError(f"not a readable Excel workbook ({type(e).__name__})", path=path,
                               fix="save it again as .xlsx, or export the scores as CSV") from None
    finally:
        wb.close()


def _score(value: Any, rubric: Rubric, cid: str) -> tuple[float | None, str | None]:
    """The score, or the reason it is not one."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, "no score given; enter one (or delete the row)"
    if isinstance(value, bool):
        return None, f"{value!r} is not a score"
    try:
        x = float(value) if isinstance(value, int | float) else float(str(value).strip())
    except ValueError:
        return None, f"{str(value)[:40]!r} is not a number"
    top = rubric.max_total if cid == TOTAL else rubric.criterion(cid).max_points
    if not math.isfinite(x) or not 0 <= x <= top:
        return None, f"{x:g} is out of range for {cid}; enter a score from 0 to {top:g}"
    allowed = None if cid == TOTAL else rubric.criterion(cid).allowed_points
    if allowed is not None and not any(math.isclose(x, p) for p in allowed):
        return None, (f"{x:g} is not a level of {cid}; use one of "
                      + ", ".join(f"{p:g}" for p in allowed))
    return x, None


def read_scores(path: Path, rubric: Rubric, cap: RowCap) -> list[HumanScore]:
    """Every score in the file, checked against the rubric; HumanImportError lists each bad
    row (nothing is returned unless every row is good). Reading stops, and the file is refused,
    once it passes `cap` rows of scores or MAX_BLANK_ROWS empty rows."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_MB * 1024 * 1024:
            raise HumanImportError(f"the file is over {MAX_FILE_MB} MB", path=path,
                                   fix="a scores file is one row per student and criterion; "
                                       "check you passed the right file")
        data = path.read_bytes()
    except OSError as e:
        raise HumanImportError(f"cannot read the file ({e.strerror or e})", path=path,
                               fix="check the path and its permissions") from None
    rows = _xlsx_rows(data, path) if path.suffix.lower() in (".xlsx", ".xlsm") \
        else _csv_rows(data, path)
    ids = {c.id for c in rubric.all_criteria}
    header: dict[str, int] | None = None
    errors: list[str] = []
    seen: dict[tuple[str, str, str], str] = {}
    out: list[HumanScore] = []
    scored = blank = 0
    for where, row in rows:
        if header is None:
            found = {_key(h): i for i, h in enumerate(row) if _key(h)}
            missing = [c for c in COLUMNS if c not in found]
            if missing:
                raise HumanImportError(
                    f"{where}: the header lacks the column(s) {', '.join(missing)}", path=path,
                    fix="the first row must name the columns student_id, criterion, score, "
                        "rater (one score a row)")
            header = found
            continue
        cells = {c: row[i] if i < len(row) else None for c, i in header.items()}
        if all(v is None or (isinstance(v, str) and not v.strip()) for v in cells.values()):
            blank += 1
            if blank > MAX_BLANK_ROWS:
                raise HumanImportError(
                    f"{where}: more than {MAX_BLANK_ROWS:,} empty rows; nothing was stored",
                    path=path, fix="delete the empty rows between and below the scores (or "
                                   "copy the scores into a new file), then import again")
            continue
        scored += 1
        if scored > cap.rows:
            raise HumanImportError(
                f"more than {cap.rows:,} rows of scores (reading stopped at {where}), the most "
                f"this class takes: {cap.explain()}; nothing was stored", path=path,
                fix="import only this class's scores, and check the file and the class folder "
                    f"belong together (at most {MAX_RATERS} raters per student and criterion)")
        sid = clean_id(unescape_text(str(cells["student_id"] or "")))
        cid = _key(cells["criterion"])
        rater = unescape_text(str(cells["rater"] or "")).strip()
        problem: str | None = None
        score: float | None = None
        if not sid or sid == "_":
            problem = "no student_id"
        elif cid != TOTAL and cid not in ids:
            problem = (f"criterion {str(cells['criterion'])[:40]!r} is not in the rubric; use "
                       f"one of {', '.join(sorted(ids))} or {TOTAL}")
        elif not rater or len(rater) > MAX_RATER_CHARS:
            problem = f"the rater must be a name of 1 to {MAX_RATER_CHARS} characters"
        if problem is None:
            score, problem = _score(cells["score"], rubric, cid)
        if problem is None and (sid, cid, rater) in seen:
            problem = f"{sid}/{cid} by {rater} is already given at {seen[sid, cid, rater]}"
        if problem is not None:
            errors.append(f"{where}: {problem}")
            continue
        assert score is not None
        seen[sid, cid, rater] = where
        out.append(HumanScore(sid, cid, rater, score))
    if header is None:
        raise HumanImportError("the file is empty", path=path,
                               fix="one row of headers (student_id, criterion, score, rater), "
                                   "then one row per score")
    if errors:
        shown = "\n".join(errors[:MAX_LISTED])
        more = f"\n… and {len(errors) - MAX_LISTED} more" if len(errors) > MAX_LISTED else ""
        raise HumanImportError(f"{len(errors)} row(s) cannot be imported:\n{shown}{more}",
                               path=path, fix="correct those rows and import again; nothing "
                               "was stored")
    return out


def import_scores(path: Path, class_dir: Path, settings: Settings) -> HumanImport:
    """`grade human import`: check every row against the class's rubric, then store them."""
    if not class_dir.is_dir():
        raise InputError("class folder not found", path=class_dir,
                         fix="pass the folder that holds the students' submissions")
    rubric, _ = load_rubric(rubric_path(class_dir, settings))
    scores = read_scores(path, rubric, class_cap(class_dir, settings, rubric))
    if not scores:
        raise HumanImportError("the file holds no scores", path=path,
                               fix="add one row per student and criterion under the header")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with Store(db_path(class_dir, settings)) as store:
        stored = store.import_human_scores(str(class_dir.resolve()), str(path.resolve()),
                                           digest, scores)
    return HumanImport(path=path, rows=len(scores), students=len({s.student_id for s in scores}),
                       raters=tuple(sorted({s.rater for s in scores})),
                       stored=stored is not None)
