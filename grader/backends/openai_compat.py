"""The `openai` backend: a model server of the school's own that speaks the OpenAI chat API
(Ollama, llama.cpp's llama-server, vLLM, LM Studio, llama-cpp-python's server), through the
maintained `openai` SDK's async client, one per run (per event loop).

It sends the same rendered prompts as every backend: the system instruction as the system
message, the marking scheme and the student's work as the first user message, the re-ask
history as later turns. The grade's shape is asked for with `response_format` json_schema
(strict), or, for llama-cpp-python's server, which knows only json_object, json_object with the
schema (setting `response_format`). The schema sent is the one the local backend builds its
grammar from (`local.ordered_schema`): the rubric's key order, bounded strings and lists, scores
as their half points; these servers compile it to a grammar the same way, it makes every
generation of a small model terminate, and every output still validates against the rubric. A
server that cannot do it is told apart, not retried: it refuses the request naming
response_format, or its answer does not even begin as a JSON object.

Same guarantees as Gemini, from the same code: the quota scheduler (`Paced`, its ceiling the
server's parallel slots), a 429/503 told to the quota and retried after Retry-After, backoff on
connection errors and 5xx, a streak of connection failures stopping the run with one message
(`grader.backends.retry`). The reply's `usage` is priced by the run, only at a price set in
grader.toml (`Pricing.of_server`), else shown as local, unpriced. Prompt tokens are counted by the
server's tokenize endpoint where it has one, else estimated (`counted_by` says which).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx2
import openai

from grader.backends.local import _flag_media, media_note, ordered_schema
from grader.backends.retry import REFUSED_STATUS, Retries
from grader.config.settings import Settings, server_url
from grader.errors import BackendError, ConfigError
from grader.online.ratelimit import Quota, estimate_tokens
from grader.prompting.request import GradeRequest, GradeResponse, Part, Usage

# What an image content part may carry (image_url data URLs); PDFs have no such part.
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp"})
_FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "content_filter": "SAFETY"}
# The tokenize endpoints, tried in this order: llama-cpp-python's server, then llama.cpp's
# llama-server and vLLM (both at the server's root, beside /v1).
TOKENIZERS = (("/extras/tokenize", "input"), ("/tokenize", "content"))
# A chat template wraps each message in a few tokens of its own the tokenizer does not see.
TEMPLATE_TOKENS_PER_MESSAGE = 4
RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


def server_schema(schema: Any) -> Any:
    """The schema sent: the local grammar's (`ordered_schema`), each object closed
    (`additionalProperties: false`, which strict mode asks for)."""
    out = ordered_schema(schema)

    def close(node: Any) -> None:
        if isinstance(node, list):
            for v in node:
                close(v)
        elif isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                node.setdefault("additionalProperties", False)
            for v in node.values():
                close(v)

    close(out)
    return out


def format_fix(settings: Settings) -> str:
    """What to do when the server does not honour the response format in use."""
    if settings.response_format == "json_schema":
        return ('for llama-cpp-python\'s server set response_format = "json_object" in '
                "grader.toml; otherwise update the server to one that takes response_format "
                "json_schema (llama.cpp llama-server of 2025 or later, vLLM 0.6 or later, Ollama "
                "0.5 or later, LM Studio 0.3 or later)")
    return ('response_format = "json_object" is for llama-cpp-python\'s server: for any other '
            'server set response_format = "json_schema" (the default) in grader.toml')


class OpenAIBackend(Retries):
    """A model server with an OpenAI-compatible chat API; `OpenAIBackend(settings)`."""

    name: ClassVar[str] = "openai"

    def __init__(self, settings: Settings, *, quota: Quota | None = None,
                 backoff_base_s: float = 1.0, backoff_cap_s: float = 60.0):
        self.settings = settings
        self.base_url = server_url(settings)
        if not settings.model:
            raise ConfigError("--backend openai needs the name of the model the server should "
                              "use", fix=f"pass --model NAME (the server lists its models at "
                              f"{self.base_url}/models)")
        self.model = settings.model
        self.host = urlsplit(self.base_url).netloc
        self._root = self.base_url.removesuffix("/v1")
        key = settings.openai_api_key
        # a server without keys ignores the header; the SDK refuses to start without one
        self._api_key = key.get_secret_value() if key else os.environ.get("OPENAI_API_KEY") \
            or "none"
        self.quota = quota if quota is not None else Quota(
            settings.rpm, settings.tpm, ceiling=settings.concurrency or settings.server_slots)
        self.backoff_base_s, self.backoff_cap_s = backoff_base_s, backoff_cap_s
        self.on_retry = None
        self._conn_failures, self._conn_down_since = 0, 0.0
        self._loop_client: tuple[asyncio.AbstractEventLoop, openai.AsyncOpenAI] | None = None
        self._tokenizer: tuple[str, str] | None = None
        self._tokenizer_probed = False
        self._schema: tuple[str, dict[str, Any]] | None = None

    @property
    def in_flight_ceiling(self) -> int:
        """`Paced`: as many requests as the server has slots; the quota decides when each
        leaves (it halves the limit after a 503 that says the slots are full)."""
        return self.quota.ceiling

    @property
    def counted_by(self) -> str:
        """How `count_tokens` counted (after its first call)."""
        if self._tokenizer is not None:
            return f"the server's tokenizer ({self._tokenizer[0]})"
        return "estimate (the server has no tokenize endpoint): about 4 characters a token"

    @property
    def _client(self) -> openai.AsyncOpenAI:
        """The SDK's async client of the running event loop (its connections belong to one
        loop). Its own retries are off: `Retries` owns them."""
        loop = asyncio.get_running_loop()
        held = self._loop_client
        if held is None or held[0] is not loop:
            client = openai.AsyncOpenAI(base_url=self.base_url, api_key=self._api_key,
                                        max_retries=0, timeout=self.settings.timeout_s)
            held = self._loop_client = (loop, client)
        return held[1]

    # --- request ------------------------------------------------------------------------------
    def messages(self, request: GradeRequest) -> tuple[list[dict[str, Any]], int]:
        """The chat messages of a request, and how many media parts it could not send (a text
        model gets a note in their place, and the grade is marked for review). The first user
        message is the marking scheme followed by the student's parts, one a line: the text the
        local backend puts in that message, so both grade the same prompt."""
        parts = (*request.reference_parts, *request.student_parts)
        unsent = sum(1 for p in parts if not p.is_text and not self._reads(p))
        first: Any
        if not any(self._reads(p) for p in parts):  # plain text: what every server reads
            first = request.static_prefix + "\n".join(
                p.text or "" if p.is_text else media_note(p) for p in parts)
        else:  # a vision model: content parts, images as data URLs
            first = [{"type": "text", "text": request.static_prefix}]
            for p in parts:
                if self._reads(p):
                    data = base64.b64encode(p.data or b"").decode("ascii")
                    first.append({"type": "image_url",
                                  "image_url": {"url": f"data:{p.mime_type};base64,{data}"}})
                else:
                    first.append({"type": "text",
                                  "text": p.text or "" if p.is_text else media_note(p)})
        out = [{"role": "system", "content": request.system}, {"role": "user", "content": first}]
        for turn in request.history:
            out.append({"role": "assistant" if turn.role == "model" else "user",
                        "content": turn.text})
        return out, unsent

    def _reads(self, part: Part) -> bool:
        return self.settings.model_reads_images and part.mime_type in IMAGE_TYPES \
            and part.data is not None

    def _response_format(self, request: GradeRequest) -> dict[str, Any]:
        key = json.dumps(request.response_schema, sort_keys=True)
        if self._schema is None or self._schema[0] != key:
            self._schema = (key, server_schema(request.response_schema))
        schema = self._schema[1]
        if self.settings.response_format == "json_object":
            return {"type": "json_object", "schema": schema}
        return {"type": "json_schema",
                "json_schema": {"name": "grade", "schema": schema, "strict": True}}

    # --- Backend protocol ---------------------------------------------------------------------
    async def generate(self, request: GradeRequest) -> GradeResponse:
        """One grading call, retried on transient failures; `latency_ms` covers the quota
        waits and retries."""
        messages, unsent = self.messages(request)
        body: dict[str, Any] = {
            "model": request.model or self.model, "messages": messages,
            "max_tokens": request.max_output_tokens,
            # greedy and seeded unless the teacher set sampling: a school's model grades most
            # consistently that way (the local backend's rule)
            "temperature": 0.0 if request.temperature is None else request.temperature,
            "seed": request.seed or 0,
            "response_format": self._response_format(request),
        }
        if request.top_p is not None:
            body["top_p"] = request.top_p
        tokens = estimate_tokens(sum(len(json.dumps(m["content"])) for m in messages))
        start = time.monotonic()
        client = self._client

        async def attempt() -> dict[str, Any]:
            raw = await self._within_quota(
                tokens, "chat completion",
                lambda: client.chat.completions.with_raw_response.create(**body),
                refused=REFUSED_STATUS)
            data = json.loads(raw.http_response.text)
            if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
                raise json.JSONDecodeError("not a chat completion", raw.http_response.text, 0)
            return data

        data, retries = await self._with_retries(attempt, what="chat completion")
        return self._reply(data, unsent, retries, (time.monotonic() - start) * 1000, tokens)

    def _reply(self, data: dict[str, Any], unsent: int, retries: int,
               latency_ms: float, prompt_estimate: int = 0) -> GradeResponse:
        """The reply as a `GradeResponse`. A server that reports no `usage` is charged what the
        request and the answer are estimated to hold (about four characters a token), so a
        priced server's calls still count against `--budget`."""
        choices = data["choices"]
        choice = _dict(choices[0] if choices else None)
        message = _dict(choice.get("message"))
        reason = choice.get("finish_reason")
        finish = _FINISH.get(str(reason), None if reason is None else str(reason).upper())
        content = message.get("content")
        text = content if isinstance(content, str) and content.strip() else None
        blocked = None
        if message.get("refusal"):
            text, blocked = None, "REFUSAL"
        elif finish not in (None, "STOP"):
            text, blocked = None, finish  # cut off or filtered: not usable
        elif text is None:
            blocked = "EMPTY"
        else:
            self._check_format(text)
            if unsent:
                text = _flag_media(text, unsent)
        return GradeResponse(
            text=text, finish_reason=finish, blocked_reason=blocked,
            usage=reply_usage(data.get("usage"), content, prompt_estimate),
            model_version=str(data["model"]) if data.get("model") else None,
            latency_ms=latency_ms, retries=retries, raw=data)

    def _check_format(self, text: str) -> None:
        """A server that honours the response format answers a JSON object: an answer that does
        not even begin as one (prose, a fenced code block) means it ignored the format, and so it
        will for every student: the run stops with one message. A JSON object cut short (a stop
        string inside it) is the judge's to re-ask or flag."""
        if not text.lstrip().startswith("{"):
            raise BackendError(
                f"the model server at {self.host} ignored response_format "
                f"{self.settings.response_format}: its answer is not a JSON object "
                f"({text.strip()[:80]!r})", fix=format_fix(self.settings), run_wide=True)

    async def count_tokens(self, request: GradeRequest) -> int:
        """The messages' text through the server's tokenizer (plus the chat template's few
        tokens a message); an estimate on a server without a tokenize endpoint."""
        messages, _ = self.messages(request)
        texts = [m["content"] if isinstance(m["content"], str) else
                 "\n".join(p.get("text", "") for p in m["content"]) for m in messages]
        images = sum(1 for m in messages if not isinstance(m["content"], str)
                     for p in m["content"] if p["type"] == "image_url")
        total = TEMPLATE_TOKENS_PER_MESSAGE * len(messages) + 258 * images
        for text in texts:
            total += await self._tokens(text)
        return total

    async def _tokens(self, text: str) -> int:
        if not self._tokenizer_probed:
            for path, field in TOKENIZERS:
                try:
                    got = await self._tokenize_retried(path, field, text)
                except BackendError as e:
                    if e.status in (404, 405, 501):
                        continue
                    raise
                self._tokenizer, self._tokenizer_probed = (path, field), True
                return got
            self._tokenizer_probed = True
        if self._tokenizer is None:
            return estimate_tokens(len(text))
        return await self._tokenize_retried(*self._tokenizer, text)

    async def _tokenize_retried(self, path: str, field: str, text: str) -> int:
        got, _ = await self._with_retries(lambda: self._tokenize(path, field, text),
                                          what=f"POST {path}")
        return got

    async def _tokenize(self, path: str, field: str, text: str) -> int:
        response = await self._client.post(f"{self._root}{path}", cast_to=httpx2.Response,
                                           body={field: text})
        tokens = json.loads(response.text).get("tokens")
        if not isinstance(tokens, list):
            raise json.JSONDecodeError("no tokens", response.text, 0)
        return len(tokens)

    async def aclose(self) -> None:
        held, self._loop_client = self._loop_client, None
        if held is not None and held[0] is asyncio.get_running_loop():
            await held[1].close()

    # --- errors -------------------------------------------------------------------------------
    def _classify(self, e: Exception, what: str) -> BackendError | None:
        """The SDK's exceptions as BackendError: a timeout is the server busy (408), another
        connection error the server not reached (status None: part of a streak), a body that
        is not JSON a glitch that is retried."""
        where = f"the model server at {self.host}"
        if isinstance(e, openai.APITimeoutError):
            return BackendError(f"{where}: {what} timed out after {self.settings.timeout_s:g} s",
                                fix="raise --timeout (a server busy with long answers), or "
                                "lower --concurrency", transient=True, status=408)
        if isinstance(e, openai.APIConnectionError):
            cause = e.__cause__ or e
            return BackendError(f"cannot reach {where}: {type(cause).__name__}: {cause}",
                                fix=f"check that the server runs and listens at {self.base_url}",
                                transient=True)
        if isinstance(e, json.JSONDecodeError):
            return BackendError(f"{where}: {what} returned a body that is not a JSON reply",
                                fix="usually a proxy or server glitch; it is retried",
                                transient=True, status=200)
        if isinstance(e, openai.APIStatusError):
            return self._status_error(e, what, where)
        return None

    def _status_error(self, e: openai.APIStatusError, what: str, where: str) -> BackendError:
        code = e.status_code
        detail = " ".join((e.message if isinstance(e.message, str) else str(e)).split())
        head = f"{where}: {what} failed: {detail[:400]}"
        text = f"{detail} {json.dumps(e.body, default=str) if e.body else ''}"
        if "response_format" in text or "json_schema" in text:
            return BackendError(f"{where} refused response_format "
                                f"{self.settings.response_format}: {detail[:300]}",
                                fix=format_fix(self.settings), status=code, run_wide=True)
        if code in RETRYABLE_STATUS:
            return BackendError(head, fix="the server is busy or restarting: it is retried; "
                                "lower --concurrency or server_slots in grader.toml if it "
                                "persists", transient=True, status=code,
                                retry_after=_retry_after(e.response))
        if code in (401, 403):
            return BackendError(head, fix="set OPENAI_API_KEY (or openai_api_key in "
                                "grader.toml) to the key the server expects", status=code,
                                run_wide=True)
        if code == 404:
            return BackendError(head, fix=f"check --model (now {self.model!r}; the server lists "
                                f"its models at {self.base_url}/models) and --base-url (the "
                                "server's /v1 root)", status=code, run_wide=True)
        return BackendError(head, status=code, rejected=400 <= code < 500,
                            fix="look at this student's files (a prompt longer than the "
                            "server's context is refused: raise its context size); after a "
                            "fix, rerun with --retry-flagged request_rejected")

    def _unreachable(self, cause: Exception) -> BackendError:
        n, secs = self._conn_failures, time.monotonic() - self._conn_down_since
        said: BaseException = cause
        if isinstance(cause, openai.APIConnectionError) and cause.__cause__ is not None:
            said = cause.__cause__  # what the transport said, not the SDK's "Connection error."
        return BackendError(
            f"cannot reach the model server at {self.base_url}: {n} connection attempts in a "
            f"row failed over {secs:.0f} s (last: {type(said).__name__}: {said})",
            fix="start the server again (or check --base-url), then run the same command "
            "again: finished grades are kept and nothing is asked twice",
            transient=False, run_wide=True)


