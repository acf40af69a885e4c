"""Reading a generateContent reply from its REST JSON, as the service sent it (camelCase).

Online calls ask the SDK for the raw body (`should_return_http_response`), so it does not build
some forty pydantic objects per reply only for us to read five fields and dump them back to JSON
for the store (measured: 7% of a large run's CPU). Batch results arrive as the same JSON, one
line per request, and inline batch results are SDK objects dumped to it; all three are read
here, by one function, the way the SDK's own response converters read them: Gemini Enterprise
(Vertex) replies carry no `modelStatus` for the SDK, so none is read from them here either.

A reply of an unexpected shape is read as empty (`blocked_reason="EMPTY"`), never as an error:
the grading policy flags it like any other reply without a usable answer.
"""

from __future__ import annotations

from typing import Any

from grader.prompting.request import GradeResponse, Usage

OK_FINISH = frozenset({"STOP", "FINISH_REASON_UNSPECIFIED"})


def reply_of(body: Any, *, vertex: bool, retries: int = 0,
             latency_ms: float = 0.0) -> GradeResponse:
    """The GradeResponse of one generateContent reply body (a parsed JSON object)."""
    d = body if isinstance(body, dict) else {}
    text: str | None = None
    finish: str | None = None
    blocked: str | None = None
    candidates = _list(d.get("candidates"))
    block = _dict(d.get("promptFeedback")).get("blockReason")
    if block is not None:
        blocked = str(block)
    elif not candidates:
        blocked = "EMPTY"
    else:
        cand = _dict(candidates[0])
        finish = _str(cand.get("finishReason"))
        parts = _list(_dict(cand.get("content")).get("parts"))
        text = "".join(p["text"] for p in parts if isinstance(p, dict)
                       and isinstance(p.get("text"), str) and not p.get("thought")) or None
        if finish == "CONTINUATION":
            # Gemini 4 stopped at one segment's limit and offers a continuation token: grader
            # never follows it (each segment is billed; automatic continuation is off), and the
            # partial answer is not usable: the same rules as an answer cut at MAX_TOKENS.
            blocked, text = "MAX_TOKENS", None
        elif finish is not None and finish not in OK_FINISH:
            blocked, text = finish, None  # truncated or filtered output is not usable
        elif text is None:
            blocked = "EMPTY"
    um = _dict(d.get("usageMetadata"))
    usage = Usage(prompt_tokens=_int(um.get("promptTokenCount")),
                  output_tokens=_int(um.get("candidatesTokenCount")),
                  thinking_tokens=_int(um.get("thoughtsTokenCount")),
                  cached_tokens=_int(um.get("cachedContentTokenCount")))
    stage = None if vertex else _str(_dict(d.get("modelStatus")).get("modelStage"))
    return GradeResponse(text=text, finish_reason=finish, blocked_reason=blocked, usage=usage,
                         model_version=_str(d.get("modelVersion")), model_status=stage,
                         latency_ms=latency_ms, retries=retries, raw=d or None)


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def _str(v: Any) -> str | None:
    return None if v is None else str(v)


def _int(v: Any) -> int:
    try:
        return int(v or 0)
    except (TypeError, ValueError):
        return 0
