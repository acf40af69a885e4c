"""`models.list` and `models.get`: which models a client is told exist, from the model table.

A client that lists models before it calls one (to check a model id, to show a choice) must see
what Google would offer today, and tests must be able to make that differ from the table: a
model Google added before the table knew it, or one it withdrew early.

Paths, as google-genai requests them (`client.models.list()` / `.get(model=...)`):
- Developer API: `GET /v1beta/models` and `GET /v1beta/models/{id}` (also v1, v1alpha);
  `{"models": [...], "nextPageToken": ...}`, each named `models/<id>`.
- Vertex / Enterprise: `GET /v1beta1/publishers/google/models` and `.../models/{id}` (also v1;
  the SDK sends base-model paths without a project, one with `projects/p/locations/l/` in
  front is read too); `{"publisherModels": [...]}`, each named `publishers/google/models/<id>`.

Listed: the rows with a lifecycle on that surface (`developer` / `enterprise`) that are not shut
down on `today()` (no shutdown date or a later one, and not retired), in the table's order;
then `FakeConfig.listed_extra` (ids listed anyway: one the table lacks is listed with
generateContent and countTokens and no limits, one it has from its row); minus
`FakeConfig.listed_hidden`. A model's fields: displayName, inputTokenLimit, outputTokenLimit,
supportedGenerationMethods (generateContent, countTokens, createCachedContent only where the
row has `explicit_cache`, batchGenerateContent) and `thinking: true` where the row has thinking
levels. Pages: `pageSize` (default 50, at most 1000) and the `nextPageToken` a page returns, as
the fake's other list endpoints do. `models.get` of an id not listed is Google's 404
NOT_FOUND. Listing changes nothing else: generateContent answers any `gemini-*` id as before.
"""

from __future__ import annotations

import re
from datetime import date
from typing import TYPE_CHECKING, Any

from grader.config.models import ModelInfo, Surface, packaged, today

if TYPE_CHECKING:
    from grader.testing._fake_app import Call, FakeApp, Reply

DEFAULT_PAGE = 50
MAX_PAGE = 1000
_DEV = r"^/(?P<version>v1|v1beta|v1alpha)/models"
_VERTEX = (r"^/(?P<version>v1|v1beta1)/(?:projects/(?P<project>[^/]+)/locations/"
           r"(?P<location>[^/]+)/)?publishers/google/models")
_ID = r"/(?P<model>[^/:]+)$"


def current(info: ModelInfo, surface: Surface, day: date) -> bool:
    """Whether Google offers the row's model on `surface` on `day`."""
    life = info.lifecycle(surface)
    return (life is not None and life.stage != "retired"
            and (life.shutdown is None or life.shutdown > day))


def listed(surface: Surface, extra: tuple[str, ...] = (),
           hidden: tuple[str, ...] = ()) -> list[tuple[str, ModelInfo | None]]:
    """(id, its row or None) of every model listed on `surface` today, in order."""
    rows, day = packaged().models, today()
    ids = [mid for mid, info in rows.items() if current(info, surface, day)]
    ids += [mid for mid in extra if mid not in ids]
    return [(mid, rows.get(mid)) for mid in ids if mid not in hidden]


def model_json(mid: str, info: ModelInfo | None, vertex: bool) -> dict[str, Any]:
    """One Model (Developer) or PublisherModel (Vertex) as the API describes it."""
    out: dict[str, Any] = {"name": f"publishers/google/models/{mid}" if vertex
                           else f"models/{mid}"}
    if not vertex:
        out["baseModelId"] = mid
    out["displayName"] = (info.name if info is not None else "") or mid
    if info is not None and info.max_input_tokens:
        out["inputTokenLimit"] = info.max_input_tokens
    if info is not None and info.max_output_tokens:
        out["outputTokenLimit"] = info.max_output_tokens
    methods = ["generateContent", "countTokens"]
    if info is not None and info.explicit_cache:
        methods.append("createCachedContent")
    if info is not None:
        methods.append("batchGenerateContent")
    out["supportedGenerationMethods"] = methods
    if info is not None and info.thinking_levels:
        out["thinking"] = True
    return out


class Models:
    """The routes; what is listed is computed per call (today's date, the current config)."""

    def __init__(self, app: FakeApp):
        self.app, self.state = app, app.state
        for prefix, vertex in ((_DEV, False), (_VERTEX, True)):
            app.route("GET", re.compile(prefix + "$"), self._wrap("list", vertex, self.list))
            app.route("GET", re.compile(prefix + _ID), self._wrap("get", vertex, self.get))

    def _wrap(self, op: str, vertex: bool, handler: Any) -> Any:
        def handle(call: Call) -> Reply:
            return self.app.guarded(f"models.{op}", call, lambda: handler(call, vertex),
                                    vertex=vertex, keep_body=False)

        return handle

    def _listed(self, vertex: bool) -> list[tuple[str, ModelInfo | None]]:
        with self.state.lock:
            extra, hidden = self.state.config.listed_extra, self.state.config.listed_hidden
        return listed("enterprise" if vertex else "developer", extra, hidden)

    def list(self, call: Call, vertex: bool) -> Reply:
        from grader.testing._fake_app import error_reply, json_reply

        try:
            size = int((call.query.get("pageSize") or [str(DEFAULT_PAGE)])[0])
            start = int((call.query.get("pageToken") or ["0"])[0])
        except ValueError:
            return error_reply(400, "Invalid page token or page size.")
        if start < 0:
            return error_reply(400, "Invalid page token or page size.")
        size = min(MAX_PAGE, size) if size > 0 else DEFAULT_PAGE
        models = self._listed(vertex)
        out: dict[str, Any] = {"publisherModels" if vertex else "models": [
            model_json(mid, info, vertex) for mid, info in models[start:start + size]]}
        if start + size < len(models):
            out["nextPageToken"] = str(start + size)
        return json_reply(200, out)

    def get(self, call: Call, vertex: bool) -> Reply:
        from grader.testing._fake_app import error_reply, json_reply

        assert call.match is not None
        mid = call.match.group("model")
        models = dict(self._listed(vertex))
        if mid in models:
            return json_reply(200, model_json(mid, models[mid], vertex))
        if vertex:
            return error_reply(404, f"Publisher Model `publishers/google/models/{mid}` was not "
                                    "found or your project does not have access to it.")
        return error_reply(404, f"models/{mid} is not found for API version "
                                f"{call.match.group('version')}. Call ListModels to see the "
                                "list of available models and their supported methods.")
