"""Discovery: every class-folder layout, the roster merge, and input errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from grader.errors import InputError
from grader.intake.discover import Submission, discover, read_roster

from _make_fixtures import write

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "intro-python"


def by_id(class_dir: Path, roster: Path | None = None) -> dict[str, Submission]:
    return {s.student_id: s for s in discover(class_dir, roster)}


def test_one_file_per_student(tmp_path: Path) -> None:
    write(tmp_path / "bob.py", "print(1)")
    write(tmp_path / "alice.py", "print(2)")
    write(tmp_path / "alice.md", "notes")
    subs = list(discover(tmp_path))
    assert [s.student_id for s in subs] == ["alice", "bob"]
    alice = subs[0]
    assert alice.source == "file" and not alice.late and alice.name is None
    assert alice.names == ("alice.md", "alice.py")
    assert alice.files == (tmp_path / "alice.md", tmp_path / "alice.py")


def test_folder_per_student_recursive_ignores_clutter(tmp_path: Path) -> None:
    write(tmp_path / "carol" / "main.py", "x = 1")
    write(tmp_path / "carol" / "src" / "util.py", "y = 2")
    write(tmp_path / "carol" / ".hidden.py", "z")
    write(tmp_path / "carol" / ".DS_Store", b"\x00\x01")
    write(tmp_path / "carol" / ".ipynb_checkpoints" / "nb-checkpoint.ipynb", "{}")
    write(tmp_path / "carol" / "__MACOSX" / "._main.py", b"\x00")
    write(tmp_path / "__MACOSX" / "carol" / "._main.py", b"\x00")
    write(tmp_path / ".DS_Store", b"\x00")
    subs = by_id(tmp_path)
    assert list(subs) == ["carol"]
    assert subs["carol"].source == "folder"
    assert subs["carol"].names == ("main.py", "src/util.py")


def test_assignment_files_in_root_are_skipped(tmp_path: Path) -> None:
    for name in ("rubric.yaml", "rubric.yml", "grader.toml", "roster.csv", "README.md",
                 "readme.txt"):
        write(tmp_path / name, "title: x\n")
    write(tmp_path / "class-list.csv", "id,name\ndan,Dan D\n")
    write(tmp_path / "dan.txt", "answer")
    subs = list(discover(tmp_path, tmp_path / "class-list.csv"))
    assert [s.student_id for s in subs] == ["dan"]
    assert subs[0].name == "Dan D"


def test_canvas_names_grouped_by_user_id_with_late_flag(tmp_path: Path) -> None:
    write(tmp_path / "smith_jane_12345_67890_answer.py", "a")
    write(tmp_path / "smith_jane_LATE_12345_67891_notes.txt", "b")
    write(tmp_path / "doejohn_222_333_hw-1.py", "c")
    subs = by_id(tmp_path)
    assert set(subs) == {"12345", "222"}
    jane = subs["12345"]
    assert jane.source == "canvas" and jane.late is True
    assert jane.name == "Jane Smith"
    assert sorted(jane.names) == ["answer.py", "notes.txt"]
    john = subs["222"]
    # Canvas squashes "Doe, John" to `doejohn`: kept as written, not passed off as a name
    assert john.late is False and john.names == ("hw-1.py",) and john.name == "doejohn"


def test_canvas_text_entry_url_and_anonymous_names(tmp_path: Path) -> None:
    """Text entry (`_text.html`), URL (`_link.html`) and uploads of one user are one student;
    anonymous-grading names (`anon_<id>`, no name) are grouped by their anonymous id."""
    write(tmp_path / "kowalskikasia_48213_text.html", "<p>my answer</p>")
    write(tmp_path / "kowalskikasia_LATE_48213_90311_fib.py", "def fib(n): ...")
    write(tmp_path / "müllerjan_5120_link.html", "<a href='https://x'>x</a>")
    write(tmp_path / "anon_Xq7Ab_90400_essay.pdf.txt", "anonymous essay")
    write(tmp_path / "LATE_anon_Xq7Ab_text.html", "<p>and a late note</p>")
    write(tmp_path / "anon_Zz9_text.html", "<p>someone else</p>")
    subs = by_id(tmp_path)
    assert set(subs) == {"48213", "5120", "anon_Xq7Ab", "anon_Zz9"}
    kasia = subs["48213"]
    assert sorted(kasia.names) == ["fib.py", "text.html"] and kasia.late
    assert kasia.name == "kowalskikasia" and kasia.source == "canvas"
    assert subs["5120"].name == "müllerjan" and subs["5120"].names == ("link.html",)
    anon = subs["anon_Xq7Ab"]
    assert anon.name is None and anon.late and sorted(anon.names) == ["essay.pdf.txt",
                                                                      "text.html"]


def test_lms_downloads_match_the_roster_by_name(tmp_path: Path) -> None:
    """A Canvas user id or Moodle participant number that is not a roster id is matched to the
    roster by name (Canvas squashes "Kowalski, Kasia" to `kowalskikasia`)."""
    cls = tmp_path / "cls"
    write(cls / "kowalskikasia_48213_text.html", "a")
    write(cls / "Ana María López_777_assignsubmission_file_" / "essay.txt", "b")
    write(cls / "Zed Nobody_778_assignsubmission_file_" / "x.txt", "c")
    roster = write(tmp_path / "r.csv", "username,name,email,ID number\n"
                                       "kkowal,Kasia Kowalski,kasia@example.edu,2024-17\n"
                                       "alopez,Ana María López,ana@example.edu,2024-18\n")
    subs = by_id(cls, roster)
    assert set(subs) == {"kkowal", "alopez", "778"}
    # the id is the roster's now, so the Canvas user id it replaced is never taken for it
    assert subs["kkowal"].name == "Kasia Kowalski" and subs["kkowal"].source == "roster"
    assert subs["alopez"].email == "ana@example.edu" and subs["alopez"].files
    assert read_roster(roster)["kkowal"].ids == {"username": "kkowal", "idnumber": "2024-17"}


def test_a_canvas_gradebook_export_works_as_a_roster(tmp_path: Path) -> None:
    gradebook = write(tmp_path / "gb.csv", (
        "Student,ID,SIS User ID,SIS Login ID,Section,Essay 1 (4411),Current Score\n"
        "    Points Possible,,,,,10,(read only)\n"
        ",,,,,Manual Posting,\n"
        '"Kowalski, Kasia",48213,S-001,kkowal,Period 2,,\n'
        '"Student, Test",99,,,Period 2,,\n'))
    roster = read_roster(gradebook)
    assert list(roster) == ["48213"]
    assert roster["48213"].name == "Kowalski, Kasia"
    assert roster["48213"].ids == {"sis_user_id": "S-001", "sis_login_id": "kkowal",
                                   "canvas_id": "48213", "section": "Period 2"}


def test_canvas_pattern_needs_both_ids(tmp_path: Path) -> None:
    write(tmp_path / "hw_1_answer.py", "a")
    assert list(by_id(tmp_path)) == ["hw_1_answer"]


def test_moodle_folders_merged_per_participant(tmp_path: Path) -> None:
    write(tmp_path / "Ana María López_777_assignsubmission_file_" / "essay.docx.txt", "e")
    write(tmp_path / "Ana María López_777_assignsubmission_onlinetext_" / "onlinetext.html",
          "<p>hi</p>")
    write(tmp_path / "Ben Ode_778_assignsubmission_file_answer.py", "flat")
    subs = by_id(tmp_path)
    ana = subs["777"]
    assert ana.source == "moodle" and ana.name == "Ana María López"
    assert sorted(ana.names) == ["essay.docx.txt", "onlinetext.html"]
    assert subs["778"].name == "Ben Ode" and subs["778"].names == ("answer.py",)


def test_roster_merge_names_emails_and_missing(tmp_path: Path) -> None:
    cls = tmp_path / "cls"
    write(cls / "Alice.py", "a")
    write(cls / "smith_jane_12345_67890_a.py", "b")
    write(cls / "zed.py", "not on the roster")
    roster = write(tmp_path / "r.csv",
                   "Student ID,Full Name,E-mail\n"
                   "alice,Alice A,alice@example.edu\n"
                   "12345,Jane Q. Smith,jane@example.edu\n"
                   "\n"
                   "oscar,Oscar O,\n")
    subs = by_id(cls, roster)
    assert list(subs) == ["12345", "alice", "oscar", "zed"]
    assert subs["alice"].name == "Alice A" and subs["alice"].email == "alice@example.edu"
    assert subs["alice"].files == (cls / "Alice.py",)  # matched case-insensitively
    assert subs["12345"].name == "Jane Q. Smith"  # roster wins over the Canvas name
    assert subs["oscar"].files == () and subs["oscar"].email is None
    assert subs["zed"].name is None and len(subs["zed"].files) == 1


def test_roster_first_and_last_name_columns(tmp_path: Path) -> None:
    roster = write(tmp_path / "r.csv", "\ufeffstudent_id,First Name,Last Name\nk1,Kim,Lee\n")
    assert read_roster(roster)["k1"].name == "Kim Lee"


@pytest.mark.parametrize(("content", "expect"), [
    ("", "line 1"),
    ("name,email\nAl,al@x.org\n", "line 1: no student id column"),
    ("id,name\nal,Al\n,Nobody\n", "line 3: the student id is empty"),
    ("id,name\nal,Al\nbo,Bo\nal,Al again\n", "line 4: student id 'al' appears twice"),
    ("id,name,email\nal,Al,not-an-email\n", "line 2: 'not-an-email' is not an email"),
])
def test_bad_roster_names_file_line_and_fix(tmp_path: Path, content: str, expect: str) -> None:
    write(tmp_path / "cls" / "al.py", "x")
    roster = write(tmp_path / "roster.csv", content)
    with pytest.raises(InputError) as err:
        discover(tmp_path / "cls", roster)
    assert expect in str(err.value)
    assert str(roster) in str(err.value) and err.value.fix


def test_roster_not_found_or_not_utf8(tmp_path: Path) -> None:
    write(tmp_path / "cls" / "al.py", "x")
    with pytest.raises(InputError, match="not found"):
        discover(tmp_path / "cls", tmp_path / "nope.csv")
    bad = write(tmp_path / "latin.csv", b"id,name\nal,Jos\xe9\n")
    with pytest.raises(InputError, match="not UTF-8"):
        discover(tmp_path / "cls", bad)


def test_missing_or_empty_class_dir(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found") as err:
        discover(tmp_path / "absent")
    assert err.value.fix
    write(tmp_path / "empty" / "README.md", "only the assignment's own files")
    with pytest.raises(InputError, match="no submissions"):
        discover(tmp_path / "empty")


def test_submission_is_frozen_and_strict(tmp_path: Path) -> None:
    sub = Submission(student_id="a")
    with pytest.raises(ValueError):
        Submission(student_id="a", unknown=1)  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        sub.student_id = "b"  # type: ignore[misc]


def test_sample_class_layout() -> None:
    subs = by_id(SAMPLES, SAMPLES / "roster.csv")
    assert len(subs) == 16
    assert subs["48213"].source == "canvas" and subs["48213"].late
    assert subs["48213"].name == "Kasia Kowalski" and len(subs["48213"].files) == 2
    assert subs["51007"].source == "moodle" and len(subs["51007"].files) == 2
    assert subs["mia"].source == "folder" and len(subs["mia"].files) == 4
    assert subs["oscar"].files == ()
    assert all(not s.late for k, s in subs.items() if k != "48213")
    assert all(s.email and s.email.endswith("@example.edu") for s in subs.values())


def test_a_dotted_file_name_is_one_student_and_a_readme_named_student_is_graded(
        tmp_path: Path) -> None:
    # `john.doe.py` and `john.roe.py` were one student "john"; a Canvas student squashed to
    # `readmeg` (Meg Read) was skipped as the assignment's README
    cls = tmp_path / "cls"
    write(cls / "john.doe.py", "a")
    write(cls / "john.roe.py", "b")
    write(cls / "ann.py.txt", "c")  # a file-type extension twice: still ann
    write(cls / "README.md", "the assignment")
    write(cls / "readmeg_48213_90311_fib.py", "d")
    subs = by_id(cls)
    assert set(subs) == {"john.doe", "john.roe", "ann", "48213"}
    assert subs["john.doe"].names == ("john.doe.py",)


def test_a_download_number_that_is_another_students_roster_id_goes_by_name(
        tmp_path: Path) -> None:
    # Moodle's number is a participant number: here 1002 is also Kasia's student number. Jane's
    # folder matched Kasia by that number (two "Kasia Kowalski" rows, Jane missing); the names
    # contradict, so the names decide. A name that fits no one keeps the id match.
    cls = tmp_path / "cls"
    write(cls / "Jane Smith_1002_assignsubmission_file_" / "fib.py", "jane's")
    write(cls / "Kasia Kowalski_1001_assignsubmission_file_" / "fib.py", "kasia's")
    write(cls / "Kate Nowak_3003_assignsubmission_file_" / "fib.py", "kate's")
    roster = write(tmp_path / "r.csv", "id,name,email\n1002,Kasia Kowalski,k@x.org\n"
                                       "2002,Jane Smith,j@x.org\n3003,Katarzyna Nowak,n@x.org\n")
    subs = by_id(cls, roster)
    assert set(subs) == {"1002", "2002", "3003"}
    assert subs["2002"].name == "Jane Smith" and subs["2002"].files
    assert subs["1002"].name == "Kasia Kowalski" and subs["1002"].files
    assert all(s.in_roster for s in subs.values())
    read = {sid: (s.files[0].read_text() if s.files else None) for sid, s in subs.items()}
    assert read == {"1002": "kasia's", "2002": "jane's", "3003": "kate's"}


def test_grader_reports_and_their_page_folders_are_refused_as_a_class(
        gemini_env: object, tmp_path: Path) -> None:
    # `grade run OUT/students` graded grader's own teacher pages as students (paid for) and,
    # with the class's grader.toml, wrote their "grades" over the class's reports
    from _classgen import RUBRIC
    from _cli import grade

    cls = tmp_path / "hw"
    for sid in ("ana", "ben"):
        write(cls / f"{sid}.py", "print('Manchester encoding is self-clocking')")
    write(cls / "rubric.yaml", RUBRIC)
    out = tmp_path / "out"
    code, output = grade("run", str(cls), "--out", str(out))
    assert code == 0, output
    before = (out / "grades.csv").read_bytes()
    for folder, to in ((out, tmp_path / "out2"), (out / "students", out)):
        code, output = grade("run", str(folder), "--rubric", str(cls / "rubric.yaml"),
                             "--out", str(to))
        assert code == 2, output
        assert "grader's output folder" in output and "not a class folder" in output, output
    assert (out / "grades.csv").read_bytes() == before


def test_roster_ids_that_differ_only_in_case_are_refused(tmp_path: Path) -> None:
    # `JSmith.txt` would go to either of them, and the other would be flagged missing
    roster = write(tmp_path / "r.csv", "id,name\njsmith,John Smith\nJSMITH,Jane Smith\n")
    with pytest.raises(InputError) as err:
        read_roster(roster)
    assert "line 3: student id 'JSMITH' differs from 'jsmith' only in upper and lower case" \
        in str(err.value) and "r.csv" in str(err.value)


def test_an_lms_download_unpacked_into_one_folder_is_not_one_student(tmp_path: Path) -> None:
    # the teacher unzipped the Canvas download into `hw1-download/` inside the class folder
    cls = tmp_path / "cls"
    write(cls / "hw1-download" / "kowalskikasia_48213_text.html", "a")
    write(cls / "hw1-download" / "obrienliam_51007_91000_answer.txt", "b")
    with pytest.raises(InputError) as err:
        list(discover(cls))
    msg = str(err.value)
    assert "the folder hw1-download/ holds the files of 2 students" in msg
    assert f"move the files of hw1-download/ up into {cls}" in msg
    # one student's folder with one download-named file, or with files of their own, is theirs
    write(tmp_path / "one" / "kasia" / "kowalskikasia_48213_text.html", "a")
    write(tmp_path / "one" / "kasia" / "notes.txt", "b")
    assert [s.student_id for s in discover(tmp_path / "one")] == ["kasia"]
