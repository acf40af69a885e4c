"""Routes and Gemini semantics of the fake server (the HTTP plumbing is in `fake_gemini`).

Every reply uses Google's wire format: camelCase JSON, `{"error": {code, message, status,
details}}` for errors, QuotaFailure and RetryInfo on 429 (`quota_reply`: requests, input tokens
or spend per window, see `_fake_state`). Request bodies are read in either proto3 JSON spelling
(`Call.body()`, `_fake_json`); the request log keeps them as sent. Today's model rules (thinking
levels, prefill, routing, sampling, `store`, `serviceTier`, inline size limits, cache minimums,
and Gemini 4's refusals) come from grader's model table through `_fake_rules`. `cachedContents`
live in `_fake_caches`, implicit caching in `_fake_implicit`, continuation segments in
`_fake_continuation`, `models.list`/`get` in `_fake_models`, the Files API in `_fake_files`,
embeddings in `_fake_embed`; new endpoints are added with `FakeApp.route(...)`.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

from grader.testing import _fake_continuation as continuation
from grader.testing import _fake_implicit as implicit
from grader.testing import _fake_rules as rules
from grader.testing._fake_batches import Batches
from grader.testing._fake_caches import Caches
from grader.testing._fake_content import (
    THINK_HARD_TOKENS,
    Prompt,
    answer_text,
    estimate_tokens,
    read_prompt,
)
from grader.testing._fake_embed import Embeddings
from grader.testing._fake_files import Files, check_file_parts
from grader.testing._fake_json import DuplicateField, normalise, spelled
from grader.testing._fake_models import Models
from grader.testing._fake_state import FakeState
from grader.testing._fake_tuning import Tuning

STATUS_NAMES = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL", 503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(status: int, payload: Any, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, json.dumps(payload).encode(), headers or {})


def error_reply(status: int, message: str, details: list[dict[str, Any]] | None = None,
                headers: dict[str, str] | None = None) -> Reply:
    """Google's error envelope: {"error": {code, message, status, details}}."""
    err: dict[str, Any] = {"code": status, "message": message,
                           "status": STATUS_NAMES.get(status, "UNKNOWN")}
    if details:
        err["details"] = details
    return json_reply(status, {"error": err}, headers)


def _duration(seconds: float) -> str:
    """protobuf Duration JSON, e.g. "1.5s"."""
    text = f"{seconds:.3f}".rstrip("0").rstrip(".")
    return f"{text}s"


@dataclass(frozen=True)
class Quota:
    """What a 429 of one quota window says in its QuotaFailure and message."""

    metric: str
    quota_id: str
    per_model: bool  # quotaDimensions name the model and location
    help: str
    message: str


_RATE_HELP = "Learn more about Gemini API quotas"
_RATE_MESSAGE = "You exceeded your current quota, please check your plan and billing details."
# The TPM names are the paid tier's input-token quota as users report Google's 429s naming it
# (not in our facts sheets); the spend names are not in our sources either: Google-like, with
# "spend" in the id and metric, which grader looks for (and not in the RPM or TPM names).
QUOTAS = {
    "rpm": Quota("generativelanguage.googleapis.com/generate_content_requests",
                 "GenerateRequestsPerMinutePerProjectPerModel", True, _RATE_HELP, _RATE_MESSAGE),
    "tpm": Quota("generativelanguage.googleapis.com/generate_content_paid_tier_input_token_count",
                 "GenerateContentPaidTierInputTokensPerModelPerMinute", True, _RATE_HELP,
                 _RATE_MESSAGE),
    "spend": Quota("generativelanguage.googleapis.com/spend_based_rate_limit",
                   "SpendBasedRateLimitPer10MinutesPerProject", False,
                   "Learn more about spend-based rate limits",
                   "You exceeded the spend-based rate limit of your billing tier (USD per "
                   "rolling 10 minutes). Wait and retry after a short period."),
}


def _quota_value(limit: float | None) -> str:
    """quotaValue as Google writes it: the limit as a decimal string ("250000", "10")."""
    value = float(limit or 0)
    return str(int(value)) if value.is_integer() else str(value)


