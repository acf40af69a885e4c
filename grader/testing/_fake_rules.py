"""Today's Gemini rules, as the fake server applies them, read from grader's model table.

The same `grader/data/models.toml` that grader checks requests against tells the fake which
thinking levels a model accepts, whether it still honours sampling parameters or a trailing
model turn, whether it is routed to another model, and what a call costs (for the spend limit).
So a grader that drifts from the table fails against the fake in CI.

Bodies arrive with camelCase field names (`_fake_json`), whichever spelling the client used.

Error texts: the thinking-level message is Google's (facts sheet, section 2); the others are the
fake's own wording (Google's exact texts for them are not in our sources).
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


def check(body: dict[str, Any], model: str, vertex: bool) -> str | None:
    """Why the API would refuse this generateContent body with a 400, or None."""
    level, budget = _thinking(body)
    if level is not None and budget is not None:
        return "thinking_level and thinking_budget cannot be set together; set only one."
    info = row(model)
    if level is not None and info is not None and info.thinking_levels:
        name = str(level).lower()
        if name not in info.thinking_levels:
            default = info.api_default_thinking
            allowed = ([default] if default else []) + [
                lv for lv in info.thinking_levels if lv != default]
            return (f"'{name}' is not a supported thinking level for this model. Allowed "
                    f"values are: {', '.join(allowed)}.")
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
