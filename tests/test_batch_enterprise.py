"""Enterprise/Vertex batch prediction against the fake (batchPredictionJobs) and a GCS emulator:
the JSONL input goes to the staging bucket, the job's results are read back from the
`prediction-model-*` folder below its output prefix, and the stored grades are those of an
online run. (Through the library: the CLI would need Google credentials, which tests pass to
the backend directly.)"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from google.oauth2.credentials import Credentials

from grader.backends.gemini import VertexBackend
from grader.batch.submit import collect_class, status_class, submit_class
from grader.config.settings import Settings, resolve
from grader.online.pipeline import run_class
from grader.testing.fake_gemini import FakeGemini
from grader.testing.gcs_emulator import GcsEmulator

from _classgen import make_class


def q(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return [tuple(r) for r in conn.execute(sql)]


def grades(db: Path) -> list[tuple]:
    return q(db, "SELECT g.student_id, g.status, g.total, g.config_hash, c.criterion_id,"
                 " c.score, c.feedback FROM grades g JOIN criterion_scores c"
                 " ON c.grade_id = g.id ORDER BY g.student_id, c.position")


def vertex(fake: FakeGemini, monkeypatch: pytest.MonkeyPatch, class_dir: Path, db: Path
           ) -> tuple[VertexBackend, Settings]:
    for var in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GOOGLE_VERTEX_BASE_URL", fake.url)
    settings = resolve({"db": str(db), "out": str(db.parent / f"{db.stem}-out"),
                        "backend": "enterprise", "project": "proj", "location": "global",
                        "staging_bucket": "gs://grader-staging/batch"}, class_dir=class_dir)
    return VertexBackend(settings, credentials=Credentials(token="test")), settings


def test_batch_prediction_through_a_gcs_bucket_stores_what_an_online_run_stores(
        fake_gemini: FakeGemini, gcs_emulator: GcsEmulator, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gemini.configure(storage_host=gcs_emulator.url, batch_pending_s=30)
    class_dir = make_class(tmp_path, 4, extra={
        "zz_broken.txt": "Student answer. FAKE_GEMINI:BATCH_LINE_FAIL TCP is reliable."})
    online_dir = tmp_path / "online"
    shutil.copytree(class_dir, online_dir)
    backend, settings = vertex(fake_gemini, monkeypatch, online_dir, tmp_path / "online.db")
    assert run_class(online_dir, settings, backend=backend).failed == 0
    db = tmp_path / "b.db"
    _, settings = vertex(fake_gemini, monkeypatch, class_dir, db)

    def fresh() -> VertexBackend:  # one client per event loop (each call runs its own)
        return VertexBackend(settings, credentials=Credentials(token="test"))

    sent = submit_class(class_dir, settings, backend=fresh())
    assert sent.requests == 5 and len(sent.jobs) == 1
    assert sent.jobs[0].startswith("projects/proj/locations/global/batchPredictionJobs/")
    (create,) = [r for r in fake_gemini.requests() if r["endpoint"] == "batches.create"]
    (uri,) = create["body"]["inputConfig"]["gcsSource"]["uris"]
    assert uri.startswith("gs://grader-staging/batch/grader-") and uri.endswith(".jsonl")
    lines = [json.loads(x) for x in gcs_emulator.read(
        "grader-staging", uri.removeprefix("gs://grader-staging/")).splitlines()]
    assert len(lines) == 5 and all("store" not in ln["request"] for ln in lines)
    assert all(ln["request"]["labels"]["grader_key"].startswith("a") for ln in lines)
    assert collect_class(class_dir, settings, backend=fresh()).running == 1
    (job,) = status_class(class_dir, settings, backend=fresh()).jobs
    assert job.job.state == "JOB_STATE_PENDING" and job.counts["pending"] == 5
    fake_gemini.advance(seconds=31)
    got = collect_class(class_dir, settings, backend=fresh())
    assert (got.jobs, got.graded, got.failed) == (1, 4, 1)
    assert any(n.startswith("batch/") and "/prediction-model-" in n
               and n.endswith("/predictions.jsonl")
               for n in gcs_emulator.objects("grader-staging"))
    again = collect_class(class_dir, settings, backend=fresh())
    assert (again.jobs, again.graded) == (0, 0)
    ours = [g for g in grades(db) if g[0] != "zz_broken"]
    assert ours == [g for g in grades(tmp_path / "online.db") if g[0] != "zz_broken"]
    assert q(db, "SELECT status, reason FROM outcomes WHERE student_id='zz_broken'") == [
        ("failed", "batch_failed")]
    # the input object is deleted once collected; the results stay with the job
    assert not any(n.endswith(".jsonl") and "prediction-model" not in n
                   for n in gcs_emulator.objects("grader-staging"))
