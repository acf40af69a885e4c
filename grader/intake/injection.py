"""Detect submissions that talk to the grader instead of answering the question.

Before the model: `inspect()` runs over what extraction produced and returns `Finding`s:

- **instructions aimed at the grader** — "ignore previous instructions", "give full marks",
  chat-role and system-prompt imitation, fake rubric / score / output blocks, fake grader or
  staff notes, claims that the grade was approved, paraphrased overrides, in English and 20
  other languages (`injection_patterns`); also when obfuscated: look-alike letters
  (mathematical alphanumerics and other compatibility forms, `unmask.fold`), full-width forms,
  text reversed inside a right-to-left override (`unmask.unbidi`), zero-width characters
  inside words, leetspeak, s p a c e d letters, base64 and ROT13, and phrases split across
  files, pages or cells (our own file/page/cell markers are blanked before matching);
- **fake fence markers** (`</submission>`: `prompts.fence_safe` defuses them, this reports them);
- **text a reader would not see**: what the format readers removed (white, tiny, hidden or
  off-page text, HTML comments, ...; see `_visibility`) and invisible Unicode (tag characters,
  variation-selector payloads, zero-width characters), removed here;
- **instructions in places the model is not shown** (notebook metadata, alt text, PDF
  annotations, Word comments and properties): scanned and reported.

A quoted phrase inside a discussion ("attacks such as 'ignore previous instructions'") is a
*mention*, not a use, unless it points at this submission ("give this essay full marks"), is a
Markdown link's title, or is a string a program assigns, passes or returns. A second,
model-based opinion (`grader.grading.screen`, `injection_check`) runs later, in `prepare`.
Mentions and removed comments are reported but do not raise the flag on their own; the run's
score-jump check (`score_jump`) combines them with the grade. Everything here is pure and
compiled once per process; clean ASCII text costs a few dozen microseconds.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict

from grader.escape import printable
from grader.intake.injection_patterns import (
    DISCUSSION,
    ENGLISH,
    MODEL_REASON,
    MULTILINGUAL,
    SELF_REFERENCE,
)
from grader.intake.injection_patterns import Rule as _Rule
from grader.intake.unmask import BIDI_CONTROLS, fold, unbidi
from grader.prompting.prompts import fence_marks, lookalike_skeleton

FLAG = "injection_suspected"
Kind = Literal["instruction", "fence", "hidden", "mention", "removed"]
MAX_FINDINGS = 25
_EXCERPT = 160
_MAX_ANCHOR_HITS = 400  # tries per anchor and view: a text full of "give" cannot cost much


class Finding(BaseModel):
    """One piece of evidence: what was found, where, and the text itself (trimmed)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Kind
    rule: str
    where: str
    text: str

    @property
    def suspicious(self) -> bool:
        """Raises `injection_suspected` on its own (mentions and removed comments do not)."""
        return self.kind not in ("mention", "removed")

    def describe(self) -> str:
        what = {"instruction": "instruction to the grader", "fence": "fake submission marker",
                "hidden": "hidden text removed from what the model sees",
                "mention": "quotes an injection phrase (a mention, not flagged on its own)",
                "removed": "removed from what the model sees"}[self.kind]
        quote = f": “{self.text}”" if self.text else ""
        return f"{what} ({self.rule}) at {self.where}{quote}"


@dataclass(frozen=True)
class Hidden:
    """Text a format reader left out of what the model sees because a reader would not see it.
    `deliberate`: hidden by formatting (white, tiny, vanish, off-page, display:none...); False
    for authoring leftovers such as HTML comments, which are only suspicious when they instruct."""

    where: str
    how: str
    text: str
    deliberate: bool = True


@dataclass(frozen=True)
class Aside:
    """Text in a file that the model is not shown (metadata, alt text, annotations)."""

    where: str
    text: str


