"""The fake's `cachedContents` (explicit context caching), Developer API and Vertex paths.

create / get / list / patch (TTL or expireTime) / delete, with expiry on the fake's clock
(`FakeState.now`, moved by `advance`). Rules from grader's model table (`_fake_rules`): a model
whose row has `explicit_cache = false` (Gemini 4) has no cachedContents at all (400 on create, and
on a generateContent naming one; its caching is implicit, `_fake_implicit`), the
model's `cache_min_tokens` (400 "Cached content is too small"), and a generateContent that names a
cache must not set a system instruction, tools or tool config, and must use the cache's model.
Billing: creating a cache is billed as input at the Standard price, and storage per hour at the
row's `cache_storage_hour` for the time it lived (in `stats()["cache_usd"]` and `spend_usd`).
The cache's token count is the fake's one estimator (`estimate_tokens`), so a request naming it
reports `cachedContentTokenCount` equal to it and a `promptTokenCount` that includes it.
"""

from __future__ import annotations

import calendar
import re
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from grader.testing import _fake_rules as rules
from grader.testing._fake_content import estimate_tokens
from grader.testing._fake_files import check_file_parts

if TYPE_CHECKING:
    from grader.testing._fake_app import Call, FakeApp, Reply

DEFAULT_TTL_S = 3600.0  # the API's default TTL: one hour
_DEV = r"^/(?:v1beta|v1alpha)/cachedContents"
_VERTEX = (r"^/(?:v1|v1beta1)/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
           r"/cachedContents")
_ID = r"/(?P<id>[^/:]+)$"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


@dataclass
class FakeCache:
    name: str
    model: str  # as the request named it (models/x, or projects/.../models/x)
    display_name: str
    system: dict[str, Any] | None
    contents: list[dict[str, Any]]
    tokens: int
    created: float  # the fake's clock
    expires: float
    updated: float


def rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


def parse_rfc3339(text: str) -> float:
    base, _, frac = text.rstrip("Z").partition(".")
    t = calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S"))
    return t + (float("0." + frac) if frac else 0.0)


def model_id(model: str) -> str:
    return model.rsplit("/", 1)[-1]


def cache_json(c: FakeCache) -> dict[str, Any]:
    return {"name": c.name, "displayName": c.display_name, "model": c.model,
            "createTime": rfc3339(c.created), "updateTime": rfc3339(c.updated),
            "expireTime": rfc3339(c.expires), "usageMetadata": {"totalTokenCount": c.tokens}}


def prompt_tokens(system: dict[str, Any] | None, contents: list[dict[str, Any]]) -> int:
    chars = parts = 0
    for content in [system or {}, *contents]:
        for part in content.get("parts", []) if isinstance(content, dict) else []:
            if part.get("text") is not None:
                chars += len(part["text"])
            elif part.get("inlineData") or part.get("fileData"):
                parts += 1
    return estimate_tokens(chars, parts)


