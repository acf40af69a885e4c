"""Gemini backends: Developer API (`gemini`) and Gemini Enterprise, formerly Vertex AI
(`enterprise`, and `vertex` for the legacy name), one genai client each.

- `client`: `GeminiBackend`, its client and how a request is built;
- `errors`: SDK and transport exceptions as `BackendError`;
- `retry`: backoff with jitter, and when an unreachable service stops the run;
- `resources`: context caches, the Files API and embeddings;
- `batch`: batch jobs (`SupportsBatch`); `reply`: a reply read from its JSON;
- `fast_types`: request objects the SDK converts cheaply;
- `enterprise`: `VertexBackend` / `EnterpriseBackend`, gs:// staging and tuning.
"""

from __future__ import annotations

from grader.backends.gemini.client import GeminiBackend
from grader.backends.gemini.enterprise import EnterpriseBackend, VertexBackend

__all__ = ["EnterpriseBackend", "GeminiBackend", "VertexBackend"]
