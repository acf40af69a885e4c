"""Reading a review workbook back: its hidden metadata (run, where its store was, the base value
of every teacher cell) and every teacher cell, validated, each problem named by sheet!cell.

Pure reading; what to do with the cells is `grader.review.importing`'s (three-way merge into
the store).
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from openpyxl import load_workbook
from openpyxl.cell.cell import ERROR_CODES
from openpyxl.reader.excel import SUPPORTED_FORMATS
from openpyxl.utils import get_column_letter
from openpyxl.utils.exceptions import InvalidFileException

from grader.errors import InputError
from grader.prompting.rubric import Criterion
from grader.reports import excel
from grader.review.merge import Cell

MAX_LISTED = 25
MB = 1024 * 1024
# A workbook is refused before it is opened when its parts unpack to more than this (a review
# workbook of a thousand students with feedback unpacks to a few tens of MB) or it has more parts
# than any workbook of ours (see `unpacked_problem`).
MAX_UNPACKED_MB = 100
MAX_PARTS = 1_000
_ID_CELL = f"{excel.META}!B2"


class ReviewImportError(InputError):
    """The review workbook cannot be imported; the message lists every bad cell."""


@dataclass(frozen=True)
class WorkbookMeta:
    """Where a review workbook came from, read from its hidden metadata sheet."""

    run_id: int
    run_token: str
    class_dir: str | None
    format_version: str
    db_relative: str | None  # the store, relative to the workbook's folder when written
    out_from_db: str | None  # the workbook's folder, relative to the store's folder
    db_path: str | None  # where the store was when written (shown, never opened blindly)
    written_id: str | None = None  # this file as written (None: written before it was kept)
    base: dict[str, tuple[int | None, dict[str, Any]]] = field(default_factory=dict)
    # per answer group listed on the Groups sheet: its members and the base of its cells
    groups: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = field(default_factory=dict)


# --- reading cells ----------------------------------------------------------------------------

def _ref(sheet: str, row: int, col: int) -> str:
    return f"{sheet}!{get_column_letter(col)}{row}"


class _Percent(float):
    """A number the cell shows as a percentage (what typing "50%" in Excel stores: 0.5)."""


def _rows(ws: Any) -> Iterator[tuple[int, tuple[Any, ...]]]:
    """Each row's values; a number formatted as a percentage comes as `_Percent`, so that a
    score typed as "50%" is not read as 0.5 points."""
    for n, cells in enumerate(ws.iter_rows(), start=1):
        yield n, tuple(map(_value, cells))


def _value(cell: Any) -> Any:
    v = cell.value
    if type(v) in (int, float) and "%" in (cell.number_format or ""):  # not bool: type(), not
        return _Percent(v)  # isinstance; a number's format is looked up only for numbers
    return v


def _cell(row: tuple[Any, ...], col: int) -> Any:
    return row[col - 1] if col - 1 < len(row) else None


def _plain(v: Any, ref: str, errors: list[str]) -> str | None:
    """Free text typed by the teacher; a formula error (#VALUE!, #NAME?) is refused, not stored."""
    if isinstance(v, str) and v in ERROR_CODES:
        errors.append(f"{ref}: the cell shows the error {v}; type plain text (text starting "
                      "with = is read as a formula: put a ' in front of it)")
        return None
    if isinstance(v, datetime | date | time | _Percent):
        kind = "percentage" if isinstance(v, _Percent) else "date"
        errors.append(f"{ref}: the cell holds a {kind} (the spreadsheet turned what was typed "
                      "into one); type the text again with a ' in front of it")
        return None
    return excel.read_text(v)


def _score(v: Any, crit: Criterion, ref: str, errors: list[str]) -> float | None:
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    if isinstance(v, bool):
        errors.append(f"{ref}: {v!r} is not a score for {crit.id}")
        return None
    if isinstance(v, _Percent):
        errors.append(f"{ref}: {100 * v:g}% is a percentage; enter points for {crit.id} from 0 "
                      f"to {crit.max_points:g}")
        return None
    if isinstance(v, int | float):
        x = float(v)
    else:
        try:
            x = float(str(v).strip())
        except ValueError:
            errors.append(f"{ref}: {str(v)[:40]!r} is not a number; enter a score for "
                          f"{crit.id} from 0 to {crit.max_points:g} or leave it empty")
            return None
    if math.isnan(x) or not 0 <= x <= crit.max_points:
        errors.append(f"{ref}: {x:g} is out of range for {crit.id}; enter a score from 0 to "
                      f"{crit.max_points:g}")
        return None
    allowed = crit.allowed_points
    if allowed is not None and x not in allowed:
        errors.append(f"{ref}: {x:g} is not a level of {crit.id}; use one of "
                      + ", ".join(f"{p:g}" for p in allowed))
        return None
    return x


def _approved(v: Any, ref: str, errors: list[str]) -> bool | None:
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    key = str(v).strip().lower()
    if key in ("yes", "y", "true", "1", "x"):
        return True
    if key in ("no", "n", "false", "0"):
        return False
    errors.append(f"{ref}: {str(v)[:20]!r} is not yes/no; choose yes, no or leave it empty")
    return None


def _headers(ws: Any, sheet: str, wanted: list[str],
             optional: tuple[str, ...] = ()) -> dict[str, int]:
    first = next(ws.iter_rows(min_row=1, max_row=1, values_only=True), ())
    cols = {str(v).strip(): i for i, v in enumerate(first, start=1) if v is not None}
    for name, olds in excel.ALIASES.items():  # workbooks written by an older grader
        for old in olds:
            if name not in cols and old in cols:
                cols[name] = cols[old]
    missing = [h for h in wanted if h not in cols and h not in optional]
    if missing:
        raise ReviewImportError(
            f"sheet {sheet!r} lacks the column(s) {missing} in row 1",
            fix="restore the header row, or export a fresh workbook with `grade report`")
    return cols


SAVE_AS_XLSX = ("open it and save it as an Excel workbook (.xlsx), then import the .xlsx: in "
                "Excel, File > Save As > Excel Workbook (.xlsx); in LibreOffice, File > Save "
                "As > Excel 2007-365 (.xlsx)")
_ODF = b"application/vnd.oasis.opendocument."
_OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # Excel 97-2003 (.xls) and other OLE files


def unpacked_problem(source: Path | bytes) -> str | None:
    """Why a workbook is too large to open, judged from its zip directory alone (None: it is
    not, or it is no zip at all, which the caller's own checks report).

    An .xlsx is a zip of XML parts, and a few hundred KB of deflated repeated rows unpack to
    hundreds of MB that openpyxl parses (and its shared strings it keeps) in memory: a 546 KB
    workbook took 78 s and 7 GB. The directory declares every part's unpacked size, and
    `zipfile` never unpacks a part past what the directory declares, so checking it here bounds
    what any later reader can unpack. Both workbook imports (`grade review import`, `grade human
    import`) call this before openpyxl opens the file."""
    try:
        with zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError):
        return None
    if len(infos) > MAX_PARTS:
        return (f"the workbook has {len(infos):,} parts, over the limit of {MAX_PARTS:,} (a "
                "damaged file or a zip bomb, not a spreadsheet)")
    total = sum(i.file_size for i in infos)
    if total <= MAX_UNPACKED_MB * MB:
        return None
    big = max(infos, key=lambda i: i.file_size)
    return (f"the workbook unpacks to {total / MB:,.0f} MB ({big.filename[:80]!r} alone "
            f"{big.file_size / MB:,.0f} MB), over the limit of {MAX_UNPACKED_MB} MB: a damaged "
            "file or a zip bomb, not a spreadsheet")