class Caches:
    """The routes and the semantics; state lives in `FakeState.caches`."""

    def __init__(self, app: FakeApp):
        self.app, self.state = app, app.state
        for prefix, vertex in ((_DEV, False), (_VERTEX, True)):
            app.route("POST", re.compile(prefix + "$"), self._wrap("create", vertex, self.create))
            app.route("GET", re.compile(prefix + "$"), self._wrap("list", vertex, self.list))
            app.route("GET", re.compile(prefix + _ID), self._wrap("get", vertex, self.get))
            app.route("PATCH", re.compile(prefix + _ID), self._wrap("patch", vertex, self.patch))
            app.route("DELETE", re.compile(prefix + _ID),
                      self._wrap("delete", vertex, self.delete))

    def _wrap(self, op: str, vertex: bool, handler: Any) -> Any:
        endpoint = f"cachedContents.{op}"

        def handle(call: Call) -> Reply:
            return self.app.guarded(endpoint, call, lambda: handler(call, vertex), vertex=vertex,
                                    keep_body=call.method in ("POST", "PATCH"))

        return handle

    def _name(self, call: Call, vertex: bool) -> str:
        assert call.match is not None
        cid = call.match.group("id")
        if vertex:
            return (f"projects/{call.match.group('project')}/locations/"
                    f"{call.match.group('location')}/cachedContents/{cid}")
        return f"cachedContents/{cid}"

    # --- state --------------------------------------------------------------------------------
    def sweep(self) -> None:
        """Drop caches past their expiry (billing their storage until then). Holds the lock."""
        now = self.state.now()
        for name, c in list(self.state.caches.items()):
            if c.expires <= now:
                del self.state.caches[name]
                self._bill_storage(c, c.expires)
                self.state.stats.caches["expired"] += 1

    def _bill_storage(self, c: FakeCache, end: float) -> None:
        usd = rules.cache_storage_usd(model_id(c.model), c.tokens, max(0.0, end - c.created))
        self.state.stats.cache_usd["storage"] += usd
        self.state.stats.spend_usd += usd

    def live(self, name: str) -> FakeCache | None:
        with self.state.lock:
            self.sweep()
            return self.state.caches.get(name)

    def expire(self, name: str | None = None) -> int:
        """Expire one cache (or all) now, as the clock would."""
        with self.state.lock:
            now = self.state.now()
            n = 0
            for c in self.state.caches.values():
                if name is None or c.name == name:
                    c.expires = min(c.expires, now)
                    n += 1
            self.sweep()
            return n

    # --- routes -------------------------------------------------------------------------------
    def create(self, call: Call, vertex: bool) -> Reply:
        from grader.testing._fake_app import error_reply, json_reply

        body = call.body()
        model = str(body.get("model") or "")
        mid = model_id(model)
        if not mid.startswith("gemini-"):
            return error_reply(404, f"models/{mid} is not found for API version "
                                    f"{'v1beta1' if vertex else 'v1beta'}, or is not "
                                    "supported for createCachedContent.")
        refused = rules.no_explicit_cache(mid)
        if refused:
            return error_reply(400, refused)
        contents = body.get("contents") or []
        system = body.get("systemInstruction")
        missing = check_file_parts(self.app, contents, vertex)
        if missing:
            return missing
        tokens = prompt_tokens(system, contents)
        minimum = rules.cache_min_tokens(mid)
        if minimum is not None and tokens < minimum:
            return error_reply(400, f"Cached content is too small. total_token_count={tokens}, "
                                    f"min_total_token_count={minimum}")
        now = self.state.now()
        expires = self._expiry(body, now, DEFAULT_TTL_S)
        if expires is None:
            return error_reply(400, "Invalid value at 'ttl' (type.googleapis.com/"
                                    "google.protobuf.Duration)")
        cid = uuid.uuid4().hex[:12]
        name = (f"projects/{call.match.group('project')}/locations/"
                f"{call.match.group('location')}/cachedContents/{cid}" if vertex and call.match
                else f"cachedContents/{cid}")
        cache = FakeCache(name=name, model=model, display_name=str(body.get("displayName") or ""),
                          system=system, contents=contents, tokens=tokens, created=now,
                          expires=expires, updated=now)
        with self.state.lock:
            self.state.caches[name] = cache
            self.state.stats.caches["created"] += 1
            usd = rules.cache_create_usd(mid, tokens)
            self.state.stats.cache_usd["create"] += usd
            self.state.stats.spend_usd += usd
        return json_reply(200, cache_json(cache))

    def _expiry(self, body: dict[str, Any], now: float, default: float | None) -> float | None:
        if body.get("expireTime"):
            try:
                return parse_rfc3339(str(body["expireTime"]))
            except ValueError:
                return None
        ttl = body.get("ttl")
        if ttl is None:
            return now + default if default is not None else None
        m = _DURATION.match(str(ttl))
        return now + float(m.group(1)) if m else None

    def get(self, call: Call, vertex: bool) -> Reply:
        from grader.testing._fake_app import json_reply

        c = self.live(self._name(call, vertex))
        return json_reply(200, cache_json(c)) if c is not None else self._missing(call, vertex)

    def _missing(self, call: Call, vertex: bool) -> Reply:
        from grader.testing._fake_app import error_reply

        return error_reply(403, "CachedContent not found (or permission denied): "
                                + self._name(call, vertex))

    def list(self, call: Call, vertex: bool) -> Reply:
        from grader.testing._fake_app import json_reply

        size = int((call.query.get("pageSize") or ["50"])[0])
        start = int((call.query.get("pageToken") or ["0"])[0])
        with self.state.lock:
            self.sweep()
            mine = [c for c in self.state.caches.values()
                    if c.name.startswith("projects/") == vertex]
        page = [cache_json(c) for c in mine[start:start + size]]
        out: dict[str, Any] = {"cachedContents": page}
        if start + size < len(mine):
            out["nextPageToken"] = str(start + size)
        return json_reply(200, out)

    def patch(self, call: Call, vertex: bool) -> Reply:
        from grader.testing._fake_app import error_reply, json_reply

        name = self._name(call, vertex)
        body = call.body()
        with self.state.lock:
            self.sweep()
            c = self.state.caches.get(name)
            if c is None:
                return self._missing(call, vertex)
            now = self.state.now()
            expires = self._expiry(body, now, None)
            if expires is None:
                return error_reply(400, "Only ttl or expireTime can be updated.")
            c.expires, c.updated = expires, now
            self.state.stats.caches["patched"] += 1
            return json_reply(200, cache_json(c))

    def delete(self, call: Call, vertex: bool) -> Reply:
        from grader.testing._fake_app import json_reply

        name = self._name(call, vertex)
        with self.state.lock:
            self.sweep()
            c = self.state.caches.pop(name, None)
            if c is not None:
                self._bill_storage(c, self.state.now())
                self.state.stats.caches["deleted"] += 1
        return json_reply(200, {}) if c is not None else self._missing(call, vertex)

    # --- generateContent -----------------------------------------------------------------------
    def resolve(self, body: dict[str, Any], model: str) -> tuple[dict[str, Any], int] | Reply:
        """A generateContent body naming `cachedContent`, as the model sees it (the cache's
        system instruction and contents first), and the cached tokens; or the refusal."""
        from grader.testing._fake_app import error_reply

        name = str(body["cachedContent"])
        if any(k in body for k in ("systemInstruction", "tools", "toolConfig")):
            return error_reply(400, "CachedContent can not be used with GenerateContent request "
                                    "setting system_instruction, tools or tool_config.\n\n"
                                    "Proposed fix: move those values to CachedContent from "
                                    "GenerateContent request.")
        c = self.live(name)
        if c is None:
            return error_reply(403, f"CachedContent not found (or permission denied): {name}")
        if model_id(c.model) != model:
            return error_reply(400, f"Model used by GenerateContent request (models/{model}) "
                                    f"and CachedContent ({c.model}) has to be the same.")
        contents = [dict(x) for x in body.get("contents") or []]
        cached = [dict(x) for x in c.contents]
        if cached and contents and cached[-1].get("role", "user") == contents[0].get("role"):
            first = {**contents[0], "parts": [*cached[-1].get("parts", []),
                                               *contents[0].get("parts", [])]}
            contents = [*cached[:-1], first, *contents[1:]]
        else:
            contents = [*cached, *contents]
        merged = {**body, "contents": contents}
        if c.system is not None:
            merged["systemInstruction"] = c.system
        return merged, c.tokens
