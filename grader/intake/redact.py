"""PII redaction: what leaves the machine names no student; the teacher's outputs do.

`Redactor.submission()` is the one function every path that sends student work out calls
(online requests today; batch files, caches and uploads the same way): it replaces, in the text
and the file names,

- names from the roster and from Canvas/Moodle download names by `[STUDENT_n]` — the author is
  always `[STUDENT_1]`, classmates are numbered in order of appearance. Every part of a name
  counts (each part of a compound surname, "Åberg-Łukasiewicz" -> "Åberg", "Łukasiewicz"), in
  any case, with or without accents ("Aberg"), apostrophes ("OBrien") or a possessive
  ("Åberg's" keeps its "'s"), with the student's initials beside it ("Z. Åberg", "Will T.").
  A whole name in a script written without spaces (Han, kana) or with particles joined to it
  (Hangul) is found inside a run of text too ("我是王小明。", "김민수는"); its parts alone are not.
  A part that is also an ordinary word (grader/data/name_words.toml: "Will", "May", "Price")
  is a name only where it plainly is one: capitalised beside another part of that student's
  name, one of their initials or a title ("Will Turner", "M. Price", "Mr Price");
- e-mail addresses (any, not only the roster's, also obfuscated: `x dot aberg at uni dot
  edu`, `x.aberg(at)uni.edu`, a full-width `＠`, `%40`) by `[EMAIL_n]`;
- student ids from the roster and file names, numbers labelled as student numbers ("student
  no. 20231234", "Matrikelnummer 1234567"), and such a number wherever else it appears in the
  same submission, by `[ID_n]`;
- phone numbers (`grader.intake.pii.phones`: possible numbers for the `phone_region` setting
  or with an international prefix) by `[PHONE_n]`.

Placeholders depend only on the text and the class, so a rerun sends byte-identical requests
(the request hash is of the redacted request, and paid replies are reused). `restore()` maps the
model's justifications, evidence and feedback back for the teacher; the mapping is kept in the
store with the attempt (`attempts.redaction_json`), never sent.

A graded example (another student's work shown beside the submission) is redacted with its own
numbering, its author first, and `for_example()` then puts every placeholder in it in that
example's namespace (`[EXAMPLE_2_AUTHOR]`, `[EXAMPLE_2_EMAIL_1]`, ...): no person in an example
shares a placeholder with the graded student or with another example's people, and `restore()`
never maps those back.

Not caught: names that are not in the roster or file names, a common-word name part alone
("Price's answer"), names in images and scanned PDFs, addresses and other identifiers.
"""

from __future__ import annotations

import itertools
import re
import tomllib
import unicodedata
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cache, lru_cache
from importlib import resources

from grader.grading.policy import Verdict
from grader.grading.records import FlagRow
from grader.intake import pii
from grader.intake.discover import CANVAS_RE, MOODLE_RE, Submission
from grader.intake.extract import Extracted
from grader.intake.injection import words_in

PLACEHOLDER = re.compile(r"\[(?:STUDENT|EMAIL|ID|PHONE)_\d+\]")
_NUMBERED = re.compile(r"\[(STUDENT|EMAIL|ID|PHONE)_(\d+)\]")
_PIECE = re.compile(r"[^\s\-‐‑]+")  # the parts of a name: words and the halves of compounds
_LETTERS = re.compile(r"[^\W\d_]+")
# Scripts written without spaces between words (Han, kana) or with particles joined to a name
# (Hangul): a whole name in them is found inside a run of text, not as a word of its own
_UNSPACED = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
# What may stand between two parts of one name: "Zoë Åberg", "Åberg-Łukasiewicz", "Price, Mark".
_LINK = re.compile(r"[ \t]*[-‐‑,]?[ \t]*\n?[ \t]*")
_INITIAL_BEFORE = re.compile(r"(?<![^\W_])([^\W\d_])\.[ \t]{0,2}\Z")
_INITIAL_AFTER = re.compile(r",?[ \t]{1,2}([^\W\d_])\.(?![^\W_])")
_TITLE_BEFORE = re.compile(r"(?<![^\W_])(?:mr|mrs|ms|mx|miss|dr|prof|herr|frau|mme|mlle|sr|sra)"
                           r"\.?[ \t]{1,2}\Z")
