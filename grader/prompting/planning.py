"""What every request of a run shares, prepared once (`plan`), and the request for one student
(`render`): the rubric, prompts and schema read and checked before any call, the generation
config's hash, what extraction left out as flags, and the class's submissions (`students`).
Online runs (`pipeline`), batch jobs (`batch`), estimates and dry runs all start here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from grader.config import models
from grader.config.generation import Generation
from grader.config.settings import (
    DEFAULT_GEMINI_MODEL,
    Settings,
    find_config,
    redacting,
    rubric_path,
)
from grader.errors import ConfigError, InputError
from grader.grading import exemplars
from grader.grading.policy import Policy, Reconfigure, more_room
from grader.grading.records import FlagRow
from grader.grading.selection import Selection
from grader.intake import injection
from grader.intake.discover import Submission, check_class_folder, discover, read_roster
from grader.intake.extract import Extracted
from grader.intake.redact import Redactor
from grader.online.budget import Expected, Spending
from grader.online.ledger import prefix_hash, sha256
from grader.outputs import check_out_dir
from grader.prompting import schema
from grader.prompting.prompts import Prompts, check_prefix_size, check_templates, load_prompts
from grader.prompting.request import GradeRequest, Part
from grader.prompting.rubric import Reference, Rubric, load_references, load_rubric
from grader.prompting.scaffold import check_edited
from grader.store import Store


@dataclass
class Plan:
    """Everything fixed for the whole run, prepared once."""

    class_dir: Path
    settings: Settings
    rubric: Rubric
    rubric_path: Path
    rubric_hash: str
    prompts: Prompts
    response_schema: dict[str, Any]
    schema_hash: str
    system: str
    static_prefix: str
    validator: type[BaseModel]
    references: tuple[Reference, ...] = ()

    @property
    def policy(self) -> Policy:
        s = self.settings
        return Policy(rubric=self.rubric, validator=self.validator,
                      reask_prompt=self.prompts.reask, max_spread=s.max_spread,
                      quote_similarity=s.quote_similarity)

    def prefix_hash(self, model: str) -> str:
        return prefix_hash(model, self.system, self.static_prefix, self.response_schema,
                           tuple(r.sha256 for r in self.references))

    @property
    def assignment_files(self) -> tuple[Path, ...]:
        """The rubric's reference files: part of the assignment, never of a submission."""
        return tuple(self.rubric_path.parent / r.name for r in self.references)

    def reference_parts(self) -> tuple[Part, ...]:
        """The reference files as request parts (bytes; a URI is added once uploaded)."""
        return tuple(Part(mime_type=r.mime_type, data=r.data) for r in self.references)

    def fingerprint(self, model: str) -> str:
        """What makes a grade what it is: the model and every byte of the prompt around the
        student's work (rendered, so a YAML comment changes nothing), and the schema. The
        generation config is not part of it (see `config_hash`)."""
        shape = self.prompts.student_parts("\x00TEXT\x00", (), ("a", "b"))
        return sha256("fingerprint/1", self.prefix_hash(model), shape[0].text or "",
                      self.prompts.reask("\x00ERROR\x00"))


# Input tokens the repeated prefix may take: Gemini 3.x models take about 1M tokens of input;
# a rubric near that leaves no room for the student's work.
MAX_PREFIX_TOKENS = 500_000


def plan(class_dir: Path, settings: Settings) -> Plan:
    """Prepare the static part of every request: rubric, prompts, schema. Everything that could
    fail for the whole class fails here, before any model call: the rubric, every template
    (rendered once with sample data), the prefix size, the output folder."""
    if not class_dir.is_dir():
        raise InputError("class folder not found", path=class_dir,
                         fix="pass the folder that holds the students' submissions")
    if settings.out is not None:
        check_out_dir(class_dir, settings.out)
    path = rubric_path(class_dir, settings)
    rubric, rhash = load_rubric(path)
    check_edited(rubric, path)
    prompts = load_prompts(settings.prompts)
    check_templates(prompts, rubric)
    # with --exemplars the rubric's own examples join the bank (chosen per student) instead
    shown = rubric.model_copy(update={"exemplars": ()}) if settings.exemplars else rubric
    system, prefix = prompts.system(), prompts.static_prefix(shown)
    check_prefix_size(system, prefix, max_tokens=MAX_PREFIX_TOKENS)
    rschema = schema.json_schema(rubric)
    shash = hashlib.sha256(json.dumps(rschema, sort_keys=True).encode()).hexdigest()[:16]
    return Plan(
        class_dir=class_dir, settings=settings, rubric=rubric, rubric_path=path,
        rubric_hash=rhash, prompts=prompts, response_schema=rschema, schema_hash=shash,
        system=system, static_prefix=prefix, validator=schema.validation_model(rubric),
        references=load_references(rubric, path),
    )


def render(p: Plan, ex: Extracted, gen: Generation, key: str = "",
           references: tuple[Part, ...] = (),
           examples: Sequence[Mapping[str, Any]] = ()) -> GradeRequest:
    """The request for one student; `examples` (`exemplars.Picked.shown`) lead its part."""
    return _request(p, gen, references, key=key,
                    student_parts=p.prompts.student_parts(ex.text, ex.parts, ex.files, examples))


