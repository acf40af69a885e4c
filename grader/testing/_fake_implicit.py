"""Implicit caching: a repeated prompt prefix is reported (and billed) as cached input.

Gemini 4 has no explicit cache; instead "implicit caching applies automatically to shared prompt
prefixes of 4,096 tokens or more" (facts sheet gemini-api-2026-12.md, sections 1 and 3). The
model table says which models do it and from how many tokens (`implicit_cache_min_tokens`); a
row without it never hits, so 3.x models behave as before.

The rule the fake applies to each generateContent request (online calls; batch lines and
requests naming an explicit `cachedContent` never hit):

- The prompt is cut into units, in order: the system instruction (one unit, whole), then every
  part of every content (the first user turn's parts, then later turns'), each unit with its
  content's index and role. Units are compared on the normalised (camelCase) body, exactly.
- Each cumulative prefix (units 1..k) is hashed with the model's id. The shared prefix is the
  longest one equal to a prefix of an earlier request to the same model whose tokens (the fake's
  one estimator, `estimate_tokens`) are at least the row's minimum: a hit is always a run of
  whole parts, never part of a part.
- The reply reports its tokens as `usageMetadata.cachedContentTokenCount` (`promptTokenCount`
  still includes them), so the spend books them at the row's `cached_input` price
  (`_fake_rules.cost_usd`), and `stats()` counts `implicit_cache_hits` and
  `implicit_cached_tokens`.
- Prefixes are remembered for the fake's lifetime (until `reset()`), the last `KEPT` of them;
  a request remembers its own prefixes once it is served, whether or not it hit.

So grader's requests, the system instruction and the rubric prefix first and the student's
parts last, hit from the second student on once that prefix reaches the minimum.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from grader.testing import _fake_rules as rules
from grader.testing._fake_content import estimate_tokens
from grader.testing._fake_state import FakeState

KEPT = 20_000  # prefix hashes remembered, oldest dropped first


def _units(body: dict[str, Any]) -> list[tuple[str, int, int]]:
    """The prompt's units in order: (canonical text, characters, inline parts), counted as
    `read_prompt` counts them so that prefix tokens never exceed promptTokenCount."""
    units: list[tuple[str, int, int]] = []
    system = body.get("systemInstruction")
    if isinstance(system, dict):
        chars = sum(len(p.get("text") or "") for p in system.get("parts", [])
                    if isinstance(p, dict))
        units.append(("system:" + json.dumps(system, sort_keys=True), chars, 0))
    for n, content in enumerate(body.get("contents") or []):
        if not isinstance(content, dict):
            continue
        role = str(content.get("role") or "user")
        for part in content.get("parts", []):
            if not isinstance(part, dict):
                continue
            text = part.get("text")
            chars = len(text) if text is not None else 0
            inline = 1 if text is None and (part.get("inlineData") or part.get("fileData")) else 0
            units.append((f"{n}:{role}:" + json.dumps(part, sort_keys=True), chars, inline))
    return units


def prefixes(body: dict[str, Any], model: str, minimum: int) -> list[tuple[str, int]]:
    """(hash, tokens) of every cumulative prefix of at least `minimum` tokens, shortest first."""
    digest = hashlib.sha256(model.encode())
    chars = inline = 0
    out: list[tuple[str, int]] = []
    for text, c, i in _units(body):
        digest.update(hashlib.sha256(text.encode()).digest())
        chars, inline = chars + c, inline + i
        tokens = estimate_tokens(chars, inline)
        if tokens >= minimum:
            out.append((digest.copy().hexdigest(), tokens))
    return out


def serve(state: FakeState, body: dict[str, Any], model: str) -> int:
    """The tokens of the longest prefix this request shares with an earlier one to `model`
    (0: no hit, or the model has no implicit cache); the request's prefixes are remembered."""
    minimum = rules.implicit_min_tokens(model)
    if minimum is None:
        return 0
    mine = prefixes(body, model, minimum)
    with state.lock:
        hit = next((tokens for h, tokens in reversed(mine) if h in state.prefixes), 0)
        for h, _ in mine:
            state.prefixes[h] = None
            state.prefixes.move_to_end(h)
        while len(state.prefixes) > KEPT:
            state.prefixes.popitem(last=False)
    return hit


def count_hit(state: FakeState, tokens: int) -> None:
    """Count a delivered reply that reported `tokens` implicitly cached tokens."""
    with state.lock:
        state.stats.implicit_cache_hits += 1
        state.stats.implicit_cached_tokens += tokens
