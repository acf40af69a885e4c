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


@dataclass(frozen=True)
class Rows:
    """Sparse rows (compressed: `indptr`, `indices`, `data`, as scipy's CSR keeps them), with
    the few operations grader's similarities need, on numpy alone: importing scipy.sparse cost
    a run about 22 MB of memory and 0.2 s, at its end, for a product of small matrices."""

    indptr: Any  # int64, one more than the rows: row i is data[indptr[i]:indptr[i + 1]]
    indices: Any  # int64 column of each stored value, increasing within a row
    data: Any  # float64
    width: int  # columns

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def row_of(self) -> Any:
        """The row of each stored value."""
        return np.repeat(np.arange(len(self)), np.diff(self.indptr))

    def take(self, rows: Sequence[int] | slice) -> Rows:
        """These rows, in this order (a run of rows `start:stop` shares this one's arrays)."""
        if isinstance(rows, slice):
            start, stop, step = rows.indices(len(self))
            if step == 1:
                lo, hi = self.indptr[start], self.indptr[max(start, stop)]
                return Rows(self.indptr[start:max(start, stop) + 1] - lo, self.indices[lo:hi],
                            self.data[lo:hi], self.width)
        picked = np.arange(len(self))[rows] if isinstance(rows, slice) else np.asarray(
            rows, dtype=np.int64)
        starts, ends = self.indptr[picked], self.indptr[picked + 1]
        lengths = ends - starts
        indptr = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
        at = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1])
        return Rows(indptr, self.indices[at], self.data[at], self.width)

    def only(self, keep: Any) -> Rows:
        """The same rows with only the stored values where `keep` (a mask over them) is True."""
        per_row = np.bincount(self.row_of()[keep], minlength=len(self))
        indptr = np.concatenate(([0], np.cumsum(per_row))).astype(np.int64)
        return Rows(indptr, self.indices[keep], self.data[keep], self.width)

    def dense(self) -> Any:
        out = np.zeros((len(self), self.width))
        out[self.row_of(), self.indices] = self.data
        return out

    def norms(self) -> Any:
        return np.sqrt(np.bincount(self.row_of(), weights=self.data ** 2, minlength=len(self)))

    def dot(self, other: Rows) -> Any:
        """Every dot product of a row of these with a row of `other` (a dense matrix, these
        rows by `other`'s): the columns these rows use made dense, `other` a chunk of rows at a
        time (a matrix product each), so no temporary grows with the vocabulary."""
        cols = np.unique(self.indices)
        out = np.zeros((len(self), len(other)))
        if not len(cols):
            return out
        at = np.full(max(self.width, other.width), -1, dtype=np.int64)
        at[cols] = np.arange(len(cols))
        mine = np.zeros((len(self), len(cols)))
        mine[self.row_of(), at[self.indices]] = self.data
        theirs_row, theirs_col = other.row_of(), at[other.indices]
        keep = theirs_col >= 0
        theirs_row, theirs_col, theirs = theirs_row[keep], theirs_col[keep], other.data[keep]
        chunk = max(1, _DENSE_CELLS // len(cols))
        for lo in range(0, len(other), chunk):
            hi = min(len(other), lo + chunk)
            a, b = np.searchsorted(theirs_row, [lo, hi])
            block = np.zeros((hi - lo, len(cols)))
            block[theirs_row[a:b] - lo, theirs_col[a:b]] = theirs[a:b]
            out[:, lo:hi] = mine @ block.T
        return out


_DENSE_CELLS = 1 << 19  # cells of one dense chunk of `Rows.dot` (4 MB of float64)


class Tfidf:
    """TF-IDF over word unigrams and bigrams with sublinear counts (1 + ln tf), smoothed idf
    (ln((1 + n) / (1 + df)) + 1) and unit rows: what scikit-learn's
    `TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2))` computes (tests/test_tfidf.py
    checks it against it), as `Rows` on numpy alone, since importing scikit-learn costs a run
    more CPU (about 1.2 s) than grouping a class of 1,000."""

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

    def _counts(self, docs: Sequence[list[str]]) -> Rows:
        """Each document's term counts (terms outside the vocabulary left out)."""
        width = len(self.vocab)
        rows: list[int] = []
        cols: list[int] = []
        for r, doc in enumerate(docs):
            found = [self.vocab[t] for t in doc if t in self.vocab]
            cols.extend(found)
            rows.extend([r] * len(found))
        keys, counts = np.unique(np.asarray(rows, dtype=np.int64) * width
                                 + np.asarray(cols, dtype=np.int64), return_counts=True)
        per_row = np.bincount(keys // width, minlength=len(docs))
        indptr = np.concatenate(([0], np.cumsum(per_row))).astype(np.int64)
        return Rows(indptr, keys % width, counts.astype(np.float64), width)

    def _weighted(self, counts: Rows) -> Rows:
        data = (1.0 + np.log(counts.data)) * self.idf[counts.indices]
        rows = counts.row_of()
        norms = np.sqrt(np.bincount(rows, weights=data ** 2, minlength=len(counts)))
        scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        return Rows(counts.indptr, counts.indices, data * scale[rows], counts.width)

    def transform(self, texts: Sequence[str]) -> Rows:
        """Unit rows of new `texts` in this vocabulary (words it has not seen are left out)."""
        return self._weighted(self._counts([_terms(t) for t in texts]))


def tfidf(texts: Sequence[str]) -> tuple[Tfidf, Rows] | None:
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