@dataclass(frozen=True)
class Inspection:
    text: str  # what the model may see: invisible characters removed
    findings: tuple[Finding, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass
class _Hit:
    rule: str
    kind: str
    start: int
    end: int
    via: str = ""  # the obfuscation that had to be undone, if any


# --- invisible Unicode ---------------------------------------------------------------------

_TAGS = re.compile("[\U000e0000-\U000e007f]+")
_VS_RUN = re.compile("[\ufe00-\ufe0f\U000e0100-\U000e01ef]{4,}")
_ZERO_WIDTH = re.compile("[\u200b\u2060\ufeff\u180e\u2061-\u2064]")
_BLACK_FLAG = "\U0001f3f4"  # tag sequences after it are flag emoji (🏴󠁧󠁢󠁳󠁣󠁴󠁿)
# Deleted from the views the patterns see (the model still sees them: scripts need them).
_JOINERS = dict.fromkeys(map(ord, "\u200c\u200d\u00ad\u034f\u200b\u2060\ufeff\u180e"
                               + BIDI_CONTROLS))
_LEET = str.maketrans("013457@$", "oieastas")


def _tag_text(run: str) -> str:
    return "".join(chr(ord(c) - 0xE0000) for c in run if 0x20 <= ord(c) - 0xE0000 < 0x7F)


def _selector_bytes(run: str) -> str:
    out = bytearray()
    for c in run:
        cp = ord(c)
        out.append(cp - 0xFE00 if cp <= 0xFE0F else cp - 0xE0100 + 16)
    return out.decode("utf-8", "replace")


def strip_invisible(text: str) -> tuple[str, list[tuple[int, str, str]]]:
    """`text` without Unicode tag characters (but flag emoji), variation-selector payloads and
    zero-width characters; plus (position, how, decoded text) for each removed payload."""
    if text.isascii():
        return text, []
    payloads: list[tuple[int, str, str]] = []

    def tags(m: re.Match[str]) -> str:
        run = m.group()
        if (m.start() > 0 and text[m.start() - 1] == _BLACK_FLAG and run.endswith("\U000e007f")
                and len(run) <= 8):
            return run
        payloads.append((m.start(), "Unicode tag characters", _tag_text(run)))
        return ""

    def selectors(m: re.Match[str]) -> str:
        payloads.append((m.start(), "variation-selector payload", _selector_bytes(m.group())))
        return ""

    out = _TAGS.sub(tags, text)
    out = _VS_RUN.sub(selectors, out)
    zero_width = len(_ZERO_WIDTH.findall(out))
    if zero_width:
        out = _ZERO_WIDTH.sub("", out)
        payloads.append((-1, f"{zero_width} zero-width character(s)", ""))
    return out, payloads


# --- where a position is -------------------------------------------------------------------

_FILE_HEADER = re.compile(r"^===== file: (.*) =====$", re.MULTILINE)
_SECTION = re.compile(r"^--- (page \d+|cell \d+) (?:\(\w+\) )?---$|^(\[output\])$", re.MULTILINE)
_MARKERS = re.compile(r"^(?:===== file: .* =====|--- (?:page \d+|cell \d+ \(\w+\)) ---|"
                      r"\[output\]|```[\w+#.-]*)$", re.MULTILINE)
_COMMENT_LEADS = ("#", "//", "/*", "*", "--", "<!--", ";", "%", "'")


class _Locator:
    """Turns a position in the extracted text into "file line N (page 2, code comment)"."""

    def __init__(self, text: str, single: str | None):
        self.text, self.single = text, single
        self._headers: list[tuple[int, str]] | None = None

    def headers(self) -> list[tuple[int, str]]:
        if self._headers is None:
            self._headers = [(m.end(), m.group(1)) for m in _FILE_HEADER.finditer(self.text)]
        return self._headers

    def __call__(self, pos: int) -> str:
        start, name = 0, self.single or "the submission"
        for end, header in self.headers():
            if end > pos:
                break
            start, name = end + 1, header
        line = self.text.count("\n", start, pos) + 1
        detail = []
        section = None
        for m in _SECTION.finditer(self.text, start, pos):
            section = m.group(1) or "notebook output"
        if section:
            detail.append(section)
        line_start = self.text.rfind("\n", 0, pos) + 1
        if self.text[line_start:pos].lstrip().startswith(_COMMENT_LEADS):
            detail.append("comment")
        return f"{name} line {line}" + (f" ({', '.join(detail)})" if detail else "")


def excerpt(text: str, start: int, end: int) -> str:
    """The line(s) around text[start:end], trimmed, whitespace collapsed, printable."""
    lo = text.rfind("\n", 0, start) + 1
    hi = text.find("\n", end)
    hi = len(text) if hi == -1 else hi
    if end - start > _EXCERPT:
        lo, hi = start, end
    elif hi - lo > _EXCERPT:
        pad = (_EXCERPT - (end - start)) // 2
        lo, hi = max(lo, start - pad), min(hi, end + pad)
    piece = " ".join(text[lo:hi].split())
    if len(piece) > _EXCERPT:
        piece = piece[:_EXCERPT - 1] + "…"
    return printable(piece)


# --- matching ------------------------------------------------------------------------------


class _View:
    """A lower-cased view of the text the rules run on, and how to map back to it."""

    def __init__(self, text: str, origin: list[int] | None = None, via: str = ""):
        self.text, self.origin, self.via = text, origin, via

    def at(self, pos: int) -> int:
        if self.origin is None:
            return pos
        return self.origin[min(pos, len(self.origin) - 1)] if self.origin else 0


_ASCII_SEPARATORS = bytes(c if chr(c).isalnum() else 32 for c in range(128)) + bytes(
    [32] * 128)
_UNICODE_WORD = re.compile(r"[^\W_]+")


def words_in(text: str) -> set[str]:
    """The distinct words (runs of letters and digits) of lower-case `text`; for ASCII text a
    few bytes operations, about 10 µs per KB."""
    if text.isascii():
        return set(text.encode().translate(_ASCII_SEPARATORS).decode().split())
    return set(_UNICODE_WORD.findall(text))


def _spelled(anchor: str) -> bool:
    """Latin-script anchors are looked up as words; others (CJK, Cyrillic, Arabic, ...) and
    anchors without letters (`<|`, `##`) as substrings."""
    return bool(_UNICODE_WORD.search(anchor)) and all(ord(c) < 0x250 for c in anchor)


@dataclass(frozen=True)
class _Anchor:
    text: str
    words: frozenset[str]  # all must be words of the text (empty: a substring anchor)
    rules: tuple[_Rule, ...]

    @property
    def word_start(self) -> bool:
        return bool(self.words) and self.text[0].isalnum()


@dataclass(frozen=True)
class _RuleSet:
    """Rules indexed by anchor. A text's word set decides which anchors can occur (one set
    intersection), and each rule is then tried only where one of its anchors occurs."""

    by_first_word: dict[str, tuple[_Anchor, ...]]
    substrings: tuple[_Anchor, ...]

    @classmethod
    def of(cls, rules: Sequence[_Rule]) -> _RuleSet:
        grouped: dict[str, list[_Rule]] = {}
        for r in rules:
            for a in r.anchors:
                grouped.setdefault(a, []).append(r)
        by_first: dict[str, list[_Anchor]] = {}
        substrings = []
        for text, rs in grouped.items():
            if _spelled(text):
                ws = _UNICODE_WORD.findall(text)
                by_first.setdefault(ws[0], []).append(_Anchor(text, frozenset(ws), tuple(rs)))
            else:
                substrings.append(_Anchor(text, frozenset(), tuple(rs)))
        return cls({k: tuple(v) for k, v in by_first.items()}, tuple(substrings))

    def run(self, view: _View, found: set[str]) -> Iterator[_Hit]:
        """Matches in `view`, whose words are `found`."""
        text = view.text
        candidates = [a for w in sorted(found & self.by_first_word.keys())
                      for a in self.by_first_word[w] if a.words <= found]
        ascii_text = text.isascii()
        candidates += [a for a in self.substrings
                       if (a.text.isascii() or not ascii_text) and a.text in text]
        seen: set[tuple[str, int]] = set()
        for a in candidates:
            i, tries = text.find(a.text), 0
            while i != -1 and tries < _MAX_ANCHOR_HITS:
                if not a.word_start or i == 0 or not text[i - 1].isalnum():
                    tries += 1
                    for rule in a.rules:
                        m = rule.regex.match(text, i)
                        if m is not None and (rule.name, m.start()) not in seen:
                            seen.add((rule.name, m.start()))
                            yield _Hit(rule.name, rule.kind, view.at(m.start()),
                                       view.at(max(m.start(), m.end() - 1)) + 1, view.via)
                i = text.find(a.text, i + 1)


def _lower(text: str) -> str:
    low = text.lower()
    if len(low) == len(text):
        return low
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in text)  # keep positions


