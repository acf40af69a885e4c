"""What every student of one run shares, worked out once: the run context.

Online grading (`pipeline`, `runner`), batch submit (`batch`), `grade estimate` and
`grade run --dry-run` build one `RunContext` with `run_context()` and hand it to
`prepare.prepare` for each student; its policy judges every reply (`judge.judge`). Nothing in it
is derived again per student, and nothing per student is put in it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from grader import __version__
from grader.backends import Backend, media_types
from grader.backends.base import SupportsEmbeddings
from grader.config import models
from grader.config.generation import Generation
from grader.config.settings import db_path
from grader.grading import exemplars
from grader.grading.embeddings import Embedder, similarity_of
from grader.grading.policy import Policy
from grader.grading.records import Run, RunInfo
from grader.grading.screen import Screener
from grader.grading.selection import Selection, check_selection
from grader.intake.discover import Submission
from grader.intake.isolation import Extractor
from grader.intake.redact import Redactor
from grader.prompting.planning import (
    Plan,
    config_hash,
    example_selector,
    prefix_request,
    redactor_for,
    roster_notices,
    roster_path,
    selection_of,
    spending_for,
    thinking_retry,
)
from grader.prompting.request import Part
from grader.store import Store


@dataclass(frozen=True)
class RunContext:
    """One run's shared facts.

    `reads`: the media types the backend reads (a capability of the backend), None where no
    backend is at hand (estimates and dry runs: media are then counted, not judged).
    `references`: the rubric's reference files as the requests carry them (with the URIs of
    their uploads once an online run has uploaded them). `run_id` is 0 until the run exists
    (never, for estimates and dry runs); `epoch` is the run's regrade epoch."""

    p: Plan
    gen: Generation
    backend: str
    selection: Selection
    extractor: Extractor
    policy: Policy
    prefix: str
    fingerprint: str
    config: str
    redactor: Redactor | None = None
    examples: exemplars.Examples | None = None
    reads: frozenset[str] | None = None
    references: tuple[Part, ...] = ()
    run_id: int = 0
    epoch: int = 0
    notices: tuple[str, ...] = ()  # what the teacher should know before the run (the roster)
    screen: Screener | None = None  # the model-based injection check (`injection_check`)

    @classmethod
    def build(cls, p: Plan, gen: Generation, backend: str, *, extractor: Extractor,
              selection: Selection | None = None, redactor: Redactor | None = None,
              examples: exemplars.Examples | None = None,
              reads: frozenset[str] | None = None,
              notices: tuple[str, ...] = (), screen: Screener | None = None) -> RunContext:
        model = gen.model
        return cls(
            p=p, gen=gen, backend=backend,
            selection=selection if selection is not None else selection_of(p.settings),
            extractor=extractor, policy=replace(p.policy, on_thinking_cut=thinking_retry(gen)),
            prefix=p.prefix_hash(model), fingerprint=p.fingerprint(model),
            config=config_hash(prefix_request(p, gen), p.settings.samples),
            redactor=redactor, examples=examples, reads=reads,
            references=p.reference_parts(), notices=notices, screen=screen)

    def with_run(self, run_id: int, epoch: int = 0, **changes: Any) -> RunContext:
        """This context inside a run that now exists (and, e.g., its uploaded references)."""
        if self.screen is not None:  # its checks are paid by this run from now on
            self.screen.book(run_id)
        return replace(self, run_id=run_id, epoch=epoch, **changes)

    @property
    def samples(self) -> int:
        return self.p.settings.samples

    @property
    def max_request_bytes(self) -> int:
        return self.extractor.limits.max_request_bytes

    @property
    def class_key(self) -> str:
        """The class as the store knows it."""
        return str(self.p.class_dir.resolve())


