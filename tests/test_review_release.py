"""What leaves after a review, through the CLI against the fake server (issue 23, items 5 and 6):
the AI's feedback never reaches a student under a score the teacher changed unless the teacher
kept it; handouts wait for a review (`--handouts all` writes the others, stamped); a workbook
saved as .ods (or any file but an .xlsx) is refused with how to save it; a private note alone
reviews nothing; `grade status` shows the review's progress and what an export would withhold;
the Moodle and Canvas exports say which scale they wrote."""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import openpyxl
import pytest

from grader.testing.fake_gemini import FakeGemini

from _classgen import ANSWERS
from _cli import grade, q, review, run_class_of

WEAK = "Cover more of the expected key points"  # the fake model's feedback on a weak answer
GOOD = "Good work; the key ideas are there."
TEXTS = {
    "alice": "Alice's answer. " + ANSWERS[1],  # weak: low scores, "Cover more ..." feedback
    "bob": "Bob's answer. " + ANSWERS[0],
    "carol": "Carol's answer. " + ANSWERS[4] + "\nFAKE_GEMINI:REVIEW",  # flagged
    "dave": "Dave's answer. " + ANSWERS[4],
}
STAMP = "Not yet reviewed"


@pytest.fixture
def graded(gemini_env: FakeGemini, tmp_path: Path) -> tuple[Path, Path, Path]:
    """(class folder, output folder, store) of a class graded by `grade run`, nobody reviewed."""
    return run_class_of(tmp_path, TEXTS, {"roster.csv": "id,name,email,SIS User ID\n" + "".join(
        f"{s},{s.title()} Doe,{s}@school.test,SIS-{s}\n" for s in TEXTS)})


