"""Graded examples chosen from what the teacher decided (`grade run --exemplars K`).

The *bank* of a rubric holds the graded examples written into the rubric (`exemplars:`) and every
grade a teacher reviewed in a store (approved as the model gave it, or corrected), with the
teacher's final scores and comment. `Selector.choose()` picks the K examples most similar to the
student's work by cosine similarity, of TF-IDF vectors (scikit-learn) or, with
`exemplar_similarity` embeddings (auto: when the backend can embed), of Gemini embeddings of the
redacted texts (`embeddings.Embedder`: the bank once per run, in batches, then each student's
work as it is sent); deterministic: ties go by the bank key. Never the student's own work:
not an example by the same student, not a byte-identical submission, and not a student graded
in the same run unless `exemplars_same_run` allows it.

The examples travel in the student's part of the request (after the cached marking scheme, so a
cache keeps working), in a part of their own before the submission. Each is redacted with the
run's `Redactor` like any student text, with its own numbering (its author first), and its
placeholders are then put in its own namespace (`[EXAMPLE_2_AUTHOR]`, `redact.for_example`), so
the model never reads an example's author as the student it grades, and no name is ever
restored into them. Only the submission part is the student's: pages, the quote check and the
bank read it with `prompts.submitted_text`. Their digest is part of the grade's config hash, so
a changed bank grades again (the response ledger still answers requests that did not change),
and the store records which examples each grade saw.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from grader.grading.embeddings import Embedder, tfidf
from grader.grading.records import ExemplarUse
from grader.intake.discover import Submission
from grader.intake.redact import Redactor, for_example
from grader.online.ledger import sha256
from grader.prompting.prompts import submitted_text
from grader.prompting.request import GradeRequest
from grader.prompting.rubric import Rubric
from grader.review.final import finals
from grader.store import Store

# The example bodies are cut to this many characters (the prompt stays bounded with K examples).
MAX_EXAMPLE_CHARS = 6000
# The redaction "author" of an example whose author nobody knows (the rubric's own examples):
# nobody in the class, so no one in it becomes the example's [EXAMPLE_n_AUTHOR].
EXAMPLE_AUTHOR = "\x00example"


@dataclass(frozen=True)
class Example:
    """One banked example. `key`: rubric:<n> or submission:<id> (stable across runs)."""

    key: str
    source: str  # rubric | approved | corrected
    text: str
    scores: dict[str, float]
    comment: str = ""
    student_id: str | None = None
    submission_id: int | None = None
    body_hash: str | None = None
    name: str | None = None  # the author's name and e-mail: redacted wherever they appear
    email: str | None = None


@dataclass(frozen=True)
class Chosen:
    example: Example
    similarity: float

    def use(self) -> ExemplarUse:
        e = self.example
        return ExemplarUse(exemplar=e.key, source=e.source, similarity=self.similarity,
                           student_id=e.student_id, submission_id=e.submission_id)


def same_scheme(a: Rubric, b: Rubric) -> bool:
    """Grades under `b` compare with (and can teach) grades under `a`: the same criteria on
    the same scales."""
    return ([(c.id, c.max_points) for c in a.all_criteria]
            == [(c.id, c.max_points) for c in b.all_criteria])


def rubric_examples(rubric: Rubric) -> list[Example]:
    return [Example(key=f"rubric:{n}", source="rubric", text=ex.submission.strip(),
                    scores={k: float(v) for k, v in ex.scores.items()},
                    comment=ex.comment.strip())
            for n, ex in enumerate(rubric.exemplars, start=1)]


def reviewed_examples(store: Store, rubric: Rubric) -> list[Example]:
    """Every teacher-reviewed grade in `store` under the same criteria, newest run first, one per
    submission: `corrected` when the teacher changed a score, else `approved`."""
    out: dict[int, Example] = {}
    for run in reversed(store.runs()):
        try:
            theirs = Rubric.model_validate(run.rubric)
        except ValueError:
            continue
        if not same_scheme(rubric, theirs):
            continue
        for fs in finals(store, run.id, theirs):
            sid = fs.result.submission_id
            if sid is None or sid in out or not fs.reviewed or fs.final_total is None:
                continue
            sent = store.sent_text(sid)
            text = (submitted_text(sent.parts) or "").strip() if sent is not None else ""
            if not text:
                continue  # media only, or never sent: nothing to show as text
            out[sid] = Example(
                key=f"submission:{sid}",
                source="corrected" if any(c.overridden for c in fs.criteria) else "approved",
                text=text, scores={c.criterion.id: float(c.final) for c in fs.criteria
                                   if c.final is not None},
                comment=(fs.teacher_comment or "").strip(), student_id=fs.student_id,
                submission_id=sid)
    facts = store.submission_facts(list(out)) if out else {}
    unknown: tuple[str | None, str | None, str | None] = (None, None, None)
    return [replace(e, body_hash=facts.get(sid, unknown)[0], name=facts.get(sid, unknown)[1],
                    email=facts.get(sid, unknown)[2]) for sid, e in sorted(out.items())]


def load_bank(store: Store, rubric: Rubric) -> list[Example]:
    """The rubric's own examples, then the teacher-reviewed grades of `store`."""
    return [*rubric_examples(rubric), *reviewed_examples(store, rubric)]


