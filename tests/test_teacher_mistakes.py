"""The mistakes a new teacher makes, through the CLI against the fake server: each is refused
with the fix (exit 2, nothing paid, nothing overwritten) or done right and said, never done
wrong with exit 0 (issue 23: the wrong folder, typos that select nobody, the roster beside the
rubric, a phone number that is not allocated, a YAML slip, a rubric edit that grades again)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from grader.testing.fake_gemini import FakeGemini

from _classgen import RUBRIC, make_class
from _cli import grade, review

ESSAYS = {
    "alice": "Binary encoding, since it is bandwidth efficient and the clocks are perfect.",
    "bob": "Manchester encoding because it is self-clocking.",
    "carol": "Binary encoding: one bit per baud, no clock recovery needed. Carol Danvers.",
    "dave": "Differential Manchester, robust against polarity errors.",
}


def billed(fake: FakeGemini) -> int:
    return sum(fake.stats()["billed_by_request"].values())


def bodies(fake: FakeGemini) -> str:
    return json.dumps([r["body"] for r in fake.requests() if r["endpoint"] == "generateContent"])


def assignment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`grade init hw1`, the rubric written, four essays in hw1/submissions/."""
    monkeypatch.chdir(tmp_path)
    code, out = grade("init", "hw1")
    assert code == 0, out
    folder = tmp_path / "hw1"
    (folder / "rubric.yaml").write_text(RUBRIC, encoding="utf-8")
    for sid, text in ESSAYS.items():
        (folder / "submissions" / f"{sid}.txt").write_text(text, encoding="utf-8")
    return folder


