"""Importing the teacher's edits: validation with cell references, run matching, idempotence,
where the store is found, and the LibreOffice round trip (soffice --headless --convert-to xlsx
keeps the edits). The three-way merge itself: tests/test_review_merge.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import openpyxl
import pytest
from click.testing import CliRunner

from grader.errors import StoreError
from grader.escape import unescape_text
from grader.grading.records import Decision
from grader.reports import write_reports
from grader.review.final import finals
from grader.review.importing import ReviewImportError, import_workbook, locate_store, workbook_meta
from grader.store import Store

from _synthetic import SyntheticRun, build, require_tool

COMMENT, NOTE = "Feedback to the student", "Private note (never shown to the student)"


@pytest.fixture
def synth(tmp_path: Path) -> SyntheticRun:
    run = build(tmp_path / "db.sqlite", n=25, k=6)
    write_reports(run.store, run.run_id, tmp_path / "out")
    return run


def _open(out: Path, name: str = "review.xlsx") -> tuple[openpyxl.Workbook, dict[str, int]]:
    wb = openpyxl.load_workbook(out / name)
    return wb, {c.value: c.column for c in wb["Summary"][1]}


def _row_of(ws: openpyxl.worksheet.worksheet.Worksheet, sid: str) -> int:
    for r in range(2, ws.max_row + 1):
        if unescape_text(str(ws.cell(r, 1).value)) == sid:
            return r
    raise AssertionError(sid)


def _overrides(store: Store) -> list[tuple[object, ...]]:
    """(student, criterion, AI score, teacher score, teacher feedback) in effect for the run."""
    run_id = store.latest_run().id
    return [(fs.student_id, c.criterion.id, c.ai_score, c.teacher_score, c.teacher_feedback)
            for fs in finals(store, run_id) for c in fs.criteria
            if c.teacher_score is not None or c.teacher_feedback is not None]


def _log(store: Store) -> list[Decision]:
    return [d for ds in store.decisions().values() for d in ds]


def _edit(synth: SyntheticRun, tmp_path: Path, name: str = "edited.xlsx") -> Path:
    """The teacher's edits: two scores, feedback, a private note, an approval and one
    criterion's feedback text."""
    wb, cols = _open(tmp_path / "out")
    ws = wb["Summary"]
    r = _row_of(ws, "s00002")
    ws.cell(r, cols["Teacher: c1"]).value = 1
    ws.cell(r, cols["Teacher: c2"]).value = 7.5
    ws.cell(r, cols[COMMENT]).value = "Well argued; see margin notes."
    ws.cell(r, cols[NOTE]).value = "Ask about the second source in class."
    ws.cell(r, cols["Approved"]).value = "yes"
    fb = wb["Feedback"]
    fr = next(i for i in range(2, fb.max_row + 1)
              if fb.cell(i, 1).value == "s00004" and fb.cell(i, 3).value == "c3")
    fb.cell(fr, 10).value = "Cite the source for the second claim."
    path = tmp_path / name
    wb.save(path)
    return path


def _assert_edits_stored(store: Store) -> None:
    ovr = {(r[0], r[1]): r for r in _overrides(store)}
    assert ovr[("s00002", "c1")][3] == 1.0
    assert ovr[("s00002", "c2")][3] == 7.5
    assert ovr[("s00002", "c2")][2] is not None  # the AI's value is kept beside it
    assert ovr[("s00004", "c3")][4] == "Cite the source for the second claim."
    fs = next(f for f in finals(store, store.latest_run().id) if f.student_id == "s00002")
    assert fs.teacher_comment == "Well argued; see margin notes."
    assert fs.private_note == "Ask about the second source in class."
    assert fs.approved is True
    assert all(d.decided_at for d in store.decisions()["s00002"])


