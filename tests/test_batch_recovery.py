"""A batch command killed with SIGKILL loses nothing and duplicates nothing: between the store
write and the job's creation (the job is found again by its display name, or dropped and its
students submitted again), and in the middle of collecting (committed items are skipped, the
rest judged from the results downloaded again)."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from grader.batch.collect import KILL_AFTER_COLLECTED_ENV
from grader.batch.jobs import KILL_AT_CREATE_ENV
from grader.cli import cli
from grader.online.ledger import KILL_AFTER_REPLY_ENV
from grader.testing.fake_gemini import FakeGemini

from _classgen import make_class
from _procs import env_for


def q(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return [tuple(r) for r in conn.execute(sql)]


def batch_cmd(verb: str, class_dir: Path, db: Path) -> list[str]:
    return [sys.executable, "-m", "grader.cli", "batch", verb, str(class_dir), "--db", str(db),
            "--out", str(db.parent / "out")]


def grade(verb: str, class_dir: Path, db: Path) -> str:
    res = CliRunner().invoke(cli, ["batch", verb, str(class_dir), "--db", str(db), "--out",
                                   str(db.parent / "out")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


def killed(cmd: list[str], fake: FakeGemini, **env: str) -> None:
    proc = subprocess.run(cmd, env=env_for(fake, **env), capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]


def creates(fake: FakeGemini) -> int:
    return sum(r["endpoint"] == "batches.create" for r in fake.requests())


@pytest.mark.parametrize("moment", ["before", "after"])
def test_a_kill_between_the_store_write_and_the_job_creation(
        gemini_env: FakeGemini, tmp_path: Path, moment: str) -> None:
    class_dir = make_class(tmp_path, 4)
    db = tmp_path / "b.sqlite"
    killed(batch_cmd("submit", class_dir, db), gemini_env, **{KILL_AT_CREATE_ENV: moment})
    assert q(db, "SELECT state, name IS NULL FROM batch_jobs") == [("preparing", 1)]
    assert q(db, "SELECT state, COUNT(*) FROM attempts GROUP BY state") == [("rendered", 4)]
    assert creates(gemini_env) == (1 if moment == "after" else 0)
    out = grade("submit", class_dir, db)
    if moment == "after":  # the job exists: found by its display name, adopted, not resent
        assert "nothing to submit (4 in flight)" in out, out
        assert creates(gemini_env) == 1
        assert q(db, "SELECT state FROM batch_jobs") == [("JOB_STATE_SUCCEEDED",)]
    else:  # it never existed: dropped, and its students submitted again
        assert "submitted 4 request(s) in 1 job(s)" in out, out
        assert creates(gemini_env) == 1
        assert q(db, "SELECT state FROM batch_jobs ORDER BY id") == [
            ("abandoned",), ("JOB_STATE_SUCCEEDED",)]
    out = grade("collect", class_dir, db)
    assert "4 graded, 0 flagged, 0 failed" in out, out
    assert q(db, "SELECT COUNT(*), COUNT(DISTINCT student_id) FROM grades") == [(4, 4)]
    assert q(db, "SELECT COUNT(*) FROM responses") == [(4,)]
    assert sum(gemini_env.stats()["billed_by_request"].values()) == 4


def test_a_kill_while_collecting_stores_every_grade_exactly_once(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    class_dir = make_class(tmp_path, 6)
    db = tmp_path / "b.sqlite"
    grade("submit", class_dir, db)
    killed(batch_cmd("collect", class_dir, db), gemini_env, **{KILL_AFTER_COLLECTED_ENV: "2"})
    assert q(db, "SELECT COUNT(*) FROM grades") == [(2,)]
    assert q(db, "SELECT state, COUNT(*) FROM batch_items GROUP BY state ORDER BY state") == [
        ("pending", 4), ("stored", 2)]
    out = grade("collect", class_dir, db)
    assert "collected 1 job(s): 4 graded, 0 flagged, 0 failed" in out, out
    assert q(db, "SELECT COUNT(*), COUNT(DISTINCT student_id) FROM grades") == [(6, 6)]
    assert q(db, "SELECT COUNT(*) FROM responses") == [(6,)]
    assert q(db, "SELECT state, COUNT(*) FROM attempts GROUP BY state") == [("stored", 6)]
    assert q(db, "SELECT COUNT(*) FROM outcomes") == [(6,)]
    assert "collected 0 job(s)" in grade("collect", class_dir, db)


def test_a_kill_after_the_online_re_ask_is_answered_pays_nothing_twice(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    class_dir = make_class(tmp_path, 2, extra={
        "zz_once.txt": "Student answer FAKE_GEMINI:INVALID_ONCE. TCP is reliable."})
    db = tmp_path / "b.sqlite"
    grade("submit", class_dir, db)
    killed([*batch_cmd("collect", class_dir, db), "--reask", "online"], gemini_env,
           **{KILL_AFTER_REPLY_ENV: "1"})
    assert q(db, "SELECT COUNT(*) FROM grades") == [(2,)]
    assert q(db, "SELECT n, state FROM attempts WHERE student_id='zz_once' ORDER BY n") == [
        (1, "answered"), (2, "answered")]
    billed = sum(gemini_env.stats()["billed_by_request"].values())
    # run again without the flag: the reply in the ledger completes it, nothing is sent
    out = grade("collect", class_dir, db)
    assert "1 graded, 0 flagged, 0 failed, 1 re-asked online" in out, out
    assert sum(gemini_env.stats()["billed_by_request"].values()) == billed
    assert sum(r["endpoint"] == "generateContent" for r in gemini_env.requests()) == 1
    assert creates(gemini_env) == 1  # no second batch round
    assert q(db, "SELECT COUNT(*), COUNT(DISTINCT student_id) FROM grades") == [(3, 3)]
    assert q(db, "SELECT state, COUNT(*) FROM attempts GROUP BY state") == [("stored", 4)]
    assert q(db, "SELECT COUNT(*) FROM outcomes WHERE student_id='zz_once'") == [(1,)]
    assert "collected 0 job(s): 0 graded" in grade("collect", class_dir, db)


def test_two_concurrent_syncs_submit_once(gemini_env: FakeGemini, tmp_path: Path) -> None:
    class_dir = make_class(tmp_path, 5)
    db = tmp_path / "b.sqlite"
    gemini_env.configure(batch_pending_s=3600)  # still pending when the second one looks
    procs = [subprocess.Popen(batch_cmd("sync", class_dir, db), env=env_for(gemini_env),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e.decode()[-2000:] for _, e in outs]
    lines = sorted(o.decode() for o, _ in outs)
    assert all(line.count("\n") == 1 for line in lines), lines
    assert sum("submitted 5 request(s) in 1 job(s)" in line for line in lines) == 1, lines
    assert creates(gemini_env) == 1
    assert q(db, "SELECT COUNT(*) FROM batch_jobs") == [(1,)]
    assert q(db, "SELECT COUNT(*) FROM attempts") == [(5,)]


def test_a_re_ask_judged_before_a_kill_is_sent_by_the_next_collect(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    class_dir = make_class(tmp_path, 0, extra={  # not "once.txt": its id would be redacted
        "retried.txt": "Student answer FAKE_GEMINI:INVALID_ONCE. TCP is reliable."})
    db = tmp_path / "b.sqlite"
    grade("submit", class_dir, db)
    # killed right after the first reply was judged (a re-ask) and committed, before round 2
    killed(batch_cmd("collect", class_dir, db), gemini_env, **{KILL_AFTER_COLLECTED_ENV: "1"})
    assert q(db, "SELECT state FROM batch_items") == [("reasked",)]
    assert creates(gemini_env) == 1
    # a submit meanwhile does not start the conversation over: the re-ask is owed
    assert "nothing to submit (1 in flight)" in grade("submit", class_dir, db)
    grade("collect", class_dir, db)  # judged again from the stored reply; round 2 goes out
    assert creates(gemini_env) == 2
    assert q(db, "SELECT round, requests FROM batch_jobs ORDER BY id") == [(1, 1), (2, 1)]
    assert "1 graded" in grade("collect", class_dir, db)
    assert q(db, "SELECT n, state FROM attempts ORDER BY n") == [(1, "stored"), (2, "stored")]
    assert q(db, "SELECT COUNT(*) FROM grades") == [(1,)]
    assert "collected 0 job(s)" in grade("collect", class_dir, db)
    assert creates(gemini_env) == 2
