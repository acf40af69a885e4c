"""The store under faults: damage, a full disk, a store deleted mid-run, a foreign SQLite file.
Each ends in a clean message naming the file and the fix, and no paid reply is lost."""

from __future__ import annotations

import json
import os
import resource
import signal
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from grader.cli import cli
from grader.errors import StoreError
from grader.grading.records import Answer, RequestRecord
from grader.prompting.request import GradeResponse, Usage
from grader.store import Store, grader_store_problem, unsaved_path
from grader.store.core import unsaved_paths
from grader.testing.fake_gemini import FakeGemini

from _classgen import make_class
from _procs import env_for, grade_cmd, paid, scalar
from _synthetic import build


def test_damaged_store_is_refused_before_any_call(tmp_path: Path) -> None:
    class_dir = make_class(tmp_path, 30)
    db = tmp_path / "g.sqlite"
    with FakeGemini() as fake:
        assert subprocess.run(grade_cmd(class_dir, db), env=env_for(fake), capture_output=True,
                              timeout=120).returncode == 0
        with sqlite3.connect(db) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        data = bytearray(db.read_bytes())
        page = 4096
        for p in range(3, len(data) // page - 1):  # interior pages: the header stays valid
            data[p * page + 100: p * page + 400] = os.urandom(300)
        db.write_bytes(bytes(data))
        fake.reset_stats()
        run = subprocess.run(grade_cmd(class_dir, db, "--regrade"), env=env_for(fake),
                             capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert "the grade store is damaged" in run.stderr and str(db) in run.stderr
    assert "fix: move the file aside" in run.stderr and "Traceback" not in run.stderr
    assert paid(fake) == (0, 0)


def test_store_deleted_mid_run_is_written_again_with_nothing_lost(tmp_path: Path) -> None:
    class_dir = make_class(tmp_path, 40)
    db = tmp_path / ".grader" / "g.sqlite"
    with FakeGemini(latency_ms=100) as fake:
        proc = subprocess.Popen(grade_cmd(class_dir, db, "--concurrency", "4"), env=env_for(fake),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        fake.wait_for_requests(8 + 4)  # at --concurrency 4: at least 8 students graded
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, out + err
        assert "was written again from the open copy" in out
        assert scalar(db, "SELECT COUNT(*) FROM grades") == 40
        assert scalar(db, "SELECT COUNT(*) FROM outcomes WHERE status = 'graded'") == 40
        total, distinct = paid(fake)
        assert total == distinct == 40


def _file_size_limit(limit: int) -> Callable[[], None]:
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes fail with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_full_disk_stops_cleanly_and_keeps_every_paid_reply(tmp_path: Path) -> None:
    """A file size limit makes SQLite's writes fail as on a full disk."""
    class_dir = make_class(tmp_path, 60)
    db = tmp_path / "g.sqlite"
    with FakeGemini(latency_ms=10) as fake:
        full = subprocess.run(grade_cmd(class_dir, db), env=env_for(fake), capture_output=True,
                              text=True, timeout=120, preexec_fn=_file_size_limit(900_000))
        assert full.returncode == 2, full.stdout + full.stderr
        assert "cannot write (no space left on the disk" in full.stderr
        assert "fix: free some disk space" in full.stderr and "Traceback" not in full.stderr
        delivered, _ = paid(fake)
        assert 0 < delivered < 60
        kept = unsaved_path(str(db))
        assert kept.exists()  # replies that arrived after the disk filled up
        again = subprocess.run(grade_cmd(class_dir, db), env=env_for(fake), capture_output=True,
                               text=True, timeout=120)
        assert again.returncode == 0, again.stderr
        assert "were stored" in again.stdout and not kept.exists()
        assert paid(fake) == (60, 60)  # nothing paid twice


def _reply_that_cannot_be_committed(db: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A reply whose commit fails as on a full disk (SQLite says so; no real disk fills up):
    the StoreError's message."""
    build(db, n=2).store.close()

    def full(*args: object, **kwargs: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    with Store(db) as store:
        run = store.runs()[0]
        (sub, student) = store.conn.execute(
            "SELECT id, student_id FROM submissions LIMIT 1").fetchone()
        aid = store.begin_attempt(run_id=run.id, student_id=student, submission_id=sub,
                                  sample=0, n=1, request=RequestRecord("h-full", None, "m",
                                                                       {"parts": []}))
        with monkeypatch.context() as m:
            m.setattr(Store, "_answer", full)
            with pytest.raises(StoreError) as err:
                store.answer_attempt(aid, "h-full", Answer(
                    GradeResponse(text="{}", finish_reason="STOP", model_version="m",
                                  usage=Usage(prompt_tokens=1200, output_tokens=300,
                                              thinking_tokens=100, cached_tokens=800),
                                  latency_ms=1500.0, retries=1), cost_usd=0.01))
    return str(err.value)


def test_a_reply_goes_to_the_state_folder_when_beside_the_store_cannot_be_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a full disk the file beside the store fails too: the reply is kept in the user's
    state folder (likely another file system), the message says where, and the next open of
    the store stores it from there."""
    db = tmp_path / "class" / "g.sqlite"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    db.parent.mkdir()
    unsaved_path(str(db)).mkdir()  # a folder where the file beside the store would go
    message = _reply_that_cannot_be_committed(db, monkeypatch)
    kept = unsaved_paths(str(db))[1]
    assert kept.parent == tmp_path / "state" / "grader" and kept.is_file()
    assert f"kept in {kept} (beside the store could not be written)" in message, message
    with Store(db) as store:
        assert any(str(kept) in n and "were stored" in n for n in store.notices)
        assert store.conn.execute("SELECT COUNT(*) FROM responses WHERE request_hash="
                                  "'h-full'").fetchone()[0] == 1
    assert not kept.exists()


def test_a_reply_goes_to_the_temp_folder_when_the_state_folder_cannot_be_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "g.sqlite"
    (tmp_path / "state").write_text("not a folder")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    unsaved_path(str(db)).mkdir()
    message = _reply_that_cannot_be_committed(db, monkeypatch)
    kept = unsaved_paths(str(db))[2]
    assert kept.parent == tmp_path / "tmp" / f"grader-{os.getuid()}" and kept.is_file()
    assert kept.parent.stat().st_mode & 0o077 == 0  # private: others cannot plant replies
    assert f"kept in {kept}" in message, message
    with Store(db) as store:
        assert store.conn.execute("SELECT COUNT(*) FROM responses WHERE request_hash="
                                  "'h-full'").fetchone()[0] == 1
    assert not kept.exists()


def test_a_side_file_keeps_the_reply_whole_and_one_from_an_older_version_is_still_stored(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The side file holds the reply with its token counts, latency and cost, and they land in
    the store as they came; a line written by grader before the reply was kept whole (its
    fields and token counts side by side) is stored too, not dropped with the file."""
    db = tmp_path / "g.sqlite"
    _reply_that_cannot_be_committed(db, monkeypatch)
    sql = ("SELECT a.prompt_tokens, a.output_tokens, a.thinking_tokens, a.cached_tokens,"
           " a.retries, a.latency_ms, a.cost_usd, r.text FROM responses r"
           " JOIN attempts a ON a.id = r.attempt_id WHERE r.request_hash = ?")
    with Store(db) as store:
        assert tuple(store.conn.execute(sql, ("h-full",)).fetchone()) == (
            1200, 300, 100, 800, 1, 1500.0, 0.01, "{}")
        (run, sub, student) = store.conn.execute(
            "SELECT run_id, submission_id, student_id FROM attempts LIMIT 1").fetchone()
        aid = store.begin_attempt(run_id=run, student_id=student, submission_id=sub, sample=0,
                                  n=1, request=RequestRecord("h-older", None, "m", {}))
    older = {"attempt_id": aid, "request_hash": "h-older", "at": "2026-12-01T10:00:00Z",
             "answer": {"text": "{\"x\": 1}", "finish_reason": "STOP", "blocked_reason": None,
                        "model_version": "m", "raw": None, "prompt_tokens": 900,
                        "output_tokens": 70, "thinking_tokens": 30, "cached_tokens": 0,
                        "latency_ms": 1200.0, "retries": 2, "cost_usd": 0.02,
                        "model_status": None, "service_tier": "standard"}}
    kept = unsaved_path(str(db))
    kept.write_text(json.dumps(older) + "\n")
    with Store(db) as store:
        assert tuple(store.conn.execute(sql, ("h-older",)).fetchone()) == (
            900, 70, 30, 0, 2, 1200.0, 0.02, '{"x": 1}')
    assert not kept.exists()


def test_foreign_sqlite_file_is_never_used_as_a_store(tmp_path: Path) -> None:
    foreign = tmp_path / "photos.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO photos (name) VALUES ('cat.jpg')")
    before = foreign.read_bytes()
    assert grader_store_problem(foreign) is not None
    class_dir = make_class(tmp_path, 1)
    for args in (["status", str(class_dir), "--db", str(foreign)],
                 ["report", str(class_dir), "--db", str(foreign), "--out", str(tmp_path / "o")]):
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == 2, res.output
        assert "not a grade store written by grader" in res.output
    assert foreign.read_bytes() == before
    assert not Path(f"{foreign}-wal").exists()  # not even switched to WAL
    with pytest.raises(Exception, match="not a grade store"):
        Store(foreign, create=False)
