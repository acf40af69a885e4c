"""Batch grading end to end through the CLI against the fake Gemini server (the real
google-genai client on the wire): submit -> status -> collect stores the same grades as
`grade run`, exactly once; failed lines and expired jobs go again with --retry-failed; an
answer that needs the re-ask is completed in a second round; `batch sync` is the cron command."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from grader.cli import cli
from grader.testing.fake_gemini import FakeGemini

from _classgen import make_class


def grade(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return res.exit_code, res.output


def q(db: Path, sql: str, args: tuple = ()) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return [tuple(r) for r in conn.execute(sql, args)]


def where(tmp: Path, name: str) -> tuple[str, ...]:
    return ("--db", str(tmp / f"{name}.sqlite"), "--out", str(tmp / f"{name}-out"))


def grades(db: Path) -> list[tuple]:
    """What a student got: status, total, each criterion's score and feedback."""
    return q(db, "SELECT g.student_id, g.status, g.total, g.config_hash, c.criterion_id,"
                 " c.score, c.feedback FROM grades g JOIN criterion_scores c"
                 " ON c.grade_id = g.id ORDER BY g.student_id, c.position")


def endpoints(fake: FakeGemini) -> list[str]:
    return [r["endpoint"] for r in fake.requests()]


@pytest.mark.parametrize("mode", ["inline", "file"])
def test_submit_status_collect_stores_what_an_online_run_stores(
        gemini_env: FakeGemini, tmp_path: Path, mode: str) -> None:
    class_dir = make_class(tmp_path, 5)
    code, out = grade("run", str(class_dir), *where(tmp_path, "online"))
    assert code == 0, out
    gemini_env.reset_stats()
    gemini_env.configure(batch_pending_s=60, batch_running_s=60)
    code, out = grade("batch", "submit", str(class_dir), *where(tmp_path, "b"),
                      "--batch-mode", mode)
    assert code == 0, out
    assert "submitted 5 request(s) in 1 job(s)" in out
    db = tmp_path / "b.sqlite"
    # rows first: every attempt is sent, keyed by its attempt id, none answered
    assert q(db, "SELECT state, COUNT(*) FROM attempts GROUP BY state") == [("sent", 5)]
    assert q(db, "SELECT mode, state FROM batch_jobs") == [(mode, "JOB_STATE_PENDING")]
    assert "generateContent" not in endpoints(gemini_env)
    if mode == "file":
        uploaded = [r for r in gemini_env.requests() if r["endpoint"] == "files.upload"]
        assert uploaded
        (f,) = [f for f in gemini_env.files() if f["source"] == "UPLOADED"]
        lines = [json.loads(x) for x in gemini_env.file_bytes(f["name"]).splitlines()]
        assert [ln["key"] for ln in lines] == [f"a{a}" for (a,) in q(
            db, "SELECT id FROM attempts ORDER BY id")]
        assert all(ln["request"]["store"] is False for ln in lines)
        assert all("responseJsonSchema" in ln["request"]["generationConfig"] for ln in lines)
    code, out = grade("batch", "status", str(class_dir), *where(tmp_path, "b"))
    assert code == 0 and "pending" in out and "5 request(s)" in out, out
    code, out = grade("batch", "collect", str(class_dir), *where(tmp_path, "b"))
    assert code == 0 and "collected 0 job(s)" in out and "1 job(s) still running" in out, out
    gemini_env.advance(seconds=121)
    code, out = grade("batch", "collect", str(class_dir), *where(tmp_path, "b"))
    assert code == 0 and "collected 1 job(s): 5 graded, 0 flagged, 0 failed" in out, out
    assert grades(db) == grades(tmp_path / "online.sqlite")
    assert q(db, "SELECT state, service_tier, COUNT(*) FROM attempts GROUP BY state") == [
        ("stored", "batch", 5)]
    # priced at the batch discount: half of what the online run paid for the same replies
    (online,) = q(tmp_path / "online.sqlite", "SELECT SUM(cost_usd) FROM attempts")[0]
    (batch,) = q(db, "SELECT SUM(cost_usd) FROM attempts")[0]
    assert batch == pytest.approx(online / 2)
    assert (tmp_path / "b-out" / "grades.csv").is_file()
    if mode == "file":  # the input file is deleted once the job is collected
        assert not [f for f in gemini_env.files() if f["source"] == "UPLOADED"]
    # collecting again changes nothing and asks for nothing new
    before = (grades(db), q(db, "SELECT COUNT(*) FROM responses"),
              sum(gemini_env.stats()["billed_by_request"].values()))
    code, out = grade("batch", "collect", str(class_dir), *where(tmp_path, "b"))
    assert code == 0 and "collected 0 job(s)" in out, out
    assert before == (grades(db), q(db, "SELECT COUNT(*) FROM responses"),
                      sum(gemini_env.stats()["billed_by_request"].values()))
    # and a second submit has nothing to send
    code, out = grade("batch", "submit", str(class_dir), *where(tmp_path, "b"))
    assert code == 0 and "nothing to submit" in out and "5 already graded" in out, out