_JOINER_CHARS = re.compile("[" + "".join(map(chr, _JOINERS)) + "]")


def _deleting(text: str, table: dict[int, None]) -> tuple[str, list[int] | None]:
    """`text` without the characters in `table`, and where each kept character was."""
    if not _JOINER_CHARS.search(text):
        return text, None
    out = text.translate(table)
    return out, [i for i, c in enumerate(text) if ord(c) not in table]


_ENGLISH = _RuleSet.of(ENGLISH)
_MULTILINGUAL = _RuleSet.of(MULTILINGUAL)


_SPACED = re.compile(r"(?<![^\W\d_])[^\W\d_](?:[ .·*_-][^\W\d_]){3,}(?![^\W\d_])")
_SPACED_HINT = re.compile(r"[ .·*_-][^\W\d_][ .·*_-][^\W\d_][ .·*_-][^\W\d_](?![^\W\d_])")
_BASE64 = re.compile(r"[A-Za-z0-9+/]{24,}={0,2}")
_LEET_WORD = re.compile(r"(?!0x)(?=(?:[^a-z]*[a-z]){2})(?:[^013457]*[013457]){2}")


def _despaced(view: _View) -> _View | None:
    """`i g n o r e` -> `ignore` (letters separated by one space, dot or dash)."""
    if not _SPACED_HINT.search(view.text):
        return None
    runs = list(_SPACED.finditer(view.text))
    if not runs:
        return None
    out: list[str] = []
    origin: list[int] = []
    last = 0
    for m in runs:
        out.append(view.text[last:m.start()])
        origin.extend(range(last, m.start()))
        for k in range(m.start(), m.end(), 2):
            out.append(view.text[k])
            origin.append(k)
        last = m.end()
    out.append(view.text[last:])
    origin.extend(range(last, len(view.text)))
    return _View("".join(out), [view.at(i) for i in origin], "spaced letters")


