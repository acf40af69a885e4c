"""A batch job's replies are judged and stored as they were asked, through `grade batch` against
the fake server: a rubric or model changed while the job was out does not relabel its grades
(the next run grades those students again, with today's); a resubmission graded since stays the
student's grade when the older job ends later; what the score-jump check found reaches the
console of `collect --wait` and the cron line of `sync`."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from grader.testing.fake_gemini import FakeGemini

from _classgen import ANSWERS, make_class
from _cli import generated, grade, q

GOOD = ANSWERS[0]  # the fake model scores it high


def _where(tmp_path: Path) -> tuple[str, ...]:
    return ("--db", str(tmp_path / "g.sqlite"), "--out", str(tmp_path / "out"))


def _totals(tmp_path: Path) -> dict[str, str]:
    with (tmp_path / "out" / "grades.csv").open(encoding="utf-8", newline="") as fh:
        return {r["student_id"]: r["final_total"] for r in csv.DictReader(fh)}


def test_a_rubric_changed_while_the_job_was_out_does_not_relabel_its_grades(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    cls = make_class(tmp_path, 3)
    db, where = tmp_path / "g.sqlite", _where(tmp_path)
    gemini_env.configure(batch_pending_s=60, batch_running_s=60)
    code, out = grade("batch", "submit", str(cls), *where)
    assert code == 0 and "submitted 3 request(s)" in out, out
    rubric = (cls / "rubric.yaml").read_text(encoding="utf-8")
    assert "max_points: 3" in rubric
    (cls / "rubric.yaml").write_text(rubric.replace("max_points: 3", "max_points: 6", 1),
                                     encoding="utf-8")
    gemini_env.advance(seconds=121)
    code, out = grade("batch", "collect", str(cls), *where)
    assert code == 0 and "collected 1 job(s): 3 graded" in out, out
    flat = " ".join(out.split())
    assert "run 1's batch job was sent with another rubric and schema than the class has now" \
        in flat, out
    assert "out of 5 points" in flat
    (sent_with,) = q(db, "SELECT fingerprint FROM runs WHERE id = 1")[0]
    assert q(db, "SELECT DISTINCT fingerprint, max_total FROM grades") == [(sent_with, 5.0)]
    before = len(generated(gemini_env))
    code, out = grade("run", str(cls), *where)  # today's rubric: graded again, online
    assert code == 0, out
    assert len(generated(gemini_env)) == before + 3
    assert {m for (m,) in q(db, "SELECT max_total FROM grades WHERE run_id = 2")} == {8.0}


def test_a_job_collected_under_another_model_keeps_the_model_it_was_sent_to(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    cls = make_class(tmp_path, 2)
    db, where = tmp_path / "g.sqlite", _where(tmp_path)
    gemini_env.configure(batch_pending_s=60, batch_running_s=60)
    code, out = grade("batch", "submit", str(cls), *where, "--model", "gemini-3.5-flash-lite")
    assert code == 0, out
    gemini_env.advance(seconds=121)
    code, out = grade("batch", "collect", str(cls), *where)  # cron, without --model
    assert code == 0 and "collected 1 job(s): 2 graded" in out, out
    assert "sent with another model" in " ".join(out.split()), out
    assert q(db, "SELECT DISTINCT model FROM grades") == [("gemini-3.5-flash-lite",)]
    assert q(db, "SELECT DISTINCT model_version FROM attempts") == [("gemini-3.5-flash-lite",)]


def test_a_resubmission_graded_first_stays_the_grade_when_the_older_job_ends_later(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    cls = make_class(tmp_path, 3)
    where = _where(tmp_path)
    (cls / "s0001.txt").write_text("I do not know.", encoding="utf-8")
    gemini_env.configure(batch_pending_s=3000, batch_running_s=3000)  # the first job: slow
    assert grade("batch", "sync", str(cls), *where)[0] == 0
    (cls / "s0001.txt").write_text(GOOD, encoding="utf-8")  # resubmitted
    gemini_env.configure(batch_pending_s=60, batch_running_s=60)  # the second: quick
    code, out = grade("batch", "sync", str(cls), *where)
    assert code == 0 and "submitted 1 request(s)" in out, out
    gemini_env.advance(seconds=200)
    assert grade("batch", "sync", str(cls), *where)[0] == 0
    resubmitted = _totals(tmp_path)["s0001"]
    assert float(resubmitted) > 0
    gemini_env.advance(seconds=6000)
    code, out = grade("batch", "sync", str(cls), *where)
    assert code == 0 and "collected 1 job(s): 3 graded" in out, out
    totals = _totals(tmp_path)
    assert totals["s0001"] == resubmitted  # not the old submission's 0
    assert set(totals) == {"s0000", "s0001", "s0002"}


def test_identical_hand_ins_are_one_line_of_a_batch_job_and_paid_once(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    """As online: a byte-identical hand-in is one request, in whichever mode the job is sent;
    each student gets the grade, and the ledger holds one paid reply."""
    for mode in ("inline", "file"):
        cls = make_class(tmp_path / mode, 2, extra={"copy1.txt": GOOD, "copy2.txt": GOOD,
                                                    "copy3.txt": GOOD})
        where = ("--db", str(tmp_path / mode / "g.sqlite"), "--out", str(tmp_path / mode / "o"))
        gemini_env.configure(batch_pending_s=0, batch_running_s=0)
        code, out = grade("batch", "submit", str(cls), *where, "--batch-mode", mode)
        assert code == 0 and "submitted 5 request(s)" in out, out
        gemini_env.advance(seconds=1)
        code, out = grade("batch", "collect", str(cls), *where)
        assert code == 0 and "collected 1 job(s): 5 graded" in out, out
        db = tmp_path / mode / "g.sqlite"
        assert q(db, "SELECT COUNT(DISTINCT request_hash), COUNT(*) FROM attempts") == [(3, 5)]
        assert q(db, "SELECT COUNT(*) FROM attempts WHERE cost_usd > 0") == [(3,)]
        assert {t for (t,) in q(db, "SELECT total FROM grades WHERE student_id LIKE 'copy%'")} \
            and len(q(db, "SELECT 1 FROM grades WHERE student_id LIKE 'copy%'")) == 3
        billed = gemini_env.stats()["billed_by_request"]
        assert len(billed) == 3 and sum(billed.values()) == 3 * (1 + (mode == "file"))


def test_every_student_stays_in_the_reports_of_a_later_sync_with_a_reason(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    """A failed line, a student still in a slow job, and late hand-ins (one empty, one
    readable) synced after: the newest run's reports list everyone, each failed, waiting,
    flagged or graded with its reason; a tick with nothing new records no run."""
    cls = make_class(tmp_path, 3)
    db, where = tmp_path / "g.sqlite", _where(tmp_path)
    (cls / "s0002.txt").write_text(GOOD + "\nFAKE_GEMINI:BATCH_LINE_FAIL", encoding="utf-8")
    gemini_env.configure(batch_pending_s=0, batch_running_s=0)
    assert grade("batch", "sync", str(cls), *where)[0] == 0
    gemini_env.advance(seconds=1)
    code, out = grade("batch", "sync", str(cls), *where)
    assert code == 0 and "2 graded, 0 flagged, 1 failed" in out, out
    gemini_env.configure(batch_pending_s=3000, batch_running_s=3000)
    (cls / "late.txt").write_text(GOOD, encoding="utf-8")
    code, out = grade("batch", "sync", str(cls), *where)
    assert code == 0 and "submitted 1 request(s)" in out, out
    (cls / "empty.txt").write_text("", encoding="utf-8")  # unreadable: flagged at intake
    code, out = grade("batch", "sync", str(cls), *where)
    assert code == 0 and "nothing to do" not in out, out
    runs = q(db, "SELECT COUNT(*) FROM runs")
    latest = q(db, "SELECT MAX(id) FROM runs")[0][0]
    assert dict(q(db, f"SELECT student_id, status FROM outcomes WHERE run_id = {latest}")) == {
        "s0000": "graded", "s0001": "graded", "s0002": "failed", "late": "skipped",
        "empty": "flagged"}
    code, out = grade("status", str(cls), "--db", str(db))
    assert code == 0 and "of 5 students" in out, out
    code, out = grade("batch", "sync", str(cls), *where)  # nothing new: no run recorded
    assert code == 0 and q(db, "SELECT COUNT(*) FROM runs") == runs, out


def test_a_student_back_to_an_earlier_file_gets_its_grade_at_the_next_sync(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    """A (slow job), then B (quick job, collected), then back to A; A's job ends: the collect
    does not pick between the two grades by their ids, and the sync's own look at the folder
    finds it holds A and records A's grade (before, the reports kept B's, and every later sync
    said nothing to do)."""
    cls = make_class(tmp_path, 3)
    where = _where(tmp_path)
    first = "I do not know."
    (cls / "s0001.txt").write_text(first, encoding="utf-8")
    gemini_env.configure(batch_pending_s=3000, batch_running_s=3000)
    assert grade("batch", "sync", str(cls), *where)[0] == 0
    (cls / "s0001.txt").write_text(GOOD, encoding="utf-8")
    gemini_env.configure(batch_pending_s=60, batch_running_s=60)
    assert grade("batch", "sync", str(cls), *where)[0] == 0
    gemini_env.advance(seconds=200)
    assert grade("batch", "sync", str(cls), *where)[0] == 0
    resubmitted = _totals(tmp_path)["s0001"]
    (cls / "s0001.txt").write_text(first, encoding="utf-8")  # back to the first file
    assert grade("batch", "sync", str(cls), *where)[0] == 0  # its request is in flight
    gemini_env.advance(seconds=6000)
    code, out = grade("batch", "sync", str(cls), *where)  # collected, and A's grade recorded
    assert code == 0 and "collected 1 job(s)" in out, out
    assert _totals(tmp_path)["s0001"] != resubmitted
    assert float(_totals(tmp_path)["s0001"]) == 0.0
    code, out = grade("batch", "sync", str(cls), *where)
    assert code == 0 and "nothing to do" in out, out


def test_a_newer_runs_reports_never_show_a_grade_asked_under_the_old_rubric(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    """Submitted, rubric changed, `grade run` (the students are in the job: skipped), then the
    job collected: the newer run's reports say the grade was asked under another rubric
    instead of showing it against today's maximum (before: 4.5 of 8 for a grade of 5)."""
    cls = make_class(tmp_path, 2)
    db, where = tmp_path / "g.sqlite", _where(tmp_path)
    gemini_env.configure(batch_pending_s=60, batch_running_s=60)
    assert grade("batch", "submit", str(cls), *where)[0] == 0
    rubric = (cls / "rubric.yaml").read_text(encoding="utf-8")
    (cls / "rubric.yaml").write_text(rubric.replace("max_points: 3", "max_points: 6", 1),
                                     encoding="utf-8")
    code, out = grade("run", str(cls), *where)
    assert code == 0 and "skipped 2" in out, out
    gemini_env.advance(seconds=121)
    code, out = grade("batch", "collect", str(cls), *where)
    assert code == 0 and "collected 1 job(s): 2 graded" in out, out
    latest = q(db, "SELECT MAX(id) FROM runs")[0][0]
    assert q(db, f"SELECT DISTINCT status, reason FROM outcomes WHERE run_id = {latest}") == [
        ("skipped", "graded_before_a_change")]
    with (tmp_path / "out" / "grades.csv").open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["max_total"] for r in rows} <= {"8", ""} and not any(r["final_total"] for r in rows)
    code, out = grade("run", str(cls), *where)  # today's rubric: both graded, online
    assert code == 0 and "graded 2" in out, out


