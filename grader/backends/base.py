"""The small interface every backend implements, and the registry that picks one by name.

A backend turns a `GradeRequest` into a `GradeResponse`. Retries, quota and timeouts are the
backend's business (it knows its service's error format); validation and storage are not.

Beyond the three methods, a backend may offer optional capabilities, declared as protocols that
callers check with `isinstance` (in the manner of simonw/llm's `attachment_types`), never by
catching an exception: `AcceptsMedia` (which inline media it can read).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Protocol, runtime_checkable

from ..errors import ConfigError
from ..request import GradeRequest, GradeResponse


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
