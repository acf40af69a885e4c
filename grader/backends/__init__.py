"""Backends: `gemini` (Developer API), `enterprise` (Gemini Enterprise; `vertex` is its legacy
name), `local` (llama.cpp), `openai` (a school's own model server with an OpenAI-compatible
API)."""

from __future__ import annotations

from grader.backends.base import (
    AcceptsMedia,
    Backend,
    BatchInfo,
    BatchResult,
    CacheInfo,
    FileInfo,
    ListsModels,
    Paced,
    SupportsBatch,
    SupportsCaching,
    SupportsFiles,
    SupportsTuning,
    TuningInfo,
    create,
    in_flight,
    media_types,
    names,
    register,
)


def _gemini() -> object:
    from grader.backends.gemini import GeminiBackend

    return GeminiBackend


def _vertex() -> object:
    from grader.backends.gemini import VertexBackend

    return VertexBackend


def _enterprise() -> object:
    from grader.backends.gemini import EnterpriseBackend

    return EnterpriseBackend


def _local() -> object:
    from grader.backends.local import LocalBackend

    return LocalBackend


def _openai() -> object:
    from grader.backends.openai_compat import openai_backend

    return openai_backend


register("gemini", _gemini)  # type: ignore[arg-type]
register("vertex", _vertex)  # type: ignore[arg-type]
register("enterprise", _enterprise)  # type: ignore[arg-type]
register("local", _local)  # type: ignore[arg-type]
register("openai", _openai)  # type: ignore[arg-type]

__all__ = ["AcceptsMedia", "Backend", "BatchInfo", "BatchResult", "CacheInfo", "FileInfo",
           "ListsModels", "Paced", "SupportsBatch", "SupportsCaching", "SupportsFiles",
           "SupportsTuning", "TuningInfo",
           "create", "in_flight", "media_types", "names",
           "register"]