def _not_xlsx(path: Path) -> str | None:
    """What the file is when it is not an .xlsx workbook openpyxl can read (None: it is one),
    told by its content first (a renamed file), then by its name."""
    with path.open("rb") as fh:
        head = fh.read(8)
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as z:
                names = set(z.namelist())
                mime = b""
                if "mimetype" in names:  # read 80 bytes, however large the part claims to be
                    with z.open("mimetype") as part:
                        mime = part.read(80)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError):
            return "a damaged or incomplete file (not a readable .xlsx workbook)"
        if mime.startswith(_ODF + b"spreadsheet"):
            return "an OpenDocument spreadsheet (.ods), not an Excel workbook (.xlsx)"
        if mime.startswith(_ODF):
            return "an OpenDocument file, not an Excel workbook (.xlsx)"
        if "xl/workbook.bin" in names:
            return "an Excel binary workbook (.xlsb), not an Excel workbook (.xlsx)"
        if "xl/workbook.xml" not in names:
            return "a zip file, not an Excel workbook (.xlsx)"
    elif head.startswith(_OLE2):
        return "an Excel 97-2003 workbook (.xls), not an Excel workbook (.xlsx)"
    elif path.suffix.lower() in SUPPORTED_FORMATS:
        return "not a readable .xlsx workbook (damaged, or another kind of file named .xlsx)"
    elif path.suffix.lower() in (".csv", ".tsv", ".txt"):
        return f"a text file ({path.suffix.lower()}), not an Excel workbook (.xlsx)"
    else:
        return "not an Excel workbook (.xlsx)"
    if path.suffix.lower() not in SUPPORTED_FORMATS:
        return (f"an Excel workbook named {path.suffix or 'without an extension'}: the import "
                "reads files named .xlsx")
    return None


