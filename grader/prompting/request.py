"""The one request type every backend takes, and the one response type every backend returns.

Online, cached, batch and local grading all start from a `GradeRequest`. Its fields are ordered the
way a prompt is laid out: the static part (system instruction + `static_prefix`, byte-identical for
every student so it can be cached) comes first, the student's parts come last.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Part(BaseModel):
    """One piece of content: text, or media (image, PDF without a text layer). Media keep their
    bytes (they are what the request hash covers); `file_uri` says where the same bytes were
    uploaded (Files API or a gs:// staging bucket), and is then sent instead of the bytes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str | None = None
    mime_type: str | None = None
    data: bytes | None = None
    file_uri: str | None = None

    @property
    def is_text(self) -> bool:
        return self.text is not None


class Turn(BaseModel):
    """A follow-up turn after the first user message (used for the one re-ask on invalid output)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["user", "model"]
    text: str


class GradeRequest(BaseModel):
    """Everything a backend needs to grade one submission.

    The first user message is `static_prefix` followed by `student_parts`; `history` holds later
    turns (the re-ask). `response_schema` is a JSON Schema; backends enforce it natively
    (Gemini `response_json_schema`, llama.cpp grammar).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(description="stable id of this request, used to match batch results")
    model: str
    system: str
    static_prefix: str
    reference_parts: tuple[Part, ...] = Field(
        default=(), description="the rubric's reference files, sent after `static_prefix` (part "
        "of the static prefix, and of the cache)")
    student_parts: tuple[Part, ...]
    history: tuple[Turn, ...] = ()
    response_schema: dict[str, Any]
    max_output_tokens: int = 4096
    thinking_level: Literal["minimal", "low", "medium", "high"] | None = None
    # None: not sent (the model's own default); set only when the user asked for it
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    cached_content: str | None = Field(
        default=None, description="name of a backend-side cache holding system + static_prefix"
    )

    def generation_config(self) -> dict[str, Any]:
        """The generation settings that shape the answer: part of the request's ledger hash
        (a different output cap or thinking level is a different request). Unset sampling
        parameters are left out: they are not sent."""
        cfg: dict[str, Any] = {"max_output_tokens": self.max_output_tokens,
                               "thinking_level": self.thinking_level}
        for name in ("temperature", "top_p", "seed"):
            value = getattr(self, name)
            if value is not None:
                cfg[name] = value
        return cfg


class Usage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt_tokens: int = 0
    output_tokens: int = 0
    thinking_tokens: int = 0
    cached_tokens: int = 0

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.output_tokens + self.thinking_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            thinking_tokens=self.thinking_tokens + other.thinking_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
        )


class GradeResponse(BaseModel):
    """What came back. `text` is None when the model produced nothing usable; then
    `blocked_reason` says why (e.g. "SAFETY", "RECITATION", "MAX_TOKENS", "EMPTY")."""

    model_config = ConfigDict(extra="forbid")

    text: str | None
    finish_reason: str | None = None
    blocked_reason: str | None = None
    usage: Usage = Field(default_factory=Usage)
    model_version: str | None = None
    model_status: str | None = Field(
        default=None, description="lifecycle stage the service reported (STABLE, DEPRECATED, ...)")
    latency_ms: float = 0.0
    retries: int = 0
    raw: dict[str, Any] | None = Field(default=None, description="raw response JSON, for the store")
