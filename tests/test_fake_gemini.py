"""The fake Gemini server, exercised through the real google-genai SDK and raw HTTP."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from typing import Any

import pytest
from google import genai
from google.genai import errors, types
from google.oauth2.credentials import Credentials

from grader.testing import FakeGemini

MODEL = "gemini-3.8-flash"
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "criteria": {
            "type": "object",
            "properties": {
                "accuracy": {
                    "type": "object",
                    "properties": {
                        "score": {"type": "number", "minimum": 0, "maximum": 4},
                        "justification": {"type": "string"},
                        "evidence": {"type": "array", "items": {"type": "string"}},
                        "feedback": {"type": "string"},
                    },
                    "required": ["score", "justification", "evidence", "feedback"],
                },
                "style": {
                    "type": "object",
                    "properties": {"score": {"type": "number", "enum": [0, 1, 2]}},
                    "required": ["score"],
                },
            },
            "required": ["accuracy", "style"],
        },
        "overall_comment": {"type": "string"},
        "needs_review": {"type": "boolean"},
    },
    "required": ["criteria", "overall_comment", "needs_review"],
}
REFERENCE = "Photosynthesis converts light energy into chemical energy inside chloroplasts."


def prefix(reference: str | None = REFERENCE) -> str:
    ref = f"<reference_answer>\n{reference}\n</reference_answer>\n" if reference else ""
    return f"Grade with the rubric.\n{ref}"


def submission(text: str) -> str:
    return f"<submission>\n{text}\n</submission>"


def dev_client(fake: FakeGemini, timeout_ms: int | None = None) -> genai.client.AsyncClient:
    opts = types.HttpOptions(base_url=fake.url, api_version="v1beta", timeout=timeout_ms)
    return genai.Client(api_key="test-key", http_options=opts).aio


def vertex_client(fake: FakeGemini) -> genai.client.AsyncClient:
    opts = types.HttpOptions(base_url=fake.url, api_version="v1beta1")
    return genai.Client(vertexai=True, project="proj", location="us-central1",
                        credentials=Credentials(token="test"), http_options=opts).aio


async def grade(client: genai.client.AsyncClient, text: str, *, reference: str | None = REFERENCE,
                history: list[types.Content] | None = None) -> types.GenerateContentResponse:
    contents = [types.Content(role="user", parts=[types.Part(text=prefix(reference)),
                                                  types.Part(text=submission(text))])]
    contents += history or []
    cfg = types.GenerateContentConfig(system_instruction="You are a grader.",
                                      response_mime_type="application/json",
                                      response_json_schema=SCHEMA)
    return await client.models.generate_content(model=MODEL, contents=contents, config=cfg)


def post(url: str, payload: Any, headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read()), r.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers


def test_developer_api_answer_conforms_and_scores_by_overlap(fake_gemini: FakeGemini) -> None:
    full = "Photosynthesis converts light energy into chemical energy inside chloroplasts."
    none = "Mitochondria make ATP. Cells divide by mitosis."

    async def run() -> tuple[Any, Any]:
        c = dev_client(fake_gemini)
        return await grade(c, full), await grade(c, none)

    good, bad = asyncio.run(run())
    g, b = json.loads(good.text), json.loads(bad.text)
    assert g["criteria"]["accuracy"]["score"] == 4 and b["criteria"]["accuracy"]["score"] == 0
    assert g["criteria"]["style"]["score"] == 2 and b["criteria"]["style"]["score"] == 0
    assert isinstance(g["needs_review"], bool) and isinstance(g["overall_comment"], str)
    for quote in b["criteria"]["accuracy"]["evidence"]:
        assert quote in none
    assert 1 <= len(b["criteria"]["accuracy"]["evidence"]) <= 2
    um = good.usage_metadata
    assert um is not None and um.prompt_token_count and um.candidates_token_count
    assert um.total_token_count == (um.prompt_token_count + um.candidates_token_count
                                    + (um.thoughts_token_count or 0))
    assert good.model_version == MODEL and good.response_id
    assert good.candidates and good.candidates[0].finish_reason == types.FinishReason.STOP


def test_partial_overlap_rounds_to_half_points(fake_gemini: FakeGemini) -> None:
    # 3 of 7 reference content words -> 0.43 * 4 = 1.71, rounded to half points
    text = "Photosynthesis needs light and chloroplasts."
    r = asyncio.run(grade(dev_client(fake_gemini), text))
    assert json.loads(r.text or "")["criteria"]["accuracy"]["score"] == 1.5


def test_without_reference_score_grows_with_length(fake_gemini: FakeGemini) -> None:
    short = "Plants are green."
    long = " ".join(f"word{i}" for i in range(200))

    async def run() -> tuple[float, float]:
        c = dev_client(fake_gemini)
        a = json.loads((await grade(c, short, reference=None)).text or "")
        b = json.loads((await grade(c, long, reference=None)).text or "")
        return a["criteria"]["accuracy"]["score"], b["criteria"]["accuracy"]["score"]

    s, lg = asyncio.run(run())
    assert s < lg == 4


def test_vertex_paths_and_auth(fake_gemini: FakeGemini) -> None:
    async def run() -> tuple[Any, Any]:
        c = vertex_client(fake_gemini)
        r = await grade(c, REFERENCE)
        n = await c.models.count_tokens(model=MODEL, contents="hello world, four words")
        return r, n

    r, n = asyncio.run(run())
    assert json.loads(r.text)["criteria"]["accuracy"]["score"] == 4
    assert n.total_tokens == 6  # 23 chars / 4, rounded up
    paths = [q["path"] for q in fake_gemini.requests()]
    base = "/v1beta1/projects/proj/locations/us-central1/publishers/google/models/gemini-3.8-flash"
    assert paths == [f"{base}:generateContent", f"{base}:countTokens"]
    # Vertex without a bearer token -> 401
    status, body, _ = post(f"{fake_gemini.url}{base}:generateContent", {"contents": []})
    assert status == 401 and body["error"]["status"] == "UNAUTHENTICATED"


def test_developer_count_tokens_and_auth(fake_gemini: FakeGemini) -> None:
    n = asyncio.run(dev_client(fake_gemini).models.count_tokens(model=MODEL, contents="abcdefgh"))
    assert n.total_tokens == 2
    url = f"{fake_gemini.url}/v1beta/models/{MODEL}:generateContent"
    status, body, _ = post(url, {"contents": []})
    assert status == 403 and body["error"]["status"] == "PERMISSION_DENIED"
    fake_gemini.configure(api_key="right")
    status, body, _ = post(url, {"contents": []}, {"x-goog-api-key": "wrong"})
    assert status == 400 and "API key not valid" in body["error"]["message"]


def test_unknown_path_and_unknown_model_are_google_404(fake_gemini: FakeGemini) -> None:
    status, body, _ = post(f"{fake_gemini.url}/v1beta/nothing/here", {})
    assert status == 404 and body["error"]["code"] == 404 and body["error"]["status"] == "NOT_FOUND"

    async def run() -> None:
        await dev_client(fake_gemini).models.generate_content(model="no-such-model", contents="x")

    with pytest.raises(errors.ClientError) as info:
        asyncio.run(run())
    assert info.value.code == 404 and "no-such-model" in (info.value.message or "")


@pytest.mark.parametrize("trigger", ["SAFETY", "RECITATION"])
def test_blocking_triggers(fake_gemini: FakeGemini, trigger: str) -> None:
    r = asyncio.run(grade(dev_client(fake_gemini), f"hello FAKE_GEMINI:{trigger}"))
    assert r.candidates and r.candidates[0].finish_reason == trigger
    assert r.candidates[0].content is None and r.text is None


def test_max_tokens_empty_and_invalid_json(fake_gemini: FakeGemini) -> None:
    async def run() -> list[Any]:
        c = dev_client(fake_gemini)
        return [await grade(c, f"x FAKE_GEMINI:{t}") for t in ("MAX_TOKENS", "EMPTY",
                                                               "INVALID_JSON", "INVALID_JSON")]

    mt, empty, inv1, inv2 = asyncio.run(run())
    assert mt.candidates and mt.candidates[0].finish_reason == "MAX_TOKENS"
    with pytest.raises(json.JSONDecodeError):
        json.loads(mt.text or "")
    assert not empty.candidates
    for r in (inv1, inv2):
        with pytest.raises(json.JSONDecodeError):
            json.loads(r.text or "")


def test_invalid_once_is_fixed_on_reask(fake_gemini: FakeGemini) -> None:
    text = f"{REFERENCE} FAKE_GEMINI:INVALID_ONCE"

    async def run() -> tuple[Any, Any]:
        c = dev_client(fake_gemini)
        first = await grade(c, text)
        again = await grade(c, text, history=[
            types.Content(role="model", parts=[types.Part(text=first.text)]),
            types.Content(role="user", parts=[types.Part(text="Fix the score.")]),
        ])
        return first, again

    first, again = asyncio.run(run())
    assert json.loads(first.text)["criteria"]["accuracy"]["score"] > 4
    assert json.loads(again.text)["criteria"]["accuracy"]["score"] == 4
    key = FakeGemini.submission_key(text)
    assert fake_gemini.stats()["billed_by_submission"][key] == 2


def test_rpm_quota_returns_429_with_retry_info() -> None:
    with FakeGemini(rpm=2, rpm_window_s=60.0) as fake:
        url = f"{fake.url}/v1beta/models/{MODEL}:generateContent"
        hdr = {"x-goog-api-key": "k"}
        body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
        assert post(url, body, hdr)[0] == 200
        assert post(url, body, hdr)[0] == 200
        status, err, headers = post(url, body, hdr)
        assert status == 429 and err["error"]["status"] == "RESOURCE_EXHAUSTED"
        info = [d for d in err["error"]["details"] if d["@type"].endswith("RetryInfo")]
        delay = float(info[0]["retryDelay"].rstrip("s"))
        assert 0 < delay <= 60.0 and int(headers["Retry-After"]) >= 1
        fake.advance(seconds=delay + 0.01)  # the fake's clock, not a wait
        assert post(url, body, hdr)[0] == 200
        assert fake.stats()["by_endpoint_status"]["generateContent"] == {"200": 3, "429": 1}


def test_seeded_faults_are_reproducible_and_respect_kinds() -> None:
    def run_once() -> list[int]:
        with FakeGemini(fail_rate=0.5, fault_kinds=["500", "503"], seed=7) as fake:
            url = f"{fake.url}/v1beta/models/{MODEL}:generateContent"
            return [post(url, {"contents": []}, {"x-goog-api-key": "k"})[0] for _ in range(20)]

    a, b = run_once(), run_once()
    assert a == b
    assert set(a) == {200, 500, 503}


def test_hang_does_not_block_other_requests() -> None:
    with FakeGemini(hang_s=120) as fake:
        fake.inject("hang")

        async def run() -> None:
            slow = dev_client(fake, timeout_ms=1500)
            fast = dev_client(fake)
            hung = asyncio.create_task(slow.models.generate_content(model=MODEL, contents="a"))
            await asyncio.to_thread(fake.wait_until, lambda s: s["in_flight"] == 1)
            await fast.models.generate_content(model=MODEL, contents="b")
            # answered while the server still held the hung call (it holds it for 120 s)
            assert fake.stats()["by_status"] == {"200": 1} and fake.stats()["in_flight"] == 1
            with pytest.raises(Exception) as info:
                await hung
            assert "Timeout" in type(info.value).__name__

        asyncio.run(run())
        assert fake.stats()["faults"] == {"hang": 1}


def test_abandoned_call_is_not_billed() -> None:
    with FakeGemini(latency_ms=600) as fake:
        async def run() -> None:
            with pytest.raises(Exception) as info:
                await grade(dev_client(fake, timeout_ms=200), REFERENCE)
            assert "Timeout" in type(info.value).__name__

        asyncio.run(run())
        stats = fake.wait_until(lambda s: s["in_flight"] == 0)
    assert stats["by_status"] == {"499": 1} and stats["billed_by_submission"] == {}


def test_latency_is_concurrent_not_serialised() -> None:
    with FakeGemini(latency_ms=300, jitter_ms=50, seed=1) as fake:
        async def run() -> None:
            c = dev_client(fake)
            await asyncio.gather(*(c.models.generate_content(model=MODEL, contents=f"s{i}")
                                   for i in range(64)))

        asyncio.run(run())
        stats = fake.stats()
    # held for their latency side by side, not one after another (serialised: 1 at a time)
    assert stats["by_status"] == {"200": 64} and stats["max_in_flight"] >= 32


def test_control_endpoints(fake_gemini: FakeGemini) -> None:
    status, cfg, _ = post(f"{fake_gemini.url}/_fake/config", {"rpm": 5, "fail_rate": 0.0})
    assert status == 200 and cfg["rpm"] == 5 and fake_gemini.config.rpm == 5
    status, err, _ = post(f"{fake_gemini.url}/_fake/config", {"nonsense": 1})
    assert status == 400 and "nonsense" in err["error"]["message"]
    asyncio.run(dev_client(fake_gemini).models.generate_content(model=MODEL, contents="x"))
    with urllib.request.urlopen(f"{fake_gemini.url}/_fake/stats") as r:
        stats = json.loads(r.read())
    assert stats["by_endpoint"] == {"generateContent": 1} and stats["tokens"]["total"] > 0
    assert post(f"{fake_gemini.url}/_fake/reset", {})[0] == 200
    after = fake_gemini.stats()
    assert after["requests"] == 0 and after["billed_by_submission"] == {}


def first_line(proc: subprocess.Popen[str]) -> str:
    """The first line the fake's CLI prints (its URL), read on a thread so a server that never
    prints cannot hang the test: "" after 15 s."""
    assert proc.stdout is not None
    out = proc.stdout
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(out.readline()))
    reader.start()
    reader.join(timeout=15)
    return line[0].strip() if line else ""


def test_cli_prints_url_and_serves() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "grader.testing.fake_gemini", "--port", "0",
                             "--latency-ms", "10"], stdout=subprocess.PIPE, text=True)
    try:
        url = first_line(proc)
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(f"{url}/_fake/stats", timeout=5) as r:
            assert json.loads(r.read())["requests"] == 0
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_cli_accepts_every_fault_kind_it_lists_and_never_expire_cache() -> None:
    """--fault-kinds lists what --fail-rate may draw, and the server starts with all of them;
    expire_cache acts only where a test scripts it (NOT_RANDOM), so it is not listed and is
    refused by the option itself, with the choices (exit 2, no traceback)."""
    from grader.testing._fake_state import RANDOM_FAULTS

    cmd = [sys.executable, "-m", "grader.testing.fake_gemini", "--port", "0"]
    shown = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=30)
    listed = ",".join(RANDOM_FAULTS)
    assert listed in "".join(shown.stdout.split()) and "expire_cache" not in shown.stdout
    refused = subprocess.run([*cmd, "--fault-kinds", "expire_cache"], capture_output=True,
                             text=True, timeout=30)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert "expire_cache is scripted only" in refused.stderr and listed in refused.stderr
    proc = subprocess.Popen([*cmd, "--fail-rate", "0.5", "--fault-kinds", listed],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = first_line(proc)
        assert url.startswith("http://127.0.0.1:"), proc.stderr
        status, cfg, _ = post(f"{url}/_fake/config", {})
        assert status == 200 and cfg["fault_kinds"] == list(RANDOM_FAULTS)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# --- embeddings (exemplar similarity) ----------------------------------------------------------

EMBED = "gemini-embedding-001"
TEXTS = ["Manchester encoding is self-clocking.", "Manchester encoding clocks itself.",
         "Photosynthesis needs light."]


def _cosines(resp: types.EmbedContentResponse) -> list[list[float]]:
    vs = [e.values or [] for e in resp.embeddings or []]
    return [[round(sum(a * b for a, b in zip(x, y, strict=True)), 6) for y in vs] for x in vs]


@pytest.mark.parametrize("vertex", [False, True])
def test_embeddings_through_the_sdk(fake_gemini: FakeGemini, vertex: bool) -> None:
    """Many texts in one batchEmbedContents call, as the SDK sends and parses it: one vector
    per text, the same text the same vector, similar texts closer than unrelated ones."""
    c = vertex_client(fake_gemini) if vertex else dev_client(fake_gemini)
    contents = [types.Content(role="user", parts=[types.Part(text=t)]) for t in TEXTS]
    cfg = types.EmbedContentConfig(task_type="SEMANTIC_SIMILARITY", output_dimensionality=64)
    first = asyncio.run(c.models.embed_content(model=EMBED, contents=contents, config=cfg))
    again = asyncio.run(c.models.embed_content(model=EMBED, contents=contents, config=cfg))
    assert [len(e.values or []) for e in first.embeddings or []] == [64, 64, 64]
    assert first.embeddings == again.embeddings
    cos = _cosines(first)
    assert cos[0][1] > cos[0][2] and cos[0][1] > cos[1][2]
    (req,) = fake_gemini.requests()[-1:]
    assert req["endpoint"] == "batchEmbedContents" and req["vertex"] is vertex
    assert [r["content"]["parts"][0]["text"] for r in req["body"]["requests"]] == TEXTS
    one = asyncio.run(c.models.embed_content(model=EMBED, contents=TEXTS[0], config=cfg))
    assert one.embeddings and one.embeddings[0].values == (first.embeddings or [])[0].values


def test_embeddings_refused_like_the_api(fake_gemini: FakeGemini) -> None:
    c = dev_client(fake_gemini)
    many = [types.Content(role="user", parts=[types.Part(text=f"t{i}")]) for i in range(101)]
    with pytest.raises(errors.ClientError) as e:
        asyncio.run(c.models.embed_content(model=EMBED, contents=many))
    assert e.value.code == 400
    with pytest.raises(errors.ClientError) as e:
        asyncio.run(c.models.embed_content(model=MODEL, contents="x"))
    assert e.value.code == 404
    base = f"{fake_gemini.url}/v1beta/models/{EMBED}:batchEmbedContents"
    status, _, _ = post(base, {"requests": [{"model": f"models/{EMBED}",
                                             "content": {"parts": [{"text": "x"}]}}]})
    assert status in (400, 401, 403)  # no key
