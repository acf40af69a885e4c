"""Batch grading end to end through the CLI against the fake Gemini server (the real
google-genai client on the wire): submit -> status -> collect stores the same grades as
`grade run`, exactly once; failed lines and expired jobs go again with --retry-failed; an
answer that needs the re-ask is completed in a second round; `batch sync` is the cron command."""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from grader.testing.fake_gemini import FakeGemini

from _classgen import make_class
from _cli import grade


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


def test_failed_lines_and_an_expired_job_go_again_with_retry_failed(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    class_dir = make_class(tmp_path, 4, extra={
        "zz_broken.txt": "Student answer. FAKE_GEMINI:BATCH_LINE_FAIL TCP is reliable."})
    db = tmp_path / "b.sqlite"
    code, out = grade("batch", "submit", str(class_dir), *where(tmp_path, "b"))
    assert code == 0 and "submitted 5 request(s)" in out, out
    code, out = grade("batch", "collect", str(class_dir), *where(tmp_path, "b"))
    assert code == 0 and "4 graded, 0 flagged, 1 failed" in out, out
    assert "--retry-failed" in out
    (msg,) = q(db, "SELECT message FROM outcomes WHERE student_id='zz_broken'")[0:1]
    assert "Internal error while processing the request" in msg[0]
    assert q(db, "SELECT state FROM attempts WHERE student_id='zz_broken'") == [("failed",)]
    # without --retry-failed the failed line is held back; with it, it goes again
    code, out = grade("batch", "submit", str(class_dir), *where(tmp_path, "b"))
    assert code == 0 and "nothing to submit" in out and "1 failed line(s)" in out, out
    (class_dir / "zz_broken.txt").write_text("Student answer. TCP is reliable.")  # fixed
    gemini_env.configure(batch_end_state="EXPIRED")
    code, out = grade("batch", "submit", str(class_dir), *where(tmp_path, "b"))
    assert code == 0 and "submitted 1 request(s)" in out, out  # a changed file is new work
    code, out = grade("batch", "collect", str(class_dir), *where(tmp_path, "b"))
    assert code == 0 and "0 graded, 0 flagged, 1 failed" in out, out
    assert "ended expired" in q(db, "SELECT message FROM outcomes WHERE student_id="
                                    "'zz_broken' ORDER BY run_id DESC")[0][0]
    gemini_env.configure(batch_end_state="SUCCEEDED")
    code, out = grade("batch", "submit", str(class_dir), *where(tmp_path, "b"), "--retry-failed")
    assert code == 0 and "submitted 1 request(s)" in out, out
    code, out = grade("batch", "collect", str(class_dir), *where(tmp_path, "b"))
    assert code == 0 and "1 graded, 0 flagged, 0 failed" in out, out
    assert q(db, "SELECT COUNT(DISTINCT student_id), COUNT(*) FROM grades") == [(5, 5)]
    assert q(db, "SELECT state, COUNT(*) FROM batch_items GROUP BY state ORDER BY state") == [
        ("failed", 2), ("stored", 5)]
    # the reports, written from the latest run, show every student, graded in whichever job
    with (tmp_path / "b-out" / "grades.csv").open(newline="", encoding="utf-8") as fh:
        table = list(csv.DictReader(fh))
    assert sorted(r["student_id"] for r in table) == [
        "s0000", "s0001", "s0002", "s0003", "zz_broken"]


def test_an_answer_that_needs_the_re_ask_is_completed_in_a_second_round(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    class_dir = make_class(tmp_path, 2, extra={
        "zz_once.txt": "Student answer FAKE_GEMINI:INVALID_ONCE. TCP is reliable."})
    online = tmp_path / "online"
    shutil.copytree(class_dir, online)
    code, out = grade("run", str(online), *where(tmp_path, "online"))
    assert code == 0, out
    db = tmp_path / "b.sqlite"
    code, out = grade("batch", "submit", str(class_dir), *where(tmp_path, "b"))
    assert code == 0, out
    code, out = grade("batch", "collect", str(class_dir), *where(tmp_path, "b"))
    assert code == 0 and "2 graded, 0 flagged, 0 failed, 1 re-asked" in out, out
    assert q(db, "SELECT round, requests FROM batch_jobs ORDER BY id") == [(1, 3), (2, 1)]
    code, out = grade("batch", "collect", str(class_dir), *where(tmp_path, "b"))
    assert code == 0 and "1 graded" in out, out
    # the second round carries the first reply and the re-ask, as `grade run` sends them
    (second,) = [r for r in gemini_env.requests() if r["endpoint"] == "batches.create"][1:]
    (line,) = second["body"]["batch"]["inputConfig"]["requests"]["requests"]
    assert [c["role"] for c in line["request"]["contents"]] == ["user", "model", "user"]
    assert q(db, "SELECT n, state FROM attempts WHERE student_id='zz_once' ORDER BY n") == [
        (1, "stored"), (2, "stored")]
    ours = [g for g in grades(db) if g[0] == "zz_once"]
    assert ours and ours == [g for g in grades(tmp_path / "online.sqlite") if g[0] == "zz_once"]


def online_asks(fake: FakeGemini, trigger: str) -> list[dict]:
    """generateContent calls (online) whose request carries `trigger`."""
    return [r for r in fake.requests()
            if r["endpoint"] == "generateContent" and trigger in json.dumps(r["body"])]


def test_with_reask_online_the_re_ask_is_one_online_call_in_the_same_collect(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    class_dir = make_class(tmp_path, 2, extra={
        "zz_once.txt": "Student answer FAKE_GEMINI:INVALID_ONCE. TCP is reliable."})
    online = tmp_path / "online"
    shutil.copytree(class_dir, online)
    db = tmp_path / "b.sqlite"
    code, out = grade("batch", "submit", str(class_dir), *where(tmp_path, "b"))
    assert code == 0, out
    code, out = grade("batch", "collect", str(class_dir), *where(tmp_path, "b"),
                      "--reask", "online")
    assert code == 0 and "3 graded, 0 flagged, 0 failed, 1 re-asked online" in out, out
    assert "second round" not in out, out
    assert q(db, "SELECT round, requests FROM batch_jobs") == [(1, 3)]  # no second round
    (asked,) = online_asks(gemini_env, "INVALID_ONCE")
    assert [c["role"] for c in asked["body"]["contents"]] == ["user", "model", "user"]
    assert q(db, "SELECT n, state, service_tier FROM attempts WHERE student_id='zz_once'"
                 " ORDER BY n") == [(1, "stored", "batch"), (2, "stored", "standard")]
    before = (grades(db), q(db, "SELECT COUNT(*) FROM attempts"), len(gemini_env.requests()))
    code, out = grade("batch", "collect", str(class_dir), *where(tmp_path, "b"),
                      "--reask", "online")
    assert code == 0 and "collected 0 job(s): 0 graded" in out, out
    assert (grades(db), q(db, "SELECT COUNT(*) FROM attempts"),
            len(gemini_env.requests())) == before
    # the same grade as `grade run`, and the re-ask priced like its online twin (not halved)
    code, out = grade("run", str(online), *where(tmp_path, "online"))
    assert code == 0, out
    ours = [g for g in grades(db) if g[0] == "zz_once"]
    assert ours and ours == [g for g in grades(tmp_path / "online.sqlite") if g[0] == "zz_once"]
    cost = "SELECT cost_usd FROM attempts WHERE student_id='zz_once' AND n=2"
    assert q(db, cost) == q(tmp_path / "online.sqlite", cost) and q(db, cost)[0][0] > 0


def test_an_online_re_ask_that_fails_fails_its_student(gemini_env: FakeGemini,
                                                        tmp_path: Path) -> None:
    class_dir = make_class(tmp_path, 1, extra={
        "zz_once.txt": "Student answer FAKE_GEMINI:INVALID_ONCE. TCP is reliable."})
    db = tmp_path / "b.sqlite"
    code, out = grade("batch", "submit", str(class_dir), *where(tmp_path, "b"))
    assert code == 0, out
    gemini_env.inject("400")  # the next generateContent: the online re-ask
    code, out = grade("batch", "collect", str(class_dir), *where(tmp_path, "b"),
                      "--reask", "online")
    assert code == 0 and "1 graded, 0 flagged, 1 failed" in out, out
    assert q(db, "SELECT o.status, o.reason, b.state FROM outcomes o JOIN batch_items b"
                 " ON b.attempt_id = (SELECT id FROM attempts WHERE student_id='zz_once')"
                 " WHERE o.student_id='zz_once'") == [("failed", "batch_failed", "failed")]
    assert q(db, "SELECT n, state FROM attempts WHERE student_id='zz_once' ORDER BY n") == [
        (1, "answered"), (2, "failed")]
    code, out = grade("batch", "submit", str(class_dir), *where(tmp_path, "b"),
                      "--retry-failed")
    assert code == 0 and "submitted 1 request(s)" in out, out


def test_reask_is_a_setting_too(gemini_env: FakeGemini, tmp_path: Path) -> None:
    class_dir = make_class(tmp_path, 1, extra={
        "zz_once.txt": "Student answer FAKE_GEMINI:INVALID_ONCE. TCP is reliable."})
    (class_dir / "grader.toml").write_text('[grader]\nbatch_reask = "online"\n')
    code, out = grade("batch", "sync", str(class_dir), *where(tmp_path, "b"))
    assert code == 0 and "submitted 2 request(s)" in out, out
    code, out = grade("batch", "sync", str(class_dir), *where(tmp_path, "b"))
    assert code == 0 and "2 graded, 0 flagged, 0 failed, 1 re-asked online" in out, out
    assert len(online_asks(gemini_env, "INVALID_ONCE")) == 1
    code, out = grade("batch", "sync", str(class_dir), *where(tmp_path, "b"), "--reask",
                      "batch")
    assert (code, out) == (0, "grade batch sync: nothing to do\n")


def test_sync_is_one_line_for_cron_and_exits_0_when_there_is_nothing_to_do(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    class_dir = make_class(tmp_path, 3)
    code, out = grade("batch", "sync", str(class_dir), *where(tmp_path, "b"))
    assert code == 0 and out.count("\n") == 1, out
    assert out.startswith("grade batch sync: submitted 3 request(s) in 1 job(s)"), out
    code, out = grade("batch", "sync", str(class_dir), *where(tmp_path, "b"))
    assert code == 0 and out.count("\n") == 1, out
    assert "collected 1 job(s): 3 graded, 0 flagged, 0 failed" in out, out
    code, out = grade("batch", "sync", str(class_dir), *where(tmp_path, "b"))
    assert (code, out) == (0, "grade batch sync: nothing to do\n")
    (class_dir / "s0009.txt").write_text("A late submission: TCP retransmits lost segments.")
    code, out = grade("batch", "sync", str(class_dir), *where(tmp_path, "b"))
    assert code == 0 and "submitted 1 request(s)" in out, out
    assert q(tmp_path / "b.sqlite", "SELECT COUNT(*) FROM runs") == [(2,)]  # idle ticks: none


def test_sync_does_nothing_while_another_command_holds_the_store(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    from grader.store.locks import RunLock

    class_dir = make_class(tmp_path, 2)
    lock = RunLock(tmp_path / "b.sqlite")
    assert lock.try_acquire()
    try:
        code, out = grade("batch", "sync", str(class_dir), *where(tmp_path, "b"))
    finally:
        lock.release()
    assert code == 0 and "another grade command holds the store; nothing done" in out, out
    assert "batches.create" not in endpoints(gemini_env)


def test_cancel_a_job_and_its_lines_fail(gemini_env: FakeGemini, tmp_path: Path) -> None:
    class_dir = make_class(tmp_path, 2)
    gemini_env.configure(batch_pending_s=3600)
    code, out = grade("batch", "submit", str(class_dir), *where(tmp_path, "b"))
    assert code == 0, out
    (name,) = q(tmp_path / "b.sqlite", "SELECT name FROM batch_jobs")[0]
    code, out = grade("batch", "cancel", name, str(class_dir), *where(tmp_path, "b"))
    assert code == 0 and out == f"{name}: cancelled\n", out
    code, out = grade("batch", "collect", str(class_dir), *where(tmp_path, "b"))
    assert code == 0 and "0 graded, 0 flagged, 2 failed" in out, out


def test_collect_wait_polls_until_the_job_is_done(gemini_env: FakeGemini,
                                                  tmp_path: Path) -> None:
    class_dir = make_class(tmp_path, 2)
    gemini_env.configure(batch_running_s=1.0)
    code, out = grade("batch", "submit", str(class_dir), *where(tmp_path, "b"))
    assert code == 0, out
    (class_dir / "grader.toml").write_text("[grader]\nbatch_poll_s = 0.3\n")
    code, out = grade("batch", "collect", str(class_dir), *where(tmp_path, "b"), "--wait")
    assert code == 0 and "2 graded" in out and "still running" in out, out
    gets = endpoints(gemini_env).count("batches.get")
    assert gets >= 2


def test_a_jsonl_line_is_what_the_sdk_sends_for_the_same_request(
        gemini_env: FakeGemini) -> None:
    """The line reuses the shared part of the request converted once; it must equal the SDK's
    conversion of the whole request (media base64, the re-ask history, store: false)."""
    from google.genai import _common
    from google.genai import batches as sdk_batches

    from grader.backends.gemini import GeminiBackend
    from grader.config.settings import resolve
    from grader.prompting.request import GradeRequest, Part, Turn

    backend = GeminiBackend(resolve({"api_key": "k"}))
    base = GradeRequest(key="", model="gemini-3.8-flash", system="sys", static_prefix="rubric",
                        reference_parts=(Part(mime_type="image/png", data=b"\x89PNG"),),
                        student_parts=(Part(text="my answer"),
                                       Part(mime_type="application/pdf", data=b"%PDF-1")),
                        response_schema={"type": "object"}, thinking_level="low")
    for req in (base, base.model_copy(update={"history": (Turn(role="model", text="{"),
                                                          Turn(role="user", text="again"))}),
                base.model_copy(update={"student_parts": (Part(text="other"),)})):
        whole = sdk_batches._InlinedRequest_to_mldev(
            backend._client._api_client, backend._inlined("k1", req))["request"]
        expected = _common.encode_unserializable_types(_common.convert_to_dict(whole))
        line = backend.batch_line("k1", req)
        assert line == {"key": "k1", "request": expected}
        assert line["request"]["store"] is False


def test_the_fake_batch_job_advances_with_its_clock_and_can_be_listed_cancelled_deleted(
        fake_gemini: FakeGemini) -> None:
    """The fake as the real SDK sees it: PENDING -> RUNNING -> SUCCEEDED on the fake's clock,
    list, cancel of a running job, delete; nothing is billed before a job finishes."""
    from google import genai
    from google.genai import types

    client = genai.Client(api_key="k", http_options=types.HttpOptions(
        base_url=fake_gemini.url, api_version="v1beta"))
    fake_gemini.configure(batch_pending_s=10, batch_running_s=10)
    req = types.InlinedRequest(contents="FAKE_GEMINI:EMPTY hello", metadata={"key": "k1"})
    job = client.batches.create(model="gemini-3.8-flash", src=[req],
                                config=types.CreateBatchJobConfig(display_name="one"))
    other = client.batches.create(model="gemini-3.8-flash", src=[req])
    states = [job.state]
    for _ in range(2):
        fake_gemini.advance(seconds=10)
        states.append(client.batches.get(name=job.name).state)
    assert [str(s.value) for s in states if s] == [
        "JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"]
    assert sum(fake_gemini.stats()["billed_by_request"].values()) == 1  # only the finished one
    done = client.batches.get(name=job.name)
    assert done.dest is not None and done.dest.inlined_responses is not None
    (first,) = done.dest.inlined_responses
    assert first.metadata == {"key": "k1"} and first.response is not None
    assert {j.display_name for j in client.batches.list()} >= {"one"}
    fake_gemini.configure(batch_running_s=3600)
    late = client.batches.create(model="gemini-3.8-flash", src=[req])
    client.batches.cancel(name=late.name)
    assert str(client.batches.get(name=late.name).state.value) == "JOB_STATE_CANCELLED"
    client.batches.delete(name=other.name)
    with pytest.raises(Exception, match="404"):
        client.batches.get(name=other.name)


def test_status_and_collect_default_to_the_current_folder(
        gemini_env: FakeGemini, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from inside the class folder (as a cron line that `cd`s there would), status and
    collect find the class and its store without CLASS_DIR."""
    class_dir = make_class(tmp_path, 2)
    gemini_env.configure(batch_pending_s=0, batch_running_s=0)
    code, out = grade("batch", "submit", str(class_dir), "--out", str(tmp_path / "o"))
    assert code == 0 and "submitted 2 request(s)" in out, out
    monkeypatch.chdir(class_dir)
    code, out = grade("batch", "status", "--out", str(tmp_path / "o"))
    assert code == 0 and "2 request(s)" in out, out
    gemini_env.advance(seconds=5)
    code, out = grade("batch", "collect", "--out", str(tmp_path / "o"))
    assert code == 0 and "collected 1 job(s): 2 graded" in out, out
    assert (class_dir / ".grader" / "grader.sqlite").is_file()


def test_status_lists_the_jobs_without_a_rubric(gemini_env: FakeGemini, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Listing jobs needs only the store: after the rubric is renamed, status still lists the
    open job (asking the service its state), and once the job is collected it is listed even
    without credentials; a class with no store has no jobs."""
    class_dir = make_class(tmp_path, 2)
    gemini_env.configure(batch_pending_s=60, batch_running_s=60)
    code, out = grade("batch", "submit", str(class_dir), *where(tmp_path, "b"))
    assert code == 0 and "submitted 2 request(s)" in out, out
    (class_dir / "rubric.yaml").rename(tmp_path / "rubric-old.yaml")
    code, out = grade("batch", "status", str(class_dir), *where(tmp_path, "b"))
    assert code == 0 and "pending" in out and "2 request(s): 0 stored, 2 pending" in out, out
    (tmp_path / "rubric-old.yaml").rename(class_dir / "rubric.yaml")
    gemini_env.advance(seconds=121)
    code, out = grade("batch", "collect", str(class_dir), *where(tmp_path, "b"))
    assert code == 0 and "2 graded" in out, out
    (class_dir / "rubric.yaml").unlink()
    monkeypatch.delenv("GEMINI_API_KEY")
    code, out = grade("batch", "status", str(class_dir), *where(tmp_path, "b"))
    assert code == 0 and "2 request(s): 2 stored, 0 pending" in out, out
    code, out = grade("batch", "status", str(tmp_path), "--db", str(tmp_path / "none.sqlite"))
    assert code == 0 and out == "no batch jobs\n", out
    assert not (tmp_path / "none.sqlite").exists()


@pytest.mark.parametrize("mode", ["inline", "file"])
def test_random_faults_reach_batch_lines_and_every_student_is_accounted_for(
        gemini_env: FakeGemini, tmp_path: Path, mode: str) -> None:
    """fail_rate applies to the lines of a batch job as to online calls: a call fault is the
    line's error object, a content fault its reply. Collect stores the good lines and gives
    each other student an outcome with its reason (failed or flagged), none lost."""
    class_dir = make_class(tmp_path, 12)
    gemini_env.configure(fail_rate=0.5, fault_kinds=["500", "503", "safety"], seed=6)
    code, out = grade("batch", "submit", str(class_dir), *where(tmp_path, "b"),
                      "--batch-mode", mode)
    assert code == 0 and "submitted 12 request(s)" in out, out
    code, out = grade("batch", "collect", str(class_dir), *where(tmp_path, "b"))
    assert code == 0, out
    db = tmp_path / "b.sqlite"
    faults = gemini_env.stats()["faults"]
    drawn = {k.removeprefix("batch:"): v for k, v in faults.items() if k.startswith("batch:")}
    assert drawn.get("500", 0) + drawn.get("503", 0) > 0 and drawn.get("safety", 0) > 0, faults
    outcomes = q(db, "SELECT student_id, status, message FROM outcomes")
    assert sorted(s for s, *_ in outcomes) == [f"s{i:04d}" for i in range(12)]
    by = {st: [(s, m) for s, status, m in outcomes if status == st] for st in
          ("graded", "failed", "flagged")}
    assert len(by["failed"]) == drawn.get("500", 0) + drawn.get("503", 0)
    assert all("the batch line failed" in m and ("Internal error" in m or "overloaded" in m)
               for _, m in by["failed"]), by["failed"]
    assert by["flagged"] and all(m for _, m in by["flagged"]), by["flagged"]
    assert len(by["graded"]) + len(by["failed"]) + len(by["flagged"]) == 12
    assert (f"collected 1 job(s): {len(by['graded'])} graded, {len(by['flagged'])} flagged, "
            f"{len(by['failed'])} failed") in out, out


def test_a_budget_the_class_sets_is_said_not_to_apply_to_batch_jobs(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    # a budget in the class's grader.toml keeps `grade run` to it; a batch job is sent whole:
    # submit says so, every time, instead of looking as if it kept to it
    class_dir = make_class(tmp_path, 3)
    (class_dir / "grader.toml").write_text("[grader]\nbudget = 0.002\n", encoding="utf-8")
    code, out = grade("batch", "submit", str(class_dir), *where(tmp_path, "b"))
    assert code == 0, out
    said = " ".join(out.split())
    assert "submitted 3 request(s)" in said
    assert f"the budget of $0.002 ({class_dir / 'grader.toml'}: budget = 0.002) is not applied " \
           "to batch jobs" in said, out
