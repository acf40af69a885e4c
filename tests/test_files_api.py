"""The Files API end to end against the fake Gemini server (and, for Enterprise/Vertex, a GCS
emulator): a 60 MB student PDF is uploaded instead of failing the inline limit, the rubric's
reference files go into the cache, uploads older than 48 h are uploaded again before a resumed
run uses them, and every upload is deleted when it is no longer needed."""

from __future__ import annotations

import asyncio
import base64
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest
from google.oauth2.credentials import Credentials

from grader.backends.gemini import VertexBackend
from grader.config.models import packaged
from grader.config.settings import DEFAULT_GEMINI_MODEL, resolve
from grader.errors import ConfigError, RubricError
from grader.intake.limits import MB
from grader.online.files import to_upload
from grader.online.ledger import KILL_AFTER_REPLY_ENV
from grader.online.pipeline import run_class
from grader.prompting.request import GradeRequest, Part
from grader.prompting.rubric import load_references, load_rubric
from grader.testing.fake_gemini import FakeGemini
from grader.testing.gcs_emulator import GcsEmulator

from _classgen import big_rubric, make_class, scanned_pdf
from _cli import grade
from _procs import env_for, grade_cmd, scalar

PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00"
       b"\x00\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\xcf\xc0\xf0\x1f\x00\x05\x00\x01\xff"
       b"\x89\x99=\x1d\x00\x00\x00\x00IEND\xaeB`\x82")
REFERENCES = """\
reference_files:
  - {path: model_answer.pdf, title: The model answer}
  - {path: figures/encoding.png, title: Figure 1}
"""


def q(db: Path, sql: str, args: tuple = ()) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return [tuple(r) for r in conn.execute(sql, args)]


def generated(fake: FakeGemini) -> list[dict]:
    return [r for r in fake.requests() if r["endpoint"] == "generateContent"]


def file_parts(body: dict) -> list[dict]:
    """The file parts of a request body as {"fileUri", "mimeType"} (the SDK sends the file's
    own field names, snake_case; proto JSON takes both)."""
    out = []
    for c in body.get("contents", []):
        for p in c["parts"]:
            f = p.get("fileData") or p.get("file_data")
            if f is not None:
                out.append({"fileUri": f.get("fileUri") or f.get("file_uri"),
                            "mimeType": f.get("mimeType") or f.get("mime_type")})
    return out


def with_references(class_dir: Path, tokens: int | None = 6000) -> Path:
    """The class's rubric (big: cached, or the small one) naming a PDF and a PNG beside it."""
    rubric = class_dir / "rubric.yaml"
    text = big_rubric(tokens) if tokens else rubric.read_text(encoding="utf-8")
    rubric.write_text(text + REFERENCES, encoding="utf-8")
    scanned_pdf(class_dir / "model_answer.pdf", 0.01)
    (class_dir / "figures").mkdir()
    (class_dir / "figures" / "encoding.png").write_bytes(PNG)
    return class_dir


