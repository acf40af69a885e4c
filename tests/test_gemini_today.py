"""Today's Gemini API, end to end through the CLI against the fake server: the default request,
thinking levels checked before any call, Enterprise selection, routed models reported, Flex,
and sampling parameters sent only when asked for."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

import pytest
from google.oauth2.credentials import Credentials

from grader.backends import create
from grader.backends.gemini import EnterpriseBackend, GeminiBackend
from grader.config.settings import Settings, auto_backend, resolve
from grader.online.pipeline import run_class
from grader.testing.fake_gemini import FakeGemini

from _classgen import make_class
from _cli import grade, q

SDK_ENV = ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI",
           "GOOGLE_GENAI_USE_ENTERPRISE", "GOOGLE_CLOUD_PROJECT", "GOOGLE_CLOUD_LOCATION")


@pytest.fixture
def fake(fake_gemini: FakeGemini, monkeypatch: pytest.MonkeyPatch) -> FakeGemini:
    for var in SDK_ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", "test-key")
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", fake_gemini.url)
    monkeypatch.setenv("GOOGLE_VERTEX_BASE_URL", fake_gemini.url)
    return fake_gemini


def generated(fake: FakeGemini) -> list[dict]:
    return [r for r in fake.requests() if r["endpoint"] == "generateContent"]


def thinking_of(body: dict) -> dict:
    return body["generationConfig"].get("thinkingConfig", {})


def test_the_default_request_is_todays(fake: FakeGemini, tmp_path: Path) -> None:
    class_dir = make_class(tmp_path, 2)
    code, output = grade("run", str(class_dir), "--db", str(tmp_path / "g.db"),
                         "--out", str(tmp_path / "o"))
    assert code == 0, output
    assert "gemini:gemini-3.8-flash" in output
    # what the fake says it received, over its own HTTP endpoint
    with urllib.request.urlopen(f"{fake.url}/_fake/requests?n=2", timeout=5) as r:
        sent = json.loads(r.read())
    assert len(sent) == 2 and all(s["path"].endswith("gemini-3.8-flash:generateContent")
                                  for s in sent)
    for record in sent:
        body, gen = record["body"], record["body"]["generationConfig"]
        assert body["store"] is False  # privacy: not kept in Google's request logs
        assert thinking_of(body) in ({"thinkingLevel": "LOW"}, {"thinking_level": "LOW"})
        assert not {"temperature", "topP", "topK", "seed"} & set(gen)
        assert gen["maxOutputTokens"] == 8192 and "serviceTier" not in body
        assert [c["role"] for c in body["contents"]] == ["user"]
        assert record["ignored"] == []


def test_thinking_minimal_is_refused_before_any_call(fake: FakeGemini, tmp_path: Path) -> None:
    class_dir = make_class(tmp_path, 3)
    code, output = grade("run", str(class_dir), "--db", str(tmp_path / "g.db"),
                         "--thinking", "minimal")
    assert code == 2 and "Traceback" not in output
    assert "gemini-3.8-flash does not accept thinking level 'minimal'" in output
    assert "fix: use --thinking low" in output
    assert fake.stats()["requests"] == 0
    code, output = grade("estimate", str(class_dir), "--thinking", "minimal")
    assert code == 2 and fake.stats()["requests"] == 0
    # the cheap profile has minimal: accepted and sent as asked
    code, output = grade("run", str(class_dir), "--db", str(tmp_path / "g.db"),
                         "--out", str(tmp_path / "o"), "--model", "gemini-3.5-flash-lite",
                         "--thinking", "minimal")
    assert code == 0, output
    assert all(thinking_of(r["body"]) in ({"thinkingLevel": "MINIMAL"},
                                          {"thinking_level": "MINIMAL"})
               for r in generated(fake))


@pytest.mark.parametrize(("env", "expected"), [
    ({"GOOGLE_GENAI_USE_ENTERPRISE": "true"}, "enterprise"),
    ({"GOOGLE_GENAI_USE_VERTEXAI": "true"}, "vertex"),
    ({"GOOGLE_GENAI_USE_ENTERPRISE": "true", "GOOGLE_GENAI_USE_VERTEXAI": "false"}, "enterprise"),
    ({"GOOGLE_GENAI_USE_ENTERPRISE": "false", "GOOGLE_GENAI_USE_VERTEXAI": "true",
      "GEMINI_API_KEY": "k"}, "gemini"),  # as in the SDK, ENTERPRISE wins a conflict
    ({"GOOGLE_GENAI_USE_ENTERPRISE": "1"}, "enterprise"),
])
def test_enterprise_variable_selects_the_backend(env: dict[str, str], expected: str) -> None:
    env = {"GOOGLE_CLOUD_PROJECT": "proj", **env}
    assert auto_backend(resolve({}, env=env), env) == expected


def test_enterprise_env_grades_through_the_enterprise_client(
        fake: FakeGemini, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEMINI_API_KEY")
    monkeypatch.setenv("GOOGLE_GENAI_USE_ENTERPRISE", "true")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "proj")
    class_dir = make_class(tmp_path, 2)
    settings = resolve({"db": str(tmp_path / "g.db")}, class_dir=class_dir)
    name = auto_backend(settings)
    backend = create(name, settings=settings, credentials=Credentials(token="test"))
    assert name == "enterprise" and isinstance(backend, EnterpriseBackend)
    assert backend._client._api_client.vertexai is True  # the Enterprise (Vertex) client
    summary = run_class(class_dir, settings, backend=backend)
    asyncio.run(backend.aclose())
    assert summary.graded == 2 and summary.backend == "enterprise"
    for record in generated(fake):
        assert record["vertex"] and "/projects/proj/locations/global/" in record["path"]
        assert "store" not in record["body"]  # a Developer API field: refused on Enterprise


def test_a_routed_model_is_reported_once_stored_and_shown(fake: FakeGemini,
                                                          tmp_path: Path) -> None:
    class_dir = make_class(tmp_path, 4)
    db, out = tmp_path / "g.db", tmp_path / "o"
    code, output = grade("run", str(class_dir), "--db", str(db), "--out", str(out),
                         "--model", "gemini-3.7-flash")
    assert code == 0, output
    # before the run, from the model table; during it, from the replies (once, not per student)
    assert "Google silently serves gemini-3.8-flash instead" in output
    served = "asked for gemini-3.7-flash, the service answered with gemini-3.8-flash"
    assert output.count(served) == 1 and "DEPRECATED" in output
    assert q(db, "SELECT DISTINCT model_version, model_status FROM attempts") == [
        ("gemini-3.8-flash", "DEPRECATED")]
    html = (out / "report.html").read_text()
    assert "gemini-3.8-flash [DEPRECATED]" in html and served in html
    code, output = grade("status", str(class_dir), "--db", str(db))
    assert code == 0 and "served: gemini-3.8-flash [DEPRECATED] for 4 calls" in output


def test_sampling_is_sent_only_when_set_and_ignored_models_are_named_once(
        fake: FakeGemini, tmp_path: Path) -> None:
    class_dir = make_class(tmp_path, 3)
    code, output = grade("run", str(class_dir), "--db", str(tmp_path / "g.db"),
                         "--out", str(tmp_path / "o"), "--temperature", "0.2")
    assert code == 0, output
    assert output.count("ignores temperature") == 1
    for record in generated(fake):
        assert record["body"]["generationConfig"]["temperature"] == 0.2
        assert "seed" not in record["body"]["generationConfig"]
        assert record["ignored"] == ["temperature"]  # the fake, like the API, ignores it


def test_flex_tier_is_sent_with_a_long_timeout_and_priced_at_half(fake: FakeGemini,
                                                                  tmp_path: Path) -> None:
    class_dir = make_class(tmp_path, 3)
    db = tmp_path / "g.db"
    run = ("run", str(class_dir), "--db", str(db), "--out", str(tmp_path / "o"))
    assert grade(*run)[0] == 0
    code, output = grade(*run, "--tier", "flex", "--regrade")
    assert code == 0 and "flex tier" in output
    assert [r["body"].get("serviceTier") for r in generated(fake)] == [None] * 3 + ["flex"] * 3
    (standard, std_tier), (flex, flex_tier) = q(
        db, "SELECT SUM(cost_usd), MAX(service_tier) FROM attempts GROUP BY run_id ORDER BY run_id")
    assert (std_tier, flex_tier) == ("standard", "flex")
    assert flex == pytest.approx(standard / 2)  # the fake answers both runs identically
    backend = GeminiBackend(Settings(api_key="k", tier="flex", base_url=fake.url))
    assert backend.timeout_s == 900  # Flex queues for minutes: flex_timeout_s, not timeout_s
    asyncio.run(backend.aclose())
