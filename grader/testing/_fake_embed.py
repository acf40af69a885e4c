"""The fake's embedding endpoints: `models/{m}:embedContent` and `:batchEmbedContents`.

The Developer API takes `{"requests": [{"model", "content", "taskType", "outputDimensionality"}]}`
on batchEmbedContents (one vector per request) and `{"content", ...}` on embedContent; Agent
Platform (Vertex) models with "gemini" in their id take the same bodies on the publisher path
without the per-request `model`, their settings in `embedContentConfig` (google-genai 3.4,
`models._EmbedContentParametersPrivate_to_*`, `_EmbedContentConfig_to_*`).
Replies: `{"embeddings": [{"values": [...]}]}` / `{"embedding": {"values": [...]}}`.

Vectors are a hashed bag of words (each lower-cased word adds +-1 to one of the dimensions its
hash picks), normalised: texts sharing words get similar vectors, and the same text always the
same vector. They test the pipeline, not embedding quality.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from grader.testing._fake_app import Call, FakeApp, Reply

MAX_BATCH = 100  # requests per batchEmbedContents call
DEFAULT_DIMENSIONS = 3072
_METHODS = r"(?P<method>embedContent|batchEmbedContents)"
_DEV = re.compile(rf"^/(?:v1|v1beta|v1alpha)/models/(?P<model>[^/:]+):{_METHODS}$")
_VERTEX = re.compile(r"^/(?:v1|v1beta1)/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
                     rf"/publishers/google/models/(?P<model>[^/:]+):{_METHODS}$")
_WORD = re.compile(r"\w+")


def vector(text: str, dimensions: int) -> list[float]:
    """The fake's embedding of `text`: a normalised hashed bag of words."""
    out = [0.0] * dimensions
    for word in _WORD.findall(text.lower()):
        h = hashlib.blake2b(word.encode(), digest_size=8).digest()
        out[int.from_bytes(h[:4], "big") % dimensions] += 1.0 if h[4] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in out)) or 1.0
    return [round(v / norm, 6) for v in out]


def _dimensions(request: dict[str, Any]) -> int:
    """outputDimensionality: top level on the Developer API, in embedContentConfig on Vertex."""
    cfg = request.get("embedContentConfig") or {}
    return int(request.get("outputDimensionality") or cfg.get("outputDimensionality")
               or DEFAULT_DIMENSIONS)


def _text(content: Any) -> str:
    if not isinstance(content, dict) or not isinstance(content.get("parts"), list):
        raise ValueError("content must be an object with parts")
    texts = [p.get("text") for p in content["parts"] if isinstance(p, dict)]
    if not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError("this fake embeds text parts only")
    return "\n".join(str(t) for t in texts)


class Embeddings:
    def __init__(self, app: FakeApp):
        self.app = app
        for pattern in (_DEV, _VERTEX):
            app.route("POST", pattern, self.handle)

    def handle(self, call: Call) -> Reply:
        assert call.match is not None
        vertex = "project" in call.match.groupdict()
        method, model = call.match.group("method"), call.match.group("model")
        return self.app.guarded(method, call, lambda: self._answer(call, method, model, vertex),
                                vertex=vertex, keep_body=True)

    def _answer(self, call: Call, method: str, model: str, vertex: bool) -> Reply:
        from grader.testing._fake_app import error_reply, json_reply

        if "embedding" not in model:
            return error_reply(404, f"models/{model} is not found, or is not supported for "
                                    f"{method}.")
        body = call.body()
        if method == "embedContent":
            text = _text(body.get("content"))
            dims = _dimensions(body)
            return json_reply(200, {"embedding": {"values": vector(text, dims)}})
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            return error_reply(400, "requests must be a non-empty list")
        if len(requests) > MAX_BATCH:
            return error_reply(400, f"at most {MAX_BATCH} requests are allowed in a batch")
        out = []
        for r in requests:
            if not vertex and r.get("model") != f"models/{model}":
                return error_reply(400, f"request model {r.get('model')!r} does not match "
                                        f"models/{model}")
            dims = _dimensions(r)
            out.append({"values": vector(_text(r.get("content")), dims)})
        return json_reply(200, {"embeddings": out})
