"""Gemini backends: Developer API (`gemini`) and Gemini Enterprise, formerly Vertex AI
(`enterprise`, and `vertex` for the legacy name), one genai client each (and, for async calls,
one per event loop on an aiohttp session of our own: see `_aio`).

The SDK's own retries are off: this module owns retry (exponential backoff with full jitter,
honouring the server's RetryInfo / Retry-After) and quota (`grader.ratelimit.Quota`), so every
attempt is counted, spaced and reported in `GradeResponse.retries`.

Every Developer API request carries `store: false` (setting `store`): since 2026-10-26 new
projects keep generateContent requests in Google's logs by default, and student work is personal
data. Enterprise has no such field (the SDK refuses it there). `--tier flex` sends
`service_tier=flex` with a timeout that covers Flex's minutes of queueing.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import aiohttp
import httpx2
from aiohttp.helpers import get_env_proxy_for_url
from google import genai
from google.auth import exceptions as auth_errors
from google.genai import errors as genai_errors
from google.genai import types
from google.genai.client import AsyncClient
from yarl import URL

from ..errors import BackendError, ConfigError
from ..ratelimit import Quota, estimate_tokens
from ..request import GradeRequest, GradeResponse, Part
from ..settings import DEFAULT_GEMINI_MODEL, ENTERPRISE_ENV, Settings
from . import _fast_types as fast
from ._gemini_batch import GeminiBatches
from ._gemini_reply import reply_of
from .base import CacheInfo, Embedded, FileInfo, TuningInfo

T = TypeVar("T")

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# A streak of connection failures must also last this long before the run stops: a burst of
# resets on every open connection at once (a proxy restarting) is retried, not fatal.
UNREACHABLE_AFTER_S = 10.0
CONNECT_BACKOFF_CAP_S = 2.0
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")
# How a 4xx names what a request referred to and the service no longer has: an explicit cache
# ("CachedContent not found (or permission denied)") or an uploaded file ("You do not have
# permission to access the File abc or it may not exist"). Google's exact texts for these are
# reported by users, not documented: matched loosely.
_CACHE_GONE = re.compile(r"cached[ _]?content", re.IGNORECASE)
_FILE_GONE = re.compile(r"\bfile\b.*(not exist|not found|permission)", re.IGNORECASE | re.DOTALL)
FILE_ACTIVE_WAIT_S = 60.0  # an upload still PROCESSING is polled this long


def _details(err: genai_errors.APIError) -> list[dict[str, Any]]:
    """The google.rpc detail objects of an error (RetryInfo, QuotaFailure, ...)."""
    details = err.details
    if isinstance(details, dict):
        details = details.get("error", details).get("details", [])
    return [d for d in details if isinstance(d, dict)] if isinstance(details, list) else []


def is_spend_limit(err: genai_errors.APIError) -> bool:
    """A 429 from the spend-based rate limit (USD per rolling 10 minutes), told apart from a
    requests/tokens-per-minute 429 by its QuotaFailure violation or its message."""
    for d in _details(err):
        if str(d.get("@type", "")).endswith("google.rpc.QuotaFailure"):
            for v in d.get("violations") or []:
                if isinstance(v, dict) and "spend" in (
                        f"{v.get('quotaId', '')} {v.get('quotaMetric', '')}").lower():
                    return True
    return "spend" in (err.message or "").lower()


def retry_delay_from(err: genai_errors.APIError) -> float | None:
    """Seconds the server asked us to wait: google.rpc.RetryInfo, else a Retry-After header."""
    for d in _details(err):
        if str(d.get("@type", "")).endswith("google.rpc.RetryInfo"):
            m = _DURATION.match(str(d.get("retryDelay", "")))
            if m:
                return float(m.group(1))
    headers = getattr(err.response, "headers", None)
    value = headers.get("retry-after") if headers is not None else None
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            return None
    return None


def _part(p: Part) -> types.Part:
    """A request part on the wire: text, a file the service holds, or inline bytes."""
    if p.text is not None:
        return fast.Part(text=p.text)
    mime = p.mime_type or "application/octet-stream"
    if p.file_uri is not None:
        return fast.Part(file_data=fast.FileData(file_uri=p.file_uri, mime_type=mime))
    return fast.Part(inline_data=fast.Blob(data=p.data or b"", mime_type=mime))


def _ttl(seconds: float) -> str:
    return f"{max(1, round(seconds))}s"


def _cache_info(c: types.CachedContent) -> CacheInfo:
    tokens = c.usage_metadata.total_token_count if c.usage_metadata else None
    return CacheInfo(name=str(c.name), tokens=int(tokens or 0), expires_at=c.expire_time,
                     display_name=c.display_name)


def _state(f: types.File) -> str:
    return str(_enum_name(f.state) or "ACTIVE")


def _file_info(f: types.File) -> FileInfo:
    return FileInfo(name=str(f.name), uri=str(f.uri or f.name), mime_type=str(f.mime_type or ""),
                    expires_at=f.expiration_time, display_name=f.display_name,
                    active=_state(f) in ("ACTIVE", "STATE_UNSPECIFIED"))


def _gone(err: BackendError, request: GradeRequest) -> BackendError:
    """`err` marked `gone` when a 4xx says the request's cache or one of its files is no longer
    there: the caller recreates it and sends the same request again."""
    if err.status not in (400, 403, 404):
        return err
    has_files = any(p.file_uri for p in (*request.reference_parts, *request.student_parts))
    kind = ("cache" if request.cached_content and _CACHE_GONE.search(err.message) else
            "file" if has_files and _FILE_GONE.search(err.message) else None)
    if kind is None:
        return err
    return BackendError(err.message, fix=f"the {kind} is recreated and the request sent again",
                        status=err.status, retries=err.retries, gone=kind)


def _enum_name(value: Any) -> str | None:
    if value is None:
        return None
    return str(getattr(value, "value", value))


# `--model tuned:NAME`: the endpoint of the tuned model called NAME (`grade tune start`).
TUNED = "tuned:"


def _env_proxy(url: str) -> tuple[str | None, aiohttp.BasicAuth | None]:
    """The proxy HTTPS_PROXY / HTTP_PROXY / NO_PROXY (and ~/.netrc for its password) name for
    `url`, read as aiohttp itself would read them; (None, None) for a direct connection."""
    try:
        proxy, auth = get_env_proxy_for_url(URL(url))
    except (LookupError, ValueError):
        return None, None
    return str(proxy), auth


class GeminiBackend(GeminiBatches):
    """Gemini Developer API through `google-genai` (api key from settings or GEMINI_API_KEY)."""

    name: ClassVar[str] = "gemini"
    vertexai: ClassVar[bool] = False
    api_version: ClassVar[str] = "v1beta"
    # Inline media Gemini reads (GIF is refused by the API; extraction converts nothing).
    media_types: ClassVar[frozenset[str]] = frozenset(
        {"image/png", "image/jpeg", "image/webp", "application/pdf"})

    def __init__(self, settings: Settings, *, credentials: Any = None,
                 quota: Quota | None = None, backoff_base_s: float = 1.0,
                 backoff_cap_s: float = 60.0):
        self.settings = settings
        # Connection failures in a row, across all concurrent calls, and when the streak began:
        # past `max_connection_failures` over at least UNREACHABLE_AFTER_S the service is
        # unreachable, and the run stops with one message instead of retrying every student.
        self._conn_failures = 0
        self._conn_down_since = 0.0
        self._cfg: tuple[Any, types.GenerateContentConfig] | None = None
        self._prefix: tuple[Any, list[types.Part]] | None = None
        self.on_retry: Callable[[BackendError], None] | None = None
        self.model = settings.model or DEFAULT_GEMINI_MODEL
        self.quota = quota if quota is not None else Quota(settings.rpm, settings.tpm)
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.base_url = self._base_url()
        self.timeout_s = settings.flex_timeout_s if settings.tier == "flex" else settings.timeout_s
        http_options = types.HttpOptions(
            base_url=self.base_url,
            api_version=self.api_version,
            timeout=int(self.timeout_s * 1000),
            # We own retries: one attempt, and no SDK retry of its own on a dropped connection
            # (with retry_options=None the SDK's aiohttp path resends once after 1-10 s).
            retry_options=types.HttpRetryOptions(attempts=1),
        )
        self._http_options, self._given_credentials = http_options, credentials
        try:
            self._client = self._make_client(http_options, credentials)
        except ValueError as e:
            raise ConfigError(f"cannot create the {self.name} client: {e}", fix=self._auth_fix()
                              ) from None
        self._loop_client: tuple[asyncio.AbstractEventLoop, genai.Client,
                                 aiohttp.ClientSession] | None = None
        if self.model.startswith(TUNED):
            self.model = self._tuned_endpoint(self.model.removeprefix(TUNED))

    def _tuned_endpoint(self, name: str) -> str:
        raise ConfigError(f"--model {TUNED}{name}: tuned models exist only on Gemini "
                          "Enterprise (Vertex AI); the Developer API has no model tuning",
                          fix="pass --backend enterprise with --project")

    # --- construction (overridden by VertexBackend) -------------------------------------------
    def _base_url(self) -> str | None:
        return self.settings.base_url or os.environ.get("GOOGLE_GEMINI_BASE_URL") or None

    def _make_client(self, http_options: types.HttpOptions, credentials: Any) -> genai.Client:
        key = self.settings.api_key.get_secret_value() if self.settings.api_key else None
        return genai.Client(vertexai=False, api_key=key, http_options=http_options)

    def _auth_fix(self) -> str:
        return ("check GEMINI_API_KEY (or GOOGLE_API_KEY): it must be set and be a valid Gemini "
                "API key from https://aistudio.google.com/apikey")

    # --- Backend protocol -----------------------------------------------------------------------
    async def generate(self, request: GradeRequest) -> GradeResponse:
        """One grading call, retried on transient failures. `latency_ms` is the wall time of the
        whole call including quota waits and retries."""
        contents = self._contents(request)
        config = self._config(request, raw_reply=True)
        model = request.model or self.model
        tokens = estimate_tokens(self._chars(request))
        start = time.monotonic()

        models = self._aio.models  # made before the quota wait: the request leaves on time

        async def attempt() -> Any:
            async with self.quota.acquire(tokens):
                response = await models.generate_content(
                    model=model, contents=contents, config=config)
            http = response.sdk_http_response
            return json.loads(http.body or "{}") if http is not None else {}

        try:
            body, retries = await self._with_retries(attempt, what="generateContent")
        except BackendError as e:
            raise _gone(e, request) from e
        return reply_of(body, vertex=self.vertexai, retries=retries,
                        latency_ms=(time.monotonic() - start) * 1000)

    async def count_tokens(self, request: GradeRequest) -> int:
        contents = self._count_contents(request)
        config = self._count_config(request)

        async def attempt() -> types.CountTokensResponse:
            return await self._aio.models.count_tokens(
                model=request.model or self.model, contents=contents, config=config)

        response, _ = await self._with_retries(attempt, what="countTokens")
        return int(response.total_tokens or 0)

    async def aclose(self) -> None:
        held, self._loop_client = self._loop_client, None
        if held is not None and held[0] is asyncio.get_running_loop():
            await held[1].aio.aclose()
            await held[2].close()
            held[1].close()
        await self._client.aio.aclose()
        self._client.close()

    # --- the async client ---------------------------------------------------------------------
    @property
    def _aio(self) -> AsyncClient:
        """The async client of the running event loop, on aiohttp (google-genai's faster async
        transport) with a session of our own, made once per loop. The SDK's default session has
        `trust_env=True`, which looks up proxies and ~/.netrc on a worker thread for every
        request: at 200 requests a second those two thread hops queued behind each other and
        held replies back for up to a second. Here the environment's proxy for the endpoint is
        read once, when the session is made, and the session trusts nothing else."""
        loop = asyncio.get_running_loop()
        held = self._loop_client
        if held is None or held[0] is not loop:
            proxy, proxy_auth = _env_proxy(self._endpoint())
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),  # concurrency is bounded by the run
                trust_env=False, proxy=proxy, proxy_auth=proxy_auth)
            client = self._make_client(
                self._http_options.model_copy(update={"aiohttp_client": session}),
                self._given_credentials)
            held = self._loop_client = (loop, client, session)
        return held[1].aio

    def _endpoint(self) -> str:
        """The URL requests go to (the SDK's default when no base URL was set)."""
        return str(self._client._api_client._http_options.base_url or "")

    # --- SupportsEmbeddings ---------------------------------------------------------------------
    async def embed(self, texts: list[str], *, model: str, batch_size: int,
                    dimensions: int) -> Embedded:
        """The vectors of `texts` (`models.embed_content`: many texts per call, `batch_size` at
        most), each text its own content so that each gets its own vector."""
        config = types.EmbedContentConfig(task_type="SEMANTIC_SIMILARITY",
                                          output_dimensionality=dimensions)
        vectors: list[list[float]] = []
        calls = tokens = 0
        for start in range(0, len(texts), batch_size):
            chunk = texts[start:start + batch_size]
            contents = [types.Content(role="user", parts=[types.Part(text=t)]) for t in chunk]

            async def attempt(contents: list[types.Content] = contents,
                              chars: int = sum(map(len, chunk))
                              ) -> types.EmbedContentResponse:
                models = self._aio.models  # made before the quota wait
                async with self.quota.acquire(estimate_tokens(chars)):
                    return await models.embed_content(
                        model=model, contents=contents, config=config)

            response, _ = await self._with_retries(attempt, what="embedContent")
            got = [list(e.values or []) for e in response.embeddings or []]
            if len(got) != len(chunk):
                raise BackendError(f"embedContent answered {len(got)} vectors for "
                                   f"{len(chunk)} texts",
                                   fix="pass --exemplar-similarity tfidf to compare the "
                                   "examples locally", run_wide=True)
            vectors.extend(got)
            calls += 1
            used = [(e.statistics.token_count if e.statistics else None)
                    for e in response.embeddings or []]
            tokens += sum(int(u) if u is not None else estimate_tokens(len(t))
                          for u, t in zip(used, chunk, strict=True))
        return Embedded(vectors, calls, tokens)

    # --- SupportsCaching ------------------------------------------------------------------------
    service_key: str = "developer"

    async def create_cache(self, request: GradeRequest, *, ttl_s: float,
                           display_name: str) -> CacheInfo:
        """One cache holding the system instruction and the static prefix (text and reference
        files) of `request`."""
        config = types.CreateCachedContentConfig(
            contents=[fast.Content(role="user", parts=self._static_parts(request))],
            system_instruction=fast.Content(parts=[fast.Part(text=request.system)]),
            ttl=_ttl(ttl_s), display_name=display_name)

        async def attempt() -> types.CachedContent:
            return await self._aio.caches.create(model=request.model or self.model,
                                                 config=config)

        cache, _ = await self._with_retries(attempt, what="cachedContents.create")
        return _cache_info(cache)

    async def get_cache(self, name: str) -> CacheInfo | None:
        async def attempt() -> types.CachedContent:
            return await self._aio.caches.get(name=name)

        found = await self._unless_gone(attempt, "cachedContents.get")
        return None if found is None else _cache_info(found)

    async def extend_cache(self, name: str, ttl_s: float) -> CacheInfo | None:
        async def attempt() -> types.CachedContent:
            return await self._aio.caches.update(
                name=name, config=types.UpdateCachedContentConfig(ttl=_ttl(ttl_s)))

        found = await self._unless_gone(attempt, "cachedContents.patch")
        return None if found is None else _cache_info(found)

    async def delete_cache(self, name: str) -> bool:
        async def attempt() -> types.DeleteCachedContentResponse:
            return await self._aio.caches.delete(name=name)

        return await self._unless_gone(attempt, "cachedContents.delete") is not None

    async def list_caches(self) -> list[CacheInfo]:
        async def attempt() -> list[types.CachedContent]:
            return [c async for c in await self._aio.caches.list(config={"page_size": 100})]

        found, _ = await self._with_retries(attempt, what="cachedContents.list")
        return [_cache_info(c) for c in found]

    # --- SupportsFiles (the Files API) ----------------------------------------------------------
    files_available: bool = True
    files_fix: str = ""

    async def upload_file(self, source: bytes | Path, *, mime_type: str,
                          display_name: str) -> FileInfo:
        """Resumable upload through the Files API (`client.files.upload`), then wait until the
        file is ACTIVE."""
        config = types.UploadFileConfig(mime_type=mime_type, display_name=display_name)

        async def attempt() -> types.File:
            stream = io.BytesIO(source) if isinstance(source, bytes) else str(source)
            return await self._aio.files.upload(file=stream, config=config)

        uploaded, _ = await self._with_retries(attempt, what="files.upload")
        deadline = time.monotonic() + FILE_ACTIVE_WAIT_S
        while _state(uploaded) == "PROCESSING":
            if time.monotonic() > deadline:
                raise BackendError(
                    f"{self.name} files.upload: {uploaded.name} is still being processed after "
                    f"{FILE_ACTIVE_WAIT_S:g} s", transient=True,
                    fix="run the same command again later: the upload is retried")
            await asyncio.sleep(1.0)
            name = str(uploaded.name)

            async def again(name: str = name) -> types.File:
                return await self._aio.files.get(name=name)

            uploaded, _ = await self._with_retries(again, what="files.get")
        info = _file_info(uploaded)
        if not info.active:
            raise BackendError(
                f"{self.name} files.upload: {info.name} ended in state {_state(uploaded)}",
                fix="check that the file opens; grade this student by hand if it does not")
        return info

    async def get_file(self, name: str) -> FileInfo | None:
        async def attempt() -> types.File:
            return await self._aio.files.get(name=name)

        found = await self._unless_gone(attempt, "files.get")
        return None if found is None else _file_info(found)

    async def delete_file(self, name: str) -> bool:
        async def attempt() -> types.DeleteFileResponse:
            return await self._aio.files.delete(name=name)

        return await self._unless_gone(attempt, "files.delete") is not None

    async def list_files(self) -> list[FileInfo]:
        async def attempt() -> list[types.File]:
            return [f async for f in await self._aio.files.list(config={"page_size": 100})]

        found, _ = await self._with_retries(attempt, what="files.list")
        return [_file_info(f) for f in found]

    async def download_file(self, name: str, destination: Path) -> None:
        """Stream a generated file (a batch job's results) to `destination`."""
        async def attempt() -> None:
            await self._aio.files.download(file=name, destination=str(destination))

        await self._with_retries(attempt, what="files.download")

    async def _unless_gone(self, call: Callable[[], Awaitable[T]], what: str) -> T | None:
        """`call`'s result, or None when the service says the thing is not there (403/404)."""
        try:
            result, _ = await self._with_retries(call, what=what)
        except BackendError as e:
            if e.status in (403, 404):
                return None
            raise
        return result

    # --- request building ---------------------------------------------------------------------
    def _static_parts(self, request: GradeRequest) -> list[types.Part]:
        """The static prefix: its text, then the reference files. The same objects for every
        request of a run (built once)."""
        key = (request.static_prefix, request.reference_parts)
        if self._prefix is None or self._prefix[0] != key:
            self._prefix = (key, [fast.Part(text=request.static_prefix),
                                  *(_part(p) for p in request.reference_parts)])
        return list(self._prefix[1])

    def _contents(self, request: GradeRequest) -> list[types.Content]:
        """First user turn = static prefix + student parts (prefix omitted when it is cached)."""
        parts: list[types.Part] = []
        if not request.cached_content:
            parts.extend(self._static_parts(request))
        parts.extend(_part(p) for p in request.student_parts)
        contents: list[types.Content] = [fast.Content(role="user", parts=parts)]
        for turn in request.history:
            contents.append(fast.Content(role=turn.role, parts=[fast.Part(text=turn.text)]))
        return contents

    def _config(self, request: GradeRequest, *, raw_reply: bool = False
                ) -> types.GenerateContentConfig:
        """The generation config; every request of a run shares one (the SDK copies it before
        use and never changes it), so it is built once, not per student. `raw_reply`: the SDK
        hands back the reply's JSON body unparsed (online calls; see _gemini_reply)."""
        key = (request.system, request.cached_content, request.response_schema,
               request.generation_config(), raw_reply)
        if self._cfg is not None and self._cfg[0] == key:
            return self._cfg[1]
        cfg = fast.GenerateContentConfig(
            response_mime_type="application/json",
            response_json_schema=request.response_schema,
            # sampling only when the user set it (None fields are not sent)
            temperature=request.temperature,
            top_p=request.top_p,
            seed=request.seed,
            max_output_tokens=request.max_output_tokens,
            # One grading call is one billed request: no function-calling loop (we send no
            # tools) and no automatic continuation hops.
            automatic_function_calling=fast.AutomaticFunctionCallingConfig(disable=True),
            automatic_continuation=False,
            should_return_http_response=raw_reply or None,  # read locally, never sent
        )
        if not self.vertexai:
            cfg.store = self.settings.store  # privacy: false keeps requests out of Google's logs
        if self.settings.tier != "standard":
            cfg.service_tier = types.ServiceTier(self.settings.tier)
        if request.cached_content:
            # The cache holds system + static prefix; Gemini rejects a system_instruction here.
            cfg.cached_content = request.cached_content
        else:
            cfg.system_instruction = fast.Content(parts=[fast.Part(text=request.system)])
        if request.thinking_level is not None:  # a level, never a budget: never both
            cfg.thinking_config = fast.ThinkingConfig(
                thinking_level=types.ThinkingLevel(request.thinking_level.upper()))
        self._cfg = (key, cfg)
        return cfg

    def _count_config(self, request: GradeRequest) -> types.CountTokensConfig | None:
        # The Developer API countTokens takes contents only (see _count_contents).
        return None

    def _count_contents(self, request: GradeRequest) -> list[types.Content]:
        """The Developer API's countTokens takes no system instruction: its text is counted as
        a leading part instead, so the total matches what generateContent is billed for."""
        contents = self._contents(request)
        if request.system and not request.cached_content:
            first = contents[0]
            contents[0] = fast.Content(role="user", parts=[fast.Part(text=request.system),
                                                           *(first.parts or [])])
        return contents

    @staticmethod
    def _chars(request: GradeRequest) -> int:
        n = len(request.system) + len(request.static_prefix)
        n += sum(len(p.text or "") for p in request.student_parts)
        n += sum(len(t.text) for t in request.history)
        return n

    # --- retries and errors -------------------------------------------------------------------
    async def _with_retries(self, call: Callable[[], Awaitable[T]], *, what: str,
                            retry: bool = True) -> tuple[T, int]:
        retries = 0
        while True:
            try:
                result = await call()
            except Exception as e:
                err = self._classify(e, what)
                if err is None:
                    raise
                err.retries = retries
                if err.status is None and err.transient:  # the service was not reached at all
                    if not self._conn_failures:
                        self._conn_down_since = time.monotonic()
                    self._conn_failures += 1
                    if (self._conn_failures >= self.settings.max_connection_failures
                            and time.monotonic() - self._conn_down_since
                            >= UNREACHABLE_AFTER_S):
                        raise self._unreachable(e) from e
                if not err.transient or not retry or retries >= self.settings.max_retries:
                    if err.transient:
                        err = self._give_up(err, retries)
                    raise err from e
                if self.on_retry is not None:
                    self.on_retry(err)
                # no server load to spare when it was not reached: retry soon, so an outage is
                # recognised within seconds rather than behind one long backoff
                cap = CONNECT_BACKOFF_CAP_S if err.status is None else self.backoff_cap_s
                await asyncio.sleep(self._backoff(retries, err.retry_after, cap))
                retries += 1
            else:
                self._conn_failures = 0
                return result, retries

    def _unreachable(self, cause: Exception) -> BackendError:
        n, secs = self._conn_failures, time.monotonic() - self._conn_down_since
        return BackendError(
            f"cannot reach the {self.name} API at {self.base_url or 'the default endpoint'}: "
            f"{n} connection attempts in a row failed over {secs:.0f} s (last: "
            f"{type(cause).__name__}: {cause})",
            fix=f"check the network connection{self._endpoint_hint()}, then run the same "
            "command again: finished grades are kept and nothing is paid twice",
            transient=False, run_wide=True)

    def _endpoint_hint(self) -> str:
        return (f" and GOOGLE_GEMINI_BASE_URL (now {self.base_url})" if self.base_url else "")

    def _backoff(self, attempt: int, retry_after: float | None, cap: float) -> float:
        """Full jitter: uniform(0, min(cap, base * 2^attempt)); the server's delay is a floor."""
        jitter = random.uniform(0, min(cap, self.backoff_base_s * 2 ** attempt))
        if retry_after is not None:
            return retry_after + min(jitter, 0.1 * retry_after + 0.05)
        return jitter

    def _classify(self, e: Exception, what: str) -> BackendError | None:
        """Map an SDK/transport exception to a BackendError; None = not ours (a bug)."""
        if isinstance(e, genai_errors.APIError):
            return self._api_error(e, what)
        if isinstance(e, httpx2.TimeoutException | asyncio.TimeoutError
                      | aiohttp.ServerTimeoutError):
            return BackendError(
                f"{self.name} {what} timed out after {self.timeout_s:g} s",
                fix=("raise flex_timeout_s in grader.toml (Flex requests may queue for up to 15 "
                     "minutes)" if self.settings.tier == "flex" else
                     "raise --timeout, or lower --concurrency if the service is overloaded"),
                transient=True, status=408)
        if isinstance(e, httpx2.TransportError | aiohttp.ClientError):
            # aiohttp's connect error text repeats the SSL context object; the OS error is it
            detail = e.os_error if isinstance(e, aiohttp.ClientConnectorError) else e
            return BackendError(
                f"cannot reach the {self.name} API at {self.base_url or 'the default endpoint'}: "
                f"{type(e).__name__}: {detail}",
                fix=f"check your network connection{self._endpoint_hint()}", transient=True)
        if isinstance(e, auth_errors.TransportError):
            return BackendError(f"{self.name}: cannot refresh Google credentials: {e}",
                                fix="check your network connection", transient=True)
        if isinstance(e, auth_errors.GoogleAuthError):
            return BackendError(f"{self.name}: no usable Google credentials: {e}",
                                fix=self._auth_fix(), transient=False, status=401,
                                run_wide=True)
        if isinstance(e, json.JSONDecodeError | genai_errors.UnknownApiResponseError):
            return BackendError(f"{self.name} {what} returned a malformed response body",
                                fix="usually a proxy or service glitch; it is retried",
                                transient=True, status=200)
        return None

    def _api_error(self, e: genai_errors.APIError, what: str) -> BackendError:
        code = int(e.code or 0)
        head = f"{self.name} {what} failed: {code} {e.status or ''}: {e.message or ''}".rstrip()
        if code == 429 and is_spend_limit(e):
            return BackendError(
                f"{self.name} {what}: spend-based rate limit reached (429: your tier's USD "
                f"per rolling 10 minutes, not requests per minute): {e.message or ''}".rstrip(),
                fix="set spend_per_10min in grader.toml below your tier's limit (Tier 1 $10, "
                "Tier 2 $50, Tier 3 $200 per 10 minutes) so grader paces itself, or use "
                "--tier flex (half price); it is retried after the server's delay",
                transient=True, status=code, retry_after=retry_delay_from(e))
        if code in RETRYABLE_STATUS:
            fix = ("requests or tokens per minute quota: lower --rpm / --tpm / --concurrency, "
                   "or raise your quota" if code == 429
                   else "the service is busy; retry later or lower --concurrency")
            return BackendError(head, fix=fix, transient=True, status=code,
                                retry_after=retry_delay_from(e))
        text = json.dumps(e.details) if e.details else ""
        if code in {401, 403} or "API_KEY_INVALID" in text or "API key not valid" in text:
            return BackendError(head, fix=self._auth_fix(), status=code, run_wide=True)
        if code == 404:
            fix = (f"check --model (now {self.model!r}; e.g. {DEFAULT_GEMINI_MODEL})"
                   + (" and --location" if self.vertexai else ""))
            return BackendError(head, fix=fix, status=code, run_wide=True)
        # Any other 4xx refuses this one request (too large, unreadable media, ...): the student
        # is flagged request_rejected and the class goes on.
        return BackendError(
            head, status=code, rejected=400 <= code < 500,
            fix="look at this student's files; after a fix, rerun with --retry-flagged "
            "request_rejected (a changed --max-output-tokens or --thinking is retried "
            "on its own)")

    def _give_up(self, err: BackendError, retries: int) -> BackendError:
        return BackendError(f"{err.message} (gave up after {retries} retries)", fix=err.fix,
                            transient=True, status=err.status, retry_after=err.retry_after,
                            retries=retries)


class VertexBackend(GeminiBackend):
    """Gemini Enterprise (Agent Platform, formerly Vertex AI): project/location from settings
    or GOOGLE_CLOUD_*; ADC credentials unless `credentials=` is given (tests pass
    `google.oauth2.credentials.Credentials`). `vertex` is the legacy name of `enterprise`."""

    name: ClassVar[str] = "vertex"
    vertexai: ClassVar[bool] = True
    api_version: ClassVar[str] = "v1beta1"

    def _base_url(self) -> str | None:
        return (os.environ.get("GOOGLE_VERTEX_BASE_URL") or self.settings.base_url) or None

    def _make_client(self, http_options: types.HttpOptions, credentials: Any) -> genai.Client:
        self._credentials = credentials
        self._gcs: Any = getattr(self, "_gcs", None)  # made again for each event loop's client
        project = self.settings.project or os.environ.get("GOOGLE_CLOUD_PROJECT")
        location = (self.settings.location or os.environ.get("GOOGLE_CLOUD_LOCATION")
                    or "global")
        if not project:
            raise ConfigError("Gemini Enterprise (Vertex AI) needs a Google Cloud project",
                              fix=f"set GOOGLE_CLOUD_PROJECT (with {ENTERPRISE_ENV}=true) or "
                              "pass --project")
        self._project, self._location = project, location
        return genai.Client(enterprise=True, project=project, location=location,
                            credentials=credentials, http_options=http_options)

    def _auth_fix(self) -> str:
        return ("run `gcloud auth application-default login`, and check that --project has the "
                "Gemini Enterprise Agent Platform (Vertex AI) API enabled and your account may "
                "use it")

    def _count_config(self, request: GradeRequest) -> types.CountTokensConfig | None:
        if request.cached_content:
            return None
        return types.CountTokensConfig(system_instruction=request.system)

    # --- SupportsCaching: the same `client.caches` calls; caches live per project and location
    @property
    def service_key(self) -> str:  # type: ignore[override]
        return f"enterprise:{self._project}/{self._location}"

    # --- SupportsFiles: Enterprise has no Files API; files go to a gs:// staging bucket ---------
    @property
    def files_available(self) -> bool:  # type: ignore[override]
        return self.settings.staging_bucket is not None

    files_fix = ("set staging_bucket = \"gs://BUCKET/PREFIX\" in grader.toml (a bucket the "
                 "project can read), so files too large to send inline are staged there")

    def _bucket(self) -> tuple[Any, str]:
        """The staging bucket (google-cloud-storage, imported only when it is used) and the
        object-name prefix."""
        from google.cloud import storage

        if self._gcs is None:
            self._gcs = storage.Client(project=self._project, credentials=self._credentials)
        spec = (self.settings.staging_bucket or "").removeprefix("gs://")
        bucket, _, prefix = spec.partition("/")
        prefix = prefix.strip("/")
        return self._gcs.bucket(bucket), f"{prefix}/" if prefix else ""

    async def _gcs_call(self, what: str, fn: Callable[[], T]) -> T:
        """A blocking google-cloud-storage call in a thread, its errors as BackendError."""
        from google.api_core import exceptions as gexc

        try:
            return await asyncio.to_thread(fn)
        except gexc.GoogleAPICallError as e:
            code = int(e.code or 0)
            raise BackendError(f"{self.name} staging bucket {what} failed: {code}: {e.message}",
                               fix=f"check staging_bucket ({self.settings.staging_bucket}) and "
                               "that the project may write to it", status=code,
                               transient=code in RETRYABLE_STATUS) from None
        except (OSError, gexc.RetryError) as e:
            raise BackendError(f"{self.name} staging bucket {what} failed: {e}", transient=True,
                               fix="check your network connection") from None

    def _staged(self, blob: Any) -> FileInfo:
        return FileInfo(name=f"gs://{blob.bucket.name}/{blob.name}",
                        uri=f"gs://{blob.bucket.name}/{blob.name}",
                        mime_type=str(blob.content_type or ""), expires_at=None,
                        display_name=str(blob.name).rsplit("/", 1)[-1])

    def _blob(self, name: str) -> Any:
        bucket, _ = self._bucket()
        spec = name.removeprefix("gs://")
        owner, _, obj = spec.partition("/")
        if owner != bucket.name:
            bucket = bucket.client.bucket(owner)
        return bucket.blob(obj)

    async def upload_file(self, source: bytes | Path, *, mime_type: str,
                          display_name: str) -> FileInfo:
        """Write the object `<prefix><display_name>` to the staging bucket."""
        bucket, prefix = self._bucket()
        blob = bucket.blob(prefix + display_name)

        def put() -> None:
            if isinstance(source, bytes):
                blob.upload_from_string(source, content_type=mime_type)
            else:
                blob.upload_from_filename(str(source), content_type=mime_type)

        await self._gcs_call("upload", put)
        blob.content_type = mime_type
        return self._staged(blob)

    async def get_file(self, name: str) -> FileInfo | None:
        blob = self._blob(name)
        found = await self._gcs_call("get", blob.exists)
        return self._staged(blob) if found else None

    async def delete_file(self, name: str) -> bool:
        from google.api_core import exceptions as gexc

        blob = self._blob(name)

        def delete() -> bool:
            try:
                blob.delete()
            except gexc.NotFound:
                return False
            return True

        return await self._gcs_call("delete", delete)

    async def list_files(self) -> list[FileInfo]:
        bucket, prefix = self._bucket()
        blobs = await self._gcs_call("list", lambda: list(bucket.list_blobs(prefix=prefix)))
        return [self._staged(b) for b in blobs]

    async def download_file(self, name: str, destination: Path) -> None:
        blob = self._blob(name)
        await self._gcs_call("download", lambda: blob.download_to_filename(str(destination)))

    async def prediction_files(self, prefix: str) -> list[str]:
        """The results of a batch prediction job with output prefix `prefix`."""
        bucket = self._blob(prefix.rstrip("/") + "/x").bucket
        below = prefix.removeprefix("gs://").partition("/")[2].rstrip("/") + "/prediction-model-"
        blobs = await self._gcs_call("list", lambda: list(bucket.list_blobs(prefix=below)))
        return sorted(f"gs://{bucket.name}/{b.name}" for b in blobs
                      if str(b.name).endswith(".jsonl"))


    # --- SupportsTuning: supervised tuning jobs (`client.tunings`), Enterprise only -------------
    async def start_tuning(self, *, base_model: str, train_uri: str,
                           validation_uri: str | None, display_name: str,
                           epochs: int | None) -> TuningInfo:
        config = types.CreateTuningJobConfig(
            tuned_model_display_name=display_name, epoch_count=epochs,
            validation_dataset=(types.TuningValidationDataset(gcs_uri=validation_uri)
                                if validation_uri else None))

        async def attempt() -> types.TuningJob:
            return await self._aio.tunings.tune(
                base_model=base_model, training_dataset=types.TuningDataset(gcs_uri=train_uri),
                config=config)

        job, _ = await self._with_retries(attempt, what="tunings.tune")
        return _tuning_info(job)

    async def get_tuning(self, name: str) -> TuningInfo:
        async def attempt() -> types.TuningJob:
            return await self._aio.tunings.get(name=name)

        job, _ = await self._with_retries(attempt, what="tunings.get")
        return _tuning_info(job)

    async def list_tunings(self) -> list[TuningInfo]:
        async def attempt() -> list[types.TuningJob]:
            return [j async for j in await self._aio.tunings.list(config={"page_size": 100})]

        jobs, _ = await self._with_retries(attempt, what="tunings.list")
        return [_tuning_info(j) for j in jobs]

    async def cancel_tuning(self, name: str) -> None:
        async def attempt() -> None:
            await self._aio.tunings.cancel(name=name)

        await self._with_retries(attempt, what="tunings.cancel")

    def _tuned_endpoint(self, name: str) -> str:
        """The endpoint of the newest succeeded tuning job whose tuned model is called `name`
        (its display name, or the job's id); asked once, when the backend is created."""
        found = [j for j in self._client.tunings.list(config={"page_size": 100})
                 if j.state == types.JobState.JOB_STATE_SUCCEEDED and j.tuned_model
                 and j.tuned_model.endpoint and name in (
                     j.tuned_model_display_name, (j.name or "").rsplit("/", 1)[-1])]
        if not found:
            raise ConfigError(f"no succeeded tuning job made a tuned model called {name!r} in "
                              f"project {self._project} ({self._location})",
                              fix="check `grade tune status` for the job's state and name, "
                                  "and pass --model tuned:NAME with its display name")
        newest = max(found, key=lambda j: str(j.create_time or ""))
        assert newest.tuned_model is not None and newest.tuned_model.endpoint is not None
        return newest.tuned_model.endpoint


def _tuning_info(job: types.TuningJob) -> TuningInfo:
    tuned = job.tuned_model
    return TuningInfo(
        name=job.name or "", state=job.state.value if job.state else "JOB_STATE_UNSPECIFIED",
        base_model=job.base_model or "", display_name=job.tuned_model_display_name or "",
        tuned_model=tuned.model if tuned else None, endpoint=tuned.endpoint if tuned else None,
        error=job.error.message if job.error else None)


class EnterpriseBackend(VertexBackend):
    """The same client under the name current Google docs use (GOOGLE_GENAI_USE_ENTERPRISE)."""

    name: ClassVar[str] = "enterprise"