def prefix_request(p: Plan, gen: Generation, references: tuple[Part, ...] = ()) -> GradeRequest:
    """What every request of the run shares, with no student part: what a context cache and a
    count of the marking scheme are made from, and what the run's generation config is read
    from."""
    return _request(p, gen, references, student_parts=())


def _request(p: Plan, gen: Generation, references: tuple[Part, ...], *,
             student_parts: tuple[Part, ...], key: str = "") -> GradeRequest:
    return GradeRequest(
        key=key, model=gen.model, system=p.system, static_prefix=p.static_prefix,
        reference_parts=references, student_parts=student_parts,
        response_schema=p.response_schema, max_output_tokens=gen.max_output_tokens,
        thinking_level=gen.thinking_level, temperature=gen.temperature, top_p=gen.top_p,
        seed=gen.seed,
    )


def default_model(backend: str, settings: Settings) -> str:
    """The model a backend will be asked for when none is given (before it is created)."""
    if settings.model:
        return settings.model
    return DEFAULT_GEMINI_MODEL if backend in ("gemini", "vertex", "enterprise") else "local"


def thinking_retry(gen: Generation) -> Reconfigure | None:
    """The one retry after a thinking cut-off, from the model table's limits."""
    if gen.row is None and gen.surface is None:
        return None  # a local model does not think
    limit = gen.row.max_output_tokens if gen.row is not None else None
    lower = gen.row.lower_level(gen.thinking_level) if gen.row is not None else None
    return more_room(gen.max_output_tokens, gen.thinking_level, limit, lower)


def spending_for(settings: Settings, gen: Generation, tbl: models.ModelTable,
                 criteria: int | None = None) -> Spending | None:
    """Prices, --budget and the spend-rate limit of a run on a paid API, or on a school's own
    server with a price set in grader.toml; None for the local model and an unpriced server.
    `criteria`: the rubric's, for what a call is expected to write (`budget.Expected`)."""
    if gen.surface is None and not gen.server:
        return None  # a local model costs nothing: there is nothing to price or cap
    row = f'[grader.models."{gen.model}"]'
    if gen.server:  # priced by grader.toml alone; Gemini's spend-rate limit is not its own
        pricing, per_10min = models.Pricing.of_server(tbl, settings.models, gen.model), None
        if not pricing.known:
            if settings.budget is None:
                return None  # local, unpriced: nothing to count or cap
            raise ConfigError(
                f"a budget of ${settings.budget:g} needs a price for {gen.model}, and none is "
                "set: calls to the school's own model server are not counted (local, "
                "unpriced), so no budget could stop them",
                fix=f"leave --budget unset (and budget out of grader.toml), or set what a "
                f"token costs you in a price row under {row} in grader.toml (docs/backends.md)")
    else:
        pricing = models.Pricing.of(tbl, gen.model, settings.tier)
        per_10min = settings.spend_per_10min
        if not pricing.known and (settings.budget is not None or per_10min):
            raise ConfigError(
                f"--budget and spend_per_10min need a price for {gen.model}, and the model "
                "table has none", fix=f"add a price row under {row} in grader.toml "
                "(docs/configuration.md), or leave --budget unset")
    return Spending(pricing, tbl.media, budget=settings.budget, per_10min=per_10min,
                    expected=None if criteria is None else Expected.of(tbl.estimate, criteria))


def config_hash(req: GradeRequest, samples: int = 1, exemplars: str | None = None) -> str:
    """The generation config of a grade; a grade combining several samples is another one, and
    so is a grade shown other graded examples (`exemplars`: their digest)."""
    h = sha256("config/1", json.dumps(req.generation_config(), sort_keys=True))
    if exemplars is not None:
        h = sha256(h, f"exemplars={exemplars}")
    return h if samples == 1 else sha256(h, f"samples={samples}")


def sampled(req: GradeRequest, k: int) -> GradeRequest:
    """Sample k of a student's request. The ledger key is salted with k, so each sample is its
    own paid call; the request itself is the same (the model's own sampling makes the answers
    differ), except that a seed the teacher set moves by k."""
    if k == 0 or req.seed is None:
        return req
    return req.model_copy(update={"seed": req.seed + k})


def body_hash(ex: Extracted) -> str:
    """What the model sees of the submission: two students with the same body hash handed in
    byte-identical work (names of single files do not count)."""
    return sha256("body/1", ex.text, *(p.mime_type or "" for p in ex.parts),
                  *(p.data or b"" for p in ex.parts))


def input_flags(ex: Extracted) -> tuple[FlagRow, ...]:
    """What extraction left out: shown on every output, never a silent note."""
    flags = []
    if ex.skipped:
        flags.append(FlagRow("partial_submission", "graded without "
                             + "; ".join(ex.skipped) + "; check those files by hand"))
    if ex.truncated:
        flags.append(FlagRow("truncated", "the submission's text was cut to fit the prompt; "
                             "the end was not graded"))
    if injection.suspicious(ex.findings):
        flags.insert(0, FlagRow(injection.FLAG, injection.evidence(ex.findings)))
    return tuple(flags)


