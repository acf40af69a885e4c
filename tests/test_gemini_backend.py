"""Gemini / Vertex backends through the real google-genai SDK against the fake Gemini server."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from google.oauth2.credentials import Credentials
from pydantic import SecretStr

from grader.backends import create
from grader.backends.gemini import GeminiBackend, VertexBackend
from grader.backends.gemini.reply import reply_of
from grader.config.settings import DEFAULT_GEMINI_MODEL, Settings
from grader.errors import BackendError, ConfigError
from grader.online.ratelimit import Quota
from grader.prompting.request import GradeRequest, Part, Turn
from grader.prompting.rubric import Rubric
from grader.prompting.schema import json_schema, parse
from grader.testing import FakeGemini

from _virtual_clock import run_virtual

GOOD = "Photosynthesis converts light energy into chemical energy in chloroplasts."
RUBRIC = Rubric.model_validate({
    "title": "Photosynthesis",
    "reference_answer": GOOD,
    "criteria": [
        {"id": "accuracy", "title": "Accuracy", "max_points": 4},
        {"id": "clarity", "title": "Clarity", "max_points": 2,
         "levels": [{"points": 0, "descriptor": "unclear"}, {"points": 1, "descriptor": "ok"},
                    {"points": 2, "descriptor": "clear"}]},
    ],
})


def make_request(text: str = GOOD, **changes: Any) -> GradeRequest:
    fields: dict[str, Any] = dict(
        key="s1", model=DEFAULT_GEMINI_MODEL, system="You grade fairly.",
        static_prefix=f"Rubric...\n<reference_answer>\n{RUBRIC.reference_answer}\n"
                      "</reference_answer>\n",
        student_parts=(Part(text=f"<submission>\n{text}\n</submission>"),),
        response_schema=json_schema(RUBRIC),
    )
    fields.update(changes)
    return GradeRequest(**fields)


@pytest.fixture(params=["gemini", "vertex"])
def backend_factory(request: pytest.FixtureRequest, fake_gemini: FakeGemini,
                    monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Builds a backend of each kind pointed at the fake (settings first, as the CLI does)."""
    for var in ("GOOGLE_VERTEX_BASE_URL", "GOOGLE_GEMINI_BASE_URL", "GEMINI_API_KEY",
                "GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_CLOUD_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    kind = request.param

    def build(**settings: Any) -> GeminiBackend:
        opts: dict[str, Any] = {"base_url": fake_gemini.url, "max_retries": 3, "timeout_s": 5}
        opts.update(settings)
        if kind == "gemini":
            return GeminiBackend(Settings(api_key=SecretStr("test-key"), **opts),
                                 backoff_base_s=0.05)
        return VertexBackend(Settings(project="proj", location="us-central1", **opts),
                             credentials=Credentials(token="test"), backoff_base_s=0.05)

    yield build


def run(backend: GeminiBackend, request: GradeRequest) -> Any:
    async def go() -> Any:
        try:
            return await backend.generate(request)
        finally:
            await backend.aclose()

    return asyncio.run(go())


def test_structured_response_parses_with_usage(backend_factory: Any,
                                               fake_gemini: FakeGemini) -> None:
    backend = backend_factory()
    resp = run(backend, make_request())
    grade = parse(RUBRIC, resp.text)
    assert grade.criteria["accuracy"].score == 4 and grade.criteria["clarity"].score == 2
    assert resp.finish_reason == "STOP" and resp.blocked_reason is None and resp.retries == 0
    assert resp.usage.prompt_tokens > 0 and resp.usage.output_tokens > 0
    assert resp.model_version == DEFAULT_GEMINI_MODEL and resp.latency_ms > 0
    assert "test-key" not in json.dumps(resp.raw) and resp.raw["candidates"]
    sent = fake_gemini.requests()[-1]
    assert sent["vertex"] == (backend.name == "vertex")
    body = sent["body"]
    assert body["systemInstruction"]["parts"][0]["text"] == "You grade fairly."
    gen = body["generationConfig"]
    assert gen["responseMimeType"] == "application/json"
    assert not {"seed", "temperature", "topP"} & set(gen)  # sampling only when the user sets it
    assert gen["responseJsonSchema"] == json_schema(RUBRIC) and "thinkingConfig" not in gen
    # privacy: store=false on the Developer API; Enterprise has no such field
    assert body.get("store") is (False if backend.name == "gemini" else None)
    assert [p["text"][:6] for p in body["contents"][0]["parts"]] == ["Rubric", "<submi"]


def test_history_inline_data_thinking_and_count_tokens(backend_factory: Any,
                                                       fake_gemini: FakeGemini) -> None:
    backend = backend_factory()
    req = make_request(
        student_parts=(Part(text="<submission>\nsee image\n</submission>"),
                       Part(mime_type="image/png", data=b"\x89PNG fake")),
        history=(Turn(role="model", text="{}"), Turn(role="user", text="fix it")),
        thinking_level="high",
    )

    async def go() -> int:
        try:
            await backend.generate(req)
            return await backend.count_tokens(req)
        finally:
            await backend.aclose()

    tokens = asyncio.run(go())
    gen_body, count_body = (r["body"] for r in fake_gemini.requests()[-2:])
    assert [c["role"] for c in gen_body["contents"]] == ["user", "model", "user"]
    inline = gen_body["contents"][0]["parts"][2]["inlineData"]  # the SDK sends mime_type as is
    assert inline.get("mimeType", inline.get("mime_type")) == "image/png" and inline["data"]
    thinking = gen_body["generationConfig"]["thinkingConfig"]
    # a level, never also a budget (the SDK sends the config's field names as they are)
    assert thinking in ({"thinkingLevel": "HIGH"}, {"thinking_level": "HIGH"})
    assert "generationConfig" not in count_body
    assert tokens > 258  # the image alone counts 258
    if backend.name == "gemini":  # no system instruction field: counted as a leading part
        assert count_body["contents"][0]["parts"][0]["text"] == "You grade fairly."


@pytest.mark.parametrize("faults", [("500", "503"), ("hang",), ("malformed",)])
def test_transient_failures_are_retried(backend_factory: Any, fake_gemini: FakeGemini,
                                        faults: tuple[str, ...]) -> None:
    fake_gemini.configure(hang_s=3)
    fake_gemini.inject(*faults)
    backend = backend_factory(timeout_s=0.5)
    resp = run(backend, make_request())
    assert resp.retries == len(faults) and parse(RUBRIC, resp.text)
    stats = fake_gemini.stats()
    assert stats["by_endpoint"]["generateContent"] == len(faults) + 1
    assert stats["faults"] == {f: faults.count(f) for f in faults}


def test_429_honours_retry_info(backend_factory: Any, fake_gemini: FakeGemini) -> None:
    fake_gemini.configure(fault_retry_delay_s=0.4)
    fake_gemini.inject("429")
    backend = backend_factory()
    t0 = time.monotonic()
    resp = run(backend, make_request())
    assert time.monotonic() - t0 >= 0.4  # waited what the server asked, not the 0.05 s backoff
    assert resp.retries == 1 and resp.text
    assert fake_gemini.stats()["by_endpoint_status"]["generateContent"] == {"429": 1, "200": 1}


def test_gives_up_after_max_retries(backend_factory: Any, fake_gemini: FakeGemini) -> None:
    fake_gemini.inject("503", "503", "503")
    backend = backend_factory(max_retries=2)
    with pytest.raises(BackendError) as info:
        run(backend, make_request())
    err = info.value
    assert err.transient and err.status == 503 and "after 2 retries" in str(err)
    assert "--concurrency" in str(err)


@pytest.mark.parametrize(("fault", "hint"), [("403", "API"), ("404", "--model"),
                                             ("400", "--retry-flagged request_rejected")])
def test_final_errors_are_not_retried(backend_factory: Any, fake_gemini: FakeGemini,
                                      fault: str, hint: str) -> None:
    fake_gemini.inject(fault)
    backend = backend_factory()
    with pytest.raises(BackendError) as info:
        run(backend, make_request())
    assert not info.value.transient and info.value.status == int(fault)
    assert hint in str(info.value)
    if fault == "403":
        assert ("GEMINI_API_KEY" if backend.name == "gemini" else "gcloud auth") in str(info.value)
    assert fake_gemini.stats()["by_endpoint"]["generateContent"] == 1


def test_unknown_model_names_the_flag(backend_factory: Any) -> None:
    backend = backend_factory(model="gemini-nope")
    assert backend.model == "gemini-nope"
    with pytest.raises(BackendError) as info:
        run(backend, make_request(model="nope-model"))
    assert info.value.status == 404 and "--model" in str(info.value)


@pytest.mark.parametrize("trigger", ["SAFETY", "RECITATION", "MAX_TOKENS", "EMPTY",
                                     "PROMPT_BLOCKED"])
def test_blocked_responses(backend_factory: Any, trigger: str) -> None:
    resp = run(backend_factory(), make_request(f"text FAKE_GEMINI:{trigger}"))
    expected = {"PROMPT_BLOCKED": "PROHIBITED_CONTENT"}.get(trigger, trigger)
    assert resp.text is None and resp.blocked_reason == expected
    assert resp.usage.prompt_tokens > 0


def test_rpm_quota_fills_the_window_and_never_trips_it(backend_factory: Any,
                                                       fake_gemini: FakeGemini) -> None:
    # server allows 3 per 1 s window; our quota (same numbers) sends 3 at once, then waits for
    # the window to slide: no 429
    fake_gemini.configure(rpm=3, rpm_window_s=1.0)
    backend = backend_factory(max_retries=0)
    backend.quota = Quota(rpm=3, period_s=1.0)

    async def go() -> list[Any]:
        try:
            return await asyncio.gather(*(backend.generate(make_request(f"s{i}"))
                                          for i in range(5)))
        finally:
            await backend.aclose()

    t0 = time.monotonic()
    results = asyncio.run(go())
    took = time.monotonic() - t0
    assert all(r.retries == 0 for r in results)
    assert fake_gemini.stats()["by_status"] == {"200": 5}
    assert took >= 1.0  # the 4th and 5th waited for the first window to slide
    assert backend.quota.stats.sent == 5 and backend.quota.stats.refused == 0


def test_registry_and_config_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_CLOUD_PROJECT",
                "GOOGLE_GENAI_USE_VERTEXAI"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError, match="GEMINI_API_KEY"):
        create("gemini", settings=Settings())
    with pytest.raises(ConfigError, match="GOOGLE_CLOUD_PROJECT"):
        create("vertex", settings=Settings())
    monkeypatch.setenv("GEMINI_API_KEY", "from-env")
    backend = create("gemini", settings=Settings(base_url="http://127.0.0.1:9"))
    assert isinstance(backend, GeminiBackend) and backend.model == DEFAULT_GEMINI_MODEL
    asyncio.run(backend.aclose())


