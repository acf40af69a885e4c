"""What personal data looks like in text, whoever it belongs to: e-mail addresses in their
common spellings, numbers labelled as student numbers, phone numbers. `grader.intake.redact`
adds what it knows from the class (names, ids) and replaces them all.

Every finder works on `fold(text)`: the text lower-cased, accents and full-width forms removed,
one character for one (so a position in the folded text is the same position in the text).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator

Span = tuple[int, int, str]  # start, end, key (the same person or thing -> the same key)

# Letters NFKD does not take apart.
_SPECIAL = {"ł": "l", "Ł": "l", "ø": "o", "Ø": "o", "đ": "d", "Đ": "d", "ı": "i", "ħ": "h",
            "Ħ": "h", "ŧ": "t", "Ŧ": "t", "ŀ": "l", "Ŀ": "l"}
APOSTROPHES = "'’‘`´ʼ"


class _FoldTable(dict[int, str]):
    """`str.translate` table, filled as characters are met."""

    def __missing__(self, code: int) -> str:
        c = chr(code)
        base = _SPECIAL.get(c) or "".join(
            x for x in unicodedata.normalize("NFKD", c) if not unicodedata.combining(x))
        low = base.lower()
        if len(low) != 1:
            low = c.lower() if len(c.lower()) == 1 else c
        self[code] = low
        return low


_FOLD = _FoldTable()


def fold(text: str) -> str:
    """`text` lower-cased, without accents ("Åberg" -> "aberg", "Ł" -> "l") and with
    full-width forms as ASCII ("＠" -> "@"), one character for each of `text`'s."""
    return text.lower() if text.isascii() else text.translate(_FOLD)


# --- e-mail addresses ---------------------------------------------------------------------

# a %-escape of a printable sign (space to /, : to @, [ to `, { to ~), never of a letter or digit
_SIGN_ESCAPE = r"(?:2[0-9a-f]|3[a-f]|40|5[b-f]|60|7[b-e])"
_AT = r"(?:@|%40|&#0*64;|&commat;|\s*[(\[{<]\s*at\s*[)\]}>]\s*|\s+at\s+)"
_DOT = r"(?:\.|%2e|\s*[(\[{<]\s*dot\s*[)\]}>]\s*|\s+dot\s+)"
_EMAIL = re.compile(
    # not inside a word; or right after a %-escape of a sign ("mailto%3Ajane.smith%40uni.edu"),
    # or after a bare % ("100%jane.smith@uni.edu", "100%dave@...": %da escapes no sign),
    # with two letters at least ("%s@gmail.com" is a format string, not an address)
    rf"(?:(?<![\w.+%-])|(?<=%{_SIGN_ESCAPE})|(?<=%)(?!{_SIGN_ESCAPE})(?=[\w+-]{{2}}))"
    rf"[\w+-]+(?:{_DOT}[\w+-]+)*(?P<at>{_AT})[\w-]+(?:{_DOT}(?P<tld>[\w-]+))+")
_CANONICAL = ((re.compile(_AT), "@"), (re.compile(_DOT), "."))
# The spelled-out form ("x dot aberg at uni dot edu") is an address only when it ends in one of
# these: "look at self.data.items" and "at numpy dot product" are not.
_TLDS = frozenset((
    "com", "org", "net", "edu", "gov", "mil", "int", "info", "biz", "io", "ac", "uk", "de",
    "fr", "pl", "ie", "nl", "be", "se", "no", "dk", "fi", "es", "it", "ch", "at", "au", "ca",
    "us", "nz", "cn", "jp", "kr", "in", "br", "mx", "ru", "cz", "sk", "pt", "gr", "hu", "ro",
    "tr", "za", "il", "sg", "hk", "tw", "eu", "is", "lt", "lv", "ee", "si", "hr", "rs", "ua",
    "by"
))


# Where an address may be: an at sign, "(at)", or " at " with a dot after the next word.
_AT_SIGNS = ("@", "%40", "&#", "&commat;")
_AT_BRACKETED = re.compile(r"[(\[{<]\s*at\s*[)\]}>]")
_DOMAIN_AHEAD = re.compile(r"\s+[\w-]+(?:\.[\w-]|\s*[(\[{<]\s*dot\s*[)\]}>]|\s+dot\s)")
_REACH = 128  # characters an address may reach before and after its at sign


def find_all(text: str, sub: str) -> Iterator[int]:
    """Every index at which `sub` starts in `text`."""
    i = text.find(sub)
    while i >= 0:
        yield i
        i = text.find(sub, i + 1)


def _windows(positions: Iterator[int], before: int, after: int) -> list[tuple[int, int]]:
    """The stretches around `positions`, overlapping ones merged."""
    out: list[list[int]] = []
    for p in sorted(positions):
        start, end = max(0, p - before), p + after
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(s, e) for s, e in out]


def _at_signs(folded: str) -> Iterator[int]:
    for sign in _AT_SIGNS:
        yield from find_all(folded, sign)
    if "at" in folded:
        yield from (m.start() for m in _AT_BRACKETED.finditer(folded))
        yield from (i for i in find_all(folded, " at ") if _DOMAIN_AHEAD.match(folded, i + 3))