def open_workbook(path: Path) -> Any:
    """The workbook, read-only; any file that is not an .xlsx workbook (.ods, .xls, .csv, a
    damaged file) is refused naming the file and how to save it as .xlsx."""
    try:
        problem = _not_xlsx(path)
    except OSError as e:
        raise ReviewImportError(f"cannot read the workbook: {e.strerror or e}", path=path,
                                fix="check the path to review.xlsx") from None
    if problem is not None:
        raise ReviewImportError(f"{problem}; `grade review import` reads .xlsx workbooks only",
                                path=path, fix=SAVE_AS_XLSX)
    too_large = unpacked_problem(path)
    if too_large is not None:
        raise ReviewImportError(too_large, path=path,
                                fix="import the review.xlsx `grade report` wrote (check the "
                                    "path), or export a fresh one with `grade report` and "
                                    "copy your edits into it")
    try:
        return load_workbook(path, read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, InvalidFileException) as e:
        raise ReviewImportError(
            f"not a readable .xlsx workbook ({type(e).__name__}: {e})", path=path,
            fix=SAVE_AS_XLSX) from None


def read_meta(wb: Any, path: Path) -> WorkbookMeta:
    if excel.META not in wb.sheetnames or excel.SUMMARY not in wb.sheetnames:
        raise ReviewImportError(
            "not a grader review workbook (its hidden metadata sheet is missing)", path=path,
            fix="import the review.xlsx written by `grade` (copying its sheets into another "
                "file drops the metadata)")
    keys: dict[str, Any] = {}
    base: dict[str, tuple[int | None, dict[str, Any]]] = {}
    groups: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {}
    in_base = in_groups = False
    for n, row in _rows(wb[excel.META]):
        if not row or row[0] is None:
            continue
        if tuple(row[:3]) == excel.GROUP_BASE_HEADER:
            in_groups = True
        elif in_groups:
            try:
                members = json.loads(str(row[1]))
                data = json.loads(str(row[2]))
                groups[str(row[0])] = (tuple(str(m) for m in members), dict(data["t"]))
            except (TypeError, ValueError, KeyError, IndexError):
                raise ReviewImportError(
                    f"{excel.META}!A{n}: the recorded base of a group is damaged", path=path,
                    fix="export a fresh workbook with `grade report` and copy your edits "
                        "into it") from None
        elif in_base:
            sid = excel.read_text(row[0])
            try:
                sub = int(row[1]) if len(row) > 1 and row[1] is not None else None
                data = json.loads(str(row[2])) if len(row) > 2 and row[2] else {}
            except (TypeError, ValueError):
                raise ReviewImportError(
                    f"{excel.META}!A{n}: the recorded base of a row is damaged", path=path,
                    fix="export a fresh workbook with `grade report` and copy your edits "
                        "into it") from None
            if sid is not None and isinstance(data, dict):
                base[sid] = (sub, data)
        elif tuple(row[:3]) == excel.BASE_HEADER:
            in_base = True
        else:
            keys[str(row[0])] = excel.read_text(row[1]) if len(row) > 1 else None
    try:
        run_id = int(float(keys.get("run_id") or ""))
    except ValueError:
        raise ReviewImportError(f"{_ID_CELL}: run id is missing", path=path,
                                fix="export a fresh workbook with `grade report`") from None
    return WorkbookMeta(
        run_id=run_id, run_token=keys.get("run_token") or "", class_dir=keys.get("class_dir"),
        format_version=keys.get("format_version") or "1",
        db_relative=keys.get("db_relative"), out_from_db=keys.get("out_from_db"),
        db_path=keys.get("db_path"), base=base, groups=groups,
        written_id=keys.get("written_id") or None)


