"""The fake server knows today's rules (read from grader's model table), exercised with raw HTTP
and the real SDK: what the API refuses, ignores and reports, and its two kinds of 429."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from google import genai
from google.genai import types
from pydantic import SecretStr

from grader.backends.gemini import GeminiBackend
from grader.config.settings import Settings
from grader.errors import BackendError
from grader.prompting.request import GradeRequest, Part
from grader.testing import FakeGemini


def post(fake: FakeGemini, model: str, body: dict[str, Any]) -> tuple[int, Any, Any]:
    req = urllib.request.Request(
        f"{fake.url}/v1beta/models/{model}:generateContent", data=json.dumps(body).encode(),
        method="POST", headers={"Content-Type": "application/json", "x-goog-api-key": "k"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read()), r.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers


def body(thinking: dict[str, Any] | None = None, *, turns: tuple[str, ...] = ("user",),
         **extra: Any) -> dict[str, Any]:
    gen: dict[str, Any] = {"maxOutputTokens": 4096}
    if thinking is not None:
        gen["thinkingConfig"] = thinking
    gen.update(extra.pop("gen", {}))
    contents = [{"role": role, "parts": [{"text": f"{role} says hi"}]} for role in turns]
    return {"contents": contents, "generationConfig": gen, **extra}


def test_minimal_on_a_model_that_forbids_it_gets_googles_400(fake_gemini: FakeGemini) -> None:
    status, reply, _ = post(fake_gemini, "gemini-3.8-flash", body({"thinkingLevel": "MINIMAL"}))
    assert status == 400 and reply["error"]["status"] == "INVALID_ARGUMENT"
    assert reply["error"]["message"] == ("'minimal' is not a supported thinking level for this "
                                         "model. Allowed values are: medium, low, high.")
    assert post(fake_gemini, "gemini-3.5-flash-lite",
                body({"thinking_level": "MINIMAL"}))[0] == 200


def test_level_and_budget_together_are_refused(fake_gemini: FakeGemini) -> None:
    status, reply, _ = post(fake_gemini, "gemini-3.6-flash",
                            body({"thinkingLevel": "LOW", "thinkingBudget": 128}))
    assert status == 400 and "thinking_budget" in reply["error"]["message"]
    assert post(fake_gemini, "gemini-3.6-flash", body({"thinkingBudget": 128}))[0] == 200


def test_a_conversation_ending_with_a_model_turn_is_refused_on_new_models(
        fake_gemini: FakeGemini) -> None:
    prefill = ("user", "model")
    status, reply, _ = post(fake_gemini, "gemini-3.8-flash", body(turns=prefill))
    assert status == 400 and "model turn" in reply["error"]["message"]
    assert post(fake_gemini, "gemini-3.1-flash-lite", body(turns=prefill))[0] == 200  # older
    assert post(fake_gemini, "gemini-3.8-flash", body(turns=("user", "model", "user")))[0] == 200


def test_sampling_is_ignored_where_the_model_ignores_it(fake_gemini: FakeGemini) -> None:
    sampled = {"gen": {"temperature": 0.1, "topP": 0.5}}
    assert post(fake_gemini, "gemini-3.8-flash", body(**sampled))[0] == 200
    assert post(fake_gemini, "gemini-3.1-flash-lite", body(**sampled))[0] == 200
    new, old = fake_gemini.requests()[-2:]
    assert new["ignored"] == ["temperature", "topP"] and old["ignored"] == []


def test_store_and_service_tier_are_accepted_and_checked(fake_gemini: FakeGemini) -> None:
    status, _, headers = post(fake_gemini, "gemini-3.8-flash",
                              body(store=False, serviceTier="flex"))
    assert status == 200 and headers["x-gemini-service-tier"] == "flex"
    assert post(fake_gemini, "gemini-3.8-flash", body(store="no"))[0] == 400
    assert post(fake_gemini, "gemini-3.8-flash", body(serviceTier="cheapest"))[0] == 400


def test_a_deprecated_id_answers_as_its_successor_with_a_deprecated_status(
        fake_gemini: FakeGemini) -> None:
    async def go() -> tuple[types.GenerateContentResponse, types.GenerateContentResponse]:
        client = genai.Client(api_key="k", http_options=types.HttpOptions(
            base_url=fake_gemini.url, api_version="v1beta")).aio
        return (await client.models.generate_content(model="gemini-3.5-flash", contents="hi"),
                await client.models.generate_content(model="gemini-3.8-flash", contents="hi"))

    old, new = asyncio.run(go())
    assert old.model_version == "gemini-3.6-flash"
    assert old.model_status is not None
    assert old.model_status.model_stage == types.ModelStage.DEPRECATED
    assert "gemini-3.8-flash" in (old.model_status.message or "")
    assert new.model_version == "gemini-3.8-flash"
    assert new.model_status is not None and new.model_status.model_stage == types.ModelStage.STABLE


def test_thinking_is_billed_per_level_from_the_table(fake_gemini: FakeGemini) -> None:
    _, low, _ = post(fake_gemini, "gemini-3.8-flash", body({"thinkingLevel": "LOW"}))
    _, default, _ = post(fake_gemini, "gemini-3.8-flash", body())  # the API default: medium
    _, legacy, _ = post(fake_gemini, "gemini-2.5-flash", body())
    assert low["usageMetadata"]["thoughtsTokenCount"] == 600
    assert default["usageMetadata"]["thoughtsTokenCount"] == 1500
    assert legacy["usageMetadata"]["thoughtsTokenCount"] == 0


def test_get_requests_returns_the_last_n_bodies(fake_gemini: FakeGemini) -> None:
    for i in range(3):
        post(fake_gemini, "gemini-3.8-flash", body(gen={"maxOutputTokens": 100 + i}))
    with urllib.request.urlopen(f"{fake_gemini.url}/_fake/requests?n=2", timeout=5) as r:
        last = json.loads(r.read())
    assert [x["body"]["generationConfig"]["maxOutputTokens"] for x in last] == [101, 102]


def make_request() -> GradeRequest:
    return GradeRequest(key="k", model="gemini-3.8-flash", system="s", static_prefix="p",
                        student_parts=(Part(text="<submission>\nhi\n</submission>"),),
                        response_schema={"type": "object"})


@pytest.mark.parametrize(("fault", "says", "not_says"), [
    ("429_spend", "spend-based rate limit", "requests or tokens per minute"),
    ("429", "requests or tokens per minute", "spend-based"),
])
def test_a_spend_limit_429_is_told_apart_from_a_quota_429(
        fake_gemini: FakeGemini, fault: str, says: str, not_says: str) -> None:
    fake_gemini.inject(fault)
    backend = GeminiBackend(Settings(api_key=SecretStr("k"), base_url=fake_gemini.url,
                                     max_retries=0))

    async def go() -> None:
        try:
            await backend.generate(make_request())
        finally:
            await backend.aclose()

    with pytest.raises(BackendError) as err:
        asyncio.run(go())
    assert err.value.status == 429 and err.value.transient
    assert says in str(err.value) and not_says not in str(err.value)
    if fault == "429_spend":
        assert "spend_per_10min" in str(err.value)


def test_the_fake_enforces_a_spend_limit_over_its_window(fake_gemini: FakeGemini) -> None:
    fake_gemini.configure(spend_limit_usd=1e-9)
    assert post(fake_gemini, "gemini-3.8-flash", body())[0] == 200  # under the limit: admitted
    status, reply, headers = post(fake_gemini, "gemini-3.8-flash", body())
    assert status == 429 and reply["error"]["status"] == "RESOURCE_EXHAUSTED"
    violation = reply["error"]["details"][0]["violations"][0]
    assert "spend" in violation["quotaId"].lower() and int(headers["Retry-After"]) >= 1
    assert fake_gemini.stats()["spend_usd"] > 0
