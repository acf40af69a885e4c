"""The small interface every backend implements, and the registry that picks one by name.

A backend turns a `GradeRequest` into a `GradeResponse`. Retries, quota and timeouts are the
backend's business (it knows its service's error format); validation and storage are not.

Beyond the three methods, a backend may offer optional capabilities, declared as protocols that
callers check with `isinstance` (in the manner of simonw/llm's `attachment_types`), never by
catching an exception: `AcceptsMedia` (which inline media it can read), `SupportsCaching` (an
explicit cache of the static prefix on the service), `SupportsFiles` (uploading files too
large to send inline), `SupportsBatch` (provider batch jobs) and `SupportsEmbeddings` (text
embeddings, for exemplar similarity). The local backend has none of the last four: it keeps the
prefix in llama.cpp's KV cache, reads no media, and exemplars fall back to TF-IDF.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from grader.errors import ConfigError
from grader.prompting.request import GradeRequest, GradeResponse


@runtime_checkable
class Backend(Protocol):
    name: ClassVar[str]

    async def generate(self, request: GradeRequest) -> GradeResponse:
        """Grade one request. Raises `BackendError` when it finally fails."""
        ...

    async def count_tokens(self, request: GradeRequest) -> int:
        """Prompt tokens this request would use (for --dry-run and quota)."""
        ...

    async def aclose(self) -> None:
        """Release the shared client / model."""
        ...


@runtime_checkable
class AcceptsMedia(Protocol):
    """The backend can read these inline media types (images, PDFs) besides text."""

    media_types: ClassVar[frozenset[str]]


def media_types(backend: object) -> frozenset[str]:
    """The media a backend reads; none for a backend without the capability."""
    return backend.media_types if isinstance(backend, AcceptsMedia) else frozenset()


@runtime_checkable
class ListsModels(Protocol):
    """The backend can list the models its service offers (`grade models --check`)."""

    async def list_models(self) -> list[str]:
        """The ids of every model the service lists (without a "models/" prefix)."""
        ...


# What a run keeps in flight on a backend that does not pace itself to a provider's quota (the
# local model's server queues whatever it is sent; more in flight only adds waiting)
UNPACED_IN_FLIGHT = 8


@runtime_checkable
class Paced(Protocol):
    """The backend paces its requests to the provider's quota (`grader.online.ratelimit.Quota`:
    the windows it knows or learns, and an adaptive in-flight limit up to `ceiling`): a run may
    start as many requests as the ceiling, and the quota decides when each leaves."""

    @property
    def in_flight_ceiling(self) -> int: ...


def in_flight(backend: object, concurrency: int | None) -> int:
    """How many students a run works on at once: the teacher's `concurrency` when set, else
    the ceiling of a backend that paces itself, else `UNPACED_IN_FLIGHT`."""
    if concurrency is not None:
        return concurrency
    return backend.in_flight_ceiling if isinstance(backend, Paced) else UNPACED_IN_FLIGHT


@dataclass(frozen=True)
class Embedded:
    """The vectors of some texts, in order, and what computing them took: `calls` requests,
    `tokens` input tokens (as the service reported them, else estimated from the length)."""

    vectors: list[list[float]]
    calls: int
    tokens: int


@runtime_checkable
class SupportsEmbeddings(Protocol):
    """The backend can embed texts with `model`, in batches of at most `batch_size` per call,
    as vectors of `dimensions` numbers."""

    async def embed(self, texts: list[str], *, model: str, batch_size: int,
                    dimensions: int) -> Embedded: ...


@dataclass(frozen=True)
class CacheInfo:
    """An explicit cache as the service describes it."""

    name: str
    tokens: int
    expires_at: datetime | None
    display_name: str | None = None


@runtime_checkable
class SupportsCaching(Protocol):
    """The backend can keep a request's static prefix (system instruction, `static_prefix`,
    `reference_parts`) in a cache on the service. A request naming it in `cached_content` is
    then sent without them (the service refuses a system instruction, tools or tool config
    beside a cache). `service_key` names where caches live (caches of one key are visible to
    each other); `get`/`extend` answer None and `delete` False for a cache that is gone."""

    service_key: str

    async def create_cache(self, request: GradeRequest, *, ttl_s: float,
                           display_name: str) -> CacheInfo: ...

    async def get_cache(self, name: str) -> CacheInfo | None: ...

    async def extend_cache(self, name: str, ttl_s: float) -> CacheInfo | None: ...

    async def delete_cache(self, name: str) -> bool: ...

    async def list_caches(self) -> list[CacheInfo]: ...


@dataclass(frozen=True)
class FileInfo:
    """An uploaded file: `name` identifies it to the service (`files/abc`, or the `gs://` URI of
    a staged object), `uri` is what a request's file part names."""

    name: str
    uri: str
    mime_type: str
    expires_at: datetime | None  # None: kept until deleted (a staging bucket)
    display_name: str | None = None
    active: bool = True