def test_a_60_mb_student_pdf_goes_through_the_files_api(gemini_env: FakeGemini,
                                                        tmp_path: Path) -> None:
    class_dir = make_class(tmp_path, 2)
    pdf = scanned_pdf(class_dir / "zoe_kowalski.pdf", 60)
    # a teacher who accepts large scans raises the intake limits
    (class_dir / "grader.toml").write_text("[grader]\nmax_file_mb = 100\nmax_request_mb = 100\n")
    db = tmp_path / "g.sqlite"
    code, output = grade("run", str(class_dir), "--db", str(db), "--out", str(tmp_path / "o"))
    assert code == 0, output
    stats = gemini_env.stats()["files"]
    assert stats["uploaded"] == 1 and stats["bytes"] == pdf.stat().st_size
    assert stats["deleted"] == 1 and gemini_env.files() == []  # gone once graded
    # the resumable protocol: a start, then 8 MB chunks (the SDK's chunk size)
    uploads = [r for r in gemini_env.requests() if r["endpoint"] == "files.upload"]
    assert len(uploads) == 1 + -(-pdf.stat().st_size // (8 * MB))
    zoe = next(r for r in generated(gemini_env) if file_parts(r["body"]))
    (part,) = file_parts(zoe["body"])
    assert part["mimeType"] == "application/pdf" and "/v1beta/files/" in part["fileUri"]
    assert not any("inlineData" in p for c in zoe["body"]["contents"] for p in c["parts"])
    (row,) = q(db, "SELECT purpose, size, display_name, state FROM uploads")
    assert row[:2] == ("media", pdf.stat().st_size) and row[3] == "deleted"
    assert "zoe" not in row[2] and "kowalski" not in row[2]  # no student name leaves
    assert q(db, "SELECT status FROM outcomes WHERE student_id = 'zoe_kowalski'") == [("graded",)]
    assert "uploaded 1 file(s) too large to send inline" in output


def test_inline_limits_choose_what_is_uploaded() -> None:
    inline = packaged().inline
    req = GradeRequest(key="", model="m", system="s", static_prefix="p", response_schema={},
                       student_parts=(Part(text="t"),
                                      Part(mime_type="application/pdf", data=b"x" * 51 * MB),
                                      Part(mime_type="image/png", data=b"x" * 40 * MB),
                                      Part(mime_type="image/png", data=b"x" * 30 * MB),
                                      Part(mime_type="application/pdf", data=b"x" * 10 * MB)))
    # the 51 MB PDF is over the PDF limit; then the largest until the rest fits 100 MB base64
    assert to_upload(req, inline) == [1, 2]
    small = req.model_copy(update={"student_parts": req.student_parts[3:]})
    assert to_upload(small, inline) == []


def test_reference_files_go_through_the_files_api_into_the_cache(gemini_env: FakeGemini,
                                                                 tmp_path: Path) -> None:
    class_dir = with_references(make_class(tmp_path, 4))
    db = tmp_path / "g.sqlite"
    code, output = grade("run", str(class_dir), "--db", str(db), "--out", str(tmp_path / "o"))
    assert code == 0, output
    assert gemini_env.stats()["files"]["uploaded"] == 2
    (create,) = [r for r in gemini_env.requests() if r["endpoint"] == "cachedContents.create"]
    refs = file_parts(create["body"])
    assert [p["mimeType"] for p in refs] == ["application/pdf", "image/png"]
    text = create["body"]["contents"][0]["parts"][0]["text"]
    assert "- model_answer.pdf: The model answer" in text and "figures/encoding.png" in text
    for r in generated(gemini_env):
        assert file_parts(r["body"]) == []  # in the cache, not in every request
    assert gemini_env.files() == [] and gemini_env.caches() == []
    assert q(db, "SELECT purpose, state FROM uploads") == [("reference", "deleted")] * 2


def test_below_the_minimum_reference_files_follow_the_prefix_in_every_request(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    class_dir = with_references(make_class(tmp_path, 3), tokens=None)
    code, output = grade("run", str(class_dir), "--db", str(tmp_path / "g.sqlite"),
                         "--out", str(tmp_path / "o"))
    assert code == 0, output
    prefixes = set()
    for r in generated(gemini_env):
        parts = r["body"]["contents"][0]["parts"]
        assert parts[0]["text"].startswith("# Marking scheme")
        assert [f["mimeType"] for f in file_parts({"contents": [{"parts": parts[1:3]}]})] == \
            ["application/pdf", "image/png"]
        prefixes.add(repr(parts[:3]))
    assert len(prefixes) == 1  # byte-identical, so implicit caching applies
    assert gemini_env.stats()["files"]["uploaded"] == 2


def test_a_rerun_reuses_young_uploads_and_uploads_again_after_48_hours(tmp_path: Path) -> None:
    class_dir = with_references(make_class(tmp_path, 6), tokens=None)
    db = tmp_path / "g.sqlite"
    with FakeGemini() as fake:
        killed = subprocess.run(grade_cmd(class_dir, db, "--concurrency", "1"),
                                capture_output=True,
                                env=env_for(fake, **{KILL_AFTER_REPLY_ENV: "2"}), timeout=60)
        assert killed.returncode == -signal.SIGKILL
        first = {f["uri"] for f in fake.files()}
        assert len(first) == 2 and scalar(db, "SELECT COUNT(*) FROM uploads"
                                              " WHERE state = 'active'") == 2
        fake.advance(hours=49)  # the Files API keeps uploads 48 h
        done = subprocess.run(grade_cmd(class_dir, db), capture_output=True, text=True,
                              env=env_for(fake), timeout=60)
        assert done.returncode == 0, done.stderr
        assert fake.stats()["files"]["uploaded"] == 4  # both uploaded again
        used = {p["fileUri"] for r in generated(fake)[2:] for p in file_parts(r["body"])}
        assert len(used) == 2 and not used & first
        assert fake.files() == []
    assert q(db, "SELECT state, COUNT(*) FROM uploads GROUP BY state ORDER BY state") == \
        [("deleted", 2), ("expired", 2)]
    assert scalar(db, "SELECT COUNT(DISTINCT student_id) FROM grades") == 6


def test_a_rerun_within_48_hours_reuses_the_uploads(tmp_path: Path) -> None:
    class_dir = with_references(make_class(tmp_path, 6), tokens=None)
    db = tmp_path / "g.sqlite"
    with FakeGemini() as fake:
        killed = subprocess.run(grade_cmd(class_dir, db, "--concurrency", "1"),
                                capture_output=True,
                                env=env_for(fake, **{KILL_AFTER_REPLY_ENV: "2"}), timeout=60)
        assert killed.returncode == -signal.SIGKILL
        first = {f["uri"] for f in fake.files()}
        done = subprocess.run(grade_cmd(class_dir, db), capture_output=True, text=True,
                              env=env_for(fake), timeout=60)
        assert done.returncode == 0, done.stderr
        assert fake.stats()["files"]["uploaded"] == 2  # nothing uploaded twice
        used = {p["fileUri"] for r in generated(fake) for p in file_parts(r["body"])}
        assert used == first and fake.files() == []


def test_reference_files_are_checked_when_the_rubric_is_loaded(tmp_path: Path) -> None:
    class_dir = with_references(make_class(tmp_path, 1), tokens=None)
    rubric, _ = load_rubric(class_dir / "rubric.yaml")
    refs = load_references(rubric, class_dir / "rubric.yaml")
    assert [(r.name, r.mime_type) for r in refs] == [("model_answer.pdf", "application/pdf"),
                                                     ("figures/encoding.png", "image/png")]
    (class_dir / "figures" / "encoding.png").write_bytes(b"not a png")
    with pytest.raises(RubricError, match=r"is not a valid \.png file"):
        load_references(rubric, class_dir / "rubric.yaml")
    (class_dir / "model_answer.pdf").unlink()
    with pytest.raises(RubricError, match=r"cannot read 'model_answer\.pdf'") as e:
        load_references(rubric, class_dir / "rubric.yaml")
    assert "relative to the rubric file" in str(e.value)
    base = (class_dir / "rubric.yaml").read_text().split("reference_files:")[0]
    for bad, why in (("../secret.pdf", "inside its folder"), ("/etc/passwd.pdf", "relative"),
                     ("notes.txt", "must be one of")):
        (class_dir / "rubric.yaml").write_text(base + f"reference_files:\n  - {{path: {bad}}}\n")
        with pytest.raises(RubricError, match=why):
            load_rubric(class_dir / "rubric.yaml")
    outside = tmp_path / "elsewhere.pdf"
    scanned_pdf(outside, 0.001)
    (class_dir / "link.pdf").symlink_to(outside)
    (class_dir / "rubric.yaml").write_text(base + "reference_files:\n  - {path: link.pdf}\n")
    rubric, _ = load_rubric(class_dir / "rubric.yaml")
    with pytest.raises(RubricError, match="leads outside the rubric's folder"):
        load_references(rubric, class_dir / "rubric.yaml")


def _vertex(fake: FakeGemini, monkeypatch: pytest.MonkeyPatch, class_dir: Path, db: Path,
            **extra: str) -> tuple[VertexBackend, object]:
    for var in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GOOGLE_VERTEX_BASE_URL", fake.url)
    settings = resolve({"db": str(db), "backend": "enterprise", "project": "proj",
                        "location": "global", **extra}, class_dir=class_dir)
    return VertexBackend(settings, credentials=Credentials(token="test")), settings


def test_vertex_stages_reference_files_and_large_pdfs_in_a_gs_bucket(
        fake_gemini: FakeGemini, gcs_emulator: GcsEmulator, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gemini.configure(storage_host=gcs_emulator.url)
    class_dir = with_references(make_class(tmp_path, 3))
    pdf = scanned_pdf(class_dir / "zoe.pdf", 55)
    (class_dir / "grader.toml").write_text("[grader]\nmax_file_mb = 100\nmax_request_mb = 100\n")
    backend, settings = _vertex(fake_gemini, monkeypatch, class_dir, tmp_path / "g.db",
                                staging_bucket="gs://grader-staging/runs")
    seen: list[list[str]] = []

    def on_outcome(_: object) -> None:
        seen.append(gcs_emulator.objects("grader-staging"))

    summary = run_class(class_dir, settings, backend=backend, on_outcome=on_outcome)
    asyncio.run(backend.aclose())
    assert summary.graded == 4 and summary.uploads == 3
    assert all(name.startswith("runs/grader-") for name in seen[0])
    (create,) = [r for r in fake_gemini.requests() if r["endpoint"] == "cachedContents.create"]
    refs = file_parts(create["body"])
    assert [p["fileUri"][:27] for p in refs] == ["gs://grader-staging/runs/gr"] * 2
    zoe = next(r for r in fake_gemini.requests() if r["endpoint"] == "generateContent"
               and file_parts(r["body"]))
    (part,) = file_parts(zoe["body"])
    assert part["fileUri"].startswith("gs://grader-staging/runs/")
    assert gcs_emulator.objects("grader-staging") == []  # all deleted at the end
    assert max(len(s) for s in seen) >= 2 and pdf.stat().st_size > 50 * MB


def test_vertex_without_a_staging_bucket_says_how_to_set_one(
        fake_gemini: FakeGemini, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class_dir = with_references(make_class(tmp_path, 2))
    backend, settings = _vertex(fake_gemini, monkeypatch, class_dir, tmp_path / "g.db")
    with pytest.raises(ConfigError, match="staging_bucket"):
        run_class(class_dir, settings, backend=backend)
    asyncio.run(backend.aclose())
    # a PDF over the inline limit flags its student, with the same fix; the class goes on
    class_dir = make_class(tmp_path / "b", 2)
    scanned_pdf(class_dir / "zoe.pdf", 55)
    (class_dir / "grader.toml").write_text("[grader]\nmax_file_mb = 100\nmax_request_mb = 100\n")
    backend, settings = _vertex(fake_gemini, monkeypatch, class_dir, tmp_path / "g2.db")
    summary = run_class(class_dir, settings, backend=backend)
    asyncio.run(backend.aclose())
    assert summary.graded == 2 and summary.flagged == 1
    flagged = next(o for o in summary.outcomes if o.status == "flagged")
    assert flagged.reason == "oversized" and "staging_bucket" in (flagged.message or "")


def test_the_fake_refuses_what_is_over_the_inline_limit(fake_gemini: FakeGemini) -> None:
    """What grader avoids by uploading: the same 60 MB PDF inline is refused."""
    import urllib.error
    import urllib.request

    body = {"contents": [{"role": "user", "parts": [
        {"text": "grade"}, {"inlineData": {"mimeType": "application/pdf",
                                           "data": base64.b64encode(b"x" * 60 * MB).decode()}}]}]}
    req = urllib.request.Request(
        f"{fake_gemini.url}/v1beta/models/{DEFAULT_GEMINI_MODEL}:generateContent",
        data=__import__("json").dumps(body).encode(), method="POST",
        headers={"x-goog-api-key": "k", "Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=60)
    assert e.value.code == 400 and b"File API" in e.value.read()


def test_backends_list_get_delete_and_download_files(
        fake_gemini: FakeGemini, gcs_emulator: GcsEmulator, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The calls batch grading builds on: upload a JSONL file, find it, download a result file
    (Files API: a generated file; Enterprise: an object in the staging bucket), delete."""
    from pydantic import SecretStr

    from grader.backends.gemini import GeminiBackend
    from grader.config.settings import Settings

    results = fake_gemini.put_file(b'{"key": "s1"}\n', display_name="results")
    dev = GeminiBackend(Settings(api_key=SecretStr("k"), base_url=fake_gemini.url))
    fake_gemini.configure(storage_host=gcs_emulator.url)
    gcs_emulator.write("grader-staging", "jobs/out/predictions.jsonl", b'{"key": "s2"}\n')
    vertex, _ = _vertex(fake_gemini, monkeypatch, tmp_path, tmp_path / "g.db",
                        staging_bucket="gs://grader-staging/jobs")

    async def go() -> None:
        try:
            lines = tmp_path / "in.jsonl"
            lines.write_text('{"key": "s1", "request": {}}\n')
            up = await dev.upload_file(lines, mime_type="application/jsonl",
                                       display_name="grader-batch")
            assert fake_gemini.file_bytes(up.name) == lines.read_bytes()
            assert {f.display_name for f in await dev.list_files()} == {"grader-batch",
                                                                        "results"}
            await dev.download_file(results["name"], tmp_path / "out.jsonl")
            assert (tmp_path / "out.jsonl").read_bytes() == b'{"key": "s1"}\n'
            assert await dev.delete_file(up.name) and await dev.get_file(up.name) is None
            assert not await dev.delete_file(up.name)  # already gone
            staged = await vertex.upload_file(lines, mime_type="application/jsonl",
                                              display_name="in.jsonl")
            assert staged.uri == "gs://grader-staging/jobs/in.jsonl"
            assert (await vertex.get_file(staged.name)) is not None
            await vertex.download_file("gs://grader-staging/jobs/out/predictions.jsonl",
                                       tmp_path / "pred.jsonl")
            assert (tmp_path / "pred.jsonl").read_bytes() == b'{"key": "s2"}\n'
            assert sorted(f.name for f in await vertex.list_files()) == [
                "gs://grader-staging/jobs/in.jsonl",
                "gs://grader-staging/jobs/out/predictions.jsonl"]
            assert await vertex.delete_file(staged.name)
            assert await vertex.get_file(staged.name) is None
        finally:
            await dev.aclose()
            await vertex.aclose()

    asyncio.run(go())
