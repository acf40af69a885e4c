"""`grade tune`: the dataset's user turns are the requests grading sent, its model turns the
teacher's final grades; too few reviewed grades are refused; a tuning job runs against the fake
Enterprise tuningJobs endpoints (dataset in the GCS emulator) to success, and the tuned model's
endpoint grades a class through the same pipeline."""

from __future__ import annotations

import asyncio
import csv
import json
import sqlite3
from pathlib import Path
from typing import Any

import openpyxl
import pytest
import yaml
from google.oauth2.credentials import Credentials

from grader.backends.gemini import VertexBackend
from grader.config.settings import Settings
from grader.online.pipeline import run_class
from grader.prompting.rubric import Rubric
from grader.prompting.schema import validation_model
from grader.quality.tuning import MIN_EXAMPLES, start, status
from grader.testing.fake_gemini import FakeGemini
from grader.testing.gcs_emulator import GcsEmulator

from _classgen import RUBRIC, make_class
from _cli import grade

BASE = "gemini-3.5-flash-lite"


def _review(out: Path, db: Path, approve: list[str], correct: list[str]) -> None:
    wb = openpyxl.load_workbook(out / "review.xlsx")
    ws = wb["Summary"]
    cols = {c.value: c.column for c in ws[1]}
    rows = {ws.cell(r, 1).value: r for r in range(2, ws.max_row + 1)}
    for sid in approve:
        ws.cell(rows[sid], cols["Approved"]).value = "yes"
    for sid in correct:
        ws.cell(rows[sid], cols["Teacher: choice"]).value = 1
        ws.cell(rows[sid], cols["Teacher: reasons"]).value = 0.5
        ws.cell(rows[sid], cols["Feedback to the student"]).value = (
            f"See me, {sid}: mail ann.zed@example.edu.")
    wb.save(out / "review.xlsx")
    code, output = grade("review", "import", str(out / "review.xlsx"), "--db", str(db))
    assert code == 0, output


@pytest.fixture
def reviewed(tmp_path: Path, gemini_env: FakeGemini) -> tuple[Path, Path, Path]:
    """24 students graded on the Developer API fake; 16 approved, 6 corrected."""
    class_dir = make_class(tmp_path, 24)
    out, db = tmp_path / "out", tmp_path / "g.sqlite"
    code, output = grade("run", str(class_dir), "--out", str(out), "--db", str(db))
    assert code == 0, output
    ids = [f"s{i:04d}" for i in range(24)]
    _review(out, db, approve=ids[:16], correct=ids[16:22])
    return class_dir, out, db


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines()]