def test_quota_tokens_per_minute_waits_for_the_window_to_slide() -> None:
    async def go() -> None:
        quota = Quota(tpm=400, period_s=1.0)  # 400 tokens in any second (and a 50 ms margin)
        for _ in range(5):
            async with quota.acquire(100):
                pass

    # on the loop's virtual clock: exact, whatever the machine is doing
    assert run_virtual(go()) == pytest.approx(1.05, abs=0.01)  # the 5th: when the 1st leaves


def test_quota_requests_per_minute_fill_the_window_at_once() -> None:
    starts: list[float] = []

    async def go() -> None:
        quota = Quota(rpm=120)
        loop = asyncio.get_running_loop()

        async def one() -> None:
            async with quota.acquire():
                starts.append(loop.time())
                await asyncio.sleep(1.0)  # one model latency

        await asyncio.gather(*(one() for _ in range(241)))

    run_virtual(go())
    starts.sort()
    # a whole window's worth leaves at once, as the provider's sliding window allows; never
    # more than 120 in any 60 s (plus the margin) counted from their replies (the provider
    # counts a request when it arrives, no later than its reply): the 121st and 241st wait
    assert starts[119] == pytest.approx(0.0, abs=0.01)
    assert starts[120] == pytest.approx(1.0 + 60.3, abs=0.01)
    assert starts[240] == pytest.approx(2 * (1.0 + 60.3), abs=0.01)