def test_import_stores_teacher_edits_and_is_idempotent(synth: SyntheticRun,
                                                       tmp_path: Path) -> None:
    path = _edit(synth, tmp_path)
    s1 = import_workbook(synth.store, path)
    assert (s1.run_id, s1.students, s1.applied) == (synth.run_id, 25, 6)
    _assert_edits_stored(synth.store)
    log = _log(synth.store)
    assert len(log) == 6
    score = next(d for d in log if d.criterion_id == "c2")
    assert score.field == "score" and score.value == "7.5" and score.ai_basis is not None
    assert score.cell.startswith("Summary!") and score.workbook_sha256 == s1.workbook_sha256
    assert {d.field for d in log} == {"score", "comment", "note", "approved", "feedback"}

    before = _overrides(synth.store)
    s2 = import_workbook(synth.store, path)
    assert s2.applied == 0 and s2.unchanged == s1.unchanged + 6
    assert _overrides(synth.store) == before
    assert len(_log(synth.store)) == 6  # nothing appended by the second import


def test_clearing_a_teacher_score_restores_the_ai_score(synth: SyntheticRun,
                                                        tmp_path: Path) -> None:
    import_workbook(synth.store, _edit(synth, tmp_path))
    write_reports(synth.store, synth.run_id, tmp_path / "out")
    wb, cols = _open(tmp_path / "out")
    ws = wb["Summary"]
    r = _row_of(ws, "s00002")
    assert ws.cell(r, cols["Teacher: c2"]).value == 7.5  # regenerated with the decision
    ws.cell(r, cols["Teacher: c2"]).value = None
    wb.save(tmp_path / "cleared.xlsx")
    s = import_workbook(synth.store, tmp_path / "cleared.xlsx")
    assert s.applied == 1
    assert ("s00002", "c2") not in {(o[0], o[1]) for o in _overrides(synth.store)}
    history = [d.value for d in synth.store.decisions()["s00002"]
               if d.criterion_id == "c2" and d.field == "score"]
    assert history == ["7.5", None]  # append-only: the cleared value is a new decision


@pytest.mark.parametrize(("header", "value", "needle"), [
    ("Teacher: c2", 11, "out of range for c2; enter a score from 0 to 10"),
    ("Teacher: c2", -1, "out of range"),
    ("Teacher: c3", "lots", "is not a number"),
    ("Teacher: c1", 2.5, "is not a level of c1; use one of 0, 1, 2, 3, 4"),
    ("Approved", "maybe", "is not yes/no"),
])
def test_bad_value_is_rejected_naming_the_cell(synth: SyntheticRun, tmp_path: Path,
                                               header: str, value: object, needle: str) -> None:
    wb, cols = _open(tmp_path / "out")
    ws = wb["Summary"]
    r = _row_of(ws, "s00003")
    ws.cell(r, cols["Teacher: c4"]).value = 5  # a valid edit that must not be stored either
    ws.cell(r, cols[header]).value = value
    wb.save(tmp_path / "bad.xlsx")
    with pytest.raises(ReviewImportError) as err:
        import_workbook(synth.store, tmp_path / "bad.xlsx")
    ref = f"Summary!{openpyxl.utils.get_column_letter(cols[header])}{r}"
    assert ref in str(err.value) and needle in str(err.value)
    assert _overrides(synth.store) == []  # all or nothing


def test_unknown_student_is_refused(synth: SyntheticRun, tmp_path: Path) -> None:
    wb, _ = _open(tmp_path / "out")
    wb["Summary"].cell(5, 1).value = "zz-not-enrolled"
    wb.save(tmp_path / "bad.xlsx")
    with pytest.raises(ReviewImportError, match=r"Summary!A5: student 'zz-not-enrolled' is not"):
        import_workbook(synth.store, tmp_path / "bad.xlsx")


def test_workbook_from_another_run_is_refused(synth: SyntheticRun, tmp_path: Path) -> None:
    other = build(tmp_path / "other.sqlite", n=25, class_dir="/classes/other")
    with pytest.raises(ReviewImportError, match="written for another run"):
        import_workbook(other.store, tmp_path / "out" / "review.xlsx")
    with pytest.raises(ReviewImportError, match=f"belongs to run {synth.run_id}, not run 99"):
        import_workbook(synth.store, tmp_path / "out" / "review.xlsx", run_id=99)
    empty = Store(tmp_path / "empty.sqlite")
    with pytest.raises(ReviewImportError, match="not in the store"):
        import_workbook(empty, tmp_path / "out" / "review.xlsx")