class Selector:
    """The K most similar examples of a bank, for one run (built once; `choose` per student)."""

    def __init__(self, bank: Sequence[Example], k: int, *,
                 run_students: frozenset[str] = frozenset()):
        self.k = k
        self.examples = [e for e in bank if e.student_id is None
                         or e.student_id not in run_students]
        self._tfidf: tuple[Any, Any] | None = None  # fitted on first use (not with embeddings)

    def similarities(self, text: str) -> list[float]:
        """TF-IDF cosine similarity of `text` with each example."""
        if self._tfidf is None:  # no word in any example (empty vocabulary): ties only
            self._tfidf = tfidf([e.text for e in self.examples]) or (None, None)
        vectorizer, matrix = self._tfidf
        if vectorizer is None or matrix is None:
            return [0.0] * len(self.examples)
        return [float(v) for v in matrix.dot(vectorizer.transform([text]))[:, 0]]

    def choose(self, text: str, student_id: str, body_hash: str | None,
               sims: Sequence[float] | None = None) -> tuple[Chosen, ...]:
        """The K most similar examples that are not this student's own work; `sims`: the
        similarities to use instead of TF-IDF's (one per example)."""
        if not self.examples or self.k == 0:
            return ()
        own = text.strip()
        sims = self.similarities(text) if sims is None else sims
        eligible = [i for i, e in enumerate(self.examples)
                    if e.student_id != student_id and e.text != own
                    and (body_hash is None or e.body_hash != body_hash)]
        eligible.sort(key=lambda i: (-round(sims[i], 9), self.examples[i].key))
        return tuple(Chosen(self.examples[i], round(sims[i], 6)) for i in eligible[: self.k])


@dataclass(frozen=True)
class Picked:
    """One student's examples: `shown` is what `planning.render(examples=...)` takes."""

    chosen: tuple[Chosen, ...] = ()
    shown: tuple[dict[str, Any], ...] = ()

    def digest(self, req: GradeRequest) -> str | None:
        """What identifies the examples the rendered request shows (None: none): part of the
        grade's config hash, stored on the grade, compared by `selection.choose`."""
        if not self.chosen:
            return None
        return sha256("exemplars/1", req.student_parts[0].text or "")

    def uses(self) -> list[ExemplarUse]:
        return [c.use() for c in self.chosen]


NONE = Picked()


