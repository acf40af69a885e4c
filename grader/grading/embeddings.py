"""Text embeddings for exemplar similarity (`exemplar_similarity`, `--exemplar-similarity`).

`similarity_of()` resolves the setting for a run's backend: "auto" is embeddings when the
backend can embed (`SupportsEmbeddings`: the Gemini and Enterprise backends), else TF-IDF (the
local backend). `Embedder` embeds texts with the model table's embedding model (`[embedding]` in
grader/data/models.toml), many texts per call, each distinct text once per run (kept in memory),
and counts what that took and cost (`EmbeddingReport`, shown in the run summary). Callers pass
only redacted text: the bank's examples as they are shown, the student's work as it is sent.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from itertools import pairwise
from typing import Any, Literal

import numpy as np

from grader.backends.base import SupportsEmbeddings
from grader.config.models import EmbeddingModel
from grader.errors import ConfigError

Similarity = Literal["tfidf", "embeddings"]


_TOKEN = re.compile(r"(?u)\b\w\w+\b")  # words of two or more letters or digits


def _terms(text: str) -> list[str]:
    """The word unigrams and bigrams of `text`, lower-cased."""
    words = _TOKEN.findall(text.lower())
    return words + [f"{a} {b}" for a, b in pairwise(words)]


class Tfidf:
    """TF-IDF over word unigrams and bigrams with sublinear counts (1 + ln tf), smoothed idf
    (ln((1 + n) / (1 + df)) + 1) and unit rows: what scikit-learn's
    `TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2))` computes (tests/test_tfidf.py
    checks it against it), on scipy's sparse matrices alone, since importing scikit-learn
    costs a run more CPU (about 1.2 s) than grouping a class of 1,000."""

    def __init__(self, texts: Sequence[str]):
        docs = [_terms(t) for t in texts]
        vocab: dict[str, int] = {}
        for doc in docs:
            for term in doc:
                vocab.setdefault(term, len(vocab))
        if not vocab:
            raise ValueError("no word in any text")
        self.vocab = vocab
        counts = self._counts(docs)
        df = np.bincount(counts.indices, minlength=len(vocab))
        self.idf = np.log((1 + len(docs)) / (1 + df)) + 1.0
        self.matrix = self._weighted(counts)

    def _counts(self, docs: Sequence[list[str]]) -> Any:
        from scipy.sparse import csr_matrix

        indptr: list[int] = [0]
        indices: list[int] = []
        for doc in docs:
            indices.extend(self.vocab[t] for t in doc if t in self.vocab)
            indptr.append(len(indices))
        data = np.ones(len(indices), dtype=np.float64)
        m = csr_matrix((data, indices, indptr), shape=(len(docs), len(self.vocab)))
        m.sum_duplicates()  # repeated terms: their counts
        return m

    def _weighted(self, counts: Any) -> Any:
        counts.data = (1.0 + np.log(counts.data)) * self.idf[counts.indices]
        norms = np.sqrt(np.asarray(counts.multiply(counts).sum(axis=1)).ravel())
        rows = np.repeat(np.arange(counts.shape[0]), np.diff(counts.indptr))
        scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        counts.data *= scale[rows]
        return counts

    def transform(self, texts: Sequence[str]) -> Any:
        """Unit rows of new `texts` in this vocabulary (words it has not seen are left out)."""
        return self._weighted(self._counts([_terms(t) for t in texts]))


def tfidf(texts: Sequence[str]) -> tuple[Tfidf, Any] | None:
    """The TF-IDF model of `texts` (`Tfidf`): (the model, one sparse unit row per text), or
    None when no text has a word. The one TF-IDF of grader's similarities: graded examples
    (`exemplars.Selector`) and answer groups (`review.groups`) compare texts by the cosine of
    these rows."""
    try:
        model = Tfidf(texts)
    except ValueError:  # no word in any text
        return None
    return model, model.matrix


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