def _hits(text: str) -> tuple[list[_Hit], set[str]]:
    """All rule matches in `text`, in its own coordinates, over every view that applies; and
    the words of the text."""
    blanked = _MARKERS.sub(lambda m: " " * len(m.group()), text) \
        if ("\n=====" in text or "--- " in text or "[output]" in text or "```" in text
            or text.startswith("=====")) else text
    low = _lower(blanked)
    reordered = None
    if low.isascii():
        skeleton = local = _View(low)
        english = native = words_in(low)
    else:
        reordered = unbidi(low)  # what a reader sees where an override reverses text
        base, before = (reordered[0], reordered[1]) if reordered else (low, None)
        plain, origin = _deleting(base, _JOINERS)
        if before is not None:
            origin = before if origin is None else [before[i] for i in origin]
        plain = fold(plain)
        local = _View(plain, origin)
        skeleton = _View(lookalike_skeleton(plain), origin)
        native = words_in(plain)
        english = native if skeleton.text is plain else words_in(skeleton.text)
    hits = list(_ENGLISH.run(skeleton, english))
    hits += [h for h in _MULTILINGUAL.run(local, native)  # an English phrase is not "French"
             if not any(e.start < h.end and h.start < e.end for e in hits)]
    if reordered is not None:
        for h in hits:
            if any(s <= h.start < e for s, e in reordered[2]):
                h.via = h.via or "right-to-left override"
    extra: list[_View] = []
    if sum(1 for w in english if not w.isalpha() and _LEET_WORD.match(w)) >= 2:
        extra.append(_View(skeleton.text.translate(_LEET), skeleton.origin, "leetspeak"))
    spaced = _despaced(skeleton)
    if spaced is not None:
        extra.append(spaced)
    if "rot13" in english or ("rot" in english and "13" in english):
        extra.append(_View(codecs.decode(skeleton.text, "rot13"), skeleton.origin, "ROT13"))
    for v in extra:
        found = {(h.rule, h.start) for h in hits}
        hits += [h for h in _ENGLISH.run(v, words_in(v.text)) if (h.rule, h.start) not in found]
    hits.sort(key=lambda h: (h.start, h.rule))  # the same order in every process
    return hits, english


