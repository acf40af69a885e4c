"""Today's Gemini rules, as the fake server applies them, read from grader's model table.

The same `grader/data/models.toml` that grader checks requests against tells the fake which
thinking levels a model accepts, whether it still honours sampling parameters or a trailing
model turn, whether it is routed to another model, and what a call costs (for the spend limit).
So a grader that drifts from the table fails against the fake in CI.

Bodies arrive with camelCase field names (`_fake_json`), whichever spelling the client used.

Gemini 4 rows carry what such a model refuses as data (`thinking_budget`, `penalties`,
`max_candidates`, `explicit_cache`, `continuation`; facts sheet gemini-api-2026-12.md, section 1):
`config_refusal` turns each into a 400 for the model named, so a 3.x row keeps its old behaviour
and a new row needs no code. countTokens and batch lines go through the same checks.

Error texts: the thinking-level message is Google's (facts sheet, section 2); the others are the
fake's own wording (Google's exact texts for them are not in our sources), naming the field the
way Google's messages do (the proto name, e.g. `thinking_budget`).
"""

from __future__ import annotations

from typing import Any

from grader.config.models import LEVELS, ModelInfo, Pricing, packaged, today
from grader.prompting.request import Usage

SAMPLING_FIELDS = ("temperature", "topP", "topK")
SERVICE_TIERS = frozenset({"unspecified", "standard", "flex", "priority"})
_STAGES = {"ga": "STABLE", "preview": "PREVIEW", "deprecated": "DEPRECATED",
           "retired": "RETIRED"}


def row(model: str) -> ModelInfo | None:
    return packaged().get(model)


def _thinking(body: dict[str, Any]) -> tuple[Any, Any]:
    """(level, budget) of a body (camelCase: the SDK's `thinking_level` arrives normalised)."""
    gen = body.get("generationConfig") or {}
    cfg = gen.get("thinkingConfig") or {}
    return cfg.get("thinkingLevel"), cfg.get("thinkingBudget")


def _allowed_levels(info: ModelInfo) -> str:
    """The row's levels as Google's message lists them: the API default first."""
    default = info.api_default_thinking
    return ", ".join(([default] if default else [])
                     + [lv for lv in info.thinking_levels if lv != default])


def no_explicit_cache(model: str) -> str | None:
    """Why `cachedContents` is refused for `model` (the row's `explicit_cache` is false), or
    None where explicit caching works."""
    info = row(model)
    if info is None or info.explicit_cache:
        return None
    return (f"Explicit context caching is not supported for model {model}. Implicit caching "
            "applies automatically to repeated prompt prefixes.")


def config_refusal(body: dict[str, Any], model: str) -> str | None:
    """Why the API refuses the generation settings of a request (generateContent, countTokens,
    a batch line) for `model`, or None: thinking level and budget, penalties, candidates, an
    explicit cache or a continuation token the model's row does not allow."""
    level, budget = _thinking(body)
    if level is not None and budget is not None:
        return "thinking_level and thinking_budget cannot be set together; set only one."
    info = row(model)
    if info is None:
        return None
    if str(level).upper() == "THINKING_LEVEL_UNSPECIFIED":
        level = None  # the enum's zero value: the model's default, as if unset
    if level is not None and info.thinking_levels:
        name = str(level).lower()
        if name not in info.thinking_levels:
            return (f"'{name}' is not a supported thinking level for this model. Allowed "
                    f"values are: {_allowed_levels(info)}.")
    if budget is not None and not info.thinking_budget:
        levels = (f" Allowed values are: {_allowed_levels(info)}." if info.thinking_levels
                  else "")
        return ("thinking_budget is not supported for this model; set thinking_level "
                f"instead.{levels}")
    gen = body.get("generationConfig") or {}
    if not info.penalties:
        for field, proto in (("frequencyPenalty", "frequency_penalty"),
                             ("presencePenalty", "presence_penalty")):
            if gen.get(field) is not None:
                return f"{proto} is not supported for models/{model}; remove it."
    count = gen.get("candidateCount")
    if isinstance(count, int) and count > info.max_candidates:
        if info.max_candidates == 1:
            return (f"Multiple candidates is not enabled for models/{model} "
                    f"(candidate_count {count}); set candidate_count to 1 or leave it unset.")
        return (f"candidate_count {count} is more than the {info.max_candidates} candidates "
                f"models/{model} allows.")
    if body.get("cachedContent"):
        refused = no_explicit_cache(model)
        if refused:
            return refused + " Remove cached_content from the request."
    if body.get("continuationToken") and not info.continuation:
        return f"continuation_token is not supported for models/{model}."
    return None