_NUMBER_BESIDE = (re.compile(r"[ \t]{1,2}\d"), re.compile(r"\d[ \t]{1,2}\Z"))
_TRANSLIT = str.maketrans({"ü": "ue", "ö": "oe", "ä": "ae", "ß": "ss", "å": "aa", "ø": "oe",
                           "æ": "ae"})


@cache
def _name_words() -> dict[str, frozenset[str]]:
    """grader/data/name_words.toml: `words` (name parts that are ordinary words), `capitalised`
    (names only when capitalised) and `months`."""
    raw = tomllib.loads(resources.files("grader.data").joinpath("name_words.toml")
                        .read_text(encoding="utf-8"))
    return {k: frozenset(v) for k, v in raw.items()}


def name_level(key: str) -> int:
    """How a name part (folded) is matched: 0 anywhere, in any case; 1 alone only when
    capitalised; 2 only beside another part of the name, an initial or a title (an ordinary
    word, or shorter than three letters)."""
    words = _name_words()
    return 2 if len(key) < 3 or key in words["words"] else 1 if key in words["capitalised"] else 0


@dataclass(frozen=True)
class _Person:
    student_id: str
    display: str | None


@dataclass(frozen=True)
class _Part:
    """One part of a student's name: `index` its place in the name (-1: an id spelled as a
    word), `level` as `name_level()`."""
    sid: str
    index: int
    level: int


@dataclass(frozen=True, order=True)
class _Hit:
    start: int
    end: int
    index: int
    level: int  # as `name_level()`
    capital: bool
    month_date: bool  # a month name with a number beside it ("May 2026")

    @property
    def strong(self) -> bool:
        """A name wherever it stands: no ordinary word, or a rare one capitalised."""
        return self.level == 0 or (self.level == 1 and self.capital)


def _lms_names(sub: Submission) -> list[tuple[str, str | None]]:
    """(name, id) from Canvas/Moodle download names of the student's files."""
    out = []
    for f in sub.files:
        for part in f.parts[-2:]:
            if m := MOODLE_RE.match(part):
                out.append((m["name"], m["uid"]))
            elif (m := CANVAS_RE.match(part)) and m["name"]:  # anonymous downloads: no name
                out.append((" ".join(m["name"].split("_")), m["uid"]))
    return out


def _key(piece: str) -> str:
    """A name part as it is matched: folded, without apostrophes ("O'Brien" -> "obrien")."""
    folded = pii.fold(unicodedata.normalize("NFC", piece))
    return "".join(c for c in folded if c not in pii.APOSTROPHES)


