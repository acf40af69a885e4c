"""Which class owns which outputs and which rubric: grader refuses, before anything is paid,
to write one class's reports over another's or to pick silently between two rubrics."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from grader.cli import cli
from grader.outputs import owner_of
from grader.testing.fake_gemini import FakeGemini

from _classgen import RUBRIC, make_class


@pytest.fixture
def gemini(fake_gemini: FakeGemini, monkeypatch: pytest.MonkeyPatch) -> FakeGemini:
    monkeypatch.setenv("GEMINI_API_KEY", "k")
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", fake_gemini.url)
    monkeypatch.delenv("GRADER_RUBRIC", raising=False)
    return fake_gemini


def _billed(fake: FakeGemini) -> int:
    return sum(fake.stats()["billed_by_request"].values())


def _run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, ["run", *args])
    return res.exit_code, res.output


def test_two_classes_of_one_name_never_share_reports(
        gemini: FakeGemini, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both default to reports/hw1 under the working directory: the second is refused before
    any call, the first's reports stay as they were, and --out gives it a folder of its own."""
    monkeypatch.chdir(tmp_path)
    first = make_class(tmp_path / "course-a", 3).rename(tmp_path / "course-a" / "hw1")
    second = make_class(tmp_path / "course-b", 2).rename(tmp_path / "course-b" / "hw1")
    code, out = _run(str(first))
    assert code == 0, out
    reports = tmp_path / "reports" / "hw1"
    assert owner_of(reports) == first.resolve()
    before = (reports / "grades.csv").read_bytes()
    billed = _billed(gemini)
    code, out = _run(str(second))
    assert code == 2, out
    assert f"holds the reports of another class, {first.resolve()}" in out
    assert "--out reports/hw1-2" in out
    assert _billed(gemini) == billed  # refused before anything was sent
    assert (reports / "grades.csv").read_bytes() == before
    code, out = _run(str(second), "--out", "reports/hw1-b")
    assert code == 0, out
    assert owner_of(tmp_path / "reports" / "hw1-b") == second.resolve()
    assert (reports / "grades.csv").read_bytes() == before


def _assignment(hw: Path) -> Path:
    """`grade init`'s layout with two students' folders, `out = "reports"` in its grader.toml."""
    (hw / "submissions").mkdir(parents=True)
    (hw / "rubric.yaml").write_text(RUBRIC, encoding="utf-8")
    (hw / "grader.toml").write_text('rubric = "rubric.yaml"\nout = "reports"\n',
                                    encoding="utf-8")
    for name in ("alice", "bob"):
        (hw / "submissions" / name).mkdir()
        (hw / "submissions" / name / "answer.txt").write_text(
            "Manchester encoding because it is self-clocking.", encoding="utf-8")
        (hw / "submissions" / name / "notes.txt").write_text("draft", encoding="utf-8")
    return hw


def test_a_students_folder_passed_as_the_class_is_refused(
        gemini: FakeGemini, tmp_path: Path) -> None:
    """`grade init`'s layout, with `out` in its grader.toml: a student's folder passed by
    mistake would be graded as a class of its files and replace the class's reports."""
    hw = _assignment(tmp_path / "hw1")
    code, out = _run(str(hw / "submissions"))
    assert code == 0, out
    billed = _billed(gemini)
    code, out = _run(str(hw / "submissions" / "alice"))
    assert code == 2, out
    assert f"is inside the class folder {(hw / 'submissions').resolve()}" in out
    assert f"pass the class folder itself ({(hw / 'submissions').resolve()})" in out
    assert _billed(gemini) == billed
    assert owner_of(hw / "reports") == (hw / "submissions").resolve()
    assert sorted(p.name for p in (hw / "submissions" / "alice").iterdir()) == [
        "answer.txt", "notes.txt"]  # nothing left in the student's folder


def test_a_moved_class_keeps_its_output_folder(gemini: FakeGemini, tmp_path: Path) -> None:
    """The folder the reports name is gone: the class was moved or renamed, and its reports
    are its own."""
    cls = make_class(tmp_path, 2)
    out = tmp_path / "out"
    assert _run(str(cls), "--out", str(out))[0] == 0
    moved = cls.rename(tmp_path / "class-2026")
    code, text = _run(str(moved), "--out", str(out))
    assert code == 0, text
    assert owner_of(out) == moved.resolve()


