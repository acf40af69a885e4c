"""The fake counts like the provider: input tokens per minute as a quota window beside requests
per minute and spend (429 with QuotaFailure and RetryInfo, a refused call counted nowhere), and
request bodies read in both proto3 JSON spellings, camelCase and snake_case, with free-form data
(JSON schemas, batch metadata) left as sent. Raw HTTP, so the test decides every byte; windows
move with `advance()`, never with the wall clock."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from grader.testing import FakeGemini

MODEL = "gemini-3.8-flash"
KEY = {"x-goog-api-key": "test-key"}
TPM_METRIC = "generativelanguage.googleapis.com/generate_content_paid_tier_input_token_count"
# A JSON schema whose property names are user data: snake_case that must reach the model as is.
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"my_field": {"type": "string"},
                   "score_value": {"type": "number", "minimum": 0, "maximum": 4}},
    "required": ["my_field", "score_value"],
}
SUBMISSION = ("<reference_answer>Light becomes chemical energy.</reference_answer>\n"
              "<submission>Light energy becomes chemical energy.</submission>")


def call(fake: FakeGemini, path: str, body: Any = None, headers: dict[str, str] | None = None,
         method: str = "POST") -> tuple[int, Any, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(fake.url + path, data=data, method=method,
                                 headers={"Content-Type": "application/json", **KEY,
                                          **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read()), r.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers


def generate(fake: FakeGemini, body: dict[str, Any], model: str = MODEL) -> tuple[int, Any, Any]:
    return call(fake, f"/v1beta/models/{model}:generateContent", body)


def of_tokens(n: int) -> dict[str, Any]:
    """A body the fake counts as `n` input tokens (its estimate: 4 characters a token)."""
    return {"contents": [{"role": "user", "parts": [{"text": "x" * (4 * n)}]}]}


def detail(err: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(d for d in err["error"]["details"] if d["@type"].endswith(kind))


def delay_s(err: dict[str, Any]) -> float:
    return float(detail(err, "RetryInfo")["retryDelay"].rstrip("s"))


# --- tokens per minute ----------------------------------------------------------------------------

def test_tpm_window_refuses_a_call_that_would_go_over_until_enough_tokens_leave() -> None:
    with FakeGemini(tpm=250, rpm=1000) as fake:
        status, reply, _ = generate(fake, of_tokens(10))
        assert status == 200 and reply["usageMetadata"]["promptTokenCount"] == 10
        fake.advance(seconds=55)  # the first call leaves the window in 5 s
        assert generate(fake, of_tokens(200))[0] == 200  # 210 of 250
        status, err, headers = generate(fake, of_tokens(100))  # 310 > 250
        assert status == 429 and err["error"]["status"] == "RESOURCE_EXHAUSTED"
        violation = detail(err, "QuotaFailure")["violations"][0]
        assert violation["quotaMetric"] == TPM_METRIC
        assert violation["quotaId"] == "GenerateContentPaidTierInputTokensPerModelPerMinute"
        assert violation["quotaValue"] == "250"
        assert violation["quotaDimensions"] == {"location": "global", "model": MODEL}
        # the first call leaving is not enough (200 + 100 > 250): the wait is until the 200 leave
        delay = delay_s(err)
        assert 30 < delay <= 60 and int(headers["Retry-After"]) >= 30
        # the refused call was not counted: 40 more tokens still fit (10 + 200 + 40 = 250)
        assert generate(fake, of_tokens(40))[0] == 200
        fake.advance(seconds=delay + 0.01)
        assert generate(fake, of_tokens(100))[0] == 200  # 40 + 100
        stats = fake.stats()
        assert stats["rejected"] == {"rpm": 0, "tpm": 1, "spend": 0}
        assert stats["tpm_peak"] == 250 and stats["tpm_peak"] <= fake.config.tpm
        assert stats["by_endpoint_status"]["generateContent"] == {"200": 4, "429": 1}


def test_a_call_larger_than_the_whole_tpm_limit_is_429_not_400() -> None:
    with FakeGemini(tpm=100) as fake:
        status, err, _ = generate(fake, of_tokens(101))
        assert status == 429 and err["error"]["status"] == "RESOURCE_EXHAUSTED"
        violation = detail(err, "QuotaFailure")["violations"][0]
        assert violation["quotaMetric"] == TPM_METRIC and violation["quotaValue"] == "100"
        assert delay_s(err) == 60  # it never fits: wait a whole window
        assert generate(fake, of_tokens(100))[0] == 200  # the refused one took no room
        assert fake.stats()["rejected"]["tpm"] == 1 and fake.stats()["tpm_peak"] == 100


def test_concurrent_calls_never_go_over_the_tpm_limit_together() -> None:
    with FakeGemini(tpm=1000) as fake, ThreadPoolExecutor(max_workers=8) as pool:
        statuses = sorted(pool.map(lambda _: generate(fake, of_tokens(100))[0], range(20)))
        assert statuses == [200] * 10 + [429] * 10
        stats = fake.stats()
        assert stats["tpm_peak"] == 1000 and stats["rejected"]["tpm"] == 10


def test_each_window_counts_its_own_429s_and_names_its_quota() -> None:
    with FakeGemini(rpm=1, tpm=1000) as fake:
        assert generate(fake, of_tokens(10))[0] == 200
        status, err, _ = generate(fake, of_tokens(10))
        violation = detail(err, "QuotaFailure")["violations"][0]
        assert status == 429 and violation["quotaId"].startswith("GenerateRequestsPerMinute")
        assert violation["quotaValue"] == "1" and violation["quotaDimensions"]["model"] == MODEL
        stats = fake.stats()
        assert stats["rejected"] == {"rpm": 1, "tpm": 0, "spend": 0}
        assert stats["rpm_peak"] == 1 and stats["tpm_peak"] == 10


def test_configure_and_cli_take_tpm(capsys: pytest.CaptureFixture[str]) -> None:
    with FakeGemini() as fake:
        fake.configure(tpm=5)
        assert fake.config.tpm == 5 and generate(fake, of_tokens(6))[0] == 429
        fake.configure(tpm=None)
        assert generate(fake, of_tokens(6))[0] == 200
        with pytest.raises(ValueError, match="tpm"):
            fake.configure(tpm=0)
    from grader.testing.fake_gemini import main

    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--tpm" in capsys.readouterr().out


# --- both JSON spellings -----------------------------------------------------------------------

def test_snake_case_generation_config_and_system_instruction_are_read() -> None:
    system = "You are a grader."
    body = {"system_instruction": {"parts": [{"text": system}]},
            "contents": [{"role": "user", "parts": [{"text": SUBMISSION}]}],
            "generation_config": {"response_mime_type": "application/json",
                                  "response_json_schema": SCHEMA}}
    with FakeGemini() as fake:
        status, reply, _ = generate(fake, body)
        assert status == 200
        answer = json.loads(reply["candidates"][0]["content"]["parts"][0]["text"])
        assert set(answer) == {"my_field", "score_value"}  # property names not renamed
        assert isinstance(answer["my_field"], str) and 0 <= answer["score_value"] <= 4
        expected = math.ceil((len(system) + len(SUBMISSION)) / 4)
        assert reply["usageMetadata"]["promptTokenCount"] == expected  # the system was read
        assert fake.requests()[-1]["body"] == body  # the log keeps what was sent


@pytest.mark.parametrize("body", [
    {"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {},
     "generation_config": {"response_mime_type": "application/json"}},
    {"contents": [{"parts": [{"text": "x"}]}],
     "generationConfig": {"responseMimeType": "text/plain",
                          "response_mime_type": "application/json"}},
], ids=["top level", "nested"])
def test_a_field_in_both_spellings_is_a_400(body: dict[str, Any]) -> None:
    with FakeGemini() as fake:
        status, err, _ = generate(fake, body)
        assert status == 400 and err["error"]["status"] == "INVALID_ARGUMENT"
        assert "Duplicate field" in err["error"]["message"]
        assert fake.stats()["by_endpoint_status"]["generateContent"] == {"400": 1}


def test_developer_count_tokens_refuses_a_generation_config_in_either_spelling() -> None:
    with FakeGemini() as fake:
        path = f"/v1beta/models/{MODEL}:countTokens"
        for name in ("generationConfig", "generation_config"):
            status, err, _ = call(fake, path, {**of_tokens(3), name: {}})
            assert status == 400 and f'Unknown name "{name}"' in err["error"]["message"]
        status, reply, _ = call(fake, path, of_tokens(3))
        assert status == 200 and reply["totalTokens"] == 3


def test_batch_requests_in_snake_case_keep_their_metadata_as_sent() -> None:
    request = {"contents": [{"role": "user", "parts": [{"text": SUBMISSION}]}],
               "generation_config": {"response_mime_type": "application/json",
                                     "response_json_schema": SCHEMA}}
    body = {"batch": {"display_name": "snake", "input_config": {"requests": {"requests": [
        {"request": request, "metadata": {"key": "s1", "my_note": "kept"}}]}}}}
    with FakeGemini() as fake:
        status, job, _ = call(fake, f"/v1beta/models/{MODEL}:batchGenerateContent", body)
        assert status == 200 and job["metadata"]["displayName"] == "snake"
        status, job, _ = call(fake, f"/v1beta/{job['name']}", method="GET")
        line = job["metadata"]["output"]["inlinedResponses"]["inlinedResponses"][0]
        assert line["metadata"] == {"key": "s1", "my_note": "kept"}
        answer = json.loads(line["response"]["candidates"][0]["content"]["parts"][0]["text"])
        assert set(answer) == {"my_field", "score_value"}


def test_embeddings_and_caches_read_snake_case() -> None:
    with FakeGemini() as fake:
        status, reply, _ = call(fake, "/v1beta/models/gemini-embedding-001:embedContent",
                                {"content": {"parts": [{"text": "hello"}]},
                                 "output_dimensionality": 8})
        assert status == 200 and len(reply["embedding"]["values"]) == 8
        status, cache, _ = call(fake, "/v1beta/cachedContents", {
            "model": f"models/{MODEL}", "display_name": "rubric",
            "system_instruction": {"parts": [{"text": "Grade fairly."}]},
            "contents": [{"role": "user", "parts": [{"text": "Marking scheme. " * 1100}]}]})
        assert status == 200 and cache["displayName"] == "rubric"
        # a request naming the cache may not set a system instruction, in either spelling
        status, err, _ = generate(fake, {**of_tokens(3), "cached_content": cache["name"],
                                         "system_instruction": {"parts": [{"text": "x"}]}})
        assert status == 400 and "system_instruction" in err["error"]["message"]