def test_not_a_review_workbook(synth: SyntheticRun, tmp_path: Path) -> None:
    (tmp_path / "junk.xlsx").write_text("not a zip")
    with pytest.raises(ReviewImportError, match=r"not a readable \.xlsx"):
        import_workbook(synth.store, tmp_path / "junk.xlsx")
    wb = openpyxl.Workbook()
    wb.active.title = "Summary"
    wb.save(tmp_path / "plain.xlsx")
    with pytest.raises(ReviewImportError, match="metadata sheet is missing"):
        import_workbook(synth.store, tmp_path / "plain.xlsx")
    with pytest.raises(ReviewImportError, match="cannot read"):
        import_workbook(synth.store, tmp_path / "missing.xlsx")


# -- where the store is -------------------------------------------------------------------------

def test_store_is_found_relative_to_the_workbook(synth: SyntheticRun, tmp_path: Path) -> None:
    meta = workbook_meta(tmp_path / "out" / "review.xlsx")
    assert meta.run_id == synth.run_id
    assert meta.db_relative == "../db.sqlite" and meta.out_from_db == "out"
    book = tmp_path / "out" / "review.xlsx"
    assert locate_store(book, None, meta).resolve() == (tmp_path / "db.sqlite").resolve()
    with pytest.raises(ReviewImportError, match="does not exist"):
        locate_store(book, tmp_path / "nope.sqlite", meta)


def test_a_copied_class_folder_imports_into_its_own_copy(tmp_path: Path) -> None:
    """The workbook in a copy writes into the copy's store, never the original's (whose
    absolute path the workbook also records)."""
    import shutil

    from grader.cli import cli

    orig = tmp_path / "orig"
    run = build(orig / "db.sqlite", n=10, k=6)
    write_reports(run.store, run.run_id, orig / "out")
    run.store.close()
    copy = tmp_path / "copy"
    shutil.copytree(orig, copy)
    wb, cols = _open(copy / "out")
    ws = wb["Summary"]
    ws.cell(_row_of(ws, "s00002"), cols["Teacher: c2"]).value = 3
    wb.save(copy / "out" / "mine.xlsx")
    res = CliRunner().invoke(cli, ["review", "import", str(copy / "out" / "mine.xlsx")])
    assert res.exit_code == 0, res.output
    with Store(copy / "db.sqlite") as s:
        assert [d.value for d in s.decisions()["s00002"]] == ["3.0"]
    with Store(orig / "db.sqlite") as s:
        assert s.decisions() == {}  # the original is untouched

    # moved away from its store: refused, naming where it was written from and --db
    moved = tmp_path / "elsewhere" / "mine.xlsx"
    moved.parent.mkdir()
    shutil.copy(copy / "out" / "mine.xlsx", moved)
    res = CliRunner().invoke(cli, ["review", "import", str(moved)])
    assert res.exit_code == 2
    assert "--db" in res.output and str((orig / "db.sqlite").resolve()) in res.output
    with Store(orig / "db.sqlite") as s:
        assert s.decisions() == {}


def test_a_non_grader_sqlite_file_is_never_opened_as_a_store(synth: SyntheticRun,
                                                              tmp_path: Path) -> None:
    import sqlite3

    other = tmp_path / "music.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE songs (title TEXT)")
    before = other.read_bytes()
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    book = tmp_path / "out" / "review.xlsx"
    for path in (other, text):
        with pytest.raises(ReviewImportError, match="not a grade store"):
            locate_store(book, path, workbook_meta(book))
    assert other.read_bytes() == before  # not migrated, not even opened for writing
    assert not (tmp_path / "music.sqlite-wal").exists()
    with pytest.raises(StoreError, match="not a grader store"):
        Store(other, create=False)


# -- LibreOffice --------------------------------------------------------------------------------