def check(body: dict[str, Any], model: str, vertex: bool) -> str | None:
    """Why the API would refuse this generateContent body with a 400, or None."""
    refused = config_refusal(body, model)
    if refused:
        return refused
    info = row(model)
    contents = body.get("contents") or []
    if info is not None and not info.prefill and contents:
        last = contents[-1]
        if last.get("role") == "model" and any(p.get("text") for p in last.get("parts", [])):
            return ("Requests ending with a model turn (prefill) are not supported for this "
                    "model; end the conversation with a user turn.")
    tier = body.get("serviceTier")
    if tier is not None and str(tier).lower() not in SERVICE_TIERS:
        return f"Invalid value at 'service_tier' ({tier})."
    store = body.get("store")
    if store is not None and (vertex or not isinstance(store, bool)):
        return ("store is only supported by the Gemini Developer API." if vertex
                else "Invalid value at 'store' (TYPE_BOOL).")
    return None


def ignored(body: dict[str, Any], model: str) -> list[str]:
    """Sampling parameters the model ignores (sent, accepted, no effect)."""
    info = row(model)
    gen = body.get("generationConfig") or {}
    if info is None or info.sampling:
        return []
    return [f for f in SAMPLING_FIELDS if f in gen]


def continues(model: str) -> bool:
    """Whether long outputs of `model` continue over billed segments (the row's
    `continuation`): finishReason CONTINUATION with a continuation token."""
    info = row(model)
    return info is not None and info.continuation


def implicit_min_tokens(model: str) -> int | None:
    """The shortest identical prompt prefix `model`'s implicit cache serves (None: none)."""
    info = row(model)
    return info.implicit_cache_min_tokens if info is not None else None


def thinking_tokens(body: dict[str, Any], model: str) -> int:
    """What the model 'thinks' by level: the model table's estimate assumptions, so that fake
    runs are billed like a thinking model and `grade estimate` can be checked against them."""
    info = row(model)
    if info is None or not info.thinking_levels:
        return 0
    level = str(_thinking(body)[0] or info.api_default_thinking or "").lower()
    if level not in LEVELS:
        return 0
    return packaged().estimate.thinking_tokens.get(level, 0)


def served(model: str, vertex: bool) -> tuple[str, dict[str, Any] | None]:
    """(modelVersion, modelStatus) of the reply: a routed id answers as its target, and the
    Developer API reports the lifecycle stage (Enterprise has no modelStatus)."""
    info = row(model)
    if info is None:
        return model, None
    life = info.lifecycle("enterprise" if vertex else "developer")
    if life is None:
        return model, None
    version = life.routed(today()) or model
    if vertex:
        return version, None
    status: dict[str, Any] = {"modelStage": _STAGES[life.stage]}
    if life.stage == "deprecated":
        status["message"] = (f"{model} is deprecated"
                             + (f"; requests are served by {version}" if version != model
                                else "")
                             + (f"; use {life.replacement}" if life.replacement else ""))
    if life.shutdown:
        status["retirementTime"] = f"{life.shutdown}T00:00:00Z"
    return version, status


def cost_usd(model: str, usage: dict[str, int], tier: str | None) -> float:
    """What the call costs at the table price of `today()` (0 for models without one)."""
    mode = "flex" if str(tier or "").lower() == "flex" else "standard"
    pricing = Pricing.of(packaged(), model, mode)  # type: ignore[arg-type]
    cost = pricing.cost(Usage(
        prompt_tokens=usage.get("promptTokenCount", 0),
        output_tokens=usage.get("candidatesTokenCount", 0),
        thinking_tokens=usage.get("thoughtsTokenCount", 0),
        cached_tokens=usage.get("cachedContentTokenCount", 0)), today())
    return cost or 0.0


def cache_min_tokens(model: str) -> int | None:
    """The smallest explicit cache the model accepts (the table's `cache_min_tokens`)."""
    info = row(model)
    return info.cache_min_tokens if info is not None else None


def cache_create_usd(model: str, tokens: int) -> float:
    """What creating a cache costs: its tokens once, at the Standard input price."""
    pricing = Pricing.of(packaged(), model)
    return pricing.cache_create(tokens, today()) or 0.0


def cache_storage_usd(model: str, tokens: int, seconds: float) -> float:
    """Storage for `seconds` at the table's `cache_storage_hour` (0 without a price)."""
    pricing = Pricing.of(packaged(), model)
    per_hour = pricing.cache_storage_per_hour(tokens, today())
    return (per_hour or 0.0) * seconds / 3600


def inline_refusal(body: dict[str, Any], raw_bytes: int) -> str | None:
    """Why the API refuses a request's inline data (the table's `[inline]` limits), or None."""
    limits = packaged().inline
    if raw_bytes > limits.request_mb * 1024 * 1024:
        return (f"Request payload size exceeds the limit: {int(limits.request_mb * 1024 * 1024)} "
                "bytes. Upload large files with the File API.")
    for content in body.get("contents") or []:
        for part in content.get("parts", []) if isinstance(content, dict) else []:
            blob = part.get("inlineData") or {}
            if blob.get("mimeType") == "application/pdf":
                size = len(str(blob.get("data") or "")) * 3 // 4
                if size > limits.pdf_mb * 1024 * 1024:
                    return (f"Inline PDF data of {size} bytes exceeds the limit of "
                            f"{int(limits.pdf_mb * 1024 * 1024)} bytes. Upload large files "
                            "with the File API.")
    return None
