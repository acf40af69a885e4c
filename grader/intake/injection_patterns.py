"""The phrase patterns behind `grader.intake.injection`: text in a submission that speaks to
the grader.

The patterns are data, in `grader/data/injection_patterns.toml` (its header explains rules,
anchors, kinds, English versus other-language rules, and how to add one); this module loads,
checks and compiles them once, at import. Each `Rule` has `anchors`, lower-case words that
start a match, and a regex that is tried only *at* each place an anchor occurs
(`regex.match(text, i)`), so every alternative of a regex must begin with one of its anchors.
English rules run on a "skeleton" in which look-alike letters are mapped to ASCII; the rules
for other languages run on the lower-cased text itself (their letters are the look-alikes).

Fragments shared by several rules are defined once in the file's `[fragments]` and written
`<NAME>` (or `<NAME:3>` for one that takes a count, such as `<GAP:3>`), a syntax no regex
uses: an unknown, unused or miswritten placeholder, an unknown key or kind, a duplicate name
or a pattern that does not compile stops the import with an error naming the file and rule.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from grader.errors import ConfigError, format_validation_error

DATA_FILE = "grader/data/injection_patterns.toml"
_FIX = "correct the file (its header says how rules and fragments are written)"


@dataclass(frozen=True)
class Rule:
    name: str
    kind: str
    anchors: tuple[str, ...]
    regex: re.Pattern[str]
    english: bool = True  # runs on the ASCII skeleton; False: on the lower-cased text


_Pieces = str | list[str]  # a string, or pieces joined as written (a pattern over several lines)
_STRICT = ConfigDict(extra="forbid", frozen=True)


class _RuleEntry(BaseModel):
    model_config = _STRICT

    name: str = Field(pattern=r"^[a-z]+(?:-[a-z]+)*$")
    kind: Literal["override", "score", "role", "fake_rubric", "claim"]
    anchors: list[str] = Field(min_length=1)
    regex: _Pieces


class _Phrase(BaseModel):
    model_config = _STRICT

    regex: _Pieces
    ignore_case: bool = False


class _Phrases(BaseModel):
    model_config = _STRICT

    discussion: _Phrase
    self_reference: _Phrase
    model_reason: _Phrase


class _File(BaseModel):
    model_config = _STRICT

    fragments: dict[str, _Pieces]
    english: list[dict[str, Any]]  # checked one by one, so that an error names the rule
    multilingual: list[dict[str, Any]]
    phrases: _Phrases


# `<NAME>` or `<NAME:3>`; never a named group `(?P<NAME>...)`.
_PLACEHOLDER = re.compile(r"(?<!\?P)<([A-Z][A-Z0-9_]*)(?::(\d+))?>")
_FRAGMENT_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
_ARG = "<ARG>"


class _Bad(Exception):
    """A problem in the data file, raised as a `ConfigError` naming where it is."""


def _joined(pieces: _Pieces) -> str:
    return pieces if isinstance(pieces, str) else "".join(pieces)


class _Fragments:
    """The `[fragments]` table: expands placeholders and remembers which were used."""

    def __init__(self, raw: dict[str, _Pieces]):
        for name in raw:
            if not _FRAGMENT_NAME.fullmatch(name) or name == "ARG":
                raise _Bad(f"fragment {name!r}: a name is capital letters, digits and _ "
                           "(ARG is reserved)")
        self.text = {name: _joined(p) for name, p in raw.items()}
        self.used: set[str] = set()

    def expand(self, text: str, within: tuple[str, ...] = ()) -> str:
        def one(m: re.Match[str]) -> str:
            name, count = m.group(1), m.group(2)
            if name not in self.text:
                raise _Bad(f"unknown placeholder {m.group()} (not in [fragments])")
            if name in within:
                raise _Bad(f"fragment {name} refers to itself through {' -> '.join(within)}")
            body = self.text[name]
            if (_ARG in body) != (count is not None):
                raise _Bad(f"{m.group()}: write <{name}:N> (a count)" if _ARG in body
                           else f"{m.group()}: fragment {name} takes no count, write <{name}>")
            self.used.add(name)
            return self.expand(body.replace(_ARG, count or ""), (*within, name))

        return _PLACEHOLDER.sub(one, text)

    def words(self, anchors: list[str]) -> tuple[str, ...]:
        """The anchors, with an entry `<NAME>` replaced by the fragment's `|`-separated words."""
        out: list[str] = []
        for a in anchors:
            if _PLACEHOLDER.fullmatch(a):
                out += self.expand(a).split("|")
            elif _PLACEHOLDER.search(a):
                raise _Bad(f"anchor {a!r}: a placeholder stands alone in its entry")
            else:
                out.append(a)
        for a in out:
            if not a or a != a.lower():
                raise _Bad(f"anchor {a!r}: anchors are lower-case and not empty (they are "
                           "looked up in lower-cased text)")
        return tuple(out)


