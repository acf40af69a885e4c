"""PII redaction: nothing the fake Gemini server receives names a student of the sample class,
while every report shows the real names; placeholders are stable, so reruns reuse paid replies."""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3
from pathlib import Path

from click.testing import CliRunner

from grader.cli import cli
from grader.config.settings import Settings, redacting
from grader.intake.discover import discover, read_roster
from grader.intake.redact import Redactor, restore
from grader.testing._fake_content import read_prompt
from grader.testing.fake_gemini import FakeGemini

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "intro-python"
RUBRIC = Path(__file__).resolve().parent.parent / "rubrics" / "intro-python.yaml"



def sample_class(tmp_path: Path) -> Path:
    """The sample class with names, e-mails, ids and phone numbers written into the work."""
    class_dir = tmp_path / "intro-python"
    shutil.copytree(SAMPLES, class_dir)
    alice = class_dir / "alice.py"
    alice.write_text("# Alice Martin <alice.martin@example.edu>, student number 20231234,\n"
                     "# phone +1 415-555-0132; pair-programmed with Bob Nguyen (bob.nguyen"
                     "@example.edu)\n" + alice.read_text(encoding="utf-8"), encoding="utf-8")
    kasia = class_dir / "kowalski_kasia_LATE_48213_90312_complexity.txt"
    kasia.write_text(kasia.read_text(encoding="utf-8") + "\n-- Kasia Kowalski, id 48213\n",
                     encoding="utf-8")
    liam = next(class_dir.glob("Liam*file_")) / "fibonacci.py"
    liam.write_text("# Liam O'Brien\n" + liam.read_text(encoding="utf-8"), encoding="utf-8")
    return class_dir


def pii(class_dir: Path) -> list[str]:
    """Every roster name (and each part of it), e-mail and id, plus the planted ones."""
    out = ["20231234", "+1 415-555-0132", "415-555-0132"]
    for r in read_roster(class_dir / "roster.csv").values():
        out += [r.name or "", *(r.name or "").split(), r.email or ""]
        if r.student_id.isdigit():
            out.append(r.student_id)
    return [p for p in out if p]


def run(class_dir: Path, tmp_path: Path, *extra: str) -> tuple[int, str, Path, Path]:
    out, db = tmp_path / "out", tmp_path / "g.sqlite"
    result = CliRunner().invoke(cli, ["run", str(class_dir), "--rubric", str(RUBRIC), "--out",
                                      str(out), "--db", str(db), *extra],
                                catch_exceptions=False)
    return result.exit_code, result.output, out, db


def test_no_student_name_email_or_id_leaves_and_reports_show_real_names(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    class_dir = sample_class(tmp_path)
    code, output, out, db = run(class_dir, tmp_path)
    assert code == 0, output
    submissions = [read_prompt(r["body"]).user_text for r in gemini_env.requests()]
    assert len(submissions) >= 10
    leaked = [(p, s[:80]) for s in submissions for p in pii(class_dir) if p in s]
    assert not leaked
    assert any("[STUDENT_1]" in s and "[EMAIL_1]" in s and "[PHONE_1]" in s
               for s in submissions)
    # the store keeps the request as sent (redacted) and, locally, how to map it back
    with sqlite3.connect(db) as conn:
        bodies = [b for (b,) in conn.execute("SELECT body_json FROM requests")]
        maps = [json.loads(m) for (m,) in conn.execute(
            "SELECT a.redaction_json FROM attempts a WHERE a.student_id='alice'")]
        evidence = [json.loads(e) for (e,) in conn.execute(
            "SELECT c.evidence_json FROM criterion_scores c JOIN outcomes o"
            " ON o.grade_id = c.grade_id WHERE o.student_id='alice'")]
    assert not [p for b in bodies for p in pii(class_dir) if p in b]
    assert maps and maps[0]["[STUDENT_1]"] == "Alice Martin"
    assert maps[0]["[EMAIL_1]"] == "alice.martin@example.edu"
    # the fake quotes the submission as evidence: mapped back to the real text for the teacher
    quotes = " ".join(q for rows in evidence for q in rows)
    assert "Alice Martin" in quotes and "[STUDENT_1]" not in quotes
    page = (out / "students" / "alice.html").read_text(encoding="utf-8")
    assert "Alice Martin" in page and "[STUDENT_" not in page
    with (out / "grades.csv").open(newline="", encoding="utf-8") as fh:
        names = {r["student_id"]: r["name"] for r in csv.DictReader(fh)}
    assert names["alice"] == "Alice Martin" and names["48213"] == "Kasia Kowalski"


def test_no_redact_sends_the_work_as_it_is(gemini_env: FakeGemini, tmp_path: Path) -> None:
    class_dir = sample_class(tmp_path)
    code, output, _, _ = run(class_dir, tmp_path, "--no-redact")
    assert code == 0, output
    assert "unredacted" in output
    assert any("alice.martin@example.edu" in read_prompt(r["body"]).user_text
               for r in gemini_env.requests())


def test_redacted_requests_are_the_same_on_every_run(gemini_env: FakeGemini,
                                                    tmp_path: Path) -> None:
    class_dir = sample_class(tmp_path)
    hashes = []
    for n in range(2):
        db = tmp_path / f"g{n}.sqlite"
        result = CliRunner().invoke(cli, ["run", str(class_dir), "--rubric", str(RUBRIC),
                                          "--out", str(tmp_path / f"o{n}"), "--db", str(db)],
                                    catch_exceptions=False)
        assert result.exit_code == 0, result.output
        with sqlite3.connect(db) as conn:
            hashes.append(sorted(h for (h,) in conn.execute("SELECT hash FROM requests")))
    assert hashes[0] == hashes[1] and hashes[0]


def test_placeholders_number_the_author_first_then_by_appearance() -> None:
    subs = list(discover(SAMPLES, SAMPLES / "roster.csv"))
    r = Redactor(subs)
    (text,), mapping = r.redact(["Bob Nguyen helped Alice; mail bob.nguyen@example.edu"],
                                "alice")
    assert text == "[STUDENT_2] helped [STUDENT_1]; mail [EMAIL_1]"
    assert mapping == {"[STUDENT_2]": "Bob Nguyen", "[STUDENT_1]": "Alice Martin",
                       "[EMAIL_1]": "bob.nguyen@example.edu"}
    assert restore("[STUDENT_1] thanks [STUDENT_2]", mapping) == \
        "Alice Martin thanks Bob Nguyen"
    # order of the class does not matter; common words are names only inside a full name
    again = Redactor(list(reversed(subs)))
    assert again.redact(["Bob Nguyen helped Alice"], "alice")[0] == \
        r.redact(["Bob Nguyen helped Alice"], "alice")[0]
    assert r.redact(["Will you mark it? May I?"], "alice")[0] == ["Will you mark it? May I?"]


def test_the_local_backend_needs_no_redaction_unless_asked() -> None:
    assert not redacting(Settings(), "local")
    assert redacting(Settings(), "gemini") and redacting(Settings(), "vertex")
    assert redacting(Settings(redact=True), "local")
    assert not redacting(Settings(redact=False), "gemini")