def workbook_meta(path: Path) -> WorkbookMeta:
    """The run and store a review.xlsx was written from."""
    wb = open_workbook(Path(path))
    try:
        return read_meta(wb, Path(path))
    finally:
        wb.close()


def read_cells(wb: Any, crits: dict[str, Criterion], known: set[str], run_id: int,
                path: Path) -> dict[str, list[Cell]]:
    errors: list[str] = []
    out: dict[str, list[Cell]] = {}
    seen_at: dict[str, str] = {}
    ws = wb[excel.SUMMARY]
    wanted = [excel.ID_HEADER, excel.COMMENT_HEADER, excel.NOTE_HEADER, excel.APPROVED_HEADER]
    wanted += [excel.teacher_header(c) for c in crits]
    cols = _headers(ws, excel.SUMMARY, wanted, optional=(excel.NOTE_HEADER,))
    id_col = cols[excel.ID_HEADER]
    for n, row in _rows(ws):
        if n == 1:
            continue
        sid = excel.read_text(_cell(row, id_col))
        if sid is None:
            continue
        ref = _ref(excel.SUMMARY, n, id_col)
        if sid not in known:
            errors.append(f"{ref}: student {sid!r} is not in run {run_id}; remove the row")
            continue
        if sid in seen_at:
            errors.append(f"{ref}: student {sid!r} appears twice (also {seen_at[sid]})")
            continue
        seen_at[sid] = ref
        cells = out.setdefault(sid, [])
        for cid, crit in crits.items():
            col = cols[excel.teacher_header(cid)]
            cref = _ref(excel.SUMMARY, n, col)
            cells.append(Cell(sid, cid, "score", _score(_cell(row, col), crit, cref, errors),
                              cref))
        for header, fld in ((excel.COMMENT_HEADER, "comment"), (excel.NOTE_HEADER, "note")):
            if header in cols:
                cref = _ref(excel.SUMMARY, n, cols[header])
                cells.append(Cell(sid, "", fld, _plain(_cell(row, cols[header]), cref, errors),
                                  cref))
        cref = _ref(excel.SUMMARY, n, cols[excel.APPROVED_HEADER])
        cells.append(Cell(sid, "", "approved", _approved(
            _cell(row, cols[excel.APPROVED_HEADER]), cref, errors), cref))

    if excel.FEEDBACK in wb.sheetnames:
        ws = wb[excel.FEEDBACK]
        cols = _headers(ws, excel.FEEDBACK, [excel.ID_HEADER, excel.CRIT_ID_HEADER,
                                             excel.TEACHER_FEEDBACK_HEADER])
        feedback_at: dict[tuple[str, str], str] = {}
        for n, row in _rows(ws):
            if n == 1:
                continue
            sid = excel.read_text(_cell(row, cols[excel.ID_HEADER]))
            fid = excel.read_text(_cell(row, cols[excel.CRIT_ID_HEADER]))
            if sid is None:
                continue
            if sid not in known:
                errors.append(f"{_ref(excel.FEEDBACK, n, cols[excel.ID_HEADER])}: student "
                              f"{sid!r} is not in run {run_id}; remove the row")
                continue
            if fid not in crits:
                errors.append(f"{_ref(excel.FEEDBACK, n, cols[excel.CRIT_ID_HEADER])}: unknown "
                              f"criterion {fid!r}; use one of {', '.join(crits)}")
                continue
            # the same student and criterion twice: which feedback the student gets would
            # depend on the row order, so the teacher chooses
            if (sid, fid) in feedback_at:
                errors.append(f"{excel.FEEDBACK} row {n}: student {sid!r}, criterion {fid!r} "
                              f"appears twice (also row {feedback_at[sid, fid]}); delete one "
                              "of the two rows, keeping the feedback you want")
                continue
            feedback_at[sid, fid] = str(n)
            fref = _ref(excel.FEEDBACK, n, cols[excel.TEACHER_FEEDBACK_HEADER])
            value = _plain(_cell(row, cols[excel.TEACHER_FEEDBACK_HEADER]), fref, errors)
            out.setdefault(sid, []).append(Cell(sid, fid, "feedback", value, fref))

    if errors:
        raise ReviewImportError(listing(f"{len(errors)} cell(s) cannot be imported; nothing "
                                         "was stored:", errors), path=path,
                                fix="correct the cells listed above and import again")
    return out