class OpenAIVisionBackend(OpenAIBackend):
    """The same, for a model that reads images (setting `model_reads_images`): it has the
    `AcceptsMedia` capability, so an image-only submission is sent rather than flagged."""

    media_types: ClassVar[frozenset[str]] = IMAGE_TYPES


def openai_backend(settings: Settings, **options: Any) -> OpenAIBackend:
    """The registry's factory: the capability follows the setting."""
    cls = OpenAIVisionBackend if settings.model_reads_images else OpenAIBackend
    return cls(settings, **options)


def _retry_after(response: httpx2.Response | None) -> float | None:
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def reply_usage(reported: Any, content: Any, prompt_estimate: int) -> Usage:
    """The call's tokens as the server's `usage` reports them; where it reports none (some
    servers leave it out), the request's estimate and the answer's characters / 4."""
    usage = _dict(reported)
    prompt, output = usage.get("prompt_tokens"), usage.get("completion_tokens")
    cached = _dict(usage.get("prompt_tokens_details")).get("cached_tokens")
    return Usage(prompt_tokens=prompt if isinstance(prompt, int) else prompt_estimate,
                 output_tokens=output if isinstance(output, int) else
                 estimate_tokens(len(content) if isinstance(content, str) else 0),
                 cached_tokens=int(cached or 0))
