"""What the Gemini Developer API keeps for us besides a grading call: context caches
(`SupportsCaching`, `client.caches`), uploaded files (`SupportsFiles`, the Files API) and
embeddings (`SupportsEmbeddings`, `models.embed_content`). `VertexBackend` keeps the caches and
embeddings and stages files in a gs:// bucket instead (see `enterprise`).
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from google.genai import types

from grader.backends.base import CacheInfo, Embedded, FileInfo
from grader.backends.gemini import fast_types as fast
from grader.backends.gemini.retry import GeminiRetries
from grader.errors import BackendError
from grader.online.ratelimit import Quota, estimate_tokens
from grader.prompting.request import GradeRequest

if TYPE_CHECKING:
    from google.genai.client import AsyncClient

T = TypeVar("T")
Stored = Literal["caches", "files"]
_REST: dict[Stored, str] = {"caches": "cachedContents", "files": "files"}  # names in errors

FILE_ACTIVE_WAIT_S = 60.0  # an upload still PROCESSING is polled this long


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


def _enum_name(value: Any) -> str | None:
    if value is None:
        return None
    return str(getattr(value, "value", value))


class GeminiResources(GeminiRetries):
    """Mixed into `GeminiBackend` (which provides the client, the quota and the request's
    static prefix)."""

    quota: Quota
    _static_parts: Callable[[GradeRequest], list[types.Part]]

    if TYPE_CHECKING:
        @property
        def _aio(self) -> AsyncClient:  # the backend's: the async client of the running loop
            ...

    # --- ListsModels ----------------------------------------------------------------------------
    async def list_models(self) -> list[str]:
        """Every model id the service lists (`models.list`, all pages)."""
        async def attempt() -> list[str]:
            pager = await self._aio.models.list(config={"page_size": 100})
            return [str(m.name or "").rsplit("/", 1)[-1] async for m in pager if m.name]

        ids, _ = await self._with_retries(attempt, what="models.list")
        return ids

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
                return await self._within_quota(
                    estimate_tokens(chars), "embedContent", lambda: models.embed_content(
                        model=model, contents=contents, config=config))

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
        found = await self._get("caches", name)
        return _cache_info(found) if found is not None else None

    async def extend_cache(self, name: str, ttl_s: float) -> CacheInfo | None:
        config = types.UpdateCachedContentConfig(ttl=_ttl(ttl_s))
        found = await self._unless_gone(lambda: self._aio.caches.update(name=name, config=config),
                                        "cachedContents.patch")
        return _cache_info(found) if found is not None else None

    async def delete_cache(self, name: str) -> bool:
        return await self._delete("caches", name)

    async def list_caches(self) -> list[CacheInfo]:
        return [_cache_info(c) for c in await self._list("caches")]

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
        found = await self._get("files", name)
        return None if found is None else _file_info(found)

    async def delete_file(self, name: str) -> bool:
        return await self._delete("files", name)

    async def list_files(self) -> list[FileInfo]:
        return [_file_info(f) for f in await self._list("files")]

    async def download_file(self, name: str, destination: Path) -> None:
        """Stream a generated file (a batch job's results) to `destination`."""
        async def attempt() -> None:
            await self._aio.files.download(file=name, destination=str(destination))

        await self._with_retries(attempt, what="files.download")

    # caches and files: the SDK's two stores of named things, read and removed the same way
    async def _get(self, kind: Stored, name: str) -> Any | None:
        api = getattr(self._aio, kind)
        return await self._unless_gone(lambda: api.get(name=name), f"{_REST[kind]}.get")

    async def _delete(self, kind: Stored, name: str) -> bool:
        api = getattr(self._aio, kind)
        return await self._unless_gone(lambda: api.delete(name=name),
                                       f"{_REST[kind]}.delete") is not None

    async def _list(self, kind: Stored) -> list[Any]:
        """Every item of a paged listing, retried as one call."""
        api = getattr(self._aio, kind)

        async def attempt() -> list[Any]:
            return [x async for x in await api.list(config={"page_size": 100})]

        found, _ = await self._with_retries(attempt, what=f"{_REST[kind]}.list")
        return found

    async def _unless_gone(self, call: Callable[[], Awaitable[T]], what: str) -> T | None:
        """`call`'s result, or None when the service says the thing is not there (403/404)."""
        try:
            result, _ = await self._with_retries(call, what=what)
        except BackendError as e:
            if e.status in (403, 404):
                return None
            raise
        return result
