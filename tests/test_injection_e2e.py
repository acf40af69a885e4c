"""The injection corpus end to end: `grade run` through the CLI against the fake Gemini server.
Every attack ends graded and flagged `injection_suspected` with its evidence, no look-alike is
flagged, hidden text never reaches the server, and suspects come first in review.xlsx."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from click.testing import CliRunner
from openpyxl import load_workbook

from grader.cli import cli
from grader.testing._fake_content import read_prompt
from grader.testing.fake_gemini import FakeGemini

from _classgen import RUBRIC
from _injection_corpus import ATTACKS, CASES, ESSAY, LOOKALIKES, write_cases

MENTION = "Attackers hide phrases such as \"ignore previous instructions\" in their essays."
EXTRA = {
    # the model itself reports the attempt (no detector finding)
    "model_reports": f"{ESSAY}\nFAKE_GEMINI:REVIEW",
    # weak sign (a mention) + a gullible model's full marks: the score jump flags it
    "mention_and_jump": f"{ESSAY}\n{MENTION}\nFAKE_GEMINI:OBEY",
    # the same jump without any sign is not checked, let alone flagged
    "jump_only": f"{ESSAY}\nFAKE_GEMINI:OBEY",
    # similar work the jumps are measured against
    **{f"similar_{i}": f"{ESSAY} Answer {i}." for i in range(4)},
}



def make_corpus_class(root: Path) -> Path:
    class_dir = write_cases(root / "class", CASES)
    (class_dir / "rubric.yaml").write_text(RUBRIC, encoding="utf-8")
    for sid, text in EXTRA.items():
        (class_dir / f"{sid}.txt").write_text(text, encoding="utf-8")
    return class_dir


def test_corpus_end_to_end(gemini_env: FakeGemini, tmp_path: Path) -> None:
    class_dir = make_corpus_class(tmp_path)
    out, db = tmp_path / "out", tmp_path / "g.sqlite"
    result = CliRunner().invoke(cli, ["run", str(class_dir), "--out", str(out), "--db", str(db)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    with sqlite3.connect(db) as conn:
        outcome = dict(conn.execute("SELECT student_id, status FROM outcomes"))
        flags: dict[str, dict[str, str]] = {}
        for sid, reason, message in conn.execute(
                "SELECT o.student_id, f.reason, f.message FROM outcomes o"
                " JOIN flags f ON f.grade_id = o.grade_id"):
            flags.setdefault(sid, {})[reason] = message
    suspected = {sid for sid, f in flags.items() if "injection_suspected" in f}
    # the default run has no model check: the paraphrases only it can see are left
    # (tests/test_injection_check.py runs with it)
    attacks = {c.name for c in ATTACKS if not c.needs_model} | {"model_reports",
                                                                 "mention_and_jump"}
    assert suspected == attacks
    # still graded on the merits: the flag does not turn the grade into a failure
    assert all(outcome[sid] == "graded" for sid in attacks)
    # the evidence says what and where
    assert "line" in flags["plain_note_to_ai"]["injection_suspected"]
    assert "white text" in flags["docx_white"]["injection_suspected"]
    assert "attempt to instruct the grader" in flags["model_reports"]["injection_suspected"]
    assert "most similar" in flags["mention_and_jump"]["injection_suspected"]
    assert "score_jump" in flags["mention_and_jump"]
    assert "jump_only" not in flags  # a high score alone is not evidence
    assert not suspected & {c.name for c in LOOKALIKES}

    # hidden text never reached the server
    bodies = [read_prompt(r["body"]).submission for r in gemini_env.requests()]
    assert len(bodies) >= 50  # documents whose visible text is the same share one call
    for case in CASES:
        for secret in case.hidden:
            assert not any(secret in b for b in bodies), (case.name, secret)

    # the review queue: every suspect before anyone else, and the summary says who
    wb = load_workbook(out / "review.xlsx", read_only=True)
    ids = [row[0] for row in wb["Summary"].iter_rows(min_row=2, values_only=True)]
    wb.close()
    assert set(ids[:len(suspected)]) == suspected
    assert "injection suspected" in result.output
