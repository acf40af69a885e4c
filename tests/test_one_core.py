"""Every path prepares and judges a student the same way (`prepare`, `judge`): what used to hold
for `grade run` only now holds for `grade batch` and `grade run --dry-run`, through the CLI
against the fake server."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from grader.testing.fake_gemini import FakeGemini

from _classgen import RUBRIC, make_class
from _cli import grade, q, review
from _injection_corpus import ESSAY

FABRICATED = "The student proves that P equals NP in three lines."  # the fake's invented quote
MENTION = "Attackers hide phrases such as \"ignore previous instructions\" in their essays."


def where(tmp: Path) -> tuple[str, ...]:
    return ("--db", str(tmp / "g.sqlite"), "--out", str(tmp / "out"))


def flags_of(db: Path) -> dict[str, set[str]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT g.student_id, f.reason FROM grades g"
                            " JOIN flags f ON f.grade_id = g.id").fetchall()
    out: dict[str, set[str]] = {}
    for sid, reason in rows:
        out.setdefault(sid, set()).add(reason)
    return out


def submit_and_collect(fake: FakeGemini, class_dir: Path, tmp: Path, *extra: str,
                       how: tuple[str, ...] = ("collect",)) -> str:
    fake.configure(batch_pending_s=0, batch_running_s=0)
    code, out = grade("batch", "submit", str(class_dir), *where(tmp), *extra)
    assert code == 0, out
    fake.advance(seconds=1)
    code, collected = grade("batch", how[0], str(class_dir), *where(tmp), *how[1:])
    assert code == 0, collected
    return out + collected


def test_a_batch_collected_grade_with_an_invented_quote_is_flagged(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    class_dir = make_class(tmp_path, 3)
    inventing = class_dir / "s0001.txt"
    inventing.write_text(inventing.read_text(encoding="utf-8") + "\nFAKE_GEMINI:FABRICATE",
                         encoding="utf-8")
    out = submit_and_collect(gemini_env, class_dir, tmp_path)
    assert "collected 1 job(s): 3 graded" in out, out
    db = tmp_path / "g.sqlite"
    assert flags_of(db) == {"s0001": {"evidence_not_found"}}
    (message,) = q(db, "SELECT f.message FROM flags f JOIN grades g ON g.id = f.grade_id"
                       " WHERE g.student_id = 's0001'")[0]
    assert FABRICATED[:40] in message
    # online, the same student is flagged the same way
    code, out = grade("run", str(class_dir), "--db", str(tmp_path / "online.sqlite"),
                      "--out", str(tmp_path / "online"))
    assert code == 0, out
    assert flags_of(tmp_path / "online.sqlite") == {"s0001": {"evidence_not_found"}}


@pytest.mark.parametrize("how", [("collect",), ("collect", "--wait"), ("sync",)])
def test_batch_collect_runs_the_score_jump_check(gemini_env: FakeGemini, tmp_path: Path,
                                                 how: tuple[str, ...]) -> None:
    """Whichever command collects (cron's `sync` line too) says what the check found."""
    class_dir = tmp_path / "class"
    class_dir.mkdir()
    (class_dir / "rubric.yaml").write_text(RUBRIC, encoding="utf-8")
    texts = {
        # a weak sign (a mention) and a gullible model's full marks
        "mention_and_jump": f"{ESSAY}\n{MENTION}\nFAKE_GEMINI:OBEY",
        # the same jump without any sign is not checked
        "jump_only": f"{ESSAY}\nFAKE_GEMINI:OBEY",
        **{f"similar_{i}": f"{ESSAY} Answer {i}." for i in range(4)},
    }
    for sid, text in texts.items():
        (class_dir / f"{sid}.txt").write_text(text, encoding="utf-8")
    out = submit_and_collect(gemini_env, class_dir, tmp_path, how=how)
    assert "injection suspected (graded; first in review.xlsx): mention_and_jump" in out, out
    flags = flags_of(tmp_path / "g.sqlite")
    assert flags["mention_and_jump"] == {"score_jump", "injection_suspected"}
    assert "jump_only" not in flags


def test_a_failed_embedding_call_during_batch_submit_fails_that_student_only(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    last = make_class(tmp_path / "last", 3)
    code, out = grade("run", str(last), "--db", str(tmp_path / "last.sqlite"),
                      "--out", str(tmp_path / "last_out"))
    assert code == 0, out
    review(tmp_path / "last_out", tmp_path / "last.sqlite",
           approve={"s0000": "Good.", "s0001": "Fine."})
    class_dir = make_class(tmp_path / "now", 3)
    gemini_env.reset_stats()
    gemini_env.configure(batch_pending_s=0, batch_running_s=0)
    examples = ("--exemplars", "1", "--exemplar-db", str(tmp_path / "last.sqlite"),
                "--exemplar-similarity", "embeddings")
    # the first embedding call fails (a 400 is not retried): it is the first student's (the
    # bank is embedded with the first student that needs it)
    gemini_env.inject_for("batchEmbedContents", "400")
    code, out = grade("batch", "submit", str(class_dir), *where(tmp_path), *examples)
    assert code == 0, out
    assert "submitted 2 request(s) in 1 job(s)" in out, out
    assert "1 failed before a request" in out, out
    db = tmp_path / "g.sqlite"
    (failed,) = q(db, "SELECT student_id, reason, message FROM outcomes WHERE status = 'failed'")
    assert failed[1] == "backend_error" and "embed" in failed[2].lower()
    # the next submit sends the student that failed, and only that one
    code, out = grade("batch", "submit", str(class_dir), *where(tmp_path), *examples)
    assert code == 0, out
    assert "submitted 1 request(s) in 1 job(s)" in out and "2 already in a running job" in out


def test_dry_run_only_shows_that_students_prompt_and_no_one_elses(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    class_dir = make_class(tmp_path, 4)
    # the first student in the class's order cannot be read: the prompt shown is still alice's
    (class_dir / "aaron.txt").write_bytes(b"")
    (class_dir / "alice.txt").write_text("ALICE-OWN-WORDS binary encoding, perfect clocks.",
                                         encoding="utf-8")
    code, out = grade("run", str(class_dir), "--dry-run", "--only", "alice",
                      "--db", str(tmp_path / "g.db"))
    assert code == 0, out
    # the prompt shown is the one sent: her name (her id) redacted in any case
    assert "--- alice:" in out and "[STUDENT_1]-OWN-WORDS" in out and "alice's prompt" in out
    for other in ("aaron", "s0000", "s0001", "s0002", "s0003"):
        assert f"--- {other}" not in out, out
        assert f"Student {other[1:]} answer" not in out
    assert gemini_env.stats()["by_endpoint"] == {}
    # without --only: the flagged first student is listed, the prompt is the first one sent
    code, out = grade("run", str(class_dir), "--dry-run", "--db", str(tmp_path / "g.db"))
    assert code == 0, out
    assert "--- aaron: would be flagged" in out and "alice's prompt" in out, out
