"""PII redaction: what leaves the machine names no student; the teacher's outputs do.

`Redactor.submission()` is the one function every path that sends student work out calls
(online requests today; batch files, caches and uploads the same way): it replaces, in the text
and the file names,

- names from the roster and from Canvas/Moodle download names (full names in either order,
  and single first or last names when capitalised as a name; common words such as "Will" or
  "Mark" only as part of a full name) by `[STUDENT_n]` — the author is always `[STUDENT_1]`,
  classmates are numbered in order of appearance;
- e-mail addresses (any, not only the roster's) by `[EMAIL_n]`;
- student ids from the roster and file names, and numbers labelled as student numbers
  ("student no. 20231234") by `[ID_n]`;
- phone numbers (`phonenumbers`, valid numbers for the `phone_region` setting or in
  international form) by `[PHONE_n]`.

Placeholders depend only on the text and the class, so a rerun sends byte-identical requests
(the request hash is of the redacted request, and paid replies are reused). `restore()` maps the
model's justifications, evidence and feedback back for the teacher; the mapping is kept in the
store with the attempt (`attempts.redaction_json`), never sent.

A graded example (another student's work shown beside the submission) is redacted with its own
numbering, its author first, and `for_example()` then puts every placeholder in it in that
example's namespace (`[EXAMPLE_2_AUTHOR]`, `[EXAMPLE_2_EMAIL_1]`, ...): no person in an example
shares a placeholder with the graded student or with another example's people, and `restore()`
never maps those back.

Not caught: names that are not in the roster or file names, names in images and scanned PDFs,
addresses and other identifiers.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

from grader.grading.policy import Verdict
from grader.grading.records import FlagRow
from grader.intake.discover import CANVAS_RE, MOODLE_RE, Submission
from grader.intake.extract import Extracted
from grader.intake.injection import words_in

PLACEHOLDER = re.compile(r"\[(?:STUDENT|EMAIL|ID|PHONE)_\d+\]")
_NUMBERED = re.compile(r"\[(STUDENT|EMAIL|ID|PHONE)_(\d+)\]")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_LABELLED_ID = re.compile(
    r"\b(?:student|matriculation|matric|enrol?ment|enrollment|sis|learner|candidate|"
    r"registration)[\s_-]*(?:number|no\.?|id|#|nr\.?|num)\s*[:#=]?\s*([A-Za-z]{0,2}\d[\d-]{3,11}\d)"
    r"\b", re.IGNORECASE)
_PHONE_HINT = re.compile(r"(?:\+|\b)\d[\d ().-]{6,}\d")
_PHONE_GROUPS = re.compile(r"\d[\s()\-]+\d")  # digits in groups, as phone numbers are written
# Words that are also names: redacted only inside a full name.
COMMON_WORDS = frozenset(re.split(r"\s+", (
    "will may mark bill rose june april august grace hope joy faith page long young white "
    "black brown green gray grey king hall wood stone ray dean art sky summer winter river "
    "lane rich chase drew frank max case park price bell cook hunter mason carter baker miller "
    "love sun moon star ash fox bird gay early low little small short hill field banks new "
    "best said see can min set key list map node tree true false none")))


def _variants(word: str) -> set[str]:
    """Spellings of a name word: as written, without accents, German transliteration."""
    out = {word}
    plain = "".join(c for c in unicodedata.normalize("NFKD", word)
                    if not unicodedata.combining(c))
    out.add(plain)
    out.add(word.replace("ü", "ue").replace("ö", "oe").replace("ä", "ae").replace("ß", "ss")
            .replace("Ü", "Ue").replace("Ö", "Oe").replace("Ä", "Ae"))
    out.add(word.replace("'", "’"))
    out.add(word.replace("’", "'"))
    return out


_NAME_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")


@dataclass
class _Person:
    student_id: str
    display: str | None


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


class Redactor:
    """Built once per run from the class (roster and file names); `submission()` per student."""

    def __init__(self, subs: Sequence[Submission], *, phone_region: str | None = "US",
                 other_ids: Mapping[str, Sequence[str]] | None = None):
        """`other_ids`: more ids of a person (student id -> ids), redacted as ids; those
        spelled as a word are left to the name rules, so they never stand for a student."""
        self.region = phone_region
        self.people: dict[str, _Person] = {}
        self.by_name: dict[str, str] = {}  # casefolded full name or e-mail -> student id
        self.full: dict[str, list[tuple[tuple[str, ...], str]]] = {}  # first word -> names
        self.single: dict[str, set[str]] = {}  # exact spelling -> students
        self.ids: dict[str, str] = {}  # casefolded id -> student
        self.gate: set[str] = set()  # lower-case words any of the above contains
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
            if sub.email:
                self.gate.update(words_in(sub.email.lower()))
        for sid, more in (other_ids or {}).items():
            for i in more:
                if not i.isalpha():
                    self._add_id(i, sid)

    def person(self, name: str | None, email: str | None) -> str | None:
        """The student id this redactor knows by that full name or e-mail, if any."""
        for known in (name, email):
            if known and (sid := self.by_name.get(known.casefold())):
                return sid
        return None

    def _add_name(self, name: str, sid: str) -> None:
        parts = _NAME_WORD.findall(name)
        if not parts:
            return
        for variant_parts in {tuple(p) for p in _spellings(parts)}:
            folded = tuple(p.casefold() for p in variant_parts)
            for seq in {folded, folded[::-1]} if len(folded) > 1 else set():
                self.full.setdefault(seq[0], []).append((seq, sid))
            for p in variant_parts:
                if len(p) >= 3 and p.casefold() not in COMMON_WORDS:
                    for spelled in (p, p.upper(), p[:1].upper() + p[1:]):
                        self.single.setdefault(spelled, set()).add(sid)
            self.gate.update(words_in(" ".join(folded)))

    def _add_id(self, raw: str, sid: str) -> None:
        key = raw.casefold()
        if len(key) < 3 or key in COMMON_WORDS:
            return
        if key.isalpha():  # an id that is a name ("alice"): as written, or capitalised
            for spelled in (raw, raw[:1].upper() + raw[1:]):
                self.single.setdefault(spelled, set()).add(sid)
            self.gate.update(words_in(key))
            return
        if key.isdigit() and len(key) < 4:
            return
        self.ids[key] = sid
        self.gate.update(words_in(key))

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
        """Redact several strings with one numbering (placeholders shared between them).
        `keep_existing`: the texts were redacted before (a banked example, as a run sent it):
        the placeholders already in them keep their meaning, new ones are numbered after them."""
        state = _Numbering(author, self.people)
        if keep_existing:
            for t in texts:
                for m in _NUMBERED.finditer(t):
                    state.counts[m[1]] = max(state.counts[m[1]], int(m[2]))
        out = [self._one(t, state) for t in texts]
        return out, state.mapping

    def _one(self, text: str, state: _Numbering) -> str:
        lowered = text.lower()
        found = words_in(lowered)
        spans: list[tuple[int, int, str, str]] = []  # start, end, kind, key
        if "@" in text:
            spans += [(m.start(), m.end(), "EMAIL", m.group().casefold())
                      for m in _EMAIL.finditer(text)]
        if found & _ID_LABELS:
            spans += [(m.start(1), m.end(1), "ID", m.group(1).casefold())
                      for m in _LABELLED_ID.finditer(text)]
        if _PHONE_HINT.search(text):
            spans += self._phones(text)
        for word in found & self.gate:
            spans += self._names_and_ids(text, lowered, word)
        if not spans:
            return text
        spans.sort(key=lambda s: (s[0], -(s[1] - s[0])))
        out, last = [], 0
        for start, end, kind, key in spans:
            if start < last:
                continue
            out.append(text[last:start])
            out.append(state.placeholder(kind, key, text[start:end]))
            last = end
        out.append(text[last:])
        return "".join(out)

    def _phones(self, text: str) -> list[tuple[int, int, str, str]]:
        """Phone numbers: every number valid for the region or in international form, and,
        erring on the side of privacy, every *possible* number (the right length, whether or not
        it is allocated now, e.g. +44 7700 900123) written as a phone number is: with a leading
        `+`, or in digit groups. A bare run of digits (a number in code, 0.1234567) is left."""
        import phonenumbers

        out = []
        for m in phonenumbers.PhoneNumberMatcher(text, self.region,
                                                 leniency=phonenumbers.Leniency.POSSIBLE):
            if not (phonenumbers.is_valid_number(m.number) or m.raw_string.startswith("+")
                    or _PHONE_GROUPS.search(m.raw_string)):
                continue
            number = phonenumbers.format_number(m.number, phonenumbers.PhoneNumberFormat.E164)
            out.append((m.start, m.end, "PHONE", number))
        return out

    def _names_and_ids(self, text: str, lowered: str, word: str
                       ) -> list[tuple[int, int, str, str]]:
        out = []
        for s, e in _occurrences(text, lowered, word):
            best: tuple[int, str] | None = None
            for seq, sid in self.full.get(word, ()):
                full = _sequence_pattern(seq).match(text, s)
                if full is not None and (best is None or full.end() > best[0]):
                    best = (full.end(), sid)
            if best is not None:
                out.append((s, best[0], "STUDENT", best[1]))
                continue
            token = text[s:e]
            who = self.single.get(token)
            if who:
                out.append((s, e, "STUDENT", sorted(who)[0]))
            elif word in self.ids:
                out.append((s, e, "ID", word))
        return out


_ID_LABELS = frozenset(re.split(r"\s+", "student matriculation matric enrolment enrollment sis "
                                            "learner candidate registration"))


def _spellings(parts: list[str]) -> list[list[str]]:
    variants = [sorted(_variants(p)) for p in parts]
    out: list[list[str]] = [[]]
    for options in variants:
        out = [[*prefix, o] for prefix in out for o in options][:16]
    return out


def _occurrences(text: str, lowered: str, word: str) -> Iterator[tuple[int, int]]:
    """Where `word` (lower case) stands in `text` as a whole word, ignoring case. Plain string
    search when lower-casing kept every position (a class of 10,000 has 10,000 ids: compiling
    a pattern for each cost 0.1 ms a student); the regex otherwise."""
    if len(lowered) != len(text) or not word.isascii():
        for m in _word_pattern(word).finditer(text):
            yield m.start(), m.end()
        return
    i = lowered.find(word)
    while i >= 0:
        e = i + len(word)
        if not (i and lowered[i - 1].isalnum()) and not (e < len(text) and lowered[e].isalnum()):
            yield i, e
        i = lowered.find(word, i + 1)


@lru_cache(maxsize=4096)
def _word_pattern(word: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![^\W_]){re.escape(word)}(?![^\W_])", re.IGNORECASE)


@lru_cache(maxsize=4096)
def _sequence_pattern(seq: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile(r"[\s,]+".join(re.escape(p) for p in seq) + r"(?![^\W_])",
                      re.IGNORECASE)


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