@runtime_checkable
class SupportsFiles(Protocol):
    """The backend can upload files (the Gemini Files API, or a gs:// staging bucket) and name
    them in requests. `files_available` is False when it is not set up for it (Enterprise
    without a staging bucket; `files_fix` says how). `get` answers None and `delete` False for
    a file that is gone. `download_file` streams to a path (batch result files)."""

    service_key: str
    files_available: bool
    files_fix: str

    async def upload_file(self, source: bytes | Path, *, mime_type: str,
                          display_name: str) -> FileInfo: ...

    async def get_file(self, name: str) -> FileInfo | None: ...

    async def delete_file(self, name: str) -> bool: ...

    async def list_files(self) -> list[FileInfo]: ...

    async def download_file(self, name: str, destination: Path) -> None: ...


@dataclass(frozen=True)
class TuningInfo:
    """A supervised tuning job as the service reports it; `endpoint` (what a request names to
    use the tuned model) once it succeeded."""

    name: str
    state: str  # JOB_STATE_PENDING | _RUNNING | _SUCCEEDED | _FAILED | _CANCELLED ...
    base_model: str
    display_name: str
    tuned_model: str | None = None
    endpoint: str | None = None
    error: str | None = None

    @property
    def ended(self) -> bool:
        return self.state in ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED",
                              "JOB_STATE_EXPIRED")


@runtime_checkable
class SupportsTuning(Protocol):
    """The backend can run supervised tuning jobs (Gemini Enterprise: `client.tunings`)."""

    async def start_tuning(self, *, base_model: str, train_uri: str,
                           validation_uri: str | None, display_name: str,
                           epochs: int | None) -> TuningInfo: ...

    async def get_tuning(self, name: str) -> TuningInfo: ...

    async def list_tunings(self) -> list[TuningInfo]: ...

    async def cancel_tuning(self, name: str) -> None: ...


@dataclass(frozen=True)
class BatchInfo:
    """A provider batch job: `state` as the SDK names it (JOB_STATE_*); `output` where its
    results are (a Files API name, or a gs:// prefix); `inline` the inline results."""

    name: str
    state: str
    display_name: str | None = None
    output: str | None = None
    error: str | None = None
    inline: tuple[BatchResult, ...] | None = None

    @property
    def done(self) -> bool:
        return self.state in END_STATES

    @property
    def succeeded(self) -> bool:
        return self.state in ("JOB_STATE_SUCCEEDED", "JOB_STATE_PARTIALLY_SUCCEEDED")


END_STATES = frozenset({"JOB_STATE_SUCCEEDED", "JOB_STATE_PARTIALLY_SUCCEEDED",
                        "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"})


@dataclass(frozen=True)
class BatchResult:
    """One line of a batch job's results: the reply, or the provider's error for that line."""

    key: str
    response: GradeResponse | None
    error: str | None = None


@runtime_checkable
class SupportsBatch(Protocol):
    """The backend can run many requests as one provider batch job. `batch_source` says how
    requests reach the job: "inline-or-file" (Developer API: inline requests, or a JSONL file
    uploaded through the Files API) or "gcs" (Enterprise: a JSONL object in a bucket).
    `batch_line` is a request as one JSONL line; `batch_results` streams a finished job's
    results (downloaded to `workdir`, read line by line)."""

    batch_source: str

    def batch_line(self, key: str, request: GradeRequest) -> dict[str, Any]: ...

    async def create_batch(self, *, model: str, display_name: str,
                           inline: list[tuple[str, GradeRequest]] | None = None,
                           source: str | None = None,
                           destination: str | None = None) -> BatchInfo: ...

    async def get_batch(self, name: str) -> BatchInfo: ...

    async def list_batches(self) -> list[BatchInfo]: ...

    async def cancel_batch(self, name: str) -> None: ...

    async def delete_batch(self, name: str) -> bool: ...

    def batch_results(self, info: BatchInfo, workdir: Path) -> AsyncIterator[BatchResult]: ...


BackendFactory = Callable[..., Backend]
_REGISTRY: dict[str, Callable[[], BackendFactory]] = {}


def register(name: str, loader: Callable[[], BackendFactory]) -> None:
    """Register a backend under `name`. `loader` imports lazily, so optional dependencies
    (llama-cpp-python) are only needed when that backend is chosen."""
    _REGISTRY[name] = loader


def names() -> list[str]:
    return sorted(_REGISTRY)


def create(name: str, **options: Any) -> Backend:
    try:
        loader = _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown backend {name!r}",
            fix=f"use one of: {', '.join(names())} (--backend or [grader] backend in grader.toml)",
        ) from None
    return loader()(**options)
