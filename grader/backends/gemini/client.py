"""`GeminiBackend`: the Gemini Developer API through one genai client (and, for async calls, one
per event loop on an aiohttp session of our own: see `_aio`), and how a `GradeRequest` becomes
its contents and generation config. Retries and error mapping are in `retry` and `errors`;
caches, files and embeddings in `resources`; batch jobs in `batch`; replies are read by `reply`.

Every Developer API request carries `store: false` (setting `store`): since 2026-10-26 new
projects keep generateContent requests in Google's logs by default, and student work is personal
data. Enterprise has no such field (the SDK refuses it there). `--tier flex` sends
`service_tier=flex` with a timeout that covers Flex's minutes of queueing. Quota is
`grader.online.ratelimit.Quota`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import ssl
import time
from collections.abc import Callable
from typing import Any, ClassVar

import aiohttp
import certifi
import httpx2
from aiohttp.helpers import get_env_proxy_for_url
from google import genai
from google.genai import types
from google.genai.client import AsyncClient
from yarl import URL

from grader.backends.gemini import fast_types as fast
from grader.backends.gemini.batch import GeminiBatches
from grader.backends.gemini.errors import _gone
from grader.backends.gemini.reply import reply_of
from grader.backends.gemini.resources import GeminiResources
from grader.config.settings import DEFAULT_GEMINI_MODEL, Settings
from grader.errors import BackendError, ConfigError
from grader.online.ratelimit import MAX_IN_FLIGHT, Quota, estimate_tokens
from grader.prompting.request import GradeRequest, GradeResponse, Part


def _part(p: Part) -> types.Part:
    """A request part on the wire: text, a file the service holds, or inline bytes."""
    if p.text is not None:
        return fast.Part(text=p.text)
    mime = p.mime_type or "application/octet-stream"
    if p.file_uri is not None:
        return fast.Part(file_data=fast.FileData(file_uri=p.file_uri, mime_type=mime))
    return fast.Part(inline_data=fast.Blob(data=p.data or b"", mime_type=mime))


# `--model tuned:NAME`: the endpoint of the tuned model called NAME (`grade tune start`).
TUNED = "tuned:"


@functools.cache
def _tls(cert_file: str | None, cert_dir: str | None) -> dict[str, dict[str, ssl.SSLContext]]:
    """The TLS contexts google-genai would make for each client it builds (httpx's: the OS trust
    store, or SSL_CERT_FILE / SSL_CERT_DIR; aiohttp's and the websocket's: certifi, or the same
    variables), made once per process: a run builds two clients (see `_aio`), and making
    these contexts is nearly all of a client's cost (about 25 ms of CPU each)."""
    if cert_file or cert_dir:
        verify = ssl.create_default_context(cafile=cert_file, capath=cert_dir)
    else:
        verify = httpx2.create_ssl_context()
    aio = ssl.create_default_context(  # an empty SSL_CERT_FILE: the system's store, as the SDK
        cafile=certifi.where() if cert_file is None else cert_file, capath=cert_dir)
    # each transport takes its own key and drops the other's
    return {"client_args": {"verify": verify},
            "async_client_args": {"verify": verify, "ssl": aio}}


def _env_proxy(url: str) -> tuple[str | None, aiohttp.BasicAuth | None]:
    """The proxy HTTPS_PROXY / HTTP_PROXY / NO_PROXY (and ~/.netrc for its password) name for
    `url`, read as aiohttp itself would read them; (None, None) for a direct connection."""
    try:
        proxy, auth = get_env_proxy_for_url(URL(url))
    except (LookupError, ValueError):
        return None, None
    return str(proxy), auth


class GeminiBackend(GeminiResources, GeminiBatches):
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
        self.quota = quota if quota is not None else Quota(
            settings.rpm, settings.tpm, ceiling=settings.concurrency or MAX_IN_FLIGHT)
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

    @property
    def in_flight_ceiling(self) -> int:
        """`Paced`: the run may start this many requests; the quota decides when each leaves."""
        return self.quota.ceiling

    # --- construction (overridden by VertexBackend) -------------------------------------------
    def _base_url(self) -> str | None:
        return self.settings.base_url or os.environ.get("GOOGLE_GEMINI_BASE_URL") or None

    def _make_client(self, http_options: types.HttpOptions, credentials: Any) -> genai.Client:
        key = self.settings.api_key.get_secret_value() if self.settings.api_key else None
        tls = _tls(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
        return genai.Client(vertexai=False, api_key=key,
                            http_options=http_options.model_copy(update=tls))

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
            response = await self._within_quota(tokens, "generateContent", lambda: (
                models.generate_content(model=model, contents=contents, config=config)))
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
        hands back the reply's JSON body unparsed (online calls; see `reply`)."""
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