def test_requests_go_through_the_proxy_the_environment_names(
        backend_factory: Any, fake_gemini: FakeGemini, monkeypatch: pytest.MonkeyPatch) -> None:
    # The aiohttp session trusts nothing per request; the proxy for the endpoint is read from
    # the environment once. The fake answers a proxied request (absolute URL in the request
    # line), and the endpoint's own host does not resolve: a reply proves the proxy was used.
    for var in ("NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HTTP_PROXY", fake_gemini.url)
    backend = backend_factory(base_url="http://gemini.invalid")
    resp = run(backend, make_request())
    assert resp.finish_reason == "STOP" and resp.text


def test_replies_of_odd_shapes_read_as_empty_not_as_errors() -> None:
    for body in (None, [], {}, {"candidates": "x"}, {"candidates": [{"content": {"parts": 3}}]},
                 {"candidates": [{"content": {"parts": [{"text": 5}]}}]}):
        r = reply_of(body, vertex=False)
        assert r.text is None and r.blocked_reason == "EMPTY", body
    body = {"candidates": [{"finishReason": "STOP", "content": {"parts": [
        {"text": "thinking...", "thought": True}, {"text": "{\"a\": 1}"}]}}],
        "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": "3",
                          "thoughtsTokenCount": None},
        "modelVersion": "m-1", "modelStatus": {"modelStage": "DEPRECATED"}}
    r = reply_of(body, vertex=False)
    assert r.text == "{\"a\": 1}" and r.blocked_reason is None and r.model_status == "DEPRECATED"
    assert (r.usage.prompt_tokens, r.usage.output_tokens, r.usage.thinking_tokens) == (7, 3, 0)
    # as the SDK reads them, Enterprise replies carry no model status
    assert reply_of(body, vertex=True).model_status is None
    cut = {"candidates": [{"finishReason": "MAX_TOKENS", "content": {"parts": [{"text": "{"}]}}]}
    assert reply_of(cut, vertex=False).blocked_reason == "MAX_TOKENS"



def test_clients_share_one_set_of_tls_contexts(fake_gemini: FakeGemini,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # A run builds two genai clients (the backend's, and the event loop's on our aiohttp
    # session); the SDK would make three TLS contexts for each. They are made once per process
    # for the CA settings of the environment: counted where every context is made.
    import ssl

    import certifi

    from grader.backends.gemini import client as gemini_client

    made: list[object] = []
    real = ssl.create_default_context

    def counted(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        made.append(kwargs.get("cafile"))
        return real(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counted)
    monkeypatch.setenv("SSL_CERT_FILE", certifi.where())
    gemini_client._tls.cache_clear()
    settings = Settings(api_key=SecretStr("test-key"), base_url=fake_gemini.url, timeout_s=5)
    for _ in range(2):  # two backends, each with its loop's client: two contexts in all
        assert run(GeminiBackend(settings), make_request()).finish_reason == "STOP"
    assert made == [certifi.where(), certifi.where()]
    monkeypatch.delenv("SSL_CERT_FILE")  # other CA settings: a set of their own
    GeminiBackend(settings)
    assert gemini_client._tls.cache_info().misses == 2