def _rows(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def _summary(book: Path) -> dict[str, dict[str, object]]:
    ws = openpyxl.load_workbook(book, data_only=True)["Summary"]
    head = [c.value for c in ws[1]]
    return {str(r[0]): dict(zip(head, r, strict=True))
            for r in ws.iter_rows(min_row=2, values_only=True)}


def _newest(out: Path) -> Path:
    """The workbook with every stored decision: an import never writes over the file it
    imports, so the fresh one is review-updated.xlsx, then review-updated-2.xlsx, …"""
    n = max((int(p.stem.rsplit("-", 1)[1]) for p in out.glob("review-updated-*.xlsx")),
            default=1)
    return next((p for p in (out / f"review-updated-{n}.xlsx", out / "review-updated.xlsx")
                 if p.exists()), out / "review.xlsx")


def _feedback_sheet(out: Path) -> dict[tuple[str, str], dict[str, object]]:
    ws = openpyxl.load_workbook(_newest(out))["Feedback"]
    head = [c.value for c in ws[1]]
    return {(str(r[0]), str(r[2])): dict(zip(head, r, strict=True))
            for r in ws.iter_rows(min_row=2, values_only=True)}


def _edit_and_import(out: Path, db: Path, *, feedback: dict[tuple[str, str], str] | None = None,
                     notes: dict[str, str] | None = None) -> tuple[int, str]:
    """Type criterion feedback (Feedback sheet) and private notes (Summary) into the newest
    workbook, as a teacher does, then `grade review import` it."""
    book = _newest(out)
    wb = openpyxl.load_workbook(book)
    fb = wb["Feedback"]
    cols = {c.value: c.column for c in fb[1]}
    for r in range(2, fb.max_row + 1):
        key = (fb.cell(r, cols["Student ID"]).value, fb.cell(r, cols["Criterion ID"]).value)
        if key in (feedback or {}):
            fb.cell(r, cols["Teacher feedback to the student"]).value = (feedback or {})[key]
    ws = wb["Summary"]
    cols = {c.value: c.column for c in ws[1]}
    for r in range(2, ws.max_row + 1):
        sid = ws.cell(r, 1).value
        if sid in (notes or {}):
            ws.cell(r, cols["Private note (never shown to the student)"]).value = notes[sid]
    wb.save(book)
    return grade("review", "import", str(book), "--db", str(db))


def _moodle_feedback(out: Path, sid: str) -> str:
    code, output = grade("export", str(out), "--format", "moodle")
    assert code == 0, output
    rows = {r[0]: r for r in _rows(out / "gradebook_moodle.csv")[1:]}
    return rows[f"{sid}@school.test"][2]


# -- 5: no AI feedback under a teacher's score, unless the teacher kept it ----------------------

def test_a_quote_the_student_never_wrote_stays_off_their_handout(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    """The model's "evidence" that is not in the submission is its own words: flagged, the
    teacher sees it noted; once approved, the student's handout does not show it as a quote of
    theirs, while the quotes of their own text stay, numbered from 1."""
    _, out, db = run_class_of(tmp_path, {
        "bob": TEXTS["bob"], "erin": "Erin's answer. " + ANSWERS[0] + "\nFAKE_GEMINI:FABRICATE"})
    assert q(db, "SELECT DISTINCT reason FROM flags") == [("evidence_not_found",)]
    review(out, db, approve={"bob": "", "erin": "Checked: the reasons are right."})
    invented = "The student proves that P equals NP"
    teacher = (out / "students" / "erin.html").read_text(encoding="utf-8")
    student = (out / "handouts" / "erin.html").read_text(encoding="utf-8")
    assert invented in teacher and "left off the student view" in teacher
    assert invented not in student and "not found word for word" not in student
    assert "<mark" not in student and "Checked: the reasons are right." in student
    bob = (out / "handouts" / "bob.html").read_text(encoding="utf-8")
    assert bob.count("<mark") >= 1 and '<span class="qn">1</span>' in bob


def test_a_changed_score_holds_the_ai_feedback_until_the_teacher_keeps_or_edits_it(
        graded: tuple[Path, Path, Path]) -> None:
    _, out, db = graded
    ai = _feedback_sheet(out)[("alice", "reasons")]
    assert WEAK in str(ai["AI feedback"]) and ai["AI score"] != 3
    assert ai["Shown to the student"] == "the AI feedback"

    said = review(out, db, approve={"alice": "See me about the second reason."},
                  scores={"alice": {"reasons": 3}})  # the teacher gives full marks
    assert "AI feedback under a score you changed waits for you: 1 criterion of 1 student" \
           in said
    assert "  alice (Alice Doe): reasons" in said and "Feedback sheet" in said

    # nowhere a student looks: the handout, the Moodle feedback, the Canvas file
    handout = (out / "handouts" / "alice.html").read_text(encoding="utf-8")
    row = handout.split("Reasons</b>")[1].split("</tr>")[0]
    assert "3</b> / 3" in row and WEAK not in row
    assert WEAK in handout.split("Reasons</b>")[0]  # the unchanged criterion keeps the AI's
    moodle = _moodle_feedback(out, "alice")
    assert "Reasons (3/3)" not in moodle and moodle.count(WEAK) == 1  # the unchanged one
    assert "Correct encoding chosen (" in moodle
    code, output = grade("export", str(out), "--format", "canvas", "--out-of", "5")
    assert code == 0, output
    assert WEAK not in (out / "gradebook_canvas.csv").read_text(encoding="utf-8")
    # the teacher's own view and the workbook say what waits
    teacher = (out / "students" / "alice.html").read_text(encoding="utf-8")
    assert "Not shown to the student" in teacher and WEAK in teacher
    assert str(_feedback_sheet(out)[("alice", "reasons")]["Shown to the student"]).startswith(
        "nothing yet: you changed the score")
    code, status = grade("status", str(graded[0]), "--db", str(db))
    assert code == 0 and "AI feedback waiting under a score the teacher changed: 1 criterion " \
                         "of 1 student(s)" in status and "alice (reasons)" in status

    # keeping it is a decision: the teacher copies the AI's words into their column
    code, said = _edit_and_import(out, db, feedback={("alice", "reasons"): ai["AI feedback"]})
    assert code == 0, said
    assert "1 values changed" in said and "waits for you" not in said
    assert f"Reasons (3/3): {ai['AI feedback']}" in _moodle_feedback(out, "alice")
    assert WEAK in (out / "handouts" / "alice.html").read_text(
        encoding="utf-8").split("Reasons</b>")[1].split("</tr>")[0]
    assert _feedback_sheet(out)[("alice", "reasons")]["Shown to the student"] == "your feedback"

    # or edits it: the student reads the teacher's words
    code, said = _edit_and_import(out, db, feedback={("alice", "reasons"): "Both reasons, well "
                                                     "put."})
    assert code == 0, said
    moodle = _moodle_feedback(out, "alice")
    assert "Reasons (3/3): Both reasons, well put." in moodle and f"(3/3): {WEAK}" not in moodle


def test_a_score_typed_equal_to_the_ais_keeps_the_ai_feedback(
        graded: tuple[Path, Path, Path]) -> None:
    _, out, db = graded
    same = _feedback_sheet(out)[("alice", "reasons")]["AI score"]
    said = review(out, db, approve={"alice": ""}, scores={"alice": {"reasons": same}})
    assert "waits for you" not in said
    assert "Reasons (" in _moodle_feedback(out, "alice") and WEAK in _moodle_feedback(out, "alice")


# -- 5: handouts only for reviewed grades, unless --handouts all ---------------------------------

def test_handouts_wait_for_a_review_unless_asked_for_all_and_then_say_so(
        graded: tuple[Path, Path, Path]) -> None:
    cls, out, db = graded
    assert sorted(p.name for p in (out / "students").glob("*.html")) == [
        "alice.html", "bob.html", "carol.html", "dave.html"]
    assert list((out / "handouts").glob("*.html")) == []  # nobody reviewed anything yet
    bob = (out / "students" / "bob.html").read_text(encoding="utf-8")
    assert "no student view yet: not reviewed" in bob and "--handouts all" in bob

    code, output = grade("report", str(cls), "--db", str(db), "--out", str(out),
                         "--handouts", "all")
    assert code == 0, output
    assert "1 of 4 students have no handout" in output  # carol: flagged, may not leave
    written = sorted(p.name for p in (out / "handouts").glob("*.html"))
    assert written == ["alice.html", "bob.html", "dave.html"]
    for name in written:
        page = (out / "handouts" / name).read_text(encoding="utf-8")
        assert f'<p class="stamp"><b>{STAMP}</b>' in page
    assert "stamped “not yet reviewed”" in (out / "students" / "bob.html").read_text(
        encoding="utf-8")

    # a review: bob approved, carol (flagged) approved; the default writes those two, unstamped,
    # and takes the stamped pages of the others away
    said = review(out, db, approve={"bob": "Well done.", "carol": "Checked."})
    assert "2 of 4 students have no handout" in said
    assert sorted(p.name for p in (out / "handouts").glob("*.html")) == ["bob.html",
                                                                         "carol.html"]
    for name in ("bob.html", "carol.html"):
        assert STAMP not in (out / "handouts" / name).read_text(encoding="utf-8")
    # `--handouts all` on the import: the unreviewed ones come back, stamped; bob's is not
    wb = openpyxl.load_workbook(out / "review.xlsx")
    wb.save(out / "again.xlsx")
    code, output = grade("review", "import", str(out / "again.xlsx"), "--db", str(db),
                         "--handouts", "all")
    assert code == 0, output
    assert STAMP in (out / "handouts" / "dave.html").read_text(encoding="utf-8")
    assert STAMP not in (out / "handouts" / "bob.html").read_text(encoding="utf-8")


def test_the_class_setting_chooses_the_handouts_of_an_import(
        graded: tuple[Path, Path, Path]) -> None:
    cls, out, db = graded
    (cls / "grader.toml").write_text('[grader]\nhandouts = "all"\n', encoding="utf-8")
    review(out, db, approve={"bob": ""})
    assert sorted(p.name for p in (out / "handouts").glob("*.html")) == [
        "alice.html", "bob.html", "dave.html"]
    assert STAMP in (out / "handouts" / "dave.html").read_text(encoding="utf-8")
    assert STAMP not in (out / "handouts" / "bob.html").read_text(encoding="utf-8")


# -- 5: only .xlsx is imported --------------------------------------------------------------------

def _ods(path: Path) -> Path:
    """A minimal OpenDocument spreadsheet, as LibreOffice's "Keep current format" saves."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("mimetype", "application/vnd.oasis.opendocument.spreadsheet",
                   compress_type=zipfile.ZIP_STORED)
        z.writestr("content.xml", "<office:document-content/>")
        z.writestr("META-INF/manifest.xml", "<manifest:manifest/>")
    return path


@pytest.mark.parametrize(("name", "make", "what"), [
    ("review.ods", _ods, "an OpenDocument spreadsheet (.ods)"),
    ("review.xls", lambda p: p.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 504),
     "an Excel 97-2003 workbook (.xls)"),
    ("review.csv", lambda p: p.write_text("Student ID,Approved\nbob,yes\n"),
     "a text file (.csv)"),
    ("renamed.ods", None, "an Excel workbook named .ods"),
], ids=["ods", "xls", "csv", "xlsx-named-ods"])
def test_a_workbook_not_saved_as_xlsx_is_refused_with_how_to_save_it(
        graded: tuple[Path, Path, Path], name: str, make: object, what: str) -> None:
    _, out, db = graded
    path = out / name
    if make is None:  # the real workbook, renamed
        path.write_bytes((out / "review.xlsx").read_bytes())
    else:
        make(path)  # type: ignore[operator]
    before = q(db, "SELECT COUNT(*) FROM decisions")
    code, output = grade("review", "import", str(path), "--db", str(db))
    assert code == 2, output
    assert str(path) in output and what in output
    assert "Excel, File > Save As > Excel Workbook (.xlsx)" in output
    assert "LibreOffice, File > Save As > Excel 2007-365 (.xlsx)" in output
    assert "Traceback" not in output and "unexpected" not in output
    assert q(db, "SELECT COUNT(*) FROM decisions") == before


# -- 5: a private note is not a review ------------------------------------------------------------

def test_a_private_note_alone_changes_no_review_status(graded: tuple[Path, Path, Path]) -> None:
    cls, out, db = graded
    before = {sid: row["Review status"] for sid, row in _summary(out / "review.xlsx").items()}
    assert before == {"alice": "pending", "bob": "pending", "carol": "needs review",
                      "dave": "pending"}
    code, said = _edit_and_import(out, db, notes={"bob": "Talk to him about sources.",
                                                  "carol": "Looks copied?"})
    assert code == 0 and "2 values changed" in said, said
    fresh = _summary(out / "review-updated.xlsx")  # written by the import, from the store
    assert fresh["bob"]["Private note (never shown to the student)"] == "Talk to him about " \
                                                                       "sources."
    assert {sid: row["Review status"] for sid, row in fresh.items()} == before
    grades = {r[0]: r for r in _rows(out / "grades.csv")[1:]}
    assert grades["bob"][3] == "pending" and grades["carol"][3] == "needs review"
    assert not (out / "handouts" / "bob.html").exists()
    code, status = grade("status", str(cls), "--db", str(db))
    assert "review: 0 approved, 0 reviewed, 1 needs review, 3 pending (of 4 students)" in status
    code, output = grade("export", str(out), "--format", "csv")
    assert "3 of them were never reviewed by a teacher" in output


# -- 6: what a coordinator asks ------------------------------------------------------------------

def test_status_shows_review_progress_and_what_an_export_withholds(
        graded: tuple[Path, Path, Path]) -> None:
    cls, out, db = graded
    code, status = grade("status", str(cls), "--db", str(db))
    assert code == 0, status
    assert "review: 0 approved, 0 reviewed, 1 needs review, 3 pending (of 4 students)" in status
    assert ("export: 3 grade(s) would be exported (3 never reviewed by a teacher); "
            "1 withheld:") in status
    carol = next(line for line in status.splitlines() if line.startswith("  carol: "))
    assert "flagged (" in carol and "and not reviewed; approve it" in carol
    assert "with --approved-only, 3 more withheld (not approved): alice, bob, dave" in status
    assert ("handouts (--handouts reviewed): 0 student page(s); 3 grade(s) that may leave "
            "wait for a review") in status

    # alice rescored (reviewed); carol rescored on one criterion only: still flagged, so she
    # still needs review (and is still withheld), whatever else the teacher changed
    review(out, db, approve={"bob": ""}, scores={"alice": {"reasons": 3}, "carol": {"reasons": 0}})
    code, status = grade("status", str(cls), "--db", str(db))
    assert "review: 1 approved, 1 reviewed, 1 needs review, 1 pending (of 4 students)" in status
    assert "export: 3 grade(s) would be exported (1 never reviewed by a teacher); " \
           "1 withheld:" in status
    assert "with --approved-only, 2 more withheld (not approved): alice, dave" in status
    assert ("handouts (--handouts reviewed): 2 student page(s); 1 grade(s) that may leave "
            "wait for a review") in status
    assert "AI feedback waiting under a score the teacher changed: 2 criteria of 2 " \
           "student(s)" in status and "alice (reasons), carol (reasons)" in status
    # what status says an export does, the export does
    code, output = grade("export", str(out), "--format", "moodle")
    assert "wrote" in output and "3 grades of run" in output
    assert "1 of them were never reviewed by a teacher" in output
    withheld = _rows(out / "gradebook_moodle_withheld.csv")
    assert [r[0] for r in withheld[1:]] == ["carol"] and withheld[1][2] == carol[9:]


def test_moodle_and_canvas_exports_say_which_scale_they_wrote(
        graded: tuple[Path, Path, Path]) -> None:
    _, out, _ = graded
    code, output = grade("export", str(out), "--format", "moodle")
    assert code == 0, output
    assert "grades are out of 5 points (the rubric's maximum)" in output
    assert "if the Moodle grade item's maximum is not 5 (a new item's is 100), pass --out-of" \
           in output and "5/100" in output
    totals = [float(r[1]) for r in _rows(out / "gradebook_moodle.csv")[1:]]
    assert max(totals) <= 5

    code, output = grade("export", str(out), "--format", "moodle", "--out-of", "100")
    assert code == 0, output
    assert "grades are out of 100 points (--out-of): totals scaled from 5 to 100 points" \
           in output
    assert "pass --out-of" not in output
    assert all(float(r[1]) <= 100 for r in _rows(out / "gradebook_moodle.csv")[1:])

    code, output = grade("export", str(out), "--format", "canvas")
    assert code == 0, output
    assert "grades are out of 5 points (the rubric's maximum)" in output
    assert "if the Canvas assignment is worth other than 5 points, pass --out-of" in output
    code, output = grade("export", str(out), "--format", "canvas", "--out-of", "20")
    assert "grades are out of 20 points (--out-of): totals scaled from 5 to 20" in output
    assert "pass --out-of" not in output
    code, output = grade("export", str(out), "--format", "csv")
    assert code == 0 and "out of" not in output  # the teacher's own file has max_total


# -- a workbook imported, then edited and imported again -----------------------------------------

def _type(book: Path, sid: str, values: dict[str, object]) -> None:
    """Type `values` (column header -> value; None clears) into a student's Summary row."""
    wb = openpyxl.load_workbook(book)
    ws = wb["Summary"]
    cols = {c.value: c.column for c in ws[1]}
    row = next(r for r in range(2, ws.max_row + 1) if ws.cell(r, 1).value == sid)
    for header, value in values.items():
        ws.cell(row, cols[header]).value = value
    wb.save(book)


def _final(out: Path, sid: str) -> tuple[str, str]:
    grades = {r[0]: r for r in _rows(out / "grades.csv")[1:]}
    head = _rows(out / "grades.csv")[0]
    row = dict(zip(head, grades[sid], strict=True))
    return row["final_reasons"], row["review_status"]


def test_a_value_cleared_in_a_workbook_already_imported_is_asked_about_not_ignored(
        graded: tuple[Path, Path, Path]) -> None:
    """The teacher imports review.xlsx, opens the same file again, clears the score and the
    approval and imports it again. Back to what the file was written with, the cells cannot be
    told from another copy of the workbook saved over it: the import asks (before, they read as
    never touched and the old decision stood, exported); --force clears them."""
    _, out, db = graded
    book = out / "review.xlsx"
    ai = _final(out, "alice")[0]
    _type(book, "alice", {"Teacher: reasons": 3, "Approved": "yes"})
    assert grade("review", "import", str(book), "--db", str(db))[0] == 0
    assert _final(out, "alice") == ("3", "approved")
    _type(book, "alice", {"Teacher: reasons": None, "Approved": None})
    code, said = grade("review", "import", str(book), "--db", str(db))
    flat = " ".join(said.split())
    assert code != 0 and "2 cell(s) were changed both" in flat, said
    assert "back to what the workbook was written with: undone, or another copy" in flat, said
    assert _final(out, "alice") == ("3", "approved")  # nothing stored
    code, said = grade("review", "import", str(book), "--db", str(db), "--force")
    assert code == 0 and "2 values changed" in said, said
    assert _final(out, "alice")[0] == ai
    code, said = grade("review", "import", str(book), "--db", str(db))  # the same file again
    assert code == 0 and "0 values changed" in said, said


def test_a_workbook_written_afresh_at_the_same_path_is_a_new_file(
        graded: tuple[Path, Path, Path]) -> None:
    """review.xlsx imported, undone in review-updated.xlsx, both deleted and written again by
    `grade report`: the new review.xlsx has no import history, so a value typed in it is
    applied (not read as already imported)."""
    cls, out, db = graded
    _type(out / "review.xlsx", "alice", {"Teacher: reasons": 3})
    assert grade("review", "import", str(out / "review.xlsx"), "--db", str(db))[0] == 0
    _type(out / "review-updated.xlsx", "alice", {"Teacher: reasons": None})
    assert grade("review", "import", str(out / "review-updated.xlsx"), "--db", str(db))[0] == 0
    for book in out.glob("review*.xlsx"):
        book.unlink()
    assert grade("report", str(cls), "--db", str(db), "--out", str(out))[0] == 0
    _type(out / "review.xlsx", "alice", {"Teacher: reasons": 3})
    code, said = grade("review", "import", str(out / "review.xlsx"), "--db", str(db))
    assert code == 0 and "1 values changed" in said, said
    assert _final(out, "alice")[0] == "3"


def test_two_tas_copies_saved_in_turn_over_one_file_are_asked_about(
        graded: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """TA 1 scores alice and saves over out/review.xlsx, which is imported; TA 2's copy of the
    same workbook scores bob and is saved over the same file: alice's cell, empty in TA 2's
    copy, is asked about, never cleared silently."""
    _, out, db = graded
    book = out / "review.xlsx"
    second = tmp_path / "ta2.xlsx"
    second.write_bytes(book.read_bytes())
    _type(book, "alice", {"Teacher: reasons": 3})
    assert grade("review", "import", str(book), "--db", str(db))[0] == 0
    _type(second, "bob", {"Teacher: reasons": 2})
    book.write_bytes(second.read_bytes())
    code, said = grade("review", "import", str(book), "--db", str(db))
    assert code != 0 and "alice" in said and "another copy" in " ".join(said.split()), said
    assert _final(out, "alice")[0] == "3"
    code, said = grade("review", "import", str(second), "--db", str(db))  # from its own path
    assert code == 0 and "1 values changed" in said, said
    assert (_final(out, "alice")[0], _final(out, "bob")[0]) == ("3", "2")


def test_an_older_workbook_imported_again_brings_back_nothing_undone_since(
        graded: tuple[Path, Path, Path]) -> None:
    _, out, db = graded
    book = out / "review.xlsx"
    ai = _final(out, "alice")[0]
    _type(book, "alice", {"Teacher: reasons": 3})
    assert grade("review", "import", str(book), "--db", str(db))[0] == 0
    later = out / "review-updated.xlsx"
    _type(later, "alice", {"Teacher: reasons": None})  # undone in the newer workbook
    assert grade("review", "import", str(later), "--db", str(db))[0] == 0
    assert _final(out, "alice")[0] == ai
    code, said = grade("review", "import", str(book), "--db", str(db))
    assert code == 0 and "0 values changed" in said, said
    assert _final(out, "alice")[0] == ai
    code, said = grade("export", str(out), "--format", "csv")  # nothing unimported: exported
    assert code == 0, said


def test_an_edit_typed_after_the_import_stops_the_export(
        graded: tuple[Path, Path, Path]) -> None:
    _, out, db = graded
    book = out / "review.xlsx"
    _type(book, "alice", {"Teacher: reasons": 3})
    assert grade("review", "import", str(book), "--db", str(db))[0] == 0
    _type(book, "alice", {"Teacher: reasons": 2})  # changed again, not imported
    code, said = grade("export", str(out), "--format", "csv")
    assert code == 2 and "1 student(s) (alice) that were never imported" in " ".join(
        said.split()), said
    assert grade("review", "import", str(book), "--db", str(db))[0] == 0  # no conflict
    assert _final(out, "alice")[0] == "2"


def test_a_teachers_score_does_not_move_to_a_new_scale_when_the_rubric_is_rescaled(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    """Full marks (3 of 3) given, approved, with feedback saying so; the rubric then puts the
    criterion out of 10 and the class is graded again, the AI's scores unchanged: the
    decisions stay with the old scale (before, erin became approved at 3 of 10 with "Full
    marks"), and a workbook filled in on the old scale is a conflict, not imported."""
    cls, out, db = run_class_of(tmp_path, {"erin": "Erin's answer. I do not know.",
                                           "bob": TEXTS["bob"]})
    before = _rows(out / "grades.csv")
    _type(out / "review.xlsx", "erin", {"Teacher: reasons": 3, "Approved": "yes",
                                        "Feedback to the student": "Full marks for the reasons."})
    old_book = tmp_path / "old-scale.xlsx"
    old_book.write_bytes((out / "review.xlsx").read_bytes())
    assert grade("review", "import", str(out / "review.xlsx"), "--db", str(db))[0] == 0
    assert _final(out, "erin") == ("3", "approved")
    rubric = (cls / "rubric.yaml").read_text(encoding="utf-8")
    (cls / "rubric.yaml").write_text(rubric.replace("    max_points: 3\n", "    max_points: 10\n"),
                                     encoding="utf-8")
    code, said = grade("run", str(cls), "--db", str(db), "--out", str(out))
    assert code == 0, said
    ai_reasons = {r[0]: r for r in before[1:]}["erin"][before[0].index("ai_reasons")]
    final, status = _final(out, "erin")
    assert final == ai_reasons and status != "approved", (final, status)
    assert not (out / "handouts" / "erin.html").exists()  # not approved on this scale
    code, said = grade("review", "import", str(old_book), "--db", str(db))
    assert code != 0 and "the maximum of reasons changed from 3 to 10" in said, said


def test_a_percentage_or_a_date_the_spreadsheet_made_of_what_was_typed_is_refused(
        graded: tuple[Path, Path, Path]) -> None:
    """Typing "50%" in a score cell stores 0.5 shown as a percentage, and "3/4" in a feedback
    cell a date: neither is read as what the teacher meant (0.5 points, "2026-03-04"); the
    import names both cells and stores nothing."""
    import datetime

    _, out, db = graded
    book = out / "review.xlsx"
    wb = openpyxl.load_workbook(book)
    ws = wb["Summary"]
    cols = {c.value: c.column for c in ws[1]}
    row = next(r for r in range(2, ws.max_row + 1) if ws.cell(r, 1).value == "alice")
    score = ws.cell(row, cols["Teacher: reasons"])
    score.value, score.number_format = 0.5, "0%"
    note = ws.cell(row, cols["Feedback to the student"])
    note.value, note.number_format = datetime.datetime(2026, 3, 4), "m/d/yyyy"
    wb.save(book)
    code, said = grade("review", "import", str(book), "--db", str(db))
    flat = " ".join(said.split())
    assert code == 2, said
    assert "50% is a percentage; enter points for reasons from 0 to 3" in flat, said
    assert "the cell holds a date" in flat and "with a ' in front of it" in flat, said
    assert q(db, "SELECT COUNT(*) FROM decisions") == [(0,)]