def _decoded_base64(text: str, found: set[str]) -> Iterator[tuple[int, str]]:
    """Base64 runs of `text` (whose words are `found`) that decode to text."""
    if not any(len(w) >= 20 for w in found):
        return
    for m in _BASE64.finditer(text):
        token = m.group()
        try:
            raw = base64.b64decode(token + "=" * (-len(token) % 4), validate=True)
            decoded = raw.decode("utf-8")
        except (binascii.Error, ValueError):
            continue
        if decoded and sum(c.isprintable() or c.isspace() for c in decoded) >= 0.9 * len(decoded):
            yield m.start(), decoded


# Quotes that are syntax, not quoting: a Markdown link's title (`[x](url "title")`, shown as a
# tooltip and read by the model), and a string a program assigns, passes, returns or prints
# (`msg = "..."`, `print("...")`). A list of phrases (`["...", "..."]`) stays a mention.
_NOT_QUOTING = re.compile(r"(?:\]\(\s*<?[^\s)>]*>?\s+|^\s*\[[^\]\n]+\]:\s*\S+\s+|[\w)\]]\s*"
                          r"(?<![=!<>])=\s*|\w\s*\(\s*|\breturn\s+|\byield\s+)[rbfu]{0,2}$",
                          re.MULTILINE)


def _is_mention(text: str, start: int, end: int) -> bool:
    """A quoted phrase in a discussion of prompt injection, not pointing at this submission."""
    lo = text.rfind("\n", 0, start) + 1
    hi = text.find("\n", end)
    hi = len(text) if hi == -1 else hi
    before, after = text[max(lo, start - 60):start], text[end:min(hi, end + 60)]
    opening = max(before.rfind(q) for q in "\"“«„'‘「`")
    closing = [after.find(q) for q in "\"”»“'’」`"]
    if opening == -1 or not any(c != -1 for c in closing):
        return False
    quote_at = max(lo, start - 60) + opening
    if _NOT_QUOTING.search(text, lo, quote_at) is not None:
        return False
    span = text[quote_at:end + min(c for c in closing if c != -1) + 1]
    if SELF_REFERENCE.search(span.lower()):
        return False
    around = text[max(0, start - 300):min(len(text), end + 300)].lower()
    return bool(DISCUSSION.search(around))


# --- the entry point -----------------------------------------------------------------------


def scan(text: str, where: str) -> list[Finding]:
    """Instructions aimed at the grader in a short text (hidden or aside content), all located
    at `where`."""
    hits, found = _hits(text)
    out = [Finding(kind="instruction", rule=_named(h), where=where,
                   text=excerpt(text, h.start, h.end)) for h in hits]
    for _, decoded in _decoded_base64(text, found):
        out += [Finding(kind="instruction", rule=f"{h.rule}; base64", where=where,
                        text=excerpt(decoded, h.start, h.end)) for h in _hits(decoded)[0]]
    return out


def _named(h: _Hit) -> str:
    return h.rule + (f"; {h.via}" if h.via else "")


def substantive(text: str) -> bool:
    """Hidden text worth a flag: at least a few letters, not stray spaces or a full stop."""
    return sum(c.isalpha() for c in text) >= 8


