"""The README's "Grade your first class", followed word for word by bash in a fresh folder against
the fake server (issue 23): the teacher's files are where the README says they come from (a
Downloads folder, an editor, Canvas' gradebook export), and every command exits 0. Students get
their roster names in grades.csv, and no roster name reaches any request the fake received."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import openpyxl

from grader.testing.fake_gemini import FakeGemini

from _classgen import RUBRIC

README = Path(__file__).resolve().parent.parent / "README.md"
ROSTER = {  # id: (name, email); each writes their own name in the essay
    "alice": ("Alice Moreau", "alice.moreau@school.test"),
    "bob": ("Bob Okafor", "bob.okafor@school.test"),
    "carol": ("Carol Lindqvist", "carol.lindqvist@school.test"),
}
ESSAYS = {
    "alice": "Alice Moreau here. Binary encoding: bandwidth efficient, and clocks are perfect.",
    "bob": "Manchester encoding because it is self-clocking. -- Bob Okafor",
    "carol": "I, Carol Lindqvist, choose binary encoding: one bit per baud, no clock recovery.",
}
GRADEBOOK = ("Student,ID,SIS User ID,SIS Login ID,Section,Network encoding (short answer) (4411)\n"
             "    Points Possible,,,,,5\n"
             + "".join(f'"{n.split()[1]}, {n.split()[0]}",{100 + i},{sid},{sid},P1,\n'
                       for i, (sid, (n, _)) in enumerate(ROSTER.items())))


def quick_start() -> tuple[str, str]:
    """The README's first-class block, split where the teacher opens review.xlsx: (the
    commands before, the commands after)."""
    section = README.read_text(encoding="utf-8").split("## Grade your first class", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "README: no sh block under 'Grade your first class'"
    before, sep, after = block.group(1).partition("# open hw1/reports/review.xlsx")
    assert sep, "README: the quick start no longer says where the teacher reviews"
    return before, after.split("\n", 1)[1]


def bash(script: str, cwd: Path, env: dict[str, str]) -> str:
    res = subprocess.run(["bash", "-euxc", script], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout + res.stderr


def approve_everyone(workbook: Path) -> None:
    """What the teacher does in Excel between the two halves: mark every row Approved."""
    wb = openpyxl.load_workbook(workbook)
    ws = wb["Summary"]
    col = next(c.column for c in ws[1] if c.value == "Approved")
    for r in range(2, ws.max_row + 1):
        ws.cell(r, col).value = "yes"
    wb.save(workbook)


def test_the_readme_quick_start_word_for_word(fake_gemini: FakeGemini, tmp_path: Path) -> None:
    home = tmp_path / "home"
    downloads = home / "Downloads"
    (downloads / "hw1").mkdir(parents=True)
    for sid, text in ESSAYS.items():
        (downloads / "hw1" / f"{sid}.txt").write_text(text, encoding="utf-8")
    (downloads / "roster.csv").write_text(
        "id,name,email\n" + "".join(f"{sid},{n},{e}\n" for sid, (n, e) in ROSTER.items()),
        encoding="utf-8")
    (tmp_path / "rubric.yaml").write_text(RUBRIC, encoding="utf-8")
    editor = tmp_path / "editor"  # the teacher's editor: writes the rubric they mean
    editor.write_text(f'#!/bin/sh\ncp "{tmp_path / "rubric.yaml"}" "$1"\n', encoding="utf-8")
    editor.chmod(0o755)
    work = tmp_path / "term"
    work.mkdir()
    (work / "gradebook.csv").write_text(GRADEBOOK, encoding="utf-8")  # Grades > Export
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GEMINI_", "GOOGLE_", "GRADER_"))}
    env.update(HOME=str(home), EDITOR=str(editor), GOOGLE_GEMINI_BASE_URL=fake_gemini.url,
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}")
    if "GRADER_TODAY" in os.environ:  # the look-ahead run's date, for grader and the fake alike
        env["GRADER_TODAY"] = os.environ["GRADER_TODAY"]
    before, after = quick_start()

    said = bash(before, work, env)
    hw1 = work / "hw1"
    # hw1/roster.csv is beside rubric.yaml, not in the class folder: read, and said
    assert "found beside rubric.yaml" in " ".join(said.split())
    approve_everyone(hw1 / "reports" / "review.xlsx")
    said += bash(after, work, env)

    with open(hw1 / "reports" / "grades.csv", newline="", encoding="utf-8") as f:
        rows = {r["student_id"]: r for r in csv.DictReader(f)}
    assert {sid: r["name"] for sid, r in rows.items()} == {s: n for s, (n, _) in ROSTER.items()}
    assert all(r["review_status"] == "approved" for r in rows.values())
    sent = [json.dumps(r["body"]) for r in fake_gemini.requests()
            if r["endpoint"] == "generateContent"]
    assert len(sent) >= len(ESSAYS)  # every student's request reached the fake
    words = {w for n, e in ROSTER.values() for w in (*n.split(), e)}
    leaked = sorted(w for w in words if any(w in body for body in sent))
    assert not leaked, f"roster names or emails sent to the model: {leaked}"
    with open(hw1 / "reports" / "gradebook_canvas.csv", newline="", encoding="utf-8") as f:
        gradebook = list(csv.reader(f))
    assert gradebook[0][-1] == "Network encoding (short answer) (4411)"
    assert sorted(r[2] for r in gradebook[2:]) == sorted(ROSTER)  # every student exported
    # Moodle identifies students from the roster: the one the run found beside rubric.yaml
    bash("grade export hw1/reports --format moodle", work, env)
    with open(hw1 / "reports" / "gradebook_moodle.csv", newline="", encoding="utf-8") as f:
        moodle = list(csv.reader(f))
    assert sorted(r[0] for r in moodle[1:]) == sorted(e for _, e in ROSTER.values())

