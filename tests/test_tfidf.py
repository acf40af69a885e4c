"""grader's TF-IDF (`grading.embeddings.Tfidf`) against scikit-learn's TfidfVectorizer with the
same settings: the same cosine between every pair of texts, and of new texts with the fitted
ones (what graded examples and answer groups compare by)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from grader.grading.embeddings import tfidf

TEXTS = [
    "The loopback block is 127.0.0.0/8, not one address.",
    "127.0.0.0 to 127.255.255.255 — the loopback range; loopback loopback!",
    "Zoë's answer: 10.0.0.0/8 private, 0.0.0.0/8 this network.",
    "",
    "a b c",  # no word of two letters: an empty row
    "def f(x):\n    return x * 2  # doubles x\n",
    "TCP uses a three-way handshake; UDP does not. TCP TCP tcp.",
    "Ünïcödé wörds ÅND CAPITALS and capitals",
]
NEW = ["loopback is 127.0.0.0/8", "nothing known here", "tcp handshake and udp", ""]


def test_the_same_cosines_as_scikit_learn() -> None:
    model = tfidf(TEXTS)
    assert model is not None
    ours, rows = model
    ref = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2))
    theirs = ref.fit_transform(TEXTS)
    assert len(ours.vocab) == len(ref.vocabulary_)
    assert np.allclose(rows.dot(rows), (theirs @ theirs.T).toarray(), atol=1e-12)
    assert np.allclose(rows.dense(), theirs.toarray()[:, [ref.vocabulary_[t] for t in ours.vocab]],
                       atol=1e-12)
    new_ours, new_theirs = ours.transform(NEW), ref.transform(NEW)
    assert np.allclose(new_ours.dot(rows), (new_theirs @ theirs.T).toarray(), atol=1e-12)
    norms = rows.norms()
    assert norms[3] == 0 and norms[4] == 0  # no words
    assert norms[[0, 1, 2, 5, 6, 7]] == pytest.approx(1.0)


def test_no_word_in_any_text_is_no_model() -> None:
    assert tfidf(["", "a b", "!!"]) is None


def test_a_run_without_outputs_loads_neither_scipy_nor_the_workbook_writer() -> None:
    """Answer groups and graded examples use numpy alone, and the workbook writer is loaded only
    when a run writes outputs: scipy.sparse cost a run about 22 MB of memory at its end."""
    code = ("import sys\n"
            "import grader.online.pipeline, grader.backends.gemini\n"
            "from grader.review.groups import Answer, group\n"
            "from grader.grading.exemplars import Selector\n"
            "group([Answer('a', 'tcp handshake'), Answer('b', 'tcp handshake!')], 0.6)\n"
            "print(sorted(m for m in ('scipy', 'sklearn', 'xlsxwriter', 'openpyxl', 'pandas')"
            " if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
