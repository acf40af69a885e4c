"""A class folder moved (with its store) while a batch job runs (issue 27 item 5): the job is
found from the store at its new place, the move is named, every student is collected, and
nobody is sent, or billed, twice, by `grade batch submit` or by `grade run`. A store that
belongs to another class folder still in place is refused, naming it, with nothing sent.
Everything runs through the CLI against the fake Gemini server's batch mode."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from grader.testing.fake_gemini import FakeGemini

from _classgen import make_class
from _cli import generated, grade, q

N = 10


def sent(fake: FakeGemini) -> tuple[int, int]:
    """(batch jobs created, online grading calls) the fake received since its last reset."""
    by = fake.stats()["by_endpoint"]
    return by.get("batches.create", 0), len(generated(fake))


@pytest.mark.parametrize("store", ["inside", "db"])
def test_a_batch_job_survives_a_move_of_the_class_and_its_store(
        gemini_env: FakeGemini, tmp_path: Path, store: str) -> None:
    """inside: the default store, CLASS_DIR/.grader/, moved with the folder; db: a --db store
    outside the class folder, moved beside it."""
    before = make_class(tmp_path / "before", N)
    after = tmp_path / "after" / "renamed"
    after.parent.mkdir()
    db_at = {"inside": (before / ".grader" / "grader.sqlite", after / ".grader" / "grader.sqlite"),
             "db": (tmp_path / "before" / "marks.sqlite", tmp_path / "after" / "marks.sqlite")}
    old_db, new_db = db_at[store]
    where = ("--out", str(tmp_path / "out"))
    gemini_env.configure(batch_pending_s=60, batch_running_s=60)
    code, out = grade("batch", "submit", str(before), *where, *(
        ("--db", str(old_db)) if store == "db" else ()))
    assert code == 0 and f"submitted {N} request(s) in 1 job(s)" in out, out
    (job,) = q(old_db, "SELECT name FROM batch_jobs")[0]
    assert sent(gemini_env) == (1, 0)

    shutil.move(str(before), after)  # while the job runs
    if store == "db":
        shutil.move(str(old_db), new_db)
    at = ("--db", str(new_db)) if store == "db" else ()

    code, out = grade("batch", "status", str(after), *where, *at)
    assert code == 0, out
    flat = " ".join(out.split())
    assert (f"the class folder was moved from {before.resolve()} to {after.resolve()}: its 1 "
            "run(s) and 1 batch job(s) still open were carried over") in flat
    assert f"{job} pending round 1 {N} request(s): 0 stored, {N} pending" in flat
    assert q(new_db, "SELECT DISTINCT class_dir FROM runs UNION SELECT class_dir FROM"
                     " batch_jobs") == [(str(after.resolve()),)]

    code, out = grade("batch", "submit", str(after), *where, *at)  # nobody is sent again
    assert code == 0 and f"nothing to submit ({N} in flight)" in out, out
    code, out = grade("run", str(after), *where, *at)  # nor online
    assert code == 0, out
    assert f"graded 0, flagged 0, failed 0, skipped {N}" in out
    assert "their requests are in a batch job still running" in " ".join(out.split())
    code, out = grade("status", str(after), *at)  # in flight, not "never answered"
    assert code == 0 and f"batch jobs still open: 1 ({N} request(s))" in out, out
    assert "sent but never answered" not in out
    assert sent(gemini_env) == (1, 0)

    gemini_env.advance(seconds=121)
    code, out = grade("batch", "collect", str(after), *where, *at)
    assert code == 0 and f"collected 1 job(s): {N} graded, 0 flagged, 0 failed" in out, out
    code, out = grade("batch", "submit", str(after), *where, *at)
    assert code == 0 and "nothing to submit" in out and f"{N} already graded" in out, out
    assert sent(gemini_env) == (1, 0)
    billed = gemini_env.stats()["billed_by_submission"]
    assert len(billed) == N and set(billed.values()) == {1}  # every student billed once
    assert q(new_db, "SELECT state, COUNT(*) FROM attempts GROUP BY state") == [("stored", N)]
    assert q(new_db, "SELECT COUNT(DISTINCT student_id) FROM grades") == [(N,)]


def test_a_store_moved_into_another_class_folder_is_refused_naming_its_class(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    """Class a's store (a job in flight) put into class b's folder while a is still there:
    every command that writes refuses it and names a; nothing is sent or changed; a's job is
    still collected from a once its store is back."""
    a = make_class(tmp_path / "a", 3)
    b = make_class(tmp_path / "b", 2, extra={"zz_other.txt": "Another class's answer."})
    gemini_env.configure(batch_pending_s=60, batch_running_s=60)
    code, out = grade("batch", "submit", str(a), "--out", str(tmp_path / "a-out"))
    assert code == 0 and "submitted 3 request(s)" in out, out
    shutil.move(str(a / ".grader"), b / ".grader")
    db = b / ".grader" / "grader.sqlite"
    rows = q(db, "SELECT * FROM batch_jobs")
    for command in (("batch", "status"), ("batch", "collect"), ("batch", "submit"),
                    ("batch", "sync"), ("run",)):
        code, out = grade(*command, str(b), "--out", str(tmp_path / "b-out"))
        assert code == 2, (command, out)
        flat = " ".join(out.split())
        assert (f"the store inside {b.resolve()} holds the runs and batch jobs of another "
                f"class folder, {a.resolve()}, which is still there") in flat, flat
        assert f"grade {a.resolve()}" in flat and "--db PATH" in flat
        assert "Traceback" not in out
    assert sent(gemini_env) == (1, 0)  # only a's own job, once
    assert q(db, "SELECT * FROM batch_jobs") == rows
    assert not (tmp_path / "b-out").exists()

    shutil.move(str(b / ".grader"), a / ".grader")  # put back: a's job is collected
    gemini_env.advance(seconds=121)
    code, out = grade("batch", "collect", str(a), "--out", str(tmp_path / "a-out"))
    assert code == 0 and "collected 1 job(s): 3 graded" in out, out
    assert "the class folder was moved" not in out


def test_moving_a_class_carries_every_record_keyed_by_its_folder(tmp_path: Path) -> None:
    """The store's part (`move_class`): runs, jobs, human scores and calibrations follow the
    folder; an import of the same file already made at the new path is kept."""
    from grader.grading.records import HumanScore

    from _synthetic import build  # a store with one finished run of the class "/old"

    path = tmp_path / "s.sqlite"
    store = build(path, n=3, class_dir="/old").store
    try:
        score = [HumanScore("s00000", "total", "ta", 5.0)]
        store.import_human_scores("/old", "h.csv", "sha-1", score)
        store.import_human_scores("/old", "h2.csv", "sha-2", score)
        store.import_human_scores("/new", "h.csv", "sha-1", score)  # made after the move
        run = store.runs()[-1]
        store.save_calibration(class_dir="/old", fingerprint="f", run_id=run.id, rater="ta",
                               students=["s00000"], figures={})
        assert store.move_class("/old", "/new") == (1, 0)
        assert store.class_folders() == ["/new"]
        assert store.latest_run("/new") == replace(run, class_dir="/new")
        assert len(store.human_scores("/new")) == 1  # the latest import's score
        assert store.latest_calibration("/new", "f") is not None
    finally:
        store.close()
    assert q(path, "SELECT class_dir, sha256 FROM human_imports ORDER BY id") == [
        ("/old", "sha-1"), ("/new", "sha-2"), ("/new", "sha-1")]
    assert q(path, "SELECT DISTINCT class_dir FROM human_scores UNION"
                   " SELECT class_dir FROM calibrations") == [("/new",)]


def test_a_class_moved_out_of_a_store_shared_with_another_class_keeps_its_batch_job(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    """A --db store holds class A (still in place) and class B, whose batch job runs while B
    is moved from x/B to y/B: one folder gone, the new one has its name, so it is B moved."""
    shared = tmp_path / "shared.sqlite"
    a = make_class(tmp_path / "x", 3).rename(tmp_path / "x" / "A")
    b = make_class(tmp_path / "x", 0, extra={
        f"b{i}.txt": f"Student b{i} of B. Binary encoding is simple." for i in range(4)}
    ).rename(tmp_path / "x" / "B")

    def where(name: str) -> tuple[str, ...]:  # one store, each class its own reports
        return ("--out", str(tmp_path / "out" / name), "--db", str(shared))

    assert grade("run", str(a), *where("A"))[0] == 0
    gemini_env.configure(batch_pending_s=60, batch_running_s=60)
    code, out = grade("batch", "submit", str(b), *where("B"))
    assert code == 0 and "submitted 4 request(s)" in out, out
    moved = tmp_path / "y" / "B"
    moved.parent.mkdir()
    shutil.move(str(b), moved)

    code, out = grade("batch", "status", str(moved), *where("B"))
    assert code == 0, out
    assert (f"the class folder was moved from {b.resolve()} to {moved.resolve()}"
            in " ".join(out.split())), out
    gemini_env.advance(seconds=121)
    code, out = grade("batch", "collect", str(moved), *where("B"))
    assert code == 0 and "collected 1 job(s): 4 graded" in out, out
    assert {d for (d,) in q(shared, "SELECT DISTINCT class_dir FROM runs")} == {
        str(a.resolve()), str(moved.resolve())}
    # a folder gone and a new one of another name: not told apart from a new class, so kept
    # apart (the store still names the old folder)
    shutil.move(str(a), tmp_path / "y" / "Z")
    code, out = grade("run", str(tmp_path / "y" / "Z"), *where("Z"))
    assert code == 0 and "was moved" not in out, out
    assert str(a.resolve()) in {d for (d,) in q(shared, "SELECT DISTINCT class_dir FROM runs")}
    # a folder gone with a batch job still open, and a new folder of another name: refused,
    # naming the folder and the fix, never guessed either way
    c = make_class(tmp_path / "x", 0, extra={
        f"c{i}.txt": f"Student c{i} of C. Manchester encoding is robust." for i in range(2)}
    ).rename(tmp_path / "x" / "C")
    code, out = grade("batch", "submit", str(c), *where("C"))
    assert code == 0 and "submitted 2 request(s)" in out, out
    shutil.move(str(c), tmp_path / "y" / "W")
    code, out = grade("batch", "status", str(tmp_path / "y" / "W"), *where("C"))
    assert code == 2 and f"batch jobs still open for {c.resolve()}" in " ".join(out.split())
    assert "name the folder C again" in " ".join(out.split()), out