def test_export_user_turns_are_the_requests_sent_model_turns_the_teachers_grades(
        reviewed: tuple[Path, Path, Path], gemini_env: FakeGemini, tmp_path: Path) -> None:
    class_dir, _out, db = reviewed
    data = tmp_path / "tuning"
    code, output = grade("tune", "export", str(class_dir), "--db", str(db), "--out", str(data))
    assert code == 0, output
    assert "20 training and 2 validation examples from run 1 (6 corrected by the teacher, " \
           "16 approved as graded)" in output
    train, held = _lines(data / "train.jsonl"), _lines(data / "validation.jsonl")
    assert (len(train), len(held)) == (20, 2)

    sent = {}  # the student part of every request the fake received -> its body
    for r in gemini_env.requests():
        if r["endpoint"] == "generateContent":
            sent[r["body"]["contents"][0]["parts"][-1]["text"]] = r["body"]
    rubric = Rubric.model_validate(yaml.safe_load(RUBRIC))
    validator = validation_model(rubric)
    corrected = 0
    for line in train + held:
        user, model = line["contents"]
        assert (user["role"], model["role"]) == ("user", "model")
        body = sent[user["parts"][-1]["text"]]
        assert user["parts"] == body["contents"][0]["parts"]  # exactly what grading sent
        assert line["systemInstruction"]["parts"] == body["systemInstruction"]["parts"]
        answer = json.loads(model["parts"][0]["text"])
        validator.model_validate(answer)  # what grading's response schema accepts
        assert answer["needs_review"] is False
        if answer["criteria"]["choice"]["score"] == 1 and \
                answer["criteria"]["reasons"]["score"] == 0.5:
            corrected += 1
            assert answer["overall_comment"].startswith("See me, ")
            assert "[EMAIL_1]" in answer["overall_comment"]  # redacted like the request
    assert "ann.zed" not in (data / "train.jsonl").read_text(encoding="utf-8")
    assert corrected == 6
    # the student text was redacted when sent, and stays so in the dataset
    assert all("Student" in ln["contents"][0]["parts"][-1]["text"] for ln in train)
    with (data / "heldout_scores.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    manifest = json.loads((data / "tuning.json").read_text(encoding="utf-8"))
    assert {r["student_id"] for r in rows} == set(manifest["validation_students"])
    assert {r["rater"] for r in rows} == {"teacher-final"} and len(rows) == 2 * 2


def test_export_refuses_below_the_documented_minimum(
        tmp_path: Path, gemini_env: FakeGemini) -> None:
    class_dir = make_class(tmp_path, 6)
    out, db = tmp_path / "out", tmp_path / "g.sqlite"
    assert grade("run", str(class_dir), "--out", str(out), "--db", str(db))[0] == 0
    _review(out, db, approve=["s0000", "s0001", "s0002"], correct=["s0003"])
    code, output = grade("tune", "export", str(class_dir), "--db", str(db), "--out",
                         str(tmp_path / "t"))
    assert code == 2
    assert f"needs at least {MIN_EXAMPLES} examples" in output and "only 3" in output
    assert not (tmp_path / "t" / "train.jsonl").exists()


def _enterprise(fake: FakeGemini, gcs: GcsEmulator, monkeypatch: pytest.MonkeyPatch,
                **opts: Any) -> tuple[VertexBackend, Settings]:
    monkeypatch.setenv("GOOGLE_VERTEX_BASE_URL", fake.url)
    fake.configure(storage_host=gcs.url)
    settings = Settings(backend="enterprise", project="proj", location="us-central1",
                        staging_bucket="gs://grader-staging/tuning", **opts)
    return VertexBackend(settings, credentials=Credentials(token="test")), settings


def test_a_tuning_job_runs_to_success_and_the_tuned_model_grades_the_class(
        reviewed: tuple[Path, Path, Path], gemini_env: FakeGemini, gcs_emulator: GcsEmulator,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class_dir, _out, db = reviewed
    data = tmp_path / "tuning"
    assert grade("tune", "export", str(class_dir), "--db", str(db), "--out", str(data))[0] == 0
    backend, settings = _enterprise(gemini_env, gcs_emulator, monkeypatch, db=db)

    async def begin() -> Any:
        try:
            return await start(class_dir, settings, base_model=BASE, data=data,
                               display_name="hw-tuned", epochs=2, backend=backend)
        finally:
            await backend.aclose()

    job = asyncio.run(begin())
    assert job.state == "JOB_STATE_PENDING" and (job.train_examples, job.validation_examples) \
        == (20, 2)
    staged = gcs_emulator.objects("grader-staging", "tuning/")
    assert len(staged) == 2 and all(n.endswith(".jsonl") for n in staged)
    train_obj = next(n for n in staged if n.endswith("-train.jsonl"))
    assert gcs_emulator.read("grader-staging", train_obj) == (data / "train.jsonl").read_bytes()
    (create,) = [r for r in gemini_env.requests() if r["endpoint"] == "tuningJobs.create"]
    spec = create["body"]["supervisedTuningSpec"]
    assert create["body"]["baseModel"] == BASE
    assert spec["trainingDatasetUri"] == f"gs://grader-staging/{train_obj}"
    assert spec["validationDatasetUri"].endswith("-validation.jsonl")
    assert create["body"]["tunedModelDisplayName"] == "hw-tuned"

    def follow() -> list[Any]:
        b, s = _enterprise(gemini_env, gcs_emulator, monkeypatch, db=db)

        async def go() -> list[Any]:
            try:
                return await status(class_dir, s, backend=b)
            finally:
                await b.aclose()

        return asyncio.run(go())

    gemini_env.advance(seconds=10)
    assert follow()[0].state == "JOB_STATE_RUNNING"
    gemini_env.advance(seconds=120)
    (done,) = follow()
    assert done.state == "JOB_STATE_SUCCEEDED" and done.endpoint
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT state, endpoint FROM tuning_jobs").fetchall() == [
            ("JOB_STATE_SUCCEEDED", done.endpoint)]

    # the tuned model grades the class through the same pipeline, on its endpoint ...
    gemini_env.reset_stats()
    tuned, tuned_settings = _enterprise(gemini_env, gcs_emulator, monkeypatch,
                                        model="tuned:hw-tuned", db=db)
    assert tuned.model == done.endpoint
    summary = run_class(class_dir, tuned_settings, backend=tuned)
    asyncio.run(tuned.aclose())
    assert (summary.graded + summary.flagged, summary.failed) == (24, 0)
    paths = [r["path"] for r in gemini_env.requests() if r["endpoint"] == "generateContent"]
    assert len(paths) == 24
    assert all(p.endswith(f"{done.endpoint}:generateContent") for p in paths)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT DISTINCT model FROM grades WHERE run_id = ?",
                            (summary.run_id,)).fetchall() == [(done.endpoint,)]
    # ... and base against tuned on the held-out split, by the teacher's final scores
    code, output = grade("human", "import", str(data / "heldout_scores.csv"), str(class_dir),
                         "--db", str(db))
    assert code == 0, output
    code, output = grade("eval", str(class_dir), "--db", str(db), "--compare", "1",
                         str(summary.run_id), "--rater", "teacher-final")
    assert code == 0, output
    assert f"run {summary.run_id} (vertex:{done.endpoint}) = B" in output
    assert "total" in output and "    2  " in output  # the two held-out students