def test_the_assignment_folder_is_refused_naming_the_class_folder(
        gemini_env: FakeGemini, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hw1 = assignment(tmp_path, monkeypatch)
    for command in (("run",), ("estimate",), ("batch", "submit")):
        code, out = grade(*command, "hw1")
        assert code == 2, out
        flat = " ".join(out.split())
        assert "does not look like the class folder" in flat and "submissions/" in flat
        assert "pass hw1/submissions instead" in flat
    assert billed(gemini_env) == 0 and gemini_env.stats()["by_endpoint"] == {}
    assert not (hw1 / "reports").exists()  # nothing written over
    # an unpacked download whose only folder holds the class is refused the same way
    download = tmp_path / "download"
    (download / "submissions").mkdir(parents=True)
    for sid, text in ESSAYS.items():
        (download / "submissions" / f"{sid}.txt").write_text(text, encoding="utf-8")
    (download / "rubric.yaml").write_text(RUBRIC, encoding="utf-8")
    code, out = grade("run", str(download), "--db", str(tmp_path / "d.db"))
    assert code == 2 and "submissions" in out, out
    assert billed(gemini_env) == 0


def test_typos_in_only_and_retry_flagged_select_nobody_and_are_refused(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    class_dir = make_class(tmp_path, 0, extra={f"{sid}.txt": text for sid, text in
                                               {**ESSAYS, "eve": ESSAYS["alice"]
                                                + "\nFAKE_GEMINI:REVIEW"}.items()})
    where = ("--db", str(tmp_path / "g.db"), "--out", str(tmp_path / "out"))
    code, out = grade("run", str(class_dir), *where, "--only", "carl")
    assert code == 2, out
    assert "--only: no student id 'carl' (did you mean 'carol'?)" in out
    for empty in ("", ","):  # `--only "$IDS"` with the variable unset: nobody, refused
        code, out = grade("run", str(class_dir), *where, "--only", empty)
        assert code == 2 and "--only names no student id (it is empty)" in out, out
    assert billed(gemini_env) == 0
    code, out = grade("run", str(class_dir), *where)
    assert code == 0, out
    paid = billed(gemini_env)
    code, out = grade("run", str(class_dir), *where, "--retry-flagged", "injection")
    assert code == 2, out
    assert "did you mean 'injection_suspected'?" in out and "valid flag reasons" in out
    assert billed(gemini_env) == paid
    code, out = grade("run", str(class_dir), *where, "--retry-flagged", "injection_suspected")
    assert code == 0, out  # the right reason is taken


def test_the_roster_beside_the_rubric_names_students_and_their_names_are_redacted(
        gemini_env: FakeGemini, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hw1 = assignment(tmp_path, monkeypatch)
    # saved by a European Excel: semicolons; erin has handed nothing in; dave is not listed
    (hw1 / "roster.csv").write_text(
        "id;name;email\nalice;Alice Liddell;alice@uni.example\nbob;Bob Marley;\n"
        "carol;Carol Danvers;carol@uni.example\nerin;Erin Brockovich;\n", encoding="utf-8")
    code, out = grade("run", "hw1/submissions")
    assert code == 0, out
    flat = " ".join(out.split())
    assert "1 submission(s) not in the roster" in flat and "dave" in flat
    with (hw1 / "reports" / "grades.csv").open(encoding="utf-8", newline="") as fh:
        rows = {r["student_id"]: r for r in csv.DictReader(fh)}
    assert rows["alice"]["name"] == "Alice Liddell" and rows["carol"]["name"] == "Carol Danvers"
    assert rows["erin"]["status"] == "flagged" and "missing" in rows["erin"]["flags"]
    sent = bodies(gemini_env)
    assert "Carol" not in sent and "Danvers" not in sent  # redacted before it was sent


def test_without_a_roster_the_run_says_names_cannot_be_redacted(
        gemini_env: FakeGemini, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assignment(tmp_path, monkeypatch)
    code, out = grade("run", "hw1/submissions")
    assert code == 0, out
    flat = " ".join(out.split())
    assert flat.count("no roster: names the students wrote") == 1
    assert "put roster.csv (id,name,email) beside rubric.yaml" in flat


def test_a_phone_number_that_is_not_allocated_is_redacted_too(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    class_dir = make_class(tmp_path, 0, extra={
        "alice.txt": "Call me on +44 7700 900123 or (415) 555-0101. Binary encoding; "
                     "x = 0.1234567 and 1234567890 stay as they are."})
    code, out = grade("run", str(class_dir), "--db", str(tmp_path / "g.db"),
                      "--out", str(tmp_path / "out"))
    assert code == 0, out
    sent = bodies(gemini_env)
    assert "7700" not in sent and "555-0101" not in sent and "[PHONE_" in sent
    assert "0.1234567" in sent and "1234567890" in sent  # numbers in the work are not phones


def test_a_yaml_indentation_slip_is_named_in_a_teachers_words(tmp_path: Path) -> None:
    class_dir = make_class(tmp_path, 1)
    (class_dir / "rubric.yaml").write_text(RUBRIC.replace("    max_points: 3",
                                                          "   max_points: 3"), encoding="utf-8")
    code, out = grade("run", str(class_dir), "--db", str(tmp_path / "g.db"))
    assert code == 2, out
    assert "rubric.yaml: line 17, column 4: this line is indented differently" in out
    assert "   max_points: 3" in out and "line it up with the other keys" in out
    assert "<unicode string>" not in out and "Traceback" not in out


def test_a_rubric_edit_says_why_everyone_is_graded_again_and_what_carries_over(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    class_dir = make_class(tmp_path, 4)
    where = ("--db", str(tmp_path / "g.db"), "--out", str(tmp_path / "out"))
    assert grade("run", str(class_dir), *where)[0] == 0
    review(tmp_path / "out", tmp_path / "g.db", approve={"s0000": "Fine.", "s0001": "Good."})
    rubric = class_dir / "rubric.yaml"
    rubric.write_text(rubric.read_text(encoding="utf-8").replace(
        "Grade each criterion independently.", "Grade each criterion on its own."),
        encoding="utf-8")
    code, out = grade("run", str(class_dir), *where)
    assert code == 0, out
    flat = " ".join(out.split())
    assert "the grades of run 1 do not apply to this run: the rubric changed" in flat
    assert "graded again because the rubric changed" in flat
    assert "2 of 2 students' teacher decisions carry over" in flat  # the fake scores the same


def test_export_refuses_a_run_that_never_reached_every_student(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    # a trial `--limit 1` run after the class was graded: the class's newest run holds one
    # student, and its gradebook would leave the other two out without a word
    class_dir = make_class(tmp_path, 3)
    db, out = str(tmp_path / "g.db"), tmp_path / "out"
    code, said = grade("run", str(class_dir), "--db", db, "--out", str(out))
    assert code == 0, said
    code, said = grade("run", str(class_dir), "--db", db, "--limit", "1",
                       "--out", str(tmp_path / "trial"))
    assert code == 0, said
    code, said = grade("export", str(out), "--format", "csv")
    assert code == 2, said
    assert "graded only the first 1 students (--limit 1)" in said
    assert "nothing was written" in said and "without --limit" in said
    assert not (out / "gradebook.csv").exists()
    code, said = grade("run", str(class_dir), "--db", db, "--out", str(out))  # reuses all
    assert code == 0, said
    code, said = grade("export", str(out), "--format", "csv")
    assert code == 0, said
    with (out / "gradebook.csv").open(encoding="utf-8") as fh:
        assert len(list(csv.reader(fh))) == 1 + 3  # the header and every student