def run_context(p: Plan, gen: Generation, name: str, subs: Sequence[Submission],
                extractor: Extractor, *, store: Store | None,
                backend: Backend | None = None) -> RunContext:
    """The run's context: its selection, the redactor (knowing the class and the examples'
    authors) and the graded examples, from the bank of `store` (None: no store yet, the
    rubric's own), compared as `exemplar_similarity` resolves for `backend` (None: by TF-IDF,
    no call), whose media capability it records; the model-based injection check when
    `injection_check` is on and there is a backend and a store. A setting the backend cannot
    honour fails here, before any student is prepared."""
    s = p.settings
    selection = selection_of(s)
    check_selection(selection, {x.student_id for x in subs},
                    store.flagged_reasons(str(p.class_dir.resolve())) if store is not None
                    else None)
    if store is not None:
        selector = example_selector(p, store, subs)
    elif s.exemplars:
        selector = exemplars.Selector(exemplars.rubric_examples(p.rubric), s.exemplars)
    else:
        selector = None
    redactor = redactor_for(s, name, subs, selector, roster_path(p))
    examples = None
    if selector is not None:
        embedder = None
        if backend is not None:
            how = similarity_of(s.exemplar_similarity, backend, name)
            if how == "embeddings" and isinstance(backend, SupportsEmbeddings):
                embedder = Embedder(backend, models.table(s.models).embedding, models.today())
        examples = exemplars.Examples(selector, redactor, embedder)
    screen = None
    if s.injection_check and backend is not None and store is not None:
        tbl = models.table(s.models)
        screen = Screener(backend, gen, store, str(p.class_dir.resolve()),
                          thinking=tbl.estimate.thinking_tokens)
        screen.use(spending_for(s, gen, tbl, len(p.rubric.all_criteria)))
    return RunContext.build(p, gen, name, extractor=extractor, selection=selection,
                            redactor=redactor, examples=examples,
                            reads=media_types(backend) if backend is not None else None,
                            notices=tuple(roster_notices(p, subs, redactor is not None)),
                            screen=screen)


def offline_context(p: Plan, gen: Generation, name: str, subs: Sequence[Submission],
                    extractor: Extractor) -> RunContext:
    """The context of a run on `name`, for work that calls no model and writes nothing
    (estimates, dry runs): the example bank read from the class's store when there is one (the
    store is not changed), else the rubric's own examples; examples compared by TF-IDF."""
    db = db_path(p.class_dir, p.settings)
    if p.settings.exemplars and db.exists():
        with Store(db, create=False) as store:
            return run_context(p, gen, name, subs, extractor, store=store)
    return run_context(p, gen, name, subs, extractor, store=None)


def run_info(ctx: RunContext, *, mode: str, epoch: int | None = None) -> RunInfo:
    """The run as the store records it (online and batch alike)."""
    p = ctx.p
    return RunInfo(
        class_dir=ctx.class_key, backend=ctx.backend, model=ctx.gen.model,
        rubric_path=str(p.rubric_path), rubric_hash=p.rubric_hash, prompt_hash=p.prompts.hash,
        schema_hash=p.schema_hash, fingerprint=ctx.fingerprint, config_hash=ctx.config,
        sdk_version=sdk_version(), grader_version=__version__,
        settings=p.settings.model_dump(mode="json", exclude={"api_key", "openai_api_key"}),
        rubric=p.rubric.model_dump(mode="json"), mode=mode,
        selection=ctx.selection.as_dict(), epoch=epoch)


def why_graded_again(before: Run, ctx: RunContext) -> list[str]:
    """Why a run's grades differ from the class's previous run's (empty when they do not):
    what changed in what makes a grade (its fingerprint)."""
    if before.fingerprint == ctx.fingerprint:
        return []
    p, why = ctx.p, []
    if before.model != ctx.gen.model:
        why.append(f"the model changed ({before.model} -> {ctx.gen.model})")
    if before.rubric_hash != p.rubric_hash:
        why.append(f"the rubric changed ({p.rubric_path})")
    if before.prompt_hash != p.prompts.hash:
        why.append("the prompt templates changed")
    return why or ["the way grader builds a prompt changed (another grader version)"]


def sdk_version() -> str | None:
    try:
        from google.genai import version

        return str(version.__version__)
    except Exception:  # pragma: no cover - the SDK is a dependency
        return None