def read_group_cells(wb: Any, crits: dict[str, Criterion], known: dict[str, Any],
                     path: Path) -> dict[str, list[Cell]]:
    """The teacher cells of the Groups sheet, per group label (a `Cell`'s student_id is the
    label); `known`: the groups the workbook was written with. Problems as `read_cells`."""
    if excel.GROUPS not in wb.sheetnames or not known:
        return {}
    ws = wb[excel.GROUPS]
    wanted = [excel.GROUP_HEADER, excel.COMMENT_HEADER, excel.APPROVED_HEADER]
    wanted += [excel.teacher_header(c) for c in crits]
    cols = _headers(ws, excel.GROUPS, wanted)
    errors: list[str] = []
    out: dict[str, list[Cell]] = {}
    for n, row in _rows(ws):
        label = excel.read_text(_cell(row, cols[excel.GROUP_HEADER])) if n > 1 else None
        if label is None:
            continue
        ref = _ref(excel.GROUPS, n, cols[excel.GROUP_HEADER])
        if label not in known:
            errors.append(f"{ref}: group {label!r} is not one this workbook was written with; "
                          "restore the label or remove the row")
            continue
        if label in out:
            errors.append(f"{ref}: group {label!r} appears twice")
            continue
        cells = out.setdefault(label, [])
        for cid, crit in crits.items():
            cref = _ref(excel.GROUPS, n, cols[excel.teacher_header(cid)])
            cells.append(Cell(label, cid, "score", _score(
                _cell(row, cols[excel.teacher_header(cid)]), crit, cref, errors), cref))
        cref = _ref(excel.GROUPS, n, cols[excel.COMMENT_HEADER])
        cells.append(Cell(label, "", "comment", _plain(_cell(row, cols[excel.COMMENT_HEADER]),
                                                       cref, errors), cref))
        cref = _ref(excel.GROUPS, n, cols[excel.APPROVED_HEADER])
        cells.append(Cell(label, "", "approved", _approved(
            _cell(row, cols[excel.APPROVED_HEADER]), cref, errors), cref))
    if errors:
        raise ReviewImportError(listing(f"{len(errors)} cell(s) cannot be imported; nothing "
                                         "was stored:", errors), path=path,
                                fix="correct the cells listed above and import again")
    return out


def listing(head: str, lines: list[str]) -> str:
    shown = lines[:MAX_LISTED]
    more = f"\n  … and {len(lines) - MAX_LISTED} more" if len(lines) > MAX_LISTED else ""
    return head + "\n  " + "\n  ".join(shown) + more
