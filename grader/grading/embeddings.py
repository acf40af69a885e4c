"""Text embeddings for exemplar similarity (`exemplar_similarity`, `--exemplar-similarity`).

`similarity_of()` resolves the setting for a run's backend: "auto" is embeddings when the
backend can embed (`SupportsEmbeddings`: the Gemini and Enterprise backends), else TF-IDF (the
local backend). `Embedder` embeds texts with the model table's embedding model (`[embedding]` in
grader/data/models.toml), many texts per call, each distinct text once per run (kept in memory),
and counts what that took and cost (`EmbeddingReport`, shown in the run summary). Callers pass
only redacted text: the bank's examples as they are shown, the student's work as it is sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

import numpy as np

from grader.backends.base import SupportsEmbeddings
from grader.config.models import EmbeddingModel
from grader.errors import ConfigError

Similarity = Literal["tfidf", "embeddings"]


def tfidf(texts: Sequence[str]) -> tuple[Any, Any] | None:
    """The TF-IDF model of `texts` (scikit-learn, word unigrams and bigrams, sublinear counts):
    (the fitted vectorizer, one unit row per text), or None when no text has a word. The one
    TF-IDF of grader's similarities: graded examples (`exemplars.Selector`) and answer groups
    (`review.groups`) compare texts by the cosine of these rows."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2))
    try:
        return vectorizer, vectorizer.fit_transform(list(texts))
    except ValueError:  # no word in any text (empty vocabulary)
        return None


@dataclass
class EmbeddingReport:
    """What a run's embeddings took: calls made, distinct texts embedded, input tokens (as the
    service reported them, else estimated at four characters a token) and their cost in USD."""

    model: str
    calls: int = 0
    texts: int = 0
    tokens: int = 0
    cost_usd: float = 0.0


def similarity_of(setting: str, backend: object, backend_name: str) -> Similarity:
    """How a run compares answers with the bank: `setting` ("auto" | "tfidf" | "embeddings")
    resolved for `backend`."""
    if setting == "tfidf":
        return "tfidf"
    if isinstance(backend, SupportsEmbeddings):
        return "embeddings"
    if setting == "embeddings":
        raise ConfigError(f"exemplar_similarity = embeddings needs a backend that can embed "
                          f"texts; the {backend_name} backend cannot",
                          path="exemplar_similarity",
                          fix="pass --exemplar-similarity tfidf (or auto), or --backend gemini "
                          "with GEMINI_API_KEY set")
    return "tfidf"


class Embedder:
    """One run's embeddings of redacted texts, each distinct text embedded once."""

    def __init__(self, backend: SupportsEmbeddings, spec: EmbeddingModel, day: date):
        self.backend, self.spec, self.day = backend, spec, day
        self.report = EmbeddingReport(spec.model)
        self._known: dict[str, Any] = {}

    async def vectors(self, texts: Sequence[str]) -> Any:
        """Unit vectors of `texts` (a numpy matrix, one row per text, in order)."""
        missing = sorted({t for t in texts if t not in self._known})
        if missing:
            got = await self.backend.embed(missing, model=self.spec.model,
                                           batch_size=self.spec.batch_size,
                                           dimensions=self.spec.dimensions)
            for text, values in zip(missing, got.vectors, strict=True):
                v = np.asarray(values, dtype=np.float64)
                norm = float(np.linalg.norm(v))
                self._known[text] = v / norm if norm else v
            r = self.report
            r.calls, r.texts, r.tokens = r.calls + got.calls, r.texts + len(missing), \
                r.tokens + got.tokens
            r.cost_usd += self.spec.cost(got.tokens, self.day)
        return np.stack([self._known[t] for t in texts])