def _soffice_convert(src: Path, out_dir: Path, profile: Path) -> Path:
    soffice = require_tool("soffice", "libreoffice-calc")
    out_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [soffice, "--headless", "--norestore", f"-env:UserInstallation={profile.as_uri()}",
         "--convert-to", "xlsx", "--outdir", str(out_dir), str(src)],
        capture_output=True, text=True, timeout=240, check=False)
    converted = out_dir / src.name
    assert proc.returncode == 0 and converted.exists(), proc.stdout + proc.stderr
    return converted


def test_libreoffice_round_trip_keeps_edits(synth: SyntheticRun, tmp_path: Path) -> None:
    edited = _edit(synth, tmp_path)
    converted = _soffice_convert(edited, tmp_path / "lo", tmp_path / "profile")
    assert converted.read_bytes() != edited.read_bytes()  # really rewritten by LibreOffice
    wb = openpyxl.load_workbook(converted, data_only=True)
    assert wb.sheetnames[0] == "How to review"
    assert wb["_grader_meta"].sheet_state == "hidden"
    ws = wb["Summary"]
    cols = {c.value: c.column for c in ws[1]}
    r = _row_of(ws, "s00002")
    assert ws.cell(r, cols["Teacher: c2"]).value == 7.5
    assert ws.cell(r, cols["Final: c2"]).value == 7.5  # LibreOffice evaluated our formulas
    assert ws.cell(r, cols[NOTE]).value == "Ask about the second source in class."
    s = import_workbook(synth.store, converted)
    assert (s.applied, s.students) == (6, 25)
    _assert_edits_stored(synth.store)
    assert import_workbook(synth.store, converted).applied == 0


def test_cli_review_import_of_libreoffice_file(synth: SyntheticRun, tmp_path: Path) -> None:
    from grader.cli import cli

    converted = _soffice_convert(_edit(synth, tmp_path), tmp_path / "lo", tmp_path / "profile")
    res = CliRunner().invoke(cli, ["review", "import", str(converted), "--db",
                                   str(tmp_path / "db.sqlite")])
    assert res.exit_code == 0, res.output
    assert "6 values changed" in res.output
    _assert_edits_stored(synth.store)
    # reports regenerated in the run's output folder, with the teacher's decision
    page = (tmp_path / "out" / "students" / "s00002.html").read_text()
    assert "7.5" in page and "teacher" in page
    assert not (tmp_path / "lo" / "students").exists()


def test_cli_review_import_rejects_bad_cell(synth: SyntheticRun, tmp_path: Path) -> None:
    from grader.cli import cli

    wb, cols = _open(tmp_path / "out")
    ws = wb["Summary"]
    r = _row_of(ws, "s00002")
    ws.cell(r, cols["Teacher: c2"]).value = 42
    wb.save(tmp_path / "out" / "review.xlsx")
    res = CliRunner().invoke(cli, ["review", "import", str(tmp_path / "out" / "review.xlsx")])
    assert res.exit_code == 2
    ref = f"Summary!{openpyxl.utils.get_column_letter(cols['Teacher: c2'])}{r}"
    assert ref in res.output and "out of range" in res.output


def test_cli_review_import_refuses_a_feedback_row_given_twice(synth: SyntheticRun,
                                                              tmp_path: Path) -> None:
    """The same student and criterion twice on the Feedback sheet: which text the student
    would get depends on the row order, so the import is refused naming both rows (exit 2,
    nothing stored)."""
    from _cli import grade

    wb, _ = _open(tmp_path / "out")
    fb = wb["Feedback"]
    fr = next(i for i in range(2, fb.max_row + 1)
              if fb.cell(i, 1).value == "s00004" and fb.cell(i, 3).value == "c3")
    fb.cell(fr, 10).value = "Cite the source."
    last = fb.max_row + 1
    for col in range(1, fb.max_column + 1):
        fb.cell(last, col).value = fb.cell(fr, col).value
    fb.cell(last, 10).value = "Good sources."
    wb.save(tmp_path / "out" / "review.xlsx")
    code, out = grade("review", "import", str(tmp_path / "out" / "review.xlsx"))
    assert code == 2, out
    assert (f"Feedback row {last}: student 's00004', criterion 'c3' appears twice (also row "
            f"{fr}); delete one of the two rows") in out, out
    assert "nothing was stored" in out
    assert _log(synth.store) == []
