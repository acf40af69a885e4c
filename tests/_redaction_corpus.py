"""The redaction corpus (tests/fixtures/redaction_corpus.toml) and its two measures: the share
of name, e-mail, id and phone variants redacted and the share of ordinary words wrongly blanked.
Read by tests/test_redaction_corpus.py and bench/bench_redaction.py."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from grader.intake.discover import Submission

CORPUS = Path(__file__).resolve().parent / "fixtures" / "redaction_corpus.toml"


@dataclass(frozen=True)
class Variant:
    kind: str
    text: str
    leak: tuple[str, ...]
    known_miss: str | None = None


@dataclass(frozen=True)
class Ordinary:
    text: str
    keep: tuple[str, ...]


@dataclass(frozen=True)
class Corpus:
    roster: tuple[dict[str, str], ...]
    variants: tuple[Variant, ...]
    ordinary: tuple[Ordinary, ...]

    def students(self) -> list[Submission]:
        return [Submission(student_id=r["id"], name=r["name"], email=r["email"])
                for r in self.roster]

    def other_ids(self) -> dict[str, tuple[str, ...]]:
        """The roster's other ids, as a run's redactor gets them (`redactor_for`)."""
        return {r["id"]: (r["sis_user_id"],) for r in self.roster}

    def roster_csv(self) -> str:
        return "id,name,email,sis_user_id\n" + "".join(
            f"{r['id']},{r['name']},{r['email']},{r['sis_user_id']}\n" for r in self.roster)


def load(path: Path = CORPUS) -> Corpus:
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    return Corpus(tuple(raw["roster"]),
                  tuple(Variant(v["kind"], v["text"], tuple(v["leak"]), v.get("known_miss"))
                        for v in raw["variant"]),
                  tuple(Ordinary(o["text"], tuple(o["keep"])) for o in raw["ordinary"]))


def count(word: str, text: str) -> int:
    """How often `word` stands in `text` as a whole word (case-sensitive)."""
    return len(re.findall(rf"(?<![^\W_]){re.escape(word)}(?![^\W_])", text))


def leaks(variant: Variant, sent: str) -> list[str]:
    """What of the variant's personal data is still in the text as sent (as whole words)."""
    return [p for p in variant.leak if count(p, sent)]


def blanked(ordinary: Ordinary, sent: str) -> dict[str, int]:
    """The kept words the text as sent has fewer of than the text as written."""
    lost = {w: count(w, ordinary.text) - count(w, sent) for w in ordinary.keep}
    return {w: n for w, n in lost.items() if n > 0}


@dataclass
class Score:
    redacted: dict[str, list[bool]] = field(default_factory=dict)  # kind -> per variant
    misses: list[tuple[Variant, str, list[str]]] = field(default_factory=list)
    words: int = 0
    blanked: int = 0
    wrong: list[tuple[Ordinary, str, dict[str, int]]] = field(default_factory=list)

    @property
    def variants(self) -> tuple[int, int]:
        flat = [ok for oks in self.redacted.values() for ok in oks]
        return sum(flat), len(flat)


def score(corpus: Corpus, redact: Callable[[str], str]) -> Score:
    """Redact every text of the corpus on its own with `redact` and count both sides."""
    out = Score()
    for v in corpus.variants:
        sent = redact(v.text)
        leaked = leaks(v, sent)
        out.redacted.setdefault(v.kind, []).append(not leaked)
        if leaked:
            out.misses.append((v, sent, leaked))
    for o in corpus.ordinary:
        sent = redact(o.text)
        lost = blanked(o, sent)
        out.words += sum(count(w, o.text) for w in o.keep)
        out.blanked += sum(lost.values())
        if lost:
            out.wrong.append((o, sent, lost))
    return out