def _compiled(fragments: _Fragments, pieces: _Pieces, flags: int) -> re.Pattern[str]:
    source = fragments.expand(_joined(pieces))
    try:
        return re.compile(source, flags)
    except re.error as e:
        raise _Bad(f"the regex does not compile ({e})") from None


def _rules(fragments: _Fragments, raw: list[dict[str, Any]], *, english: bool,
           seen: set[str]) -> tuple[Rule, ...]:
    out = []
    for n, item in enumerate(raw, 1):
        where = f"{'english' if english else 'multilingual'} rule {item.get('name', f'#{n}')!r}"
        try:
            entry = _RuleEntry.model_validate(item)
        except ValidationError as e:
            raise _Bad(f"{where}:\n{format_validation_error(e)}") from None
        if entry.name in seen:
            raise _Bad(f"{where}: a second rule of that name")
        seen.add(entry.name)
        try:
            out.append(Rule(entry.name, entry.kind, fragments.words(entry.anchors),
                            _compiled(fragments, entry.regex, re.MULTILINE), english))
        except _Bad as e:
            raise _Bad(f"{where}: {e}") from None
    return tuple(out)


@dataclass(frozen=True)
class Patterns:
    english: tuple[Rule, ...]
    multilingual: tuple[Rule, ...]
    discussion: re.Pattern[str]
    self_reference: re.Pattern[str]
    model_reason: re.Pattern[str]


def load(text: str, path: str = DATA_FILE) -> Patterns:
    """The patterns in `text` (the contents of `path`), checked and compiled."""
    try:
        try:
            data = _File.model_validate(tomllib.loads(text))
        except tomllib.TOMLDecodeError as e:
            raise _Bad(f"not valid TOML ({e})") from None
        except ValidationError as e:
            raise _Bad(format_validation_error(e)) from None
        fragments = _Fragments(data.fragments)
        seen: set[str] = set()
        english = _rules(fragments, data.english, english=True, seen=seen)
        multilingual = _rules(fragments, data.multilingual, english=False, seen=seen)

        phrases = {}
        for name, p in data.phrases:
            try:
                phrases[name] = _compiled(fragments, p.regex,
                                          re.IGNORECASE if p.ignore_case else 0)
            except _Bad as e:
                raise _Bad(f"[phrases.{name}]: {e}") from None
        unused = sorted(data.fragments.keys() - fragments.used)
        if unused:
            raise _Bad(f"fragments never used: {', '.join(unused)} (remove them)")
        return Patterns(english, multilingual, **phrases)
    except _Bad as e:
        raise ConfigError(str(e), path=path, fix=_FIX) from None


_PATTERNS = load(resources.files("grader.data").joinpath("injection_patterns.toml")
                 .read_text(encoding="utf-8"))
ENGLISH = _PATTERNS.english
MULTILINGUAL = _PATTERNS.multilingual
# Words around a quoted phrase that make it a *mention* (an essay about prompt injection).
DISCUSSION = _PATTERNS.discussion
# A quoted phrase that points at this very submission is a use, even inside a discussion.
SELF_REFERENCE = _PATTERNS.self_reference
# A model's review reason that reports an attempt to steer the grade.
MODEL_REASON = _PATTERNS.model_reason