def quota_reply(kind: str, wait_s: float, limit: float | None, *, model: str = "",
                location: str = "global") -> Reply:
    """The 429 RESOURCE_EXHAUSTED of quota `kind` ("rpm", "tpm" or "spend"): a QuotaFailure
    naming the quota and its limit, a Help link, and RetryInfo with the wait (also as
    Retry-After, in whole seconds)."""
    quota = QUOTAS[kind]
    violation: dict[str, Any] = {"quotaMetric": quota.metric, "quotaId": quota.quota_id}
    if quota.per_model and model:
        violation["quotaDimensions"] = {"location": location, "model": model}
    violation["quotaValue"] = _quota_value(limit)
    details: list[dict[str, Any]] = [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [violation]},
        {"@type": "type.googleapis.com/google.rpc.Help",
         "links": [{"description": quota.help,
                    "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": _duration(wait_s)},
    ]
    return error_reply(429, quota.message, details,
                       {"Retry-After": str(max(1, round(wait_s + 0.4999)))})


def bad_request(e: ValueError) -> Reply:
    """The 400 for a body that cannot be read: not JSON, or a field given twice."""
    if isinstance(e, json.JSONDecodeError | UnicodeDecodeError):
        return error_reply(400, "Invalid JSON payload received.")
    return error_reply(400, str(e))


_SERVER_ERRORS = {
    "500": "An internal error has occurred.",
    "503": "The model is overloaded. Please try again later.",
    "504": "Deadline expired before operation could complete.",
}
# A random call fault drawn for a batch line: the line's google.rpc.Status (gRPC code and
# message) in place of a reply, as a failed line comes back in a job's results.
_LINE_ERRORS = {
    "500": (13, "Internal error while processing the request."),
    "503": (14, "The model is overloaded. Please try again later."),
    "504": (4, "Deadline expired before operation could complete."),
    "hang": (4, "Deadline expired before operation could complete."),
    "429": (8, "Resource has been exhausted (e.g. check quota)."),
    "429_spend": (8, "Resource has been exhausted (e.g. check quota)."),
    "400": (3, "Request contains an invalid argument."),
    "401": (16, "Request had invalid authentication credentials."),
    "403": (7, "The caller does not have permission."),
    "404": (5, "Requested entity was not found."),
}
# A random content fault drawn for a batch line: the trigger its reply is made with.
_LINE_CONTENT = {"malformed": "INVALID_JSON", "empty": "EMPTY", "safety": "SAFETY"}
Route = tuple[str, re.Pattern[str], Callable[..., Reply]]
_API_METHODS = "generateContent|countTokens"
DEVELOPER_PATH = re.compile(
    rf"^/(?:v1|v1beta|v1alpha)/models/(?P<model>[^/:]+):(?P<method>{_API_METHODS})$"
)
VERTEX_PATH = re.compile(
    r"^/(?:v1|v1beta1)/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
    rf"/publishers/google/models/(?P<model>[^/:]+):(?P<method>{_API_METHODS})$"
)


@dataclass
class Call:
    """One parsed HTTP request as the app sees it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    raw: bytes
    match: re.Match[str] | None = None
    client_gone: Callable[[], bool] = lambda: False

    def json(self) -> Any:
        """The body as sent (the request log keeps this)."""
        return json.loads(self.raw or b"{}")

    @cached_property
    def _body(self) -> Any:
        return normalise(self.json())

    def body(self) -> Any:
        """The body as the service reads it: field names in camelCase (see `_fake_json`);
        ValueError when it is not JSON or names a field twice."""
        return self._body


class FakeApp:
    """The router and the Gemini semantics; HTTP plumbing lives in `_Handler`.

    New endpoints (cachedContents, files, batches) are added with `self.route(...)`.
    """

    def __init__(self, state: FakeState):
        self.state = state
        self.routes: list[Route] = []
        self.route("POST", DEVELOPER_PATH, self.model_call)
        self.route("POST", VERTEX_PATH, self.model_call)
        self.route("GET", re.compile(r"^/_fake/stats$"), self.get_stats)
        self.route("GET", re.compile(r"^/_fake/requests$"), self.get_requests)
        self.route("POST", re.compile(r"^/_fake/config$"), self.post_config)
        self.route("POST", re.compile(r"^/_fake/reset$"), self.post_reset)
        self.route("POST", re.compile(r"^/_fake/inject$"), self.post_inject)
        self.route("POST", re.compile(r"^/_fake/clock$"), self.post_clock)
        self.caches = Caches(self)
        self.files = Files(self)
        self.tuning = Tuning(self)
        self.batches = Batches(self)
        self.embeddings = Embeddings(self)
        self.models = Models(self)

    def route(self, method: str, pattern: re.Pattern[str], handler: Callable[..., Reply]) -> None:
        self.routes.append((method, pattern, handler))

    def handle(self, call: Call) -> Reply:
        for method, pattern, handler in self.routes:
            m = pattern.match(call.path)
            if m and method == call.method:
                call.match = m
                try:
                    return handler(call)
                except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ones
                    return bad_request(e)
        return error_reply(404, f"Method not found: {call.method} {call.path}")

    # --- control endpoints ------------------------------------------------------------------
    def get_stats(self, call: Call) -> Reply:
        return json_reply(200, self.state.snapshot())

    def get_requests(self, call: Call) -> Reply:
        """The last N model API calls (`?n=N`, default 20) as sent: path, endpoint, vertex,
        body, and the sampling parameters the model ignored."""
        n = int((call.query.get("n") or ["20"])[0])
        with self.state.lock:
            recent = list(self.state.recent)
        return json_reply(200, recent[-n:] if n > 0 else [])

    def post_config(self, call: Call) -> Reply:
        self.state.configure(call.json())
        with self.state.lock:
            cfg = asdict(self.state.config)
        return json_reply(200, cfg)

    def post_reset(self, call: Call) -> Reply:
        self.state.reset()
        return json_reply(200, {})

    def post_inject(self, call: Call) -> Reply:
        """`{"faults": [...]}` scripts generateContent; with `"endpoint": "files.upload"` (or
        another cache or file endpoint) that endpoint."""
        body = call.json()
        faults = list(body.get("faults", []))
        if body.get("endpoint"):
            self.state.inject_for(str(body["endpoint"]), faults)
        else:
            self.state.inject(faults)
        return json_reply(200, {})

    def post_clock(self, call: Call) -> Reply:
        """`{"advance_s": N}` moves the fake's clock (cache TTLs, the Files API's 48 h, the
        quota windows) ahead; answers the clock's offset."""
        offset = self.state.advance(float(call.json().get("advance_s", 0)))
        return json_reply(200, {"offset_s": offset, "now": self.state.now()})

    # --- the model API ----------------------------------------------------------------------
    def model_call(self, call: Call, model: str | None = None) -> Reply:
        """A model call; `model`: the base model answering for a tuned endpoint."""
        assert call.match is not None
        endpoint = call.match.group("method")
        vertex = "project" in call.match.groupdict()
        record = {"path": call.path, "endpoint": endpoint, "vertex": vertex, "body": None}
        self.state.begin(endpoint, record)
        reply = error_reply(500, "fake server error")
        try:
            reply = self._model_call(call, endpoint, vertex, record, model)
        except ValueError as e:
            reply = bad_request(e)
        finally:
            self.state.end(endpoint, reply.status)
        return reply

    def _model_call(self, call: Call, endpoint: str, vertex: bool, record: dict[str, Any],
                    tuned_base: str | None = None) -> Reply:
        denied = self.auth(call, vertex)
        if denied:
            return denied
        raw = call.json()
        if not isinstance(raw, dict):
            return error_reply(400, "Invalid JSON payload: expected an object.")
        record["body"] = raw  # as sent: tests assert on what the client wrote
        body = call.body()
        model = tuned_base or (call.match.group("model") if call.match else "")
        if not model.startswith("gemini-"):
            api = "v1beta1" if vertex else "v1beta"
            return error_reply(404, f"models/{model} is not found for API version {api}, or is "
                                    f"not supported for {endpoint}.")
        prompt = read_prompt(body)
        if endpoint == "countTokens":
            sent = spelled(raw, "generationConfig")
            if sent is not None and not vertex:
                # the Developer API's countTokens has no generation config (it takes one inside
                # `generateContentRequest`): the parser names the field as it was sent
                return error_reply(400, f'Invalid JSON payload received. Unknown name "{sent}": '
                                        'Cannot find field.')
            inner = body.get("generateContentRequest") if not vertex else None
            request = inner if isinstance(inner, dict) else body
            refused = rules.config_refusal(request, model)
            if refused:
                return error_reply(400, refused)
            if request is not body and "contents" not in body:
                prompt = read_prompt(request)
            return json_reply(200, {"totalTokens": prompt.prompt_tokens})
        refused = rules.check(body, model, vertex) or rules.inline_refusal(body, len(call.raw))
        if refused:
            return error_reply(400, refused)
        rest = None
        if body.get("continuationToken"):
            rest = continuation.rest_of(self.state, str(body["continuationToken"]), model)
            if rest is None:
                return error_reply(400, continuation.INVALID)
        record["ignored"] = rules.ignored(body, model)
        cached = 0
        if body.get("cachedContent"):
            if self.state.take_scripted("expire_cache"):
                self.caches.expire(str(body["cachedContent"]))
            resolved = self.caches.resolve(body, model)
            if isinstance(resolved, Reply):
                return resolved
            seen, cached = resolved
            prompt = read_prompt(seen)
        missing = check_file_parts(self, body.get("contents") or [], vertex)
        if missing:
            return missing
        return self._generate(call, body, prompt, model, vertex, cached, rest)

    def guarded(self, endpoint: str, call: Call, handler: Callable[[], Reply], *,
                vertex: bool, keep_body: bool, checked: bool = True) -> Reply:
        """One call to a service endpoint (caches, files, batches, tuning jobs): logged in the
        request log, the key or token checked and an injected fault served first (`checked`),
        then `handler`; `keep_body` puts the JSON body in the log."""
        record: dict[str, Any] = {"path": call.path, "endpoint": endpoint, "vertex": vertex,
                                  "body": None}
        self.state.begin(endpoint, record)
        reply = error_reply(500, "fake server error")
        try:
            denied = self.auth(call, vertex) if checked else None
            if denied:
                reply = denied
                return reply
            fault = self.state.fault_for(endpoint) if checked else None
            if fault is not None:
                reply = error_reply(int(fault), f"injected {fault} fault")
                return reply
            if keep_body:
                record["body"] = call.json()
            reply = handler()
            return reply
        except ValueError as e:
            reply = bad_request(e)
            return reply
        finally:
            self.state.end(endpoint, reply.status)

    def auth(self, call: Call, vertex: bool) -> Reply | None:
        if vertex:
            if not call.headers.get("authorization", "").startswith("Bearer "):
                return error_reply(401, "Request is missing required authentication credential.")
            return None
        key = call.headers.get("x-goog-api-key") or (call.query.get("key") or [""])[0]
        if not key:
            return error_reply(403, "Method doesn't allow unregistered callers (callers without "
                                    "established identity). Please use API Key or other form of "
                                    "API consumer identity to call this API.")
        expected = self.state.config.api_key
        if expected is not None and key != expected:
            return error_reply(400, "API key not valid. Please pass a valid API key.", [
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                 "domain": "googleapis.com"}])
        return None

    def _generate(self, call: Call, body: dict[str, Any], prompt: Prompt, model: str,
                  vertex: bool, cached: int, rest: str | None = None) -> Reply:
        """Answer and bill one admitted generateContent call; `cached`: the explicit cache's
        tokens, `rest`: the segment a continuation token asks for."""
        body_hash = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        prompt.repeat = self.state.asked(body_hash)
        cfg = self.state.config
        where = {"model": model, "location": (call.match.group("location")
                                              if vertex and call.match else "global")}
        refused = self.state.admit(prompt.prompt_tokens)  # what promptTokenCount will say
        if refused is not None:
            quota, wait = refused
            limit = {"rpm": cfg.rpm, "tpm": cfg.tpm, "spend": cfg.spend_limit_usd}[quota]
            return quota_reply(quota, wait, limit, **where)
        fault = self.state.pick_fault()
        if fault == "429":
            return quota_reply("rpm", cfg.fault_retry_delay_s, cfg.rpm, **where)
        if fault == "429_spend":
            return quota_reply("spend", cfg.fault_retry_delay_s, cfg.spend_limit_usd)
        if fault in {"400", "401", "403", "404"}:
            return error_reply(int(fault), f"injected {fault} fault")
        if self.state.stop.wait(self.state.delay_s()):
            return error_reply(503, "fake server is shutting down")
        if fault == "hang":
            until = time.monotonic() + self.state.config.hang_s
            while (left := until - time.monotonic()) > 0 and not call.client_gone():
                if self.state.stop.wait(min(0.1, left)):
                    break
            return error_reply(504, "Deadline expired before operation could complete.")
        if fault in _SERVER_ERRORS:
            return error_reply(int(fault), _SERVER_ERRORS[fault])
        if fault == "malformed":
            return Reply(200, b'{"candidates": [{"content": {"parts": [{"text": "{\\"cri',
                         {"Content-Type": "application/json"})
        kind = fault.upper() if fault in {"empty", "safety"} else None
        for trig in ("SAFETY", "RECITATION", "MAX_TOKENS", "EMPTY", "INVALID_JSON",
                     "INVALID_ONCE", "PROMPT_BLOCKED", "THINK_HARD", "CONTINUE"):
            if kind is None and rest is None and trig in prompt.triggers:
                kind = trig
        if kind == "CONTINUE" and not rules.continues(model):
            kind = "MAX_TOKENS"  # a model without continuation stops at its output limit
        hit = 0 if cached else implicit.serve(self.state, body, model)
        resp = self._response(body, prompt, model, vertex, kind, cached or hit, rest)
        if call.client_gone():
            # The caller timed out or was killed: nothing is delivered, so nothing is billed
            # (this is what lets a resume test prove that no submission was paid twice). The
            # check comes last, so only a reply on its way out when the client dies is billed.
            return error_reply(499, "Client closed the request.")
        if hit:
            implicit.count_hit(self.state, hit)
        if rest is not None:
            continuation.count_requested(self.state)
        self.state.bill(prompt.key, body_hash, resp["usageMetadata"])
        tier = body.get("serviceTier")
        self.state.book_spend(rules.cost_usd(model, resp["usageMetadata"], tier))
        return json_reply(200, resp, {"x-gemini-service-tier": str(tier).lower()} if tier
                          else None)

    def batch_answer(self, body: dict[str, Any], model: str, vertex: bool
                     ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """One request of a batch job, answered as generateContent would be (and billed):
        (response, None), or (None, the line's google.rpc.Status)."""
        try:
            body = normalise(body)  # a JSONL line is read as any request body
        except DuplicateField as e:
            return None, {"code": 400, "message": str(e)}
        refused = rules.check(body, model, vertex)
        if refused:
            return None, {"code": 400, "message": refused}
        prompt = read_prompt(body)
        if "BATCH_LINE_FAIL" in prompt.triggers:
            return None, {"code": 13, "message": "Internal error while processing the request."}
        # fail_rate reaches batch lines too: a call fault is the line's error object (as
        # Google reports a failed line), a content fault the line's reply
        fault = self.state.draw_fault()
        if fault in _LINE_ERRORS:
            code, message = _LINE_ERRORS[fault]
            return None, {"code": code, "message": message}
        body_hash = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        prompt.repeat = self.state.asked(body_hash)
        kind = _LINE_CONTENT.get(fault or "") or next(
            (t for t in ("SAFETY", "RECITATION", "MAX_TOKENS", "EMPTY", "INVALID_JSON",
                         "INVALID_ONCE", "PROMPT_BLOCKED", "THINK_HARD")
             if t in prompt.triggers), None)
        resp = self._response(body, prompt, model, vertex, kind, 0)
        self.state.bill(prompt.key, body_hash, resp["usageMetadata"])
        return resp, None

    def _response(self, body: dict[str, Any], prompt: Prompt, model: str, vertex: bool,
                  kind: str | None, cached: int, rest: str | None = None) -> dict[str, Any]:
        """The reply to one call; `kind`: a trigger or content fault, `cached`: the prompt
        tokens served from a cache, `rest`: the continuation segment asked for."""
        gen = body.get("generationConfig") or {}
        schema = gen.get("responseJsonSchema") or gen.get("responseSchema")
        text: str | None
        finish = "STOP"
        later: str | None = None  # what a continuation token will answer with
        if rest is not None:
            text = rest
        elif kind == "CONTINUE":
            text = answer_text(prompt, schema)
            cut = max(1, len(text) // 2)
            text, later, finish = text[:cut], text[cut:], "CONTINUATION"
        elif kind in {"SAFETY", "RECITATION", "EMPTY", "PROMPT_BLOCKED"}:
            text = None
            finish = kind
        elif kind == "INVALID_JSON":
            text = "I think this submission deserves a good score, but here is no JSON."
        elif kind == "INVALID_ONCE":
            text = answer_text(prompt, schema, violate=prompt.turns <= 1)
        else:
            text = answer_text(prompt, schema)
            if kind == "MAX_TOKENS":
                text, finish = text[: max(1, len(text) // 2)], "MAX_TOKENS"
        thoughts = THINK_HARD_TOKENS if kind == "THINK_HARD" else rules.thinking_tokens(body, model)
        if rest is not None:
            thoughts = 0  # the thinking was done (and billed) in the first segment
        cap = gen.get("maxOutputTokens")
        if kind == "MAX_TOKENS" and isinstance(cap, int):
            thoughts = min(thoughts, cap)  # the answer itself ran on until the cap
        elif text is not None and isinstance(cap, int) and \
                thoughts + estimate_tokens(len(text)) > cap:
            # thinking and answer share the output cap: what is left of it after thinking
            # cuts the answer short (none at all when thinking used it up)
            room = max(0, cap - thoughts) * 4
            text, finish = (text[:room] or None), "MAX_TOKENS"
            thoughts = min(thoughts, cap)
        prompt_tokens = prompt.prompt_tokens  # a cache's contents are part of the prompt
        out_tokens = estimate_tokens(len(text)) if text else 0
        if kind == "MAX_TOKENS" and isinstance(cap, int):
            out_tokens = cap - thoughts
        usage: dict[str, int] = {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": out_tokens,
            "thoughtsTokenCount": thoughts,
            "totalTokenCount": prompt_tokens + out_tokens + thoughts,
        }
        if cached:
            usage["cachedContentTokenCount"] = cached
        resp: dict[str, Any] = {}
        if kind == "PROMPT_BLOCKED":
            resp["promptFeedback"] = {"blockReason": "PROHIBITED_CONTENT"}
        elif kind != "EMPTY":
            cand: dict[str, Any] = {"finishReason": finish, "index": 0}
            if text is not None:
                cand["content"] = {"parts": [{"text": text}], "role": "model"}
            if finish == "CONTINUATION" and later is not None:
                cand["continuationToken"] = continuation.issue(self.state, model, later)
            if kind == "SAFETY":
                cand["safetyRatings"] = [{"category": "HARM_CATEGORY_HARASSMENT",
                                          "probability": "HIGH", "blocked": True}]
            resp["candidates"] = [cand]
        resp["usageMetadata"] = usage
        version, status = rules.served(model, vertex)
        resp["modelVersion"] = self.state.config.model_version or version
        if status is not None:
            resp["modelStatus"] = status
        resp["responseId"] = uuid.uuid4().hex[:22]
        if vertex:
            resp["createTime"] = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
        return resp