class Examples:
    """A run's examples: the selector and the run's redactor (`redact.Redactor`, or None when
    the run sends names as they are). Online and batch grading call `pick()` per student."""

    def __init__(self, selector: Selector, redactor: Redactor | None,
                 embedder: Embedder | None = None):
        self.selector, self.redactor, self.embedder = selector, redactor, embedder
        self._redacted: dict[str, Example] = {}
        self._bank: Any = None  # the shown examples' unit vectors (embeddings), once per run
        self._embedding = asyncio.Lock()

    def pick(self, text: str, student_id: str, body_hash: str | None) -> Picked:
        """By TF-IDF (local, no call): `text` is the student's text as extracted."""
        chosen = self.selector.choose(text, student_id, body_hash) if text.strip() else ()
        return self._picked(chosen)

    async def choose(self, text: str, sent: str, student_id: str,
                     body_hash: str | None) -> Picked:
        """`pick` by the run's similarity: with an embedder, the embeddings of the examples as
        shown and of `sent` (the student's text as the request carries it, redacted) are
        compared; `text` (as extracted) still decides what is the student's own work."""
        if self.embedder is None:
            return self.pick(text, student_id, body_hash)
        if not text.strip() or not self.selector.examples or self.selector.k == 0:
            return NONE
        async with self._embedding:  # the bank is embedded once, before any student
            if self._bank is None:
                self._bank = await self.embedder.vectors(
                    [self._vars(e)["text"] for e in self.selector.examples])
        own = (await self.embedder.vectors([sent[:MAX_EXAMPLE_CHARS]]))[0]
        sims = [float(v) for v in self._bank @ own]
        return self._picked(self.selector.choose(text, student_id, body_hash, sims))

    def _picked(self, chosen: tuple[Chosen, ...]) -> Picked:
        return Picked(chosen, tuple(self._vars(c.example, n)
                                    for n, c in enumerate(chosen, start=1)))

    def _vars(self, e: Example, n: int | None = None) -> dict[str, Any]:
        """The template variables of one example, shown as example `n`: cut to
        `MAX_EXAMPLE_CHARS`, redacted like any student text (once per run), its placeholders
        in example `n`'s namespace. (`n` None: the redacted text, for embedding.)"""
        if e.key not in self._redacted:
            body, comment = e.text[:MAX_EXAMPLE_CHARS], e.comment
            if self.redactor is not None:
                author = self.redactor.person(e.name, e.email) or EXAMPLE_AUTHOR
                # a bank text from a redacted run keeps its placeholders: its author is
                # already [STUDENT_1], the same as the author here
                body, comment = self.redactor.redact([body, comment], author,
                                                     keep_existing=True)[0]
            self._redacted[e.key] = replace(e, text=body, comment=comment)
        shown = self._redacted[e.key]
        if n is None:
            return {"text": shown.text}
        return {"text": for_example(shown.text, n), "comment": for_example(shown.comment, n),
                "scores": dict(shown.scores)}


def author_ids(selector: Selector) -> dict[str, tuple[str, ...]]:
    """The ids the examples' authors had where they were graded, for the run's redactor
    (`Redactor(other_ids=...)`): redacted wherever they appear, like a student's id."""
    return {f"example:{e.key}": (e.student_id,) for e in selector.examples if e.student_id}


def authors(selector: Selector, subs: Sequence[Submission]) -> list[Submission]:
    """The examples' authors the run's redactor does not know yet (their name and e-mail are
    not a student's of this class): with them, their names and e-mails are redacted wherever
    they appear. Known ones are left to the class's own entry, so a student's own name stays
    `[STUDENT_1]` in their request; in an example, its author is `[EXAMPLE_n_AUTHOR]`."""
    known = {(x.name or "").casefold() for x in subs} | {(x.email or "").casefold()
                                                         for x in subs}
    return [Submission(student_id=f"example:{e.key}", name=e.name, email=e.email)
            for e in selector.examples
            if (e.name or e.email) and not {(e.name or "").casefold(),
                                            (e.email or "").casefold()} & (known - {""})]