def students(p: Plan) -> list[Submission]:
    """discover: the class's submissions (paths only), honouring --limit; the rubric's
    reference files are nobody's submission. A folder that is plainly not the class is refused
    first (`check_class_folder`)."""
    class_dir, settings = p.class_dir, p.settings
    check_class_folder(class_dir)
    subs = list(discover(class_dir, roster_path(p), assignment=p.assignment_files))
    if not subs:
        raise InputError("no submissions found in the class folder", path=class_dir,
                         fix="put one file or folder per student in it (see docs/intake.md)")
    return subs[: settings.limit] if settings.limit else subs


def roster_path(p: Plan) -> Path | None:
    """The roster: `--roster` / `roster`, else a roster.csv in the class folder, beside the
    rubric, or beside the grader.toml in effect (where `grade init` puts the assignment's
    files)."""
    if p.settings.roster is not None:
        return p.settings.roster
    return find_roster(p.class_dir, p.rubric_path)


def find_roster(class_dir: Path, rubric_path: Path | None) -> Path | None:
    """A roster.csv in the class folder, beside the rubric, or beside the grader.toml in
    effect, as a run looks for one (`grade export` finds it where the run did)."""
    config = find_config(class_dir) if class_dir.is_dir() else None
    for folder in (class_dir, rubric_path.parent if rubric_path is not None else None,
                   config.parent if config else None):
        if folder is not None and (folder / "roster.csv").is_file():
            return folder / "roster.csv"
    return None


def roster_notices(p: Plan, subs: Sequence[Submission], redacting: bool) -> list[str]:
    """What the teacher should know about the roster before a run: none found while names are
    to be redacted, or students it does not list (they get no name)."""
    where = f"put roster.csv (id,name,email) beside {p.rubric_path.name} or in the class " \
            "folder, or pass --roster FILE"
    if all(s.in_roster is None for s in subs):
        if redacting and not any(s.name for s in subs):
            return ["no roster: names the students wrote in their work cannot be replaced by "
                    "placeholders before it is sent (e-mails, phone numbers and labelled "
                    f"student numbers still are); {where}"]
        return []
    out = []
    found = roster_path(p)
    if p.settings.roster is None and found is not None and found.parent != p.class_dir:
        beside = (p.rubric_path.name if found.parent == p.rubric_path.parent
                  else "grader.toml")
        out.append(f"roster: {found} (found beside {beside}; --roster FILE names another)")
    missing = sorted(s.student_id for s in subs if s.in_roster is False)
    if missing:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8
                                          else "")
        out.append(f"{len(missing)} submission(s) not in the roster (no name, and no name of "
                   f"theirs to redact): {shown}; add them to {found}")
    return out


def selection_of(settings: Settings) -> Selection:
    return Selection(
        only=frozenset(settings.only) if settings.only is not None else None,
        regrade=settings.regrade,
        retry_flagged=(frozenset(settings.retry_flagged)
                       if settings.retry_flagged is not None else None))


def example_selector(p: Plan, store: Store, subs: Sequence[Submission]
                     ) -> exemplars.Selector | None:
    """The run's graded-example selector (`--exemplars K`), from the bank of `exemplar_db` (else
    the run's store); None when exemplars are off. Reviewed grades of the students this run
    grades are left out unless `exemplars_same_run` allows them."""
    s = p.settings
    if not s.exemplars:
        return None
    other = s.exemplar_db
    own = other is None or other.resolve() == Path(store.path).resolve()
    if other is None or own:
        bank = exemplars.load_bank(store, p.rubric)
    else:
        if not other.is_file():
            raise InputError("the example bank's store was not found", path=other,
                             fix="pass --exemplar-db with the grader.sqlite of a reviewed class")
        with Store(other, create=False) as theirs:
            bank = exemplars.load_bank(theirs, p.rubric)
    # the students of this run are in the run's own store; another store's ids are other
    # submissions (an id there that is a student's here is still never shown to that student)
    same_run = (frozenset(x.student_id for x in subs) if own and not s.exemplars_same_run
                else frozenset())
    return exemplars.Selector(bank, s.exemplars, run_students=same_run)


def redactor_for(settings: Settings, backend: str, subs: Sequence[Submission],
                 selector: exemplars.Selector | None, roster: Path | None = None
                 ) -> Redactor | None:
    """The run's redactor (None when a run on `backend` sends work as it is): it knows the
    class's students, their other ids in `roster` (SIS, Canvas and Moodle ids, user names:
    redacted wherever they appear) and the authors of the graded examples it may show."""
    if not redacting(settings, backend):
        return None
    other_ids: dict[str, tuple[str, ...]] = {}
    if roster is not None:
        other_ids = {sid: tuple(v for kind, v in e.ids.items() if kind != "section")
                     for sid, e in read_roster(roster).items() if e.ids}
    if selector is None:
        return Redactor(subs, phone_region=settings.phone_region, other_ids=other_ids)
    return Redactor([*subs, *exemplars.authors(selector, subs)],
                    phone_region=settings.phone_region,
                    other_ids={**other_ids, **exemplars.author_ids(selector)})