class Redactor:
    """Built once per run from the class (roster and file names); `submission()` per student."""

    def __init__(self, subs: Sequence[Submission], *, phone_region: str | None = "US",
                 other_ids: Mapping[str, Sequence[str]] | None = None):
        """`other_ids`: more ids of a person (student id -> ids: SIS ids, user names),
        redacted as ids; one spelled as a word ("zaberg") is matched like a part of their name
        (in any case), unless it is an ordinary word (grader/data/name_words.toml)."""
        self.region = phone_region
        self.people: dict[str, _Person] = {}
        self.by_name: dict[str, str] = {}  # casefolded full name or e-mail -> student id
        self.parts: dict[str, set[_Part]] = defaultdict(set)  # name key -> parts
        self.triggers: dict[str, set[str]] = defaultdict(set)  # word in a text -> name keys
        self.initials: dict[str, set[str]] = defaultdict(set)  # student -> folded initials
        self.ids: dict[str, str] = {}  # folded id -> student
        self.unspaced: dict[str, str] = {}  # a whole name in a script without spaces -> student
        self.id_spelling: dict[str, str] = {}  # "sis99812" -> "sis-99812": one placeholder
        # ids written with separators ("sis-99812"), by their longest word: a text's words
        # never hold them whole
        self.spaced_ids: dict[str, set[str]] = defaultdict(set)
        for sub in subs:
            self.people[sub.student_id] = _Person(sub.student_id, sub.name)
            for known in (sub.name, sub.email):
                if known:
                    self.by_name.setdefault(known.casefold(), sub.student_id)
            names = [sub.name] if sub.name else []
            ids = [sub.student_id]
            for name, uid in _lms_names(sub):
                names.append(name)
                if uid:
                    ids.append(uid)
            for name in names:
                self._add_name(name, sub.student_id)
            for i in ids:
                self._add_id(i, sub.student_id)
        for sid, more in (other_ids or {}).items():
            for i in more:
                self._add_id(i, sid)

    def person(self, name: str | None, email: str | None) -> str | None:
        """The student id this redactor knows by that full name or e-mail, if any."""
        for known in (name, email):
            if known and (sid := self.by_name.get(known.casefold())):
                return sid
        return None

    def _add_name(self, name: str, sid: str) -> None:
        whole = _key("".join(_PIECE.findall(name)))
        if len(whole) >= 2 and _UNSPACED.search(whole):  # "王小明", found in "我是王小明。"
            self.unspaced.setdefault(whole, sid)
        for index, piece in enumerate(_PIECE.findall(name)):
            key = _key(piece)
            if not _LETTERS.fullmatch(key):
                continue
            self.initials[sid].add(key[0])
            translit = _key(piece.lower().translate(_TRANSLIT))
            for k in {key, translit}:
                self._add_key(k, _Part(sid, index, name_level(k)))
                # "O'Brien" is the words "o" and "brien" to `words_in`
                last = _key(re.split(f"[{pii.APOSTROPHES}]", pii.fold(piece))[-1])
                if len(last) >= 3 and last != k:
                    self.triggers[last].add(k)

    def _add_key(self, key: str, part: _Part) -> None:
        self.parts[key].add(part)
        self.triggers[key].add(key)

    def _add_id(self, raw: str, sid: str) -> None:
        key = pii.fold(raw)
        if len(key) < 3 or name_level(key):
            return
        if key.isalpha():  # an id that is a name ("alice"): matched as a part of the name
            self._add_key(key, _Part(sid, -1, 0))
            return
        if key.isdigit() and len(key) < 4:
            return
        self.ids[key] = sid
        parts = re.findall(r"[^\W_]+", key)
        if len(parts) > 1 or (parts and parts[0] != key):
            self.spaced_ids[max(parts, key=len)].add(key)
            joined = "".join(parts)  # "sis99812": the same id written without separators
            if len(parts) > 1 and not joined.isalpha() and joined not in self.ids:
                self.ids[joined] = sid
                self.id_spelling[joined] = key

    # --- one student -----------------------------------------------------------------------

    def submission(self, ex: Extracted, author: str) -> tuple[Extracted, dict[str, str]]:
        """The submission as it may leave the machine (text and file names redacted), and the
        placeholder -> original mapping to restore the model's reply with."""
        texts, mapping = self.redact([ex.text, *ex.files], author)
        if not mapping:
            return ex, {}
        return ex.model_copy(update={"text": texts[0], "files": tuple(texts[1:])}), mapping

    def redact(self, texts: Sequence[str], author: str, *, keep_existing: bool = False
               ) -> tuple[list[str], dict[str, str]]:
        """Redact several strings with one numbering (placeholders shared between them). A
        number labelled as a student number in any of them is redacted in all of them.
        `keep_existing`: the texts were redacted before (a banked example, as a run sent it):
        the placeholders already in them keep their meaning, new ones are numbered after them."""
        state = _Numbering(author, self.people)
        if keep_existing:
            for t in texts:
                for m in _NUMBERED.finditer(t):
                    state.counts[m[1]] = max(state.counts[m[1]], int(m[2]))
        texts = [t if unicodedata.is_normalized("NFC", t) else unicodedata.normalize("NFC", t)
                 for t in texts]
        folded = [pii.fold(t) for t in texts]
        words = [words_in(f) for f in folded]
        labelled = {key for f, w in zip(folded, words, strict=True)
                    for _, _, key in pii.labelled_ids(f, w)}
        out = [self._one(*args, labelled, state)
               for args in zip(texts, folded, words, strict=True)]
        return out, state.mapping

    def _one(self, text: str, folded: str, found: set[str], labelled: set[str],
             state: _Numbering) -> str:
        spans = [(s, e, "EMAIL", key) for s, e, key in pii.emails(folded)]
        spans += [(s, e, "ID", value) for value in labelled
                  for s, e in pii.occurrences(folded, value)]
        spans += [(s, e, "ID", self.id_spelling.get(w, w)) for w in found & self.ids.keys()
                  for s, e in pii.occurrences(folded, w)]
        spans += [(*m.span(), "ID", key) for w in found & self.spaced_ids.keys()
                  for key in sorted(self.spaced_ids[w]) for m in _id_pattern(key).finditer(folded)]
        if pii.PHONE_HINT.search(text):
            spans += [(s, e, "PHONE", key) for s, e, key in pii.phones(text, self.region)]
        spans += self._names(text, folded, found)
        spans += [(i, i + len(key), "STUDENT", sid) for key, sid in self.unspaced.items()
                  for i in pii.find_all(folded, key)]
        if not spans:
            return text
        spans.sort(key=lambda s: (s[0], -(s[1] - s[0]), s[3]))
        out, last = [], 0
        for start, end, kind, key in spans:
            if end <= last:
                continue
            start = max(start, last)  # what an earlier span left of this one
            out.append(text[last:start])
            out.append(state.placeholder(kind, key, text[start:end]))
            last = end
        out.append(text[last:])
        return "".join(out)

    def _names(self, text: str, folded: str, found: set[str]
               ) -> list[tuple[int, int, str, str]]:
        """Every run of one student's name parts (with initials) that is plainly a name."""
        keys = {k for w in found & self.triggers.keys() for k in self.triggers[w]}
        if not keys:
            return []
        months = _name_words()["months"]
        hits: dict[str, set[_Hit]] = defaultdict(set)
        for key in keys:
            for m in _key_pattern(key).finditer(folded):
                s, e = m.span()
                month_date = key in months and any(
                    p.match(text, e) if i == 0 else p.search(text, max(0, s - 3), s)
                    for i, p in enumerate(_NUMBER_BESIDE))
                capital = text[s].isupper()
                for part in self.parts[key]:
                    hits[part.sid].add(_Hit(s, e, part.index, part.level, capital, month_date))
        out = []
        for sid in sorted(hits):
            for run in _runs(text, sorted(hits[sid])):
                span = self._accept(text, folded, sid, run)
                if span is not None:
                    out.append((*span, "STUDENT", sid))
        return out

    def _accept(self, text: str, folded: str, sid: str, run: list[_Hit]
                ) -> tuple[int, int] | None:
        """The span of a run of name parts with the initials around it, if it is a name: it has
        a part that is no ordinary word, or two pieces of evidence (parts, initials, a title)."""
        start, end = run[0].start, run[-1].end
        evidence = len(run)
        letters = self.initials[sid]
        for _ in range(2):
            m = _INITIAL_BEFORE.search(text, max(0, start - 5), start)
            if not (m and m[1].isupper() and pii.fold(m[1]) in letters):
                break
            start, evidence = m.start(), evidence + 1
        m = _INITIAL_AFTER.match(text, end)
        if m and m[1].isupper() and pii.fold(m[1]) in letters:
            end, evidence = m.end(), evidence + 1
        if _TITLE_BEFORE.search(folded, max(0, start - 7), start):
            evidence += 1
        if any(h.strong for h in run) or evidence >= 2:
            return start, end
        return None