def test_one_collect_of_an_old_and_a_new_hand_ins_jobs_shows_the_new_one(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    """s0001's first hand-in in job A, the resubmission in job B, a late classmate in job C;
    one collect ends all three: the newest run shows the resubmission's grade, whichever job
    is read first."""
    cls = make_class(tmp_path, 3)
    db, where = tmp_path / "g.sqlite", _where(tmp_path)
    (cls / "s0001.txt").write_text("I do not know.", encoding="utf-8")
    gemini_env.configure(batch_pending_s=600, batch_running_s=600)
    assert grade("batch", "sync", str(cls), *where)[0] == 0
    (cls / "s0001.txt").write_text(GOOD, encoding="utf-8")
    assert grade("batch", "sync", str(cls), *where)[0] == 0
    (cls / "s0003.txt").write_text(ANSWERS[4], encoding="utf-8")
    assert grade("batch", "sync", str(cls), *where)[0] == 0
    gemini_env.advance(seconds=3000)
    code, out = grade("batch", "collect", str(cls), *where)
    assert code == 0 and "collected 3 job(s)" in out, out
    newest = q(db, "SELECT MAX(id) FROM submissions WHERE student_id = 's0001'")[0][0]
    latest = q(db, "SELECT MAX(id) FROM runs")[0][0]
    assert q(db, f"SELECT submission_id, status FROM outcomes WHERE run_id = {latest}"
                 " AND student_id = 's0001'") == [(newest, "graded")]
    assert float(_totals(tmp_path)["s0001"]) > 0


def test_a_grade_held_back_under_another_model_is_recorded_at_the_next_sync(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    """Submitted by sync, then `grade run --model another` (the students are in the job), then
    the job ends: the newer run says why it shows no grade, and the next sync records the
    grades (before, the placeholders stayed and every sync said nothing to do)."""
    cls = make_class(tmp_path, 2)
    db, where = tmp_path / "g.sqlite", _where(tmp_path)
    gemini_env.configure(batch_pending_s=60, batch_running_s=60)
    assert grade("batch", "sync", str(cls), *where)[0] == 0
    assert grade("run", str(cls), "--model", "gemini-3.5-flash-lite", *where)[0] == 0
    gemini_env.advance(seconds=200)
    code, out = grade("batch", "sync", str(cls), *where)
    assert code == 0, out
    latest = q(db, "SELECT MAX(id) FROM runs")[0][0]
    assert {s for (s,) in q(db, f"SELECT status FROM outcomes WHERE run_id = {latest}")} == {
        "graded"}, out
    assert all(float(t) > 0 for t in _totals(tmp_path).values())


def test_students_of_a_job_that_could_not_be_created_are_not_listed_as_waiting(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    cls = make_class(tmp_path, 2)
    db, where = tmp_path / "g.sqlite", _where(tmp_path)
    gemini_env.configure(batch_pending_s=60, batch_running_s=60)
    gemini_env.inject_for("batches.create", "400")
    code, out = grade("batch", "submit", str(cls), *where)
    assert code != 0, out
    assert q(db, "SELECT DISTINCT status, reason FROM outcomes") == [
        ("failed", "batch_not_created")]


def test_a_late_hand_in_flagged_at_a_sync_is_not_added_to_the_run_before(
        gemini_env: FakeGemini, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sync that collects run 1's job and flags a late hand-in too large to send: the
    late student is in the new run only; run 1 keeps the class it graded."""
    cls = make_class(tmp_path, 2)
    db, where = tmp_path / "g.sqlite", _where(tmp_path)
    gemini_env.configure(batch_pending_s=0, batch_running_s=0)
    assert grade("batch", "sync", str(cls), *where)[0] == 0
    gemini_env.advance(seconds=1)
    (cls / "late.txt").write_text(GOOD * 400, encoding="utf-8")
    monkeypatch.setenv("GRADER_MAX_REQUEST_MB", "0.01")
    code, out = grade("batch", "sync", str(cls), *where)
    assert code == 0 and "collected 1 job(s)" in out, out
    assert q(db, "SELECT run_id, status FROM outcomes WHERE student_id = 'late'") == [
        (2, "flagged")], out
    assert q(db, "SELECT COUNT(*) FROM outcomes WHERE run_id = 1") == [(2,)]


def test_batch_status_of_a_mistyped_folder_is_refused_and_makes_nothing(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    """A typo in the class folder read as "no batch jobs" with exit 0, and left a new folder
    (for the log) at the mistyped path."""
    make_class(tmp_path, 1)
    typo = tmp_path / "clas"
    code, out = grade("batch", "status", str(typo))
    assert code == 2 and "class folder not found, and no store for it" in out, out
    assert "--db" in out and not typo.exists()
