"""Gradebook exports: final grades only, files the LMS imports as they are (Canvas: IDs and the
assignment header from the teacher's gradebook export; Moodle: one identifier kind checked
against the roster), withheld students left out and listed, and no csv cell a spreadsheet would
evaluate."""

from __future__ import annotations

import csv
from pathlib import Path

import openpyxl
import pytest
from click.testing import CliRunner

from grader.cli import cli
from grader.errors import InputError
from grader.escape import FORMULA_STARTS, unescape_text
from grader.reports import write_reports
from grader.reports.export import NOT_EXPORTED, ExportOptions, export_gradebook
from grader.review.final import finals
from grader.review.importing import import_workbook
from grader.testing.fake_gemini import FakeGemini

from _classgen import RUBRIC
from _synthetic import FORMULA_EVIL, SyntheticRun, build


@pytest.fixture
def synth(tmp_path: Path) -> SyntheticRun:
    return build(tmp_path / "db.sqlite", n=30, k=6)


def _read(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def _roster(tmp_path: Path, synth: SyntheticRun, *, usernames: bool = True,
            skip_username: tuple[str, ...] = ()) -> Path:
    """A roster with e-mail, username and SIS User ID for every synthetic student."""
    lines = ["id,name,email,username,SIS User ID"]
    for sid in synth.student_ids:
        user = "" if (not usernames or sid in skip_username) else f"u{sid.strip('-')}"
        lines.append(f"{sid},Student {sid},{sid}@school.test,{user},SIS-{sid}")
    path = tmp_path / "roster.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_plain_csv_exports_finals_and_marks_withheld(synth: SyntheticRun, tmp_path: Path) -> None:
    res = export_gradebook(synth.store, synth.run_id, "csv", tmp_path)
    rows = _read(res.path)
    head, body = rows[0], rows[1:]
    assert head[:8] == ["student_id", "name", "email", "export_status", "total", "max_total",
                        "percent", "band"]
    assert len(body) == len(synth.student_ids)
    by_id = {unescape_text(r[0]): dict(zip(head, r, strict=True)) for r in body}
    expected = {s.student_id: s for s in finals(synth.store, synth.run_id)}
    for sid in synth.flagged_ids:
        row = by_id[sid]
        assert row["export_status"].startswith(NOT_EXPORTED)
        assert row["total"] == "" and row["percent"] == ""  # never a zero
    clean = [sid for sid in synth.student_ids if sid not in synth.flagged_ids]
    for sid in clean:
        assert by_id[sid]["export_status"] == "exported"
        assert float(by_id[sid]["total"]) == expected[sid].final_total
    assert res.exported == len(clean) and res.never_reviewed == len(clean)


def test_moodle_one_identifier_kind_withheld_left_out(synth: SyntheticRun,
                                                      tmp_path: Path) -> None:
    roster = _roster(tmp_path, synth)
    res = export_gradebook(synth.store, synth.run_id, "moodle", tmp_path,
                           ExportOptions(roster=roster))
    moodle = _read(res.path)
    assert moodle[0] == ["Email address", "Essay <b>1</b>", "Feedback"]
    body = moodle[1:]
    assert len(body) == len(synth.student_ids) - len(synth.flagged_ids)
    assert all(r[0].endswith("@school.test") for r in body)  # one kind, every row
    assert all(r[1] != "" and 0 <= float(r[1]) <= 54 for r in body)
    sent = {r[0] for r in body}
    assert not any(f"{sid}@school.test" in sent for sid in synth.flagged_ids)
    for r in body:  # nothing internal reaches the student-visible column
        assert NOT_EXPORTED not in r[2] and "low_confidence" not in r[2]
    withheld = _read(tmp_path / "gradebook_moodle_withheld.csv")
    assert sorted(unescape_text(r[0]) for r in withheld[1:]) == sorted(synth.flagged_ids)
    assert res.withheld_path == tmp_path / "gradebook_moodle_withheld.csv"

    # username: one more kind; grades scaled into the grade item's maximum
    res = export_gradebook(synth.store, synth.run_id, "moodle", tmp_path,
                           ExportOptions(roster=roster, moodle_id="username", out_of=10))
    rows = _read(res.path)
    assert rows[0][0] == "Username" and all(r[0].startswith("u") for r in rows[1:])
    assert all(0 <= float(r[1]) <= 10 for r in rows[1:]) and res.scale == (54.0, 10.0)


def test_moodle_refuses_students_the_roster_cannot_identify(synth: SyntheticRun,
                                                            tmp_path: Path) -> None:
    roster = _roster(tmp_path, synth, skip_username=("s00002", "s00004"))
    target = tmp_path / "out"
    with pytest.raises(InputError) as err:
        export_gradebook(synth.store, synth.run_id, "moodle", target,
                         ExportOptions(roster=roster, moodle_id="username"))
    msg = str(err.value)
    assert "2 student(s) have no username in the roster" in msg
    assert "Student 2 (s00002)" in msg and "Student 4 (s00004)" in msg
    assert "nothing was written" in msg and "--moodle-id" in msg
    assert not (target / "gradebook_moodle.csv").exists()
    with pytest.raises(InputError, match="needs the class roster"):
        export_gradebook(synth.store, synth.run_id, "moodle", target)


def test_canvas_without_a_gradebook_uses_roster_ids_and_warns(synth: SyntheticRun,
                                                              tmp_path: Path) -> None:
    res = export_gradebook(synth.store, synth.run_id, "canvas", tmp_path,
                           ExportOptions(roster=_roster(tmp_path, synth)))
    canvas = _read(res.path)
    assert canvas[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section",
                         "Essay <b>1</b>"]
    assert canvas[1][0].strip() == "Points Possible" and canvas[1][5] == "54"
    assert all(r[2].startswith("SIS-") for r in canvas[2:])
    assert len(canvas) - 2 == len(synth.student_ids) - len(synth.flagged_ids)
    assert any("without an assignment id" in w for w in res.warnings)
    withheld = _read(tmp_path / "gradebook_canvas_withheld.csv")
    assert sorted(unescape_text(r[0]) for r in withheld[1:]) == sorted(synth.flagged_ids)
    with pytest.raises(InputError, match="Canvas could match them only by name"):
        export_gradebook(synth.store, synth.run_id, "canvas", tmp_path / "x")


def test_review_releases_flagged_students_with_teacher_scores(synth: SyntheticRun,
                                                              tmp_path: Path) -> None:
    write_reports(synth.store, synth.run_id, tmp_path)
    wb = openpyxl.load_workbook(tmp_path / "review.xlsx")
    ws = wb["Summary"]
    cols = {c.value: c.column for c in ws[1]}
    ungraded = synth.ungraded_ids[0]
    flagged = next(s for s in synth.flagged_ids if s not in synth.ungraded_ids)
    for r in range(2, ws.max_row + 1):
        sid = unescape_text(str(ws.cell(r, 1).value))
        if sid == ungraded:  # no AI grade at all: the teacher scores every criterion
            for i in range(1, 7):
                ws.cell(r, cols[f"Teacher: c{i}"]).value = 2
        if sid == flagged:  # model asked for review: the teacher approves with one change
            ws.cell(r, cols["Approved"]).value = "yes"
            ws.cell(r, cols["Teacher: c2"]).value = 0
    wb.save(tmp_path / "edited.xlsx")
    import_workbook(synth.store, tmp_path / "edited.xlsx")

    rows = _read(export_gradebook(synth.store, synth.run_id, "csv", tmp_path).path)
    by_id = {unescape_text(r[0]): dict(zip(rows[0], r, strict=True)) for r in rows[1:]}
    assert by_id[ungraded]["export_status"] == "exported" and by_id[ungraded]["total"] == "12"
    fin = next(s for s in finals(synth.store, synth.run_id) if s.student_id == flagged)
    assert by_id[flagged]["c2"] == "0"
    assert float(by_id[flagged]["total"]) == fin.final_total

    # --approved-only: only the approved student leaves
    res = export_gradebook(synth.store, synth.run_id, "moodle", tmp_path,
                           ExportOptions(roster=_roster(tmp_path, synth), approved_only=True))
    body = _read(res.path)[1:]
    assert [r[0] for r in body] == [f"{flagged}@school.test"]
    assert res.never_reviewed == 0
    assert any("--approved-only" in why for _, _, why in res.withheld)


def test_no_csv_cell_starts_a_formula(synth: SyntheticRun, tmp_path: Path) -> None:
    seen: set[str] = set()
    opts = ExportOptions(roster=_roster(tmp_path, synth))
    for fmt in ("csv", "moodle", "canvas"):
        export_gradebook(synth.store, synth.run_id, fmt, tmp_path / "x", opts)  # type: ignore
    for path in (tmp_path / "x").glob("*.csv"):
        for row in _read(path):
            for cell in row:
                assert not cell.startswith(FORMULA_STARTS), (path.name, cell)
                seen.update(e for e in FORMULA_EVIL if cell.startswith("'" + e))
    assert seen >= {'=HYPERLINK("http://x","y")', "=cmd|' /C calc'!A0"}


def test_unknown_format(synth: SyntheticRun, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown export format"):
        export_gradebook(synth.store, synth.run_id, "xls", tmp_path)  # type: ignore[arg-type]


# -- a class downloaded from Canvas, end to end ---------------------------------------------------

CANVAS_FILES = {
    # text entry, upload (late) and URL submissions of two named students
    "kowalskikasia_48213_text.html": "<p>Binary encoding: one bit per baud, clocks are "
                                     "perfect.</p>",
    "kowalskikasia_LATE_48213_90311_notes.txt": "Self-clocking is not needed.",
    "obrienliam_51007_91000_answer.txt": "Manchester encoding because it is self-clocking.",
    "obrienliam_51007_link.html": "<a href='https://example.edu/liam'>my page</a>",
    # anonymous grading: no name, no user id
    "anon_Xq7Ab_90400_answer.txt": "Binary encoding since it is bandwidth efficient.",
}
GRADEBOOK = (
    "Student,ID,SIS User ID,SIS Login ID,Section,Quiz 2 (1200),Network encoding (4411),"
    "Current Score,Final Score\n"
    "    Points Possible,,,,,5,10,(read only),(read only)\n"
    '"Kowalski, Kasia",48213,S-001,kkowal,Period 2,4,,80,80\n'
    "\"O'Brien, Liam\",51007,S-002,lobrien,Period 2,3,,60,60\n"
)


def test_canvas_file_for_a_class_downloaded_from_canvas(
        fake_gemini: FakeGemini, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "k")
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", fake_gemini.url)
    cls = tmp_path / "hw"
    cls.mkdir()
    (cls / "rubric.yaml").write_text(RUBRIC.replace(
        "Network encoding (short answer)", "Network encoding"), encoding="utf-8")
    for name, text in CANVAS_FILES.items():
        (cls / name).write_text(text, encoding="utf-8")
    (tmp_path / "gradebook.csv").write_text(GRADEBOOK, encoding="utf-8")
    out = tmp_path / "out"
    runner = CliRunner()
    res = runner.invoke(cli, ["run", str(cls), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "3 students" in res.output  # text, link and files of one user are one student

    # approve everyone (the fake model may flag some), then export with the gradebook
    wb = openpyxl.load_workbook(out / "review.xlsx")
    ws = wb["Summary"]
    col = next(c.column for c in ws[1] if c.value == "Approved")
    for r in range(2, ws.max_row + 1):
        ws.cell(r, col).value = "yes"
    wb.save(out / "approved.xlsx")
    res = runner.invoke(cli, ["review", "import", str(out / "approved.xlsx")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["export", str(out), "--format", "canvas", "--canvas-gradebook",
                              str(tmp_path / "gradebook.csv")])
    assert res.exit_code == 0, res.output
    rows = _read(out / "gradebook_canvas.csv")
    assert rows[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section",
                       "Network encoding (4411)"]  # the exact header: updates assignment 4411
    assert rows[1][5] == "10"  # its points possible, copied
    body = {r[1]: r for r in rows[2:]}
    assert set(body) == {"48213", "51007"}  # the ID column filled from the gradebook
    assert body["48213"][:5] == ["Kowalski, Kasia", "48213", "S-001", "kkowal", "Period 2"]
    assert all(0 <= float(r[5]) <= 10 for r in body.values())  # scaled to its 10 points
    withheld = _read(out / "gradebook_canvas_withheld.csv")
    assert [r[0] for r in withheld[1:]] == ["anon_Xq7Ab"]
    assert "anonymous" in withheld[1][2]
    assert "totals scaled from 5 to 10 points" in res.output
    assert "1 students withheld" in res.output and "gradebook_canvas_withheld.csv" in res.output

    # a student the gradebook does not know: refused by name, nothing written
    (tmp_path / "partial.csv").write_text(GRADEBOOK.rsplit("\n", 2)[0] + "\n", encoding="utf-8")
    (out / "gradebook_canvas.csv").unlink()
    res = runner.invoke(cli, ["export", str(out), "--format", "canvas", "--canvas-gradebook",
                              str(tmp_path / "partial.csv")])
    assert res.exit_code == 2
    assert "have no row in the Canvas gradebook" in res.output and "51007" in res.output
    assert not (out / "gradebook_canvas.csv").exists()


def test_canvas_warns_on_titles_canvas_would_drop(synth: SyntheticRun, tmp_path: Path) -> None:
    gradebook = tmp_path / "gb.csv"
    lines = ["Student,ID,SIS User ID,SIS Login ID,Section,Essay Final Grade (77)",
             "    Points Possible,,,,,54"]
    lines += [f"Student {sid},{i},SIS-{sid},,P1," for i, sid in enumerate(synth.student_ids)]
    gradebook.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match="no assignment column"):
        export_gradebook(synth.store, synth.run_id, "canvas", tmp_path,
                         ExportOptions(canvas_gradebook=gradebook))
    res = export_gradebook(synth.store, synth.run_id, "canvas", tmp_path, ExportOptions(
        roster=_roster(tmp_path, synth)))
    assert not any("Canvas drops" in w for w in res.warnings)
    from grader.reports.lms import canvas_title_problems

    assert canvas_title_problems("Unit test - Final Grade")[0].endswith(
        "Canvas drops such columns on import")


def test_cli_export_says_what_was_never_reviewed_and_where_withheld_are(
        synth: SyntheticRun, tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_reports(synth.store, synth.run_id, out)
    roster = _roster(tmp_path, synth)
    for fmt, name in (("canvas", "gradebook_canvas.csv"), ("moodle", "gradebook_moodle.csv"),
                      ("csv", "gradebook.csv")):
        res = CliRunner().invoke(cli, ["export", str(out), "--format", fmt, "--roster",
                                       str(roster)])
        assert res.exit_code == 0, res.output
        assert (out / name).exists() and name in res.output
        clean = len(synth.student_ids) - len(synth.flagged_ids)
        assert f"{clean} of them were never reviewed by a teacher" in res.output
        if fmt != "csv":
            assert f"{len(synth.flagged_ids)} students withheld (left out of the file)" \
                   in res.output
    res = CliRunner().invoke(cli, ["export", str(tmp_path / "nowhere"), "--format", "csv"])
    assert res.exit_code == 2


def test_canvas_refuses_two_students_on_one_canvas_row(synth: SyntheticRun,
                                                       tmp_path: Path) -> None:
    # Canvas finds a row by ID, else SIS User ID: a roster that gives two students one SIS
    # User ID would put one student's grade on the other (and leave the other out); refused
    # by name, as Moodle's shared identifiers are, and nothing is written
    roster = _roster(tmp_path, synth)
    a, b = [s for s in synth.student_ids if s not in synth.flagged_ids][:2]
    roster.write_text(roster.read_text(encoding="utf-8").replace(f"SIS-{b}\n", f"SIS-{a}\n"),
                      encoding="utf-8")
    target = tmp_path / "out"
    with pytest.raises(InputError) as err:
        export_gradebook(synth.store, synth.run_id, "canvas", target,
                         ExportOptions(roster=roster))
    msg = str(err.value)
    assert "1 student(s) would land on one Canvas student" in msg, msg
    assert f"({b})" in msg and f"({a})" in msg and f"SIS User ID SIS-{a}" in msg
    assert "nothing was written" in msg and "--roster" in msg
    assert not (target / "gradebook_canvas.csv").exists()


def test_the_models_overall_comment_waits_under_a_changed_score(synth: SyntheticRun,
                                                                tmp_path: Path) -> None:
    # the overall comment was written for the model's total: once the teacher changes a score
    # it leaves neither in the gradebook's feedback nor on the handout; the teacher's page
    # says it waits, and the teacher's own comment reaches the student instead
    fin = {s.student_id: s for s in finals(synth.store, synth.run_id)}
    sid = next(s for s in synth.student_ids if s not in synth.flagged_ids
               and fin[s].result.overall_comment and fin[s].criteria[0].ai_score)
    ai_comment = fin[sid].result.overall_comment
    write_reports(synth.store, synth.run_id, tmp_path)
    wb = openpyxl.load_workbook(tmp_path / "review.xlsx")
    ws = wb["Summary"]
    cols = {c.value: c.column for c in ws[1]}
    for r in range(2, ws.max_row + 1):
        if unescape_text(str(ws.cell(r, 1).value)) == sid:
            ws.cell(r, cols["Approved"]).value = "yes"
            ws.cell(r, cols["Teacher: c1"]).value = 0
    wb.save(tmp_path / "edited.xlsx")
    import_workbook(synth.store, tmp_path / "edited.xlsx")
    res = export_gradebook(synth.store, synth.run_id, "moodle", tmp_path,
                           ExportOptions(roster=_roster(tmp_path, synth)))
    feedback = {r[0]: r[2] for r in _read(res.path)[1:]}
    assert ai_comment not in feedback[f"{sid}@school.test"]
    others = [f for k, f in feedback.items() if k != f"{sid}@school.test"]
    assert any(fin[o].result.overall_comment in "".join(others) for o in synth.student_ids
               if o != sid and fin[o].result.overall_comment)  # unchanged grades keep theirs
    write_reports(synth.store, synth.run_id, tmp_path, handouts="all")
    handout = (tmp_path / "handouts" / f"{sid}.html").read_text(encoding="utf-8")
    teacher = (tmp_path / "students" / f"{sid}.html").read_text(encoding="utf-8")
    assert "Overall comment" not in handout
    assert "Not shown to the student:</b> you changed a score" in teacher


def test_export_refuses_a_workbook_saved_with_changes_never_imported(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    # The teacher scores a student in review.xlsx, saves it and exports without importing: the
    # gradebook would carry the AI's score. Refused, naming the workbook and the student;
    # after the import the same export carries the teacher's score.
    from _cli import grade

    cls = tmp_path / "hw"
    for sid in ("ana", "ben"):
        (cls / sid).mkdir(parents=True)
        (cls / sid / "a.txt").write_text("Manchester encoding is self-clocking.",
                                         encoding="utf-8")
    (cls / "rubric.yaml").write_text(RUBRIC, encoding="utf-8")
    out = tmp_path / "out"
    code, output = grade("run", str(cls), "--out", str(out))
    assert code == 0, output
    code, output = grade("export", str(out), "--format", "csv")
    assert code == 0, output  # the workbook as grader wrote it: nothing to import
    (out / "gradebook.csv").unlink()

    wb = openpyxl.load_workbook(out / "review.xlsx")
    ws = wb["Summary"]
    cols = {c.value: c.column for c in ws[1]}
    row = next(r for r in range(2, ws.max_row + 1)
               if unescape_text(str(ws.cell(r, 1).value)) == "ben")
    ws.cell(row, cols["Teacher: choice"]).value = 0
    ws.cell(row, cols["Approved"]).value = "yes"
    wb.save(out / "review.xlsx")
    code, output = grade("export", str(out), "--format", "csv")
    assert code == 2, output
    assert "review.xlsx holds changes for 1 student(s) (ben) that were never imported" in output
    assert "grade review import" in output and "nothing was written" in output
    assert not (out / "gradebook.csv").exists()

    code, output = grade("review", "import", str(out / "review.xlsx"))
    assert code == 0, output
    code, output = grade("export", str(out), "--format", "csv")
    assert code == 0, output  # imported: the same workbook now passes
    rows = _read(out / "gradebook.csv")
    ben = dict(zip(rows[0], next(r for r in rows[1:] if unescape_text(r[0]) == "ben"),
                   strict=True))
    assert ben["choice"] == "0"

    # saved again with a cell an import refuses: not left out silently either
    wb = openpyxl.load_workbook(out / "review.xlsx")
    wb["Summary"].cell(row, cols["Teacher: choice"]).value = "lots"
    wb.save(out / "review.xlsx")
    code, output = grade("export", str(out), "--format", "csv")
    assert code == 2, output
    assert "review.xlsx was saved with changes that cannot be imported" in output, output


def test_moodle_warns_of_an_identifier_that_starts_like_a_formula(synth: SyntheticRun,
                                                                  tmp_path: Path) -> None:
    # written as '-007@school.test (so no spreadsheet runs it), Moodle would find no such user
    # and refuse the whole file: the export says so, by name, with the way out
    res = export_gradebook(synth.store, synth.run_id, "moodle", tmp_path / "out",
                           ExportOptions(roster=_roster(tmp_path, synth)))
    warned = [w for w in res.warnings if "starts like a spreadsheet formula" in w]
    assert len(warned) == 1 and "(-007@school.test)" in warned[0], res.warnings
    assert "--moodle-id" in warned[0]
    assert "'-007@school.test" in {r[0] for r in _read(res.path)[1:]}
    res = export_gradebook(synth.store, synth.run_id, "moodle", tmp_path / "out",
                           ExportOptions(roster=_roster(tmp_path, synth), moodle_id="username"))
    assert not any("spreadsheet formula" in w for w in res.warnings)  # u007: fine


def test_moodle_refuses_addresses_that_differ_only_by_case(synth: SyntheticRun,
                                                           tmp_path: Path) -> None:
    # ALICE@… and alice@… may be one Moodle user (its database ignores case on most sites): one
    # student's grade could land on the other; refused by name like a shared address
    roster = _roster(tmp_path, synth)
    a, b = [s for s in synth.student_ids if s not in synth.flagged_ids][:2]
    roster.write_text(roster.read_text(encoding="utf-8").replace(
        f"{b}@school.test", f"{a.upper()}@school.test"), encoding="utf-8")
    with pytest.raises(InputError) as err:
        export_gradebook(synth.store, synth.run_id, "moodle", tmp_path / "out",
                         ExportOptions(roster=roster))
    assert "share one email address" in str(err.value), str(err.value)
    assert f"({b})" in str(err.value) and f"({a})" in str(err.value)


def _gradebook(tmp_path: Path, synth: SyntheticRun, column: str, points: str,
               rows: list[str] | None = None) -> Path:
    """A Canvas gradebook export with one assignment column and a row per synthetic student
    (Canvas ID 1000+i, their roster's SIS User ID)."""
    lines = ["Student,ID,SIS User ID,SIS Login ID,Section," + column,
             "    Points Possible,,,,," + points]
    lines += rows if rows is not None else [
        f"Student {sid},{1000 + i},SIS-{sid},,P1," for i, sid in enumerate(synth.student_ids)]
    path = tmp_path / "gb.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_canvas_never_fills_another_assignment_unasked(synth: SyntheticRun,
                                                       tmp_path: Path) -> None:
    # early in term the gradebook holds only last week's quiz: its grades would be replaced
    gradebook = _gradebook(tmp_path, synth, "Week 1 Quiz (4400)", "10")
    roster = _roster(tmp_path, synth)
    with pytest.raises(InputError) as err:
        export_gradebook(synth.store, synth.run_id, "canvas", tmp_path / "a",
                         ExportOptions(roster=roster, canvas_gradebook=gradebook))
    msg = str(err.value)
    assert "only assignment is 'Week 1 Quiz (4400)'" in msg and "not titled like the rubric" \
        in msg and "--canvas-assignment 4400" in msg
    assert not (tmp_path / "a" / "gradebook_canvas.csv").exists()
    res = export_gradebook(synth.store, synth.run_id, "canvas", tmp_path / "b", ExportOptions(
        roster=roster, canvas_gradebook=gradebook, canvas_assignment="4400"))  # asked
    assert _read(res.path)[0][5] == "Week 1 Quiz (4400)"


def test_canvas_points_possible_of_zero_is_refused_and_a_decimal_comma_read(
        synth: SyntheticRun, tmp_path: Path) -> None:
    column, roster = "Essay <b>1</b> (4411)", _roster(tmp_path, synth)
    with pytest.raises(InputError, match=r"worth 0\.00 points .* every grade would be 0"):
        export_gradebook(synth.store, synth.run_id, "canvas", tmp_path / "a", ExportOptions(
            roster=roster, canvas_gradebook=_gradebook(tmp_path, synth, column, "0.00")))
    assert not (tmp_path / "a" / "gradebook_canvas.csv").exists()
    res = export_gradebook(synth.store, synth.run_id, "canvas", tmp_path / "b", ExportOptions(
        roster=roster, canvas_gradebook=_gradebook(tmp_path, synth, column, "10,00")))
    assert res.out_of == 10.0 and res.scale == (54.0, 10.0)
    assert all(0 <= float(r[5]) <= 10 for r in _read(res.path)[2:])


def test_a_student_whose_own_canvas_ids_are_missing_is_not_matched_to_a_namesake(
        synth: SyntheticRun, tmp_path: Path) -> None:
    # the roster gives the student's SIS User ID; the gradebook has no such row, but another
    # section's student of the same name: that row is someone else's
    roster = _roster(tmp_path, synth)
    sid = next(s for s in synth.student_ids if s not in synth.flagged_ids)
    rows = [f"Student {s},{1000 + i},SIS-{s},,P1," for i, s in enumerate(synth.student_ids)
            if s != sid] + [f"Student {sid},77001,OTHER-9,,P7,"]
    gradebook = _gradebook(tmp_path, synth, "Essay <b>1</b> (4411)", "54", rows)
    with pytest.raises(InputError) as err:
        export_gradebook(synth.store, synth.run_id, "canvas", tmp_path / "a",
                         ExportOptions(roster=roster, canvas_gradebook=gradebook))
    assert "have no row in the Canvas gradebook" in str(err.value) and sid in str(err.value)
    assert not (tmp_path / "a" / "gradebook_canvas.csv").exists()


def test_a_roster_number_that_replaced_a_canvas_download_id_is_never_a_canvas_id(
        tmp_path: Path) -> None:
    # a Canvas download matched by name to a roster of university student numbers: the id is
    # the roster's now, and another student may have that number as their Canvas user id
    from grader.intake.discover import discover, read_roster
    from grader.reports.lms import CanvasMatcher, CanvasRow, roster_row

    cls = tmp_path / "cls"
    cls.mkdir()
    (cls / "smithalice_48213_text.html").write_text("<p>one bit per baud</p>", encoding="utf-8")
    roster = tmp_path / "r.csv"
    roster.write_text("id,name,email\n20231234,Alice Smith,alice@school.test\n",
                      encoding="utf-8")
    (sub,) = list(discover(cls, roster))
    assert (sub.student_id, sub.source) == ("20231234", "roster")
    entry = read_roster(roster)[sub.student_id]
    rows = [CanvasRow("Lee, Chris", "20231234", "", "", "P1"),
            CanvasRow("Smith, Alice", "48213", "", "", "P1")]
    row = CanvasMatcher(rows).match(sub.student_id, sub.name, sub.email, sub.source, entry)
    assert row is not None and row.id == "48213"  # her own row, not Chris Lee's
    assert roster_row(sub.student_id, sub.source, entry) is None  # no Canvas id known to write