def test_an_assignment_archived_or_copied_whole_keeps_its_reports(
        gemini: FakeGemini, tmp_path: Path) -> None:
    """hw1/ moved to hw1-2025/ and a new hw1/ made in its place, or hw1/ copied to hw1-makeup/:
    the reports inside each assignment folder are its own (they name the class by the way from
    them too), so `grade report` rewrites them there; a new class still may not write over
    them."""
    hw = _assignment(tmp_path / "hw1")
    assert _run(str(hw / "submissions"))[0] == 0
    shutil.copytree(hw, tmp_path / "hw1-makeup")
    archived = hw.rename(tmp_path / "hw1-2025")
    _assignment(tmp_path / "hw1")
    assert _run(str(tmp_path / "hw1" / "submissions"))[0] == 0
    for copy in (archived, tmp_path / "hw1-makeup"):
        (copy / "reports" / "grades.csv").unlink()
        res = CliRunner().invoke(cli, ["report", str(copy / "submissions")])
        assert res.exit_code == 0, res.output
        assert (copy / "reports" / "grades.csv").is_file()
    code, out = _run(str(archived / "submissions"), "--out",
                     str(tmp_path / "hw1" / "reports"))
    assert code == 2 and "holds the reports of another class" in out, out


def test_commands_that_write_no_reports_are_not_refused_for_the_folder(
        gemini: FakeGemini, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`grade estimate` and `grade batch status` write no reports: another class's folder in
    `out` is no reason to refuse them."""
    monkeypatch.chdir(tmp_path)
    first = make_class(tmp_path / "course-a", 2).rename(tmp_path / "course-a" / "hw1")
    second = make_class(tmp_path / "course-b", 2).rename(tmp_path / "course-b" / "hw1")
    assert _run(str(first))[0] == 0
    for args in (["estimate", str(second)], ["batch", "status", str(second)]):
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == 0, (args, res.output)
    assert _run(str(second))[0] == 2


def test_a_rubric_named_above_the_class_never_silently_beats_its_own(
        gemini: FakeGemini, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A course-wide grader.toml names hw1's rubric; hw2 has its own: grader asks which one
    (nothing sent), --rubric answers, and the same rubric twice is no question."""
    course = tmp_path / "course"
    hw1 = make_class(course / "hw1", 1)
    hw2 = make_class(course / "hw2", 2)
    (hw2 / "rubric.yaml").write_text(RUBRIC + "\n# a copy of its own\n",
                                     encoding="utf-8")
    (course / "grader.toml").write_text(f'rubric = "{hw1 / "rubric.yaml"}"\n',
                                        encoding="utf-8")
    code, out = _run(str(hw2), "--out", str(tmp_path / "o2"))
    assert code == 2, out
    assert "two rubrics for this class" in out and str(course / "grader.toml") in out
    assert f"--rubric {hw2 / 'rubric.yaml'}" in out
    assert _billed(gemini) == 0
    code, out = _run(str(hw2), "--out", str(tmp_path / "o2"), "--rubric",
                     str(hw2 / "rubric.yaml"))
    assert code == 0, out
    shutil.copy(hw1 / "rubric.yaml", hw2 / "rubric.yaml")  # the same rubric: nothing to ask
    assert _run(str(hw2), "--out", str(tmp_path / "o2"))[0] == 0
    monkeypatch.setenv("GRADER_RUBRIC", str(course / "other.yaml"))
    (course / "other.yaml").write_text(RUBRIC + "\n# a copy of its own\n",
                                       encoding="utf-8")
    code, out = _run(str(hw1), "--out", str(tmp_path / "o1"))
    assert code == 2 and "unset GRADER_RUBRIC" in out, out
    billed = _billed(gemini)
    init = _assignment(tmp_path / "hw3")  # grade init's layout: its grader.toml names the rubric
    code, out = _run(str(init / "submissions"), "--out", str(tmp_path / "o3"))
    assert code == 2 and "two rubrics for this class" in out, out
    flat = " ".join(out.split())
    assert f"{init / 'grader.toml'}: rubric = " in flat and "unset GRADER_RUBRIC" in flat, out
    assert f"--rubric {(init / 'rubric.yaml').resolve()}" in flat, out
    assert _billed(gemini) == billed