def _runs(text: str, hits: list[_Hit]) -> list[list[_Hit]]:
    """One student's name parts in `text` grouped into runs of adjacent parts, each part
    admitted only where it can be a name: a part that is no word anywhere; a word capitalised
    (and no month beside a number), or in lower case just before a later part of the name that
    is no ordinary word ("will turner")."""
    admitted = [h.strong or (h.capital and not h.month_date) for h in hits]
    for i, (h, nxt) in enumerate(itertools.pairwise(hits)):
        gap = text[h.end:nxt.start]
        if not admitted[i] and nxt.level < 2 and nxt.index > h.index and gap.isspace() \
                and "\n" not in gap:
            admitted[i] = admitted[i + 1] = True
    runs: list[list[_Hit]] = []
    for h, ok in zip(hits, admitted, strict=True):
        if not ok or (runs and h.start < runs[-1][-1].end):
            continue  # not a name here, or the same place found by another spelling
        if runs and _LINK.fullmatch(text, runs[-1][-1].end, h.start):
            runs[-1].append(h)
        else:
            runs.append([h])
    return runs


@lru_cache(maxsize=4096)
def _id_pattern(key: str) -> re.Pattern[str]:
    """An id written with separators ("sis-99812") as a whole word, with any one separator, or
    none, between its parts ("SIS 99812", "SIS_99812_essay.pdf", "sis.99812")."""
    parts = re.findall(r"[^\W_]+", key)
    return re.compile(r"(?<![^\W_])" + r"[\s._/-]?".join(map(re.escape, parts)) + r"(?![^\W_])")


