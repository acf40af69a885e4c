"""The fake speaks Gemini 4 (issue 25): every rule comes from the model table's row of the model
asked, exercised with raw HTTP and the real google-genai SDK. What a Gemini 4 row refuses (400
INVALID_ARGUMENT) while a 3.x row accepts the same request; implicit caching of a repeated
prompt prefix, billed at the cached price; continuation segments; models.list and models.get."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from google import genai
from google.genai import errors, types
from google.oauth2.credentials import Credentials

from grader.testing import FakeGemini
from grader.testing._fake_content import estimate_tokens

G4 = "gemini-4-hydrogen"
G3 = "gemini-3.8-flash"
GEMINI_4 = ("gemini-4-argon", "gemini-4-hydrogen", "gemini-4-neon", "gemini-4-carbon")
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"score": {"type": "number", "minimum": 0, "maximum": 4},
                   "justification": {"type": "string"}, "feedback": {"type": "string"}},
    "required": ["score", "justification", "feedback"],
}
# Long enough (in the fake's ~4 characters a token) to reach Gemini 4's 4,096-token minimum.
RUBRIC = "Grade with the rubric. " + "Criterion: explain photosynthesis clearly. " * 420


def call(fake: FakeGemini, path: str, payload: dict[str, Any] | None = None, *,
         method: str = "POST", vertex: bool = False) -> tuple[int, Any]:
    auth = {"Authorization": "Bearer t"} if vertex else {"x-goog-api-key": "k"}
    data = json.dumps(payload).encode() if payload is not None else None
    req = urllib.request.Request(f"{fake.url}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json", **auth})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def generate(fake: FakeGemini, model: str, payload: dict[str, Any]) -> tuple[int, Any]:
    return call(fake, f"/v1beta/models/{model}:generateContent", payload)


def body(gen: dict[str, Any] | None = None, *, student: str = "Plants use light.",
         prefix: str = "Grade with the rubric.", **extra: Any) -> dict[str, Any]:
    parts = [{"text": prefix}, {"text": f"<submission>\n{student}\n</submission>"}]
    return {"systemInstruction": {"parts": [{"text": "You are a grader."}]},
            "contents": [{"role": "user", "parts": parts}],
            "generationConfig": {"responseMimeType": "application/json",
                                 "responseJsonSchema": SCHEMA, **(gen or {})}, **extra}


def client(fake: FakeGemini) -> genai.Client:
    return genai.Client(api_key="k", http_options=types.HttpOptions(
        base_url=fake.url, api_version="v1beta"))


def vertex(fake: FakeGemini) -> genai.Client:
    return genai.Client(vertexai=True, project="proj", location="us-central1",
                        credentials=Credentials(token="t"),
                        http_options=types.HttpOptions(base_url=fake.url, api_version="v1beta1"))


# --- what a Gemini 4 row refuses ----------------------------------------------------------------

REFUSED = [
    ({"thinkingConfig": {"thinkingBudget": 100}}, "thinking_budget is not supported"),
    ({"thinkingConfig": {"thinkingLevel": "MINIMAL"}},
     "'minimal' is not a supported thinking level for this model. Allowed values are: high, "
     "low, medium, xhigh."),
    ({"frequencyPenalty": 0.5}, "frequency_penalty is not supported for models/gemini-4-hydrogen"),
    ({"presence_penalty": 0.5}, "presence_penalty is not supported for models/gemini-4-hydrogen"),
    ({"candidateCount": 2}, "Multiple candidates is not enabled for models/gemini-4-hydrogen"),
]


@pytest.mark.parametrize(("gen", "message"), REFUSED)
def test_gemini_4_refuses_what_its_row_forbids_and_3x_accepts_it(
        fake_gemini: FakeGemini, gen: dict[str, Any], message: str) -> None:
    status, reply = generate(fake_gemini, G4, body(gen))
    assert status == 400 and reply["error"]["status"] == "INVALID_ARGUMENT"
    assert reply["error"]["code"] == 400 and message in reply["error"]["message"]
    older = "gemini-3.5-flash-lite" if "MINIMAL" in json.dumps(gen) else G3  # 3.8 has no minimal
    assert generate(fake_gemini, older, body(gen))[0] == 200
    billed = fake_gemini.stats()["billed_by_request"]
    assert sum(billed.values()) == 1  # only the accepted call was billed


def test_the_refusals_follow_the_row_not_the_name(fake_gemini: FakeGemini) -> None:
    """Every Gemini 4 row refuses a budget; xhigh is a Gemini 4 level only; a refusal names
    the levels the model accepts, its default first."""
    for model in GEMINI_4:
        status, _ = generate(fake_gemini, model, body({"thinkingConfig": {"thinkingBudget": 8}}))
        assert status == 400, model
    assert generate(fake_gemini, G4, body({"thinkingConfig": {"thinkingLevel": "XHIGH"}}))[0] == 200
    status, reply = generate(fake_gemini, G3, body({"thinkingConfig": {"thinkingLevel": "XHIGH"}}))
    assert status == 400 and reply["error"]["message"] == (
        "'xhigh' is not a supported thinking level for this model. Allowed values are: medium, "
        "low, high.")


def test_through_the_sdk_a_thinking_budget_on_gemini_4_is_a_client_error(
        fake_gemini: FakeGemini) -> None:
    c = client(fake_gemini)
    cfg = types.GenerateContentConfig(thinking_config=types.ThinkingConfig(thinking_budget=100))
    with pytest.raises(errors.ClientError) as info:
        c.models.generate_content(model=G4, contents="hello", config=cfg)
    assert info.value.code == 400 and info.value.status == "INVALID_ARGUMENT"
    assert "thinking_budget" in (info.value.message or "")
    assert c.models.generate_content(model=G3, contents="hello", config=cfg).text


@pytest.mark.parametrize("cfg", [
    types.GenerateContentConfig(frequency_penalty=0.2),
    types.GenerateContentConfig(presence_penalty=0.2),
    types.GenerateContentConfig(candidate_count=2),
    types.GenerateContentConfig(thinking_config=types.ThinkingConfig(
        thinking_level=types.ThinkingLevel.MINIMAL)),
])
def test_through_the_sdk_penalties_candidates_and_minimal_are_refused(
        fake_gemini: FakeGemini, cfg: types.GenerateContentConfig) -> None:
    c = client(fake_gemini)  # held: a client that is garbage collected closes its connection
    with pytest.raises(errors.ClientError) as info:
        c.models.generate_content(model="gemini-4-neon", contents="hi", config=cfg)
    assert info.value.code == 400


def test_no_explicit_cache_on_gemini_4(fake_gemini: FakeGemini) -> None:
    """cachedContents.create is refused for a row without `explicit_cache`, and so is a
    generateContent naming a cache; 3.8 Flash still creates and uses one."""
    c = client(fake_gemini)
    big = types.CreateCachedContentConfig(contents=[types.Content(
        role="user", parts=[types.Part(text=RUBRIC)])], system_instruction="You are a grader.")
    with pytest.raises(errors.ClientError) as info:
        c.caches.create(model=G4, config=big)
    assert info.value.code == 400 and info.value.message == (
        "Explicit context caching is not supported for model gemini-4-hydrogen. Implicit "
        "caching applies automatically to repeated prompt prefixes.")
    cache = c.caches.create(model=G3, config=big)
    assert cache.name and fake_gemini.stats()["caches"]["created"] == 1
    named = {"contents": [{"role": "user", "parts": [{"text": "x"}]}],
             "cachedContent": cache.name}
    status, reply = generate(fake_gemini, G4, named)
    assert status == 400 and "Explicit context caching is not supported for model " \
        "gemini-4-hydrogen" in reply["error"]["message"]
    status, reply = generate(fake_gemini, G3, named)
    assert status == 200 and reply["usageMetadata"]["cachedContentTokenCount"] > 4096


def test_count_tokens_applies_the_same_checks(fake_gemini: FakeGemini) -> None:
    """Vertex countTokens carries a generation config; the Developer API's carries one inside
    `generateContentRequest`: both are refused where generateContent would be."""
    cfg = types.CountTokensConfig(generation_config=types.GenerationConfig(
        thinking_config=types.ThinkingConfig(thinking_budget=64)))
    v = vertex(fake_gemini)
    with pytest.raises(errors.ClientError) as info:
        v.models.count_tokens(model=G4, contents="hello there", config=cfg)
    assert info.value.code == 400 and "thinking_budget" in (info.value.message or "")
    assert v.models.count_tokens(model=G3, contents="hello there", config=cfg).total_tokens == 3
    inner = {"generateContentRequest": {
        "model": f"models/{G4}", "contents": [{"role": "user", "parts": [{"text": "abcdefgh"}]}],
        "generationConfig": {"presencePenalty": 1.0}}}
    status, reply = call(fake_gemini, f"/v1beta/models/{G4}:countTokens", inner)
    assert status == 400 and "presence_penalty" in reply["error"]["message"]
    status, reply = call(fake_gemini, f"/v1beta/models/{G3}:countTokens", inner)
    assert status == 200 and reply["totalTokens"] == 2


def test_batch_lines_go_through_the_same_checks(fake_gemini: FakeGemini) -> None:
    c = client(fake_gemini)
    refused = types.InlinedRequest(contents="hello", config=types.GenerateContentConfig(
        thinking_config=types.ThinkingConfig(thinking_budget=10)))
    fine = types.InlinedRequest(contents="hello", config=types.GenerateContentConfig(
        thinking_config=types.ThinkingConfig(thinking_level=types.ThinkingLevel.XHIGH)))
    job = c.batches.create(model=G4, src=[refused, fine])
    done = c.batches.get(name=job.name or "")
    assert done.dest is not None and done.dest.inlined_responses is not None
    bad, good = done.dest.inlined_responses
    assert bad.error is not None and bad.error.code == 400
    assert "thinking_budget" in (bad.error.message or "") and good.response is not None


# --- implicit caching ---------------------------------------------------------------------------

@pytest.mark.today("2026-12-06")
def test_a_repeated_long_prefix_hits_the_implicit_cache_and_is_billed_cached(
        fake_gemini: FakeGemini) -> None:
    first = generate(fake_gemini, G4, body(prefix=RUBRIC, student="Plants use light."))[1]
    spent = fake_gemini.stats()["spend_usd"]
    second = generate(fake_gemini, G4, body(prefix=RUBRIC, student="Chloroplasts hold it."))[1]
    assert "cachedContentTokenCount" not in first["usageMetadata"]
    usage = second["usageMetadata"]
    shared = estimate_tokens(len("You are a grader.") + len(RUBRIC))
    assert shared >= 4096 and usage["cachedContentTokenCount"] == shared
    assert usage["promptTokenCount"] > shared  # the prompt still counts the cached tokens
    # Hydrogen: $1.50 input, $0.075 cached input, $7.50 output (thinking included) per 1M
    fresh = usage["promptTokenCount"] - shared
    expected = (fresh * 1.50 + shared * 0.075
                + (usage["candidatesTokenCount"] + usage["thoughtsTokenCount"]) * 7.50) / 1e6
    stats = fake_gemini.stats()
    assert stats["spend_usd"] - spent == pytest.approx(expected)
    assert stats["implicit_cache_hits"] == 1 and stats["implicit_cached_tokens"] == shared
    assert stats["tokens"]["cached"] == shared


def test_no_implicit_hit_below_the_minimum_on_another_prefix_or_on_3x(
        fake_gemini: FakeGemini) -> None:
    for student in ("one", "two"):  # a short shared prefix
        reply = generate(fake_gemini, G4, body(student=student))[1]
        assert "cachedContentTokenCount" not in reply["usageMetadata"]
    for model in (G3, G3):  # 3.8 Flash has no implicit cache in the table
        reply = generate(fake_gemini, model, body(prefix=RUBRIC))[1]
        assert "cachedContentTokenCount" not in reply["usageMetadata"]
    generate(fake_gemini, G4, body(prefix=RUBRIC))
    other = body(prefix=RUBRIC)
    other["systemInstruction"] = {"parts": [{"text": "You are a strict grader."}]}
    reply = generate(fake_gemini, G4, other)[1]  # the first unit differs: nothing shared
    assert "cachedContentTokenCount" not in reply["usageMetadata"]
    other_model = generate(fake_gemini, "gemini-4-neon", body(prefix=RUBRIC))[1]
    assert "cachedContentTokenCount" not in other_model["usageMetadata"]  # per model
    assert fake_gemini.stats()["implicit_cache_hits"] == 0


# --- continuation -------------------------------------------------------------------------------

def test_continuation_reply_and_the_segment_its_token_asks_for(fake_gemini: FakeGemini) -> None:
    request = body(student="Plants use light. FAKE_GEMINI:CONTINUE")
    status, first = generate(fake_gemini, G4, request)
    (cand,) = first["candidates"]
    assert status == 200 and cand["finishReason"] == "CONTINUATION"
    token = cand["continuationToken"]
    assert isinstance(token, str) and token
    head = cand["content"]["parts"][0]["text"]
    with pytest.raises(json.JSONDecodeError):
        json.loads(head)
    status, second = generate(fake_gemini, G4, {**request, "continuationToken": token})
    (tail,) = second["candidates"]
    assert status == 200 and tail["finishReason"] == "STOP" and "continuationToken" not in tail
    answer = json.loads(head + tail["content"]["parts"][0]["text"])
    assert set(answer) == {"score", "justification", "feedback"}
    assert second["usageMetadata"]["candidatesTokenCount"] > 0  # a billed segment
    stats = fake_gemini.stats()
    assert stats["continuations_offered"] == 1 and stats["continuations_requested"] == 1
    assert sum(stats["billed_by_submission"].values()) == 2
    assert generate(fake_gemini, G4, {**request, "continuationToken": "bm9wZQ=="})[0] == 400
    status, reply = generate(fake_gemini, G3, {**request, "continuationToken": token})
    assert status == 400 and "continuation_token" in reply["error"]["message"]


def test_the_sdk_follows_continuation_unless_told_not_to(fake_gemini: FakeGemini) -> None:
    c = client(fake_gemini)
    text = "Plants use light. FAKE_GEMINI:CONTINUE"
    cfg = types.GenerateContentConfig(response_mime_type="application/json",
                                      response_json_schema=SCHEMA)
    merged = c.models.generate_content(model=G4, contents=text, config=cfg)
    assert set(json.loads(merged.text or "")) == {"score", "justification", "feedback"}
    assert fake_gemini.stats()["by_endpoint"]["generateContent"] == 2
    once = c.models.generate_content(model="gemini-4-neon", contents=text, config=cfg.model_copy(
        update={"automatic_continuation": False}))
    assert once.candidates and once.candidates[0].finish_reason == types.FinishReason.CONTINUATION
    assert once.candidates[0].continuation_token
    assert fake_gemini.stats()["continuations_requested"] == 1


def test_without_continuation_in_the_row_the_trigger_stops_at_max_tokens(
        fake_gemini: FakeGemini) -> None:
    for model in (G3, "gemini-4-argon"):
        reply = generate(fake_gemini, model, body(student="x FAKE_GEMINI:CONTINUE"))[1]
        (cand,) = reply["candidates"]
        assert cand["finishReason"] == "MAX_TOKENS" and "continuationToken" not in cand
    assert fake_gemini.stats()["continuations_offered"] == 0


# --- models.list and models.get -----------------------------------------------------------------

@pytest.mark.today("2026-12-06")
def test_models_list_through_the_sdk_shows_the_table_plus_extra_minus_hidden() -> None:
    with FakeGemini(listed_extra=["gemini-5-helium"], listed_hidden=["gemini-3.6-flash"]) as fake:
        c, v = client(fake), vertex(fake)
        models = {m.name: m for m in c.models.list()}
        for mid in GEMINI_4:
            assert f"models/{mid}" in models
        assert "models/gemini-5-helium" in models and "models/gemini-3.6-flash" not in models
        assert "models/gemini-2.5-flash" not in models  # shut down on 2026-12-01
        h = models[f"models/{G4}"]
        assert h.display_name == "Gemini 4 Hydrogen" and h.thinking is True
        assert h.input_token_limit == 1048576 and h.output_token_limit == 65536
        assert h.supported_actions and "createCachedContent" not in h.supported_actions
        assert {"generateContent", "countTokens"} <= set(h.supported_actions)
        flash = models[f"models/{G3}"]
        assert flash.supported_actions and "createCachedContent" in flash.supported_actions
        assert models["models/gemini-5-helium"].supported_actions == [
            "generateContent", "countTokens"]
        # Vertex: publisher models of the enterprise rows (Carbon has none)
        names = {m.name for m in v.models.list()}
        assert f"publishers/google/models/{G4}" in names
        assert "publishers/google/models/gemini-4-carbon" not in names
        assert "publishers/google/models/gemini-5-helium" in names


@pytest.mark.today("2026-11-20")
def test_a_model_is_listed_until_its_shutdown_and_hidden_can_be_configured(
        fake_gemini: FakeGemini) -> None:
    c = client(fake_gemini)
    names = [m.name for m in c.models.list()]
    assert "models/gemini-2.5-flash" in names  # shut down on 2026-12-01, not yet
    fake_gemini.configure(listed_hidden=["gemini-2.5-flash"], listed_extra=["gemini-5-helium"])
    names = [m.name for m in c.models.list()]
    assert "models/gemini-2.5-flash" not in names and names[-1] == "models/gemini-5-helium"


@pytest.mark.today("2026-12-06")
def test_models_list_pages(fake_gemini: FakeGemini) -> None:
    c = client(fake_gemini)
    everything = [m.name for m in c.models.list()]
    paged = [m.name for m in c.models.list(config={"page_size": 3})]
    assert paged == everything and len(everything) > 3
    status, page = call(fake_gemini, "/v1beta/models?pageSize=3", method="GET")
    assert status == 200 and len(page["models"]) == 3 and page["nextPageToken"] == "3"
    status, last = call(fake_gemini, f"/v1beta/models?pageSize=3&pageToken={len(everything) - 1}",
                        method="GET")
    assert len(last["models"]) == 1 and "nextPageToken" not in last
    status, vpage = call(fake_gemini, "/v1beta1/publishers/google/models?pageSize=2",
                         method="GET", vertex=True)
    assert status == 200 and len(vpage["publisherModels"]) == 2 and vpage["nextPageToken"] == "2"


@pytest.mark.today("2026-12-06")
def test_models_get_and_its_404() -> None:
    with FakeGemini(listed_hidden=["gemini-3.6-flash"]) as fake:
        c, v = client(fake), vertex(fake)
        got = c.models.get(model=G4)
        assert got.name == f"models/{G4}" and got.output_token_limit == 65536
        assert v.models.get(model=G4).name == f"publishers/google/models/{G4}"
        for model in ("gemini-9-nothing", "gemini-3.6-flash"):
            for sdk in (c, v):
                with pytest.raises(errors.ClientError) as info:
                    sdk.models.get(model=model)
                assert info.value.code == 404 and info.value.status == "NOT_FOUND"
                assert model in (info.value.message or "")
        status, _ = call(fake, f"/v1beta/models/{G4}", method="GET", vertex=True)  # no key
        assert status == 403


def test_listed_settings_must_be_lists(fake_gemini: FakeGemini) -> None:
    with pytest.raises(ValueError, match="list of model ids"):
        fake_gemini.configure(listed_extra="gemini-5-helium")