def emails(folded: str) -> list[Span]:
    """E-mail addresses, as written or obfuscated: `x.aberg@uni.edu`, `x.aberg(at)uni.edu`,
    `x.aberg [at] uni [dot] edu`, `x dot aberg at uni dot edu`, `x.aberg%40uni.edu` (a
    `mailto:` link), `&#64;`, a full-width `＠` (folded to `@`). The key is the address
    itself, so every spelling of one address gets one placeholder. The full pattern runs only
    around an at sign."""
    found: dict[tuple[int, int], str] = {}
    for start, end in _windows(_at_signs(folded), _REACH, _REACH):
        for m in _EMAIL.finditer(folded, start, min(end, len(folded))):
            if m["at"].strip() == "at" and m["tld"] not in _TLDS:
                continue
            key = m.group()
            for pattern, sign in _CANONICAL:
                key = pattern.sub(sign, key)
            found[m.span()] = key
    return [(s, e, key) for (s, e), key in sorted(found.items())]


# --- student numbers ----------------------------------------------------------------------

# "student number 20231234", "Matrikelnummer: 1234567", "matr.-nr. 1234567", "numéro
# d'étudiant 123456" (matched on folded text: no accents, lower case).
_LABEL = (
    r"(?:(?:student|matriculation|matric|enrol?ment|enrollment|sis|learner|candidate|"
    r"registration|matrikel|matr|studenten|studierenden|student|studie)[\s_.-]*"
    r"(?:number|nummer|no\.?|id|#|nr\.?|num)"
    r"|matrikel|matricola|numero di matricola|legajo|n(?:umero|o|°|º)\.?\s*d['’]?\s*etudiant"
    r"|numer albumu|nr\.? albumu|studentnummer|studienummer|studentennummer)")
_LABELLED_ID = re.compile(
    rf"(?<![^\W_]){_LABEL}\s*[:#=.]?\s*([a-z]{{0,2}}\d[\d-]{{3,11}}\d)(?![^\W_])")
ID_LABEL_WORDS = frozenset((
    "student", "matriculation", "matric", "enrolment", "enrollment", "sis", "learner",
    "candidate", "registration", "matrikelnummer", "matrikel", "matr", "studentennummer",
    "studierendennummer", "studentnummer", "studienummer", "matricola", "legajo", "etudiant",
    "albumu"
))


def labelled_ids(folded: str, words: set[str]) -> list[Span]:
    """Numbers labelled as a student's number (`words`: the words of `folded`); the key is the
    number. The pattern runs only around the label words."""
    found: dict[tuple[int, int], str] = {}
    near = (i for w in words & ID_LABEL_WORDS for i in find_all(folded, w))
    for start, end in _windows(near, 24, 64):
        for m in _LABELLED_ID.finditer(folded, start, min(end, len(folded))):
            found[m.span(1)] = m.group(1)
    return [(s, e, key) for (s, e), key in sorted(found.items())]


def occurrences(folded: str, value: str) -> Iterator[tuple[int, int]]:
    """Where `value` (folded) stands in `folded` as a whole word."""
    n = len(value)
    for i in find_all(folded, value):
        e = i + n
        if not (i and folded[i - 1].isalnum()) and not (e < len(folded) and folded[e].isalnum()):
            yield i, e


# --- phone numbers ------------------------------------------------------------------------

PHONE_HINT = re.compile(r"(?:\+|\b)\d[\d ().-]{6,}\d")
_PHONE_GROUPS = re.compile(r"\d[\s()\-]+\d")  # digits in groups, as phone numbers are written
_ONE_DIGIT_GROUP = re.compile(r"(?<!\d)\d(?!\d)")
_ISO_DATE = re.compile(r"\d{4}-\d\d-\d\d")
# "0033 1 23 45 67 89": the international prefix most countries dial, read as "+" whatever
# `phone_region` dials (" +" keeps every position).
_DOUBLE_ZERO = re.compile(r"(?<![\w+.])00(?=[1-9])")


def phones(text: str, region: str | None) -> list[Span]:
    """Phone numbers: every number valid for the region or in international form (`+33`,
    `0033`, `011 33`), and, erring on the side of privacy, every *possible* number (the right
    length, whether or not it is allocated now, e.g. +44 7700 900123) written as a phone
    number is: with an international prefix, or in digit groups. Left alone: a bare run of
    digits (a number in code, 0.1234567), a list of single digits (1 2 3 4 5 6 7 8 9 10), an
    ISO date. The key is the number in E.164 form."""
    import phonenumbers

    dialled = _DOUBLE_ZERO.sub(" +", text)
    out = []
    for m in phonenumbers.PhoneNumberMatcher(dialled, region,
                                             leniency=phonenumbers.Leniency.POSSIBLE):
        raw, start = m.raw_string, m.start
        if raw.startswith("+") and start and dialled[start - 1] == " " and \
                text[start - 1:start + 1] == "00":
            start -= 1
        if len(_ONE_DIGIT_GROUP.findall(raw)) > 2 or _ISO_DATE.fullmatch(raw):
            continue
        if not (phonenumbers.is_valid_number(m.number) or raw.startswith("+")
                or _PHONE_GROUPS.search(raw)):
            continue
        number = phonenumbers.format_number(m.number, phonenumbers.PhoneNumberFormat.E164)
        out.append((start, m.end, number))
    return out