def test_cancel_a_job_and_a_bad_dataset_fails(
        reviewed: tuple[Path, Path, Path], gemini_env: FakeGemini, gcs_emulator: GcsEmulator,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class_dir, _out, db = reviewed
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train.jsonl").write_text('{"contents": [{"role": "user", "parts": []}]}\n' * 20,
                                     encoding="utf-8")

    def call(fn: Any, **kw: Any) -> Any:
        b, s = _enterprise(gemini_env, gcs_emulator, monkeypatch, db=db)

        async def go() -> Any:
            try:
                return await fn(class_dir, s, backend=b, **kw)
            finally:
                await b.aclose()

        return asyncio.run(go())

    failing = call(start, base_model=BASE, data=bad, display_name="bad")
    assert failing.validation_examples == 0 and failing.validation_uri is None
    data = tmp_path / "tuning"
    assert grade("tune", "export", str(class_dir), "--db", str(db), "--out", str(data))[0] == 0
    call(start, base_model=BASE, data=data, display_name="stop-me")
    jobs = call(status, cancel="stop-me")
    assert {j.display_name: j.state for j in jobs}["stop-me"] == "JOB_STATE_CANCELLED"
    gemini_env.advance(seconds=120)
    jobs = {j.display_name: j for j in call(status)}
    assert jobs["bad"].state == "JOB_STATE_FAILED"
    assert "user turn then a model turn" in (jobs["bad"].error or "")
    assert jobs["stop-me"].state == "JOB_STATE_CANCELLED"
    # a failed model is not selectable
    with pytest.raises(Exception, match="no succeeded tuning job"):
        _enterprise(gemini_env, gcs_emulator, monkeypatch, model="tuned:bad")


def test_tuned_models_need_enterprise(tmp_path: Path, gemini_env: FakeGemini) -> None:
    class_dir = make_class(tmp_path, 1)
    code, output = grade("run", str(class_dir), "--db", str(tmp_path / "g.sqlite"), "--model",
                         "tuned:hw", "--out", str(tmp_path / "o"))
    assert code == 2 and "exist only on Gemini Enterprise" in output
