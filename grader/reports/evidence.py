"""The submission text on a student page, with each evidence quote marked where it occurs.

PURE: the text comes from the store (`Store.sent_text`: the student's parts of the request that
was sent), the quotes from the model. A quote is looked up verbatim, then with runs of white
space made equal (models often re-flow lines); a quote found nowhere is listed as such, never
marked somewhere approximate.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from grader.intake.redact import restore
from grader.prompting.prompts import submitted_text

_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Segment:
    text: str
    marks: tuple[int, ...] = ()  # numbers of the quotes covering this stretch


@dataclass(frozen=True)
class Quote:
    number: int
    criterion_id: str
    text: str
    found: bool


@dataclass(frozen=True)
class Submission:
    """What a page shows of the submission: the text (None when the store has none), media that
    were sent but cannot be shown, and whether the text came from another student's identical
    submission (this student's reply was reused)."""

    text: str | None
    media: list[str]
    shared: bool = False


def from_parts(parts: Sequence[dict[str, Any]] | None, shared: bool = False,
               redaction: Mapping[str, str] | None = None) -> Submission:
    """The student's own text out of the parts stored with the request
    (`prompts.submitted_text`: never the graded examples the request also carried), with
    redacted names, emails and ids put back (`redaction`: placeholder -> original)."""
    if parts is None:
        return Submission(None, [], shared)
    media = []
    for p in parts:
        if not isinstance(p.get("text"), str):
            size = p.get("bytes")
            kb = f", {size / 1024:.0f} KB" if isinstance(size, int) else ""
            media.append(f"{p.get('mime_type') or 'file'}{kb}")
    body = submitted_text(parts)
    if body is not None and redaction:
        body = restore(body, redaction)
    return Submission(body, media, shared)


def _find(text: str, quote: str) -> tuple[int, int] | None:
    """Where `quote` occurs in `text`: verbatim, else with white space runs made equal."""
    q = quote.strip()
    if not q:
        return None
    i = text.find(q)
    if i >= 0:
        return i, i + len(q)
    words = [w for w in _SPACE.split(q) if w]
    if not words or any(w not in text for w in words):  # cheap: most misses end here
        return None
    pattern = r"\s+".join(re.escape(w) for w in words)
    m = re.search(pattern, text)
    return (m.start(), m.end()) if m else None


def locate(text: str, quotes: Sequence[tuple[str, str]]) -> tuple[list[Segment], list[Quote]]:
    """Split `text` into segments, marking the first occurrence of each (criterion id, quote)."""
    spans: list[tuple[int, int, int]] = []
    listed: list[Quote] = []
    for n, (cid, q) in enumerate(quotes, start=1):
        where = _find(text, q)
        listed.append(Quote(n, cid, q, where is not None))
        if where is not None:
            spans.append((where[0], where[1], n))
    cuts = sorted({0, len(text), *(s for s, _, _ in spans), *(e for _, e, _ in spans)})
    segments = []
    for a, b in pairwise(cuts):
        marks = tuple(n for s, e, n in spans if s <= a and b <= e)
        segments.append(Segment(text[a:b], marks))
    return segments, listed