@lru_cache(maxsize=4096)
def _key_pattern(key: str) -> re.Pattern[str]:
    """A name key in folded text as a whole word, apostrophes anywhere in it ("o'brien")."""
    apostrophe = f"[{pii.APOSTROPHES}]?"
    return re.compile(r"(?<![^\W_])" + apostrophe.join(re.escape(c) for c in key)
                      + r"(?![^\W_])")


class _Numbering:
    """Placeholders for one student's request: the author is STUDENT_1, everything else is
    numbered in order of first appearance."""

    def __init__(self, author: str, people: Mapping[str, _Person]):
        self.people = people
        self.keys: dict[tuple[str, str], str] = {("STUDENT", author): "[STUDENT_1]"}
        self.counts = {"STUDENT": 1, "EMAIL": 0, "ID": 0, "PHONE": 0}
        self.mapping: dict[str, str] = {}
        self.author = author

    def placeholder(self, kind: str, key: str, original: str) -> str:
        tag = self.keys.get((kind, key))
        if tag is None:
            self.counts[kind] += 1
            tag = f"[{kind}_{self.counts[kind]}]"
            self.keys[(kind, key)] = tag
        if tag not in self.mapping:
            person = self.people.get(key) if kind == "STUDENT" else None
            self.mapping[tag] = person.display if person and person.display else original
        return tag


def for_example(text: str, n: int) -> str:
    """An example's placeholders in the namespace of example `n`: its author (`[STUDENT_1]`
    of its own numbering) becomes `[EXAMPLE_n_AUTHOR]`, everyone and everything else
    `[EXAMPLE_n_<KIND>_<k>]`. None of them is a `PLACEHOLDER`: nothing maps them back."""
    if "[" not in text:
        return text

    def scoped(m: re.Match[str]) -> str:
        if m[1] == "STUDENT" and m[2] == "1":
            return f"[EXAMPLE_{n}_AUTHOR]"
        return f"[EXAMPLE_{n}_{m[1]}_{m[2]}]"

    return _NUMBERED.sub(scoped, text)


def restore(text: str, mapping: Mapping[str, str]) -> str:
    """The model's text with placeholders mapped back to what they stood for."""
    if not mapping or "[" not in text:
        return text
    return PLACEHOLDER.sub(lambda m: mapping.get(m.group(), m.group()), text)


def restore_verdict(v: Verdict, mapping: Mapping[str, str]) -> Verdict:
    """A verdict whose model-written text names the real people again (for the teacher)."""
    if not mapping:
        return v
    rows = tuple(replace(c, justification=restore(c.justification, mapping),
                         evidence=[restore(e, mapping) for e in c.evidence],
                         feedback=restore(c.feedback, mapping),
                         items=[replace(i, quote=restore(i.quote, mapping)) for i in c.items])
                 for c in v.criteria)
    return replace(v, criteria=rows,
                   overall_comment=restore(v.overall_comment, mapping)
                   if v.overall_comment is not None else None,
                   review_reason=restore(v.review_reason, mapping)
                   if v.review_reason is not None else None,
                   flags=tuple(FlagRow(f.reason, restore(f.message, mapping)) for f in v.flags))