@dataclass
class _Collector:
    """Findings in order; one per kind, place and text (the rules that matched it joined)."""

    findings: list[Finding] = field(default_factory=list)
    index: dict[tuple[str, str, str], int] = field(default_factory=dict)

    def add(self, f: Finding) -> None:
        key = (f.kind, f.where, f.text)
        i = self.index.get(key)
        if i is not None:
            old = self.findings[i]
            names, _, via = old.rule.partition("; ")
            new, _, new_via = f.rule.partition("; ")
            if new not in names.split(", "):
                names = f"{names}, {new}"
            via = via or new_via
            self.findings[i] = old.model_copy(update={"rule": names + (f"; {via}" if via
                                                                       else "")})
        elif len(self.findings) < MAX_FINDINGS:
            self.index[key] = len(self.findings)
            self.findings.append(f)


def inspect(text: str, *, single: str | None = None, hidden: Sequence[Hidden] = (),
            aside: Sequence[Aside] = ()) -> Inspection:
    """Check a submission's extracted text (`single`: its file name when there is one file;
    several files are told apart by their headers), what the readers removed as hidden, and
    what the model is not shown. Returns the text the model may see and the findings."""
    clean, payloads = strip_invisible(text)
    c = _Collector()
    notes: list[str] = []
    locate = _Locator(text, single)
    for pos, how, decoded in payloads:
        if pos < 0:
            notes.append(f"{how} removed from what the model sees")
            c.add(Finding(kind="removed", rule=how, where=single or "the submission", text=""))
            continue
        where = locate(pos)
        said = scan(decoded, f"{where} ({how})")
        for f in said:
            c.add(f)
        if not said:
            c.add(Finding(kind="hidden" if substantive(decoded) else "removed", rule=how,
                          where=where, text=excerpt(decoded, 0, len(decoded))))
    locate = _Locator(clean, single)
    hits, found = _hits(clean)
    for h in hits:
        kind: Kind = "mention" if not h.via and _is_mention(clean, h.start, h.end) \
            else "instruction"
        c.add(Finding(kind=kind, rule=_named(h), where=locate(h.start),
                      text=excerpt(clean, h.start, h.end)))
    for start, decoded in _decoded_base64(clean, found):
        for h in _hits(decoded)[0]:
            c.add(Finding(kind="instruction", rule=f"{h.rule}; base64",
                          where=locate(start), text=excerpt(decoded, h.start, h.end)))
    for pos in fence_marks(clean):
        c.add(Finding(kind="fence", rule="fence marker", where=locate(pos),
                      text=excerpt(clean, pos, pos + 1)))
    for item in hidden:
        said = scan(item.text, f"{item.where} ({item.how})")
        for f in said:
            c.add(f)
        if not said:
            kind = "hidden" if item.deliberate and substantive(item.text) else "removed"
            c.add(Finding(kind=kind, rule=item.how, where=item.where,
                          text=excerpt(item.text, 0, len(item.text))))
        notes.append(f"{item.where}: {item.how} removed from what the model sees")
    for extra in aside:
        for f in scan(extra.text, extra.where):
            c.add(f)
    return Inspection(clean, tuple(c.findings), tuple(notes[:20]))


def suspicious(findings: Sequence[Finding]) -> bool:
    return any(f.suspicious for f in findings)


MAX_SHOWN = 6


def evidence(findings: Sequence[Finding], *, model_reason: str | None = None,
             jump: str | None = None) -> str:
    """The `injection_suspected` flag's message: what was found, where, the text itself."""
    shown = sorted(findings, key=lambda f: not f.suspicious)
    parts = [f.describe() for f in shown[:MAX_SHOWN]]
    if len(shown) > MAX_SHOWN:
        parts.append(f"and {len(shown) - MAX_SHOWN} more")
    if model_reason:
        parts.append(f"the model reported: “{printable(model_reason)[:300]}”")
    if jump:
        parts.append(jump)
    return ("graded on the merits; check the evidence before approving: " + "; ".join(parts))


def model_reports_injection(reason: str | None) -> bool:
    """Does the model's review reason say the submission tried to steer the grade?"""
    return bool(reason) and MODEL_REASON.search(reason or "") is not None
