"""Schema migrations: numbered, applied once each, atomic, and lossless on a store written by the
v2 code (tests/fixtures/store_v2.sqlite, see tests/fixtures/README.md)."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from pathlib import Path

import pytest

from grader.errors import StoreError
from grader.grading.records import Decision, RequestRecord
from grader.review.final import finals
from grader.store import Store
from grader.store.migrations import (
    LATEST,
    MIGRATIONS,
    Migration,
    apply,
    current_version,
    migrate,
    pending,
)

FIXTURE = Path(__file__).parent / "fixtures" / "store_v2.sqlite"


def _v2(tmp_path: Path) -> Path:
    path = tmp_path / "store_v2.sqlite"
    shutil.copy(FIXTURE, path)
    return path


def _raw(path: Path, sql: str, args: tuple = ()) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return [tuple(r) for r in conn.execute(sql, args)]


# sha256 of each released migration's SQL: stores in the field were built from exactly this text.
RELEASED = {
    1: "c5b06ad691ea72ebedcc883d9ad31a472ad3bf9edd804028df0f453bfb893b73",
    2: "5166129f80873becdb5c6467e1f55c7fd11ad13733ec2c10eaab964f805c90d7",
    3: "e2762b0bff8fb59aeb0b6717b944160cf631ac8614a8ef8a966736d4a747e0b7",
    4: "05e76dc99051b7993c43c3b0bf087bfbee50525e4d588e162080440350b9ccce",
    5: "e21280d48c17ec2c0df7add60ba373dc1f3becc0377ccf326a7cc7556d9e1adb",
    6: "56389b9a55db8f02f49401bd8558cd479c0387079aa842f01fb11dbeb4c7fc0f",
    7: "d24299b0c8a3a337bb21339a851b691411e04581c6cacca5755eb8060606b97a",
    8: "8f7f1ec0342bbc56ec999e1ecd3edd93ba6a86ef5f9d5d273b3e2bb84545ad28",
    9: "12286310038a78b0386b06d7d963ead7c9cbbeb4d0cb74375e428cb9efd361c6",
    10: "2d4ec98c7ee9f83e31ca7ca53e5369078979296e56187528efa6fb5c1d375804",
    11: "b88f319c88bb6be83f1e90775c3ed9a82a5800ab891357b909f351f708379d33",
    12: "7e9fabcc1b1804764f80e2103c1af5a9b36ec0fdc68196a9a71e67c2632ad98f",
    13: "6911c537879206c274f2f9630abf69dc9382fee4df0ce69f14df88e72a7ec852",
    14: "1ffb42268e67b908e1facbd83ecf96e4aac923f28f05370e7a5aeb11512139bb",
    15: "601e1bc9ed7f8185f929ada837f730926ce58cb01cd83e5184f885112d5f1e81",
}


def test_a_released_migration_is_never_edited() -> None:
    """Sharing text between migrations is fine; changing the SQL a released one runs is not."""
    have = {m.version: hashlib.sha256(m.sql.encode()).hexdigest() for m in MIGRATIONS}
    assert {v: have[v] for v in RELEASED} == RELEASED
    assert [m.version for m in MIGRATIONS] == list(range(1, LATEST + 1))


def _just_before(path: Path, m: Migration) -> sqlite3.Connection:
    """A connection to the store at `path` migrated up to just before `m`."""
    conn = sqlite3.connect(path, isolation_level=None)
    for earlier in pending(conn):
        if earlier.version < m.version:
            apply(conn, earlier)
    return conn


def test_fresh_store_gets_every_migration_once(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "new.sqlite", isolation_level=None)
    assert migrate(conn) == [m.version for m in MIGRATIONS]
    assert migrate(conn) == []  # applied once
    names = [r[0] for r in conn.execute("SELECT name FROM schema_migrations ORDER BY version")]
    assert names == [m.name for m in MIGRATIONS]
    assert current_version(conn) == LATEST


def test_a_failing_migration_leaves_the_previous_version(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "s.sqlite", isolation_level=None)
    migrate(conn)
    bad = Migration(LATEST + 1, "broken", "CREATE TABLE half (x INTEGER);\nSELECT nope FROM none;")
    with pytest.raises(sqlite3.OperationalError):
        apply(conn, bad)
    assert current_version(conn) == LATEST
    assert not conn.execute("SELECT name FROM sqlite_master WHERE name='half'").fetchall()
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1  # restored


def test_a_store_from_a_newer_grader_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    Store(path).close()
    _raw(path, "INSERT INTO schema_migrations VALUES (?, 'future', 'x')", (LATEST + 5,))
    with pytest.raises(StoreError, match="newer grader"):
        Store(path)


def test_v2_store_migrates_without_losing_a_run_grade_or_decision(tmp_path: Path) -> None:
    path = _v2(tmp_path)
    assert _raw(path, "SELECT MAX(version) FROM schema_migrations") == [(2,)]
    runs = _raw(path, "SELECT id, started_at, status, model, rubric_json FROM runs ORDER BY id")
    grades = _raw(path, "SELECT id, student_id, submission_id, run_id, status, total, percent,"
                  " overall_comment, model_version FROM grades ORDER BY id")
    scores = _raw(path, "SELECT grade_id, criterion_id, score, justification, evidence_json,"
                  " feedback FROM criterion_scores ORDER BY grade_id, position")
    outcomes = _raw(path, "SELECT run_id, student_id, submission_id, grade_id, status, reason"
                    " FROM outcomes ORDER BY run_id, student_id")
    attempts = _raw(path, "SELECT id, run_id, n, response_text, prompt_tokens, error"
                    " FROM attempts ORDER BY id")
    overrides = _raw(path, "SELECT run_id, student_id, criterion_id, teacher_score,"
                     " teacher_feedback FROM overrides")
    reviews = _raw(path, "SELECT run_id, student_id, teacher_comment, approved FROM reviews")
    review_log = _raw(path, "SELECT * FROM review_log ORDER BY id")
    assert len(runs) == 3 and len(grades) >= 10 and overrides and reviews and review_log

    with Store(path) as store:
        assert [(r.id, r.started_at, r.status, r.model) for r in store.runs()] == \
            [r[:4] for r in runs]
        # every v2 grade is still there, with its scores, as a version of its student
        assert _raw(path, "SELECT id, student_id, submission_id, run_id, status, total, percent,"
                    " overall_comment, model_version FROM grades ORDER BY id") == grades
        assert _raw(path, "SELECT grade_id, criterion_id, score, justification, evidence_json,"
                    " feedback FROM criterion_scores ORDER BY grade_id, position") == scores
        assert _raw(path, "SELECT run_id, student_id, submission_id, grade_id, status, reason"
                    " FROM outcomes ORDER BY run_id, student_id") == outcomes
        # every paid reply is in the response ledger, every attempt kept with its usage
        assert _raw(path, "SELECT a.id, a.run_id, a.n, r.text, a.prompt_tokens, a.error"
                    " FROM attempts a LEFT JOIN responses r ON r.request_hash = a.request_hash"
                    " ORDER BY a.id") == attempts
        assert _raw(path, "SELECT * FROM v2_review_log ORDER BY id") == review_log
        # every teacher decision of every run is in effect in that run's finals
        for run_id, sid, cid, t_score, t_fb in overrides:
            fs = next(f for f in finals(store, run_id) if f.student_id == sid)
            crit = next(c for c in fs.criteria if c.criterion.id == cid)
            assert (crit.teacher_score, crit.teacher_feedback) == (t_score, t_fb)
        for run_id, sid, comment, approved in reviews:
            fs = next(f for f in finals(store, run_id) if f.student_id == sid)
            assert fs.teacher_comment == comment
            assert fs.approved == (None if approved is None else bool(approved))
        # and the migrated store keeps working: reports for every old run
        for r in store.runs():
            assert len(list(finals(store, r.id))) == len({o[1] for o in outcomes
                                                          if o[0] == r.id})
    assert _raw(path, "PRAGMA foreign_key_check") == []
    assert _raw(path, "PRAGMA integrity_check") == [("ok",)]


def test_attempts_gain_model_status_and_service_tier_and_old_runs_still_report(
        tmp_path: Path) -> None:
    path = _v2(tmp_path)
    with Store(path) as store:
        columns = {r[1] for r in _raw(path, "PRAGMA table_info(attempts)")}
        assert {"model_status", "service_tier", "cost_usd", "model_version"} <= columns
        # old attempts have no stage or tier; their usage and cost read as before
        assert _raw(path, "SELECT COUNT(*) FROM attempts WHERE model_status IS NOT NULL"
                    " OR service_tier IS NOT NULL") == [(0,)]
        for r in store.runs():
            usage = store.usage(r.id)
            assert usage["calls"] >= 0 and usage["cost_usd"] == 0
            assert all(m.calls > 0 for m in store.served_models(r.id))


def test_attempt_redaction_migration_keeps_old_attempts_and_stores_the_mapping(
        tmp_path: Path) -> None:
    path = _v2(tmp_path)
    with Store(path) as store:  # migrates the v2 store to the latest version
        attempts = _raw(path, "SELECT COUNT(*) FROM attempts")[0][0]
        assert attempts > 0
        assert _raw(path, "SELECT COUNT(*) FROM attempts WHERE redaction_json IS NOT NULL") \
            == [(0,)]
        columns = [r[1] for r in _raw(path, "PRAGMA table_info(attempts)")]
        assert "redaction_json" in columns
        run = store.runs()[0]
        sub, student = _raw(path, "SELECT id, student_id FROM submissions LIMIT 1")[0]
        aid = store.begin_attempt(
            run_id=run.id, student_id=student, submission_id=sub, sample=0, n=1,
            request=RequestRecord("h-redacted", None, "m", {"parts": []}),
            redaction={"[STUDENT_1]": "Alice Martin"})
    assert _raw(path, "SELECT redaction_json FROM attempts WHERE id=?", (aid,)) == [
        ('{"[STUDENT_1]": "Alice Martin"}',)]


def test_quality_migration_keeps_grades_as_single_samples_and_adds_human_scores(
        tmp_path: Path) -> None:
    """The grading-quality migration: old grades become one-sample grades with no spread; human
    scores and calibrations get tables of their own."""
    from grader.grading.records import HumanScore
    from grader.store.migrations import MIGRATIONS as ALL

    quality = next(m for m in ALL if m.name == "human_scores_calibration_uncertainty")
    path = _v2(tmp_path)
    conn = sqlite3.connect(path, isolation_level=None)
    for m in ALL:
        if 2 < m.version < quality.version:
            apply(conn, m)
    before = _raw(path, "SELECT id, total FROM grades ORDER BY id")
    apply(conn, quality)
    conn.close()
    assert _raw(path, "SELECT id, total FROM grades ORDER BY id") == before
    assert {r[0] for r in _raw(path, "SELECT samples FROM grades")} == {1}
    assert _raw(path, "SELECT COUNT(*) FROM criterion_scores WHERE spread IS NOT NULL"
                " OR samples_json IS NOT NULL OR items_json IS NOT NULL") == [(0,)]
    with Store(path) as store:
        scores = [HumanScore("s1", "c1", "ann", 2.0), HumanScore("s1", "total", "ann", 5.0)]
        assert store.import_human_scores("/c", "h.csv", "abc", scores) is not None
        assert store.import_human_scores("/c", "h.csv", "abc", scores) is None  # same file
        store.import_human_scores("/c", "h2.csv", "def", [HumanScore("s1", "c1", "ann", 3.0)])
        assert store.human_scores("/c") == [HumanScore("s1", "c1", "ann", 3.0),
                                            HumanScore("s1", "total", "ann", 5.0)]
        assert store.human_scores("/other") == []
        run = store.runs()[0]
        store.save_calibration(class_dir="/c", fingerprint="fp", run_id=run.id, rater="ann",
                               students=["s1"], figures={"c1": {"qwk": 0.5}})
        cal = store.latest_calibration("/c", "fp")
        assert cal is not None and cal.figures == {"c1": {"qwk": 0.5}}
        assert store.latest_calibration("/c", "other") is None
    assert _raw(path, "PRAGMA foreign_key_check") == []


def test_v7_keeps_decisions_allows_private_notes_and_indexes_attempts(tmp_path: Path) -> None:
    path = _v2(tmp_path)
    before = _raw(path, "SELECT COUNT(*) FROM overrides")[0][0] + _raw(
        path, "SELECT COUNT(*) FROM reviews")[0][0]
    with Store(path) as store:
        kept = sum(len(v) for v in store.decisions().values())
        assert kept >= before  # every v2 override/review survived the v7 rebuild
        sid = next(iter(store.decisions()))
        store.add_decisions([Decision(student_id=sid, field="note", value='"private"')])
        assert store.decisions()[sid][-1].field == "note"
        with pytest.raises(StoreError):
            store.add_decisions([Decision(student_id=sid, field="bogus", value="1")])
    indexes = {r[0] for r in _raw(path, "SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"attempts_submission", "decisions_student"} <= indexes


def test_caches_and_uploads_migration_keeps_old_runs_and_prices_a_cache(tmp_path: Path) -> None:
    path = _v2(tmp_path)
    with Store(path) as store:  # migrates the v2 store to the latest version
        tables = {r[0] for r in _raw(path, "SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"caches", "uploads"} <= tables
        run = store.runs()[-1]
        before = store.usage(run.id)
        assert before["caches"] == 0 and before["cache_create_usd"] == 0
        cid = store.begin_cache(run_id=run.id, backend="developer", model="m",
                                content_hash="h", display_name="grader-h")
        assert [c.state for c in store.open_caches("developer")] == ["creating"]
        store.cache_live(cid, name="cachedContents/x", tokens=6000, create_usd=0.0045,
                         usd_per_hour=0.003, expires_at="2026-11-22T10:00:00+00:00")
        store.end_cache(cid, "deleted", 0.0015)
        after = store.usage(run.id)
        assert after["caches"] == 1 and after["cache_create_usd"] == pytest.approx(0.0045)
        assert after["cache_storage_usd"] == pytest.approx(0.0015)
        assert after["cost_usd"] == before["cost_usd"]  # the calls' cost is untouched
        assert store.open_caches("developer") == []
        uid = store.begin_upload(run_id=run.id, backend="developer", purpose="media",
                                 sha256="s", size=3, mime_type="application/pdf",
                                 display_name="grader-s")
        store.upload_active(uid, name="files/a", uri="u", expires_at=None)
        assert [u.name for u in store.open_uploads("developer")] == ["files/a"]
        assert store.open_uploads("developer", job_ref="batch-1") == []
    assert _raw(path, "PRAGMA foreign_key_check") == []


def test_exemplars_and_tuning_jobs_migration_keeps_grades(tmp_path: Path) -> None:
    """The graded-examples migration adds `grades.exemplars_hash` (NULL for every existing
    grade: they saw no examples), `grade_exemplars` and `tuning_jobs`, and loses no grade."""
    m = next(m for m in MIGRATIONS if m.name == "exemplars_and_tuning_jobs")
    path = _v2(tmp_path)
    conn = _just_before(path, m)
    before = conn.execute("SELECT id, total FROM grades ORDER BY id").fetchall()
    apply(conn, m)
    assert conn.execute("SELECT id, total FROM grades ORDER BY id").fetchall() == before
    assert before
    assert {r[0] for r in conn.execute("SELECT exemplars_hash FROM grades")} == {None}
    gid = before[0][0]
    conn.execute("INSERT INTO grade_exemplars VALUES (?, 0, 'rubric:1', 'rubric', NULL, NULL,"
                 " 0.5)", (gid,))
    with pytest.raises(sqlite3.IntegrityError):  # only known sources
        conn.execute("INSERT INTO grade_exemplars VALUES (?, 1, 'x', 'guess', NULL, NULL, 0)",
                     (gid,))
    conn.execute("INSERT INTO tuning_jobs (name, display_name, base_model, train_uri,"
                 " train_examples, validation_examples, state, created_at, updated_at)"
                 " VALUES ('j', 'd', 'b', 'gs://x', 100, 10, 'JOB_STATE_PENDING', 't', 't')")


def test_batch_jobs_migration_keeps_old_stores_and_holds_a_job_with_its_items(
        tmp_path: Path) -> None:
    from grader.grading.records import BatchItemIn

    path = _v2(tmp_path)
    with Store(path) as store:  # migrates the v2 store to the latest version
        tables = {r[0] for r in _raw(path, "SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"batch_jobs", "batch_items"} <= tables
        run = store.runs()[-1]
        sub_id = _raw(path, "SELECT id FROM submissions LIMIT 1")[0][0]
        sid = _raw(path, "SELECT student_id FROM submissions WHERE id=?", (sub_id,))[0][0]
        store.save_prefix("p", "sys", "prefix", {})
        item = BatchItemIn(student_id=sid, submission_id=sub_id,
                           request=RequestRecord(hash="h1", prefix_hash="p", model="m",
                                                 body={}), n=1, epoch=0, request_json="{}",
                           flags_json="[]")
        job_id, (aid,) = store.begin_batch_job(
            run_id=run.id, class_dir="c", backend="gemini", model="m", display_name="d",
            mode="file", round=1, items=[item])
        assert _raw(path, "SELECT state, job_ref FROM attempts WHERE id=?", (aid,)) == [
            ("rendered", "d")]
        assert store.batch_busy() == {(sid, sub_id): "pending"}
        store.batch_job_created(job_id, name="batches/x", state="JOB_STATE_PENDING",
                                input_ref="files/i")
        assert store.batch_job("batches/x") == store.batch_job("d")
        assert _raw(path, "SELECT state FROM attempts WHERE id=?", (aid,)) == [("sent",)]
        store.batch_item_done(aid, "failed", "boom")
        assert store.batch_busy() == {(sid, sub_id): "failed"}
        with pytest.raises(StoreError):  # the item states are checked
            store.batch_item_done(aid, "lost")
    assert _raw(path, "PRAGMA foreign_key_check") == []


def test_answer_groups_migration_keeps_decisions_as_the_students_own(tmp_path: Path) -> None:
    """v12 adds `answer_groups` and `decisions.group_label`: every earlier decision stays the
    student's own (NULL), and the teacher's values in effect are unchanged."""
    from grader.grading.records import GroupMember

    m = next(m for m in MIGRATIONS if m.name == "answer_groups")
    path = _v2(tmp_path)
    conn = _just_before(path, m)
    before = conn.execute("SELECT id, student_id, field, value FROM decisions").fetchall()
    assert before
    apply(conn, m)
    conn.close()
    assert _raw(path, "SELECT id, student_id, field, value FROM decisions") == before
    assert {r[0] for r in _raw(path, "SELECT group_label FROM decisions")} == {None}
    with Store(path) as store:
        run_id = store.runs()[-1].id
        assert all(d.group is None for ds in store.decisions().values() for d in ds)
        assert any(fs.has_overrides for fs in finals(store, run_id))  # still in effect
        sid = before[0][1]
        store.save_groups(run_id, [GroupMember(sid, "G1", True, "odd one")])
        assert store.answer_groups(run_id) == [GroupMember(sid, "G1", True, "odd one")]
        store.save_groups(run_id, [])  # replaced, not added to
        assert store.answer_groups(run_id) == []
    assert _raw(path, "PRAGMA foreign_key_check") == []


def _with_an_old_check(tmp_path: Path, version: int, *, injection: bool,
                       cost_usd: float | None) -> Path:
    """A store holding check `k1` as the version before `version` stored it, then migrated
    through `version`."""
    m = next(x for x in MIGRATIONS if x.version == version)
    path = _v2(tmp_path)
    conn = _just_before(path, m)
    conn.execute("INSERT INTO injection_checks (key, model, injection, reason, cost_usd,"
                 " created_at) VALUES ('k1', 'gemini-x', ?, 'asks for marks', ?,"
                 " '2026-11-01T00:00:00')", (int(injection), cost_usd))
    apply(conn, m)
    conn.close()
    return path


def test_unreadable_checks_migration_keeps_old_verdicts_readable(tmp_path: Path) -> None:
    """v13 adds `injection_checks.readable`: a verdict stored before it was read, so it stays
    one (readable), and an unreadable check is stored and read back as such."""
    from grader.grading.records import ScreenVerdict

    path = _with_an_old_check(tmp_path, 13, injection=True, cost_usd=None)
    with Store(path) as store:
        old = store.screened("k1")
        assert old is not None and old.readable and old.injection
        store.save_screen(ScreenVerdict("k2", "gemini-x", False, "cut", readable=False), "c")
        new = store.screened("k2")
        assert new is not None and not new.readable
    assert _raw(path, "SELECT key, readable FROM injection_checks ORDER BY key") == [
        ("k1", 1), ("k2", 0)]


def test_decision_workbook_base_migration_keeps_decisions(tmp_path: Path) -> None:
    """v14 adds `decisions.workbook_base`: a decision imported before it names no workbook
    base (NULL), and is read as it was."""
    path = tmp_path / "g.sqlite"
    m = next(x for x in MIGRATIONS if x.version == 14)
    conn = _just_before(path, m)
    conn.execute("INSERT INTO students (id) VALUES ('alice')")
    conn.execute("INSERT INTO decisions (student_id, criterion_id, field, value, decided_at)"
                 " VALUES ('alice', 'reasons', 'score', '3.0', '2026-12-01T10:00:00Z')")
    apply(conn, m)
    conn.close()
    with Store(path) as store:
        (d,) = store.decisions()["alice"]
    assert (d.value, d.workbook_base) == ("3.0", None)


def test_injection_check_run_migration_books_old_checks_to_no_run(tmp_path: Path) -> None:
    """v15 adds `injection_checks.run_id`: a check stored before it belongs to no run (its cost
    was in that run's summary only), and a new one is booked to the run that paid."""
    from grader.grading.records import ScreenVerdict

    path = _with_an_old_check(tmp_path, 15, injection=False, cost_usd=0.5)
    with Store(path) as store:
        store.save_screen(ScreenVerdict("k2", "gemini-x", False, "fine", cost_usd=0.25), "c", 7)
        assert store.usage(7)["screen_usd"] == 0.25
    assert _raw(path, "SELECT key, run_id FROM injection_checks ORDER BY key") == [
        ("k1", None), ("k2", 7)]
