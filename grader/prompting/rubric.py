"""The marking scheme: a YAML file validated by Pydantic.

A rubric is either single-question (top-level `criteria`) or multi-question (`questions`, each
with its own criteria). Criterion ids are unique across the whole rubric, so a grade is always
keyed by criterion id alone.

A rubric may come from anywhere, so its YAML is read strictly: a key repeated in one mapping is an
error (YAML would silently keep the last one), aliases (`*name`) are refused (they can expand a
small file into a huge prompt), and every number is finite and bounded: points per criterion
0..`MAX_POINTS`, grade-band minimums 0..100, exemplar scores within their criterion's range;
a YAML boolean (true, yes, on) is never taken for a number.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from grader.errors import RubricError, format_validation_error

MAX_POINTS = 10_000  # per criterion: far above any real scheme, far below float trouble
MAX_RUBRIC_BYTES = 1024 * 1024
MAX_REFERENCE_FILES = 20
MAX_REFERENCE_BYTES = 50 * 1024 * 1024  # each: the inline PDF limit of the Gemini API
# What a reference file may be (what Gemini reads as a document or image), told by its first bytes.
REFERENCE_KINDS = {".pdf": "application/pdf", ".png": "image/png", ".jpg": "image/jpeg",
                   ".jpeg": "image/jpeg", ".webp": "image/webp"}



def _not_a_boolean(value: Any) -> Any:
    """YAML reads true/false (and yes/no, on/off) as booleans, and pydantic would take them as
    1 and 0: `max_points: true` would silently be a 1-point criterion. Every number of a
    rubric refuses them, so a slip in the file is said, not graded."""
    if isinstance(value, bool):
        raise PydanticCustomError(
            "number_not_boolean", "{value} is a yes/no value in YAML, not a number: write a "
            "number (e.g. 1) here", {"value": str(value).lower()})
    return value


Number = BeforeValidator(_not_a_boolean)
Identifier = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,47}$")]
Points = Annotated[float, Field(ge=0, le=MAX_POINTS, allow_inf_nan=False), Number]
Percent = Annotated[float, Field(ge=0, le=100, allow_inf_nan=False), Number]
BandName = Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[^\x00-\x1f\x7f]+$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Level(_Strict):
    points: Points
    descriptor: str


class ChecklistItem(_Strict):
    """One yes/no item of a checklist criterion, worth `points` when the submission meets it."""

    id: Identifier
    text: str = Field(min_length=1)
    points: Annotated[float, Number] = Field(gt=0, le=MAX_POINTS, allow_inf_nan=False)


MAX_CHECKLIST_ITEMS = 50


class Criterion(_Strict):
    id: Identifier
    title: str
    max_points: Annotated[float, Number] = Field(gt=0, le=MAX_POINTS, allow_inf_nan=False)
    description: str = ""
    levels: tuple[Level, ...] = ()
    # A checklist criterion: the model answers each item yes/no with a quote, and the score is
    # the sum of the points of the items met (computed by code). max_points may be left out: it
    # is the sum of the items' points.
    checklist: tuple[ChecklistItem, ...] = Field(default=(), max_length=MAX_CHECKLIST_ITEMS)

    @model_validator(mode="before")
    @classmethod
    def _checklist_max(cls, data: Any) -> Any:
        if isinstance(data, dict) and "max_points" not in data and data.get("checklist"):
            items = data["checklist"]
            # a boolean counts here (it is an int) so that only the item is named for it:
            # the item itself refuses it, and the whole rubric with it
            if isinstance(items, list | tuple) and all(
                    isinstance(i, dict) and isinstance(i.get("points"), int | float)
                    for i in items):
                return {**data, "max_points": sum(i["points"] for i in items)}
        return data

    @model_validator(mode="after")
    def _levels_within_max(self) -> Criterion:
        if self.checklist:
            if self.levels:
                raise ValueError("a criterion has either levels or a checklist, not both")
            ids = [i.id for i in self.checklist]
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            if dupes:
                raise ValueError(f"checklist item ids must be unique; repeated: {dupes}")
            total = sum(i.points for i in self.checklist)
            if not math.isclose(total, self.max_points):
                raise ValueError(f"max_points {self.max_points:g} is not the sum of the "
                                 f"checklist's points ({total:g}); leave max_points out or "
                                 "make them agree")
        for lv in self.levels:
            if lv.points > self.max_points:
                raise ValueError(
                    f"level points {lv.points:g} exceed max_points {self.max_points:g}"
                )
        if self.levels and len({lv.points for lv in self.levels}) != len(self.levels):
            raise ValueError("two levels have the same points; give each level distinct points")
        return self

    @property
    def allowed_points(self) -> tuple[float, ...] | None:
        """The only scores a level-based criterion may take, ascending; None when continuous."""
        if not self.levels:
            return None
        return tuple(sorted(lv.points for lv in self.levels))


class Exemplar(_Strict):
    """A graded example shown to the model (few-shot), never a real student of this run."""

    submission: str
    scores: dict[str, Points]
    comment: str = ""


class ReferenceFile(_Strict):
    """A file the grader model is given with the marking scheme (a PDF model answer, a figure);
    `path` is relative to the rubric file and stays inside its folder."""

    path: str = Field(min_length=1, max_length=500)
    title: str = Field(default="", max_length=200)

    @model_validator(mode="after")
    def _relative(self) -> ReferenceFile:
        p = PurePosixPath(self.path.replace("\\", "/"))
        if p.is_absolute() or ".." in p.parts or self.path.startswith("~"):
            raise ValueError(f"path {self.path!r} must be relative to the rubric file, inside its "
                             "folder (no absolute paths, no '..')")
        if p.suffix.lower() not in REFERENCE_KINDS:
            raise ValueError(f"path {self.path!r}: a reference file must be one of "
                             f"{', '.join(sorted(REFERENCE_KINDS))}")
        return self


class Question(_Strict):
    id: Identifier
    prompt: str
    reference_answer: str | None = None
    criteria: tuple[Criterion, ...] = Field(min_length=1)


class Rubric(_Strict):
    title: str
    instructions: str = ""
    question: str | None = None
    reference_answer: str | None = None
    criteria: tuple[Criterion, ...] = ()
    questions: tuple[Question, ...] = ()
    exemplars: tuple[Exemplar, ...] = ()
    reference_files: tuple[ReferenceFile, ...] = Field(default=(), max_length=MAX_REFERENCE_FILES)
    grade_bands: dict[BandName, Percent] = Field(
        default_factory=dict,
        description="band name -> minimum percent, e.g. {A: 85, B: 70}",
    )

    @model_validator(mode="after")
    def _shape(self) -> Rubric:
        if bool(self.criteria) == bool(self.questions):
            raise ValueError("give either `criteria` (one question) or `questions`, not both")
        ids = [c.id for c in self.all_criteria]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"criterion ids must be unique across the rubric; repeated: {dupes}")
        known = set(ids)
        for n, ex in enumerate(self.exemplars):
            unknown = set(ex.scores) - known
            if unknown:
                raise ValueError(f"exemplars.{n}.scores: unknown criterion ids {sorted(unknown)}")
            for cid, score in ex.scores.items():
                _check_score(self.criterion(cid), score, f"exemplars.{n}.scores.{cid}")
        return self

    @property
    def all_criteria(self) -> tuple[Criterion, ...]:
        if self.criteria:
            return self.criteria
        return tuple(c for q in self.questions for c in q.criteria)

    @property
    def max_total(self) -> float:
        return sum(c.max_points for c in self.all_criteria)

    def criterion(self, cid: str) -> Criterion:
        for c in self.all_criteria:
            if c.id == cid:
                return c
        raise KeyError(cid)

    def band(self, percent: float) -> str | None:
        """The highest band whose minimum the percent reaches."""
        for name, minimum in sorted(self.grade_bands.items(), key=lambda kv: -kv[1]):
            if percent >= minimum:
                return name
        return None


def _check_score(c: Criterion, score: float, where: str) -> None:
    allowed = c.allowed_points
    if allowed is not None and not any(math.isclose(score, p) for p in allowed):
        raise ValueError(f"{where}: {score:g} is not one of the level points "
                         f"{', '.join(f'{p:g}' for p in allowed)} of criterion {c.id}")
    if score > c.max_points:
        raise ValueError(f"{where}: {score:g} is over max_points {c.max_points:g} of "
                         f"criterion {c.id}")


class _YamlRefused(yaml.YAMLError):
    def __init__(self, message: str, mark: Any, fix: str):
        self.line = mark.line + 1 if mark is not None else None
        self.fix = fix
        super().__init__(message)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases and a key repeated within one mapping."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _YamlRefused(f"alias *{event.anchor} is not allowed in a rubric (aliases can "
                               "expand a small file into a huge prompt)", event.start_mark,
                               f"write the text out where *{event.anchor} is used")
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False
                          ) -> dict[Hashable, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, Hashable):
                if key in seen:
                    raise _YamlRefused(f"key {key!r} appears twice in the same mapping",
                                       key_node.start_mark, f"keep one {key!r} and delete or "
                                       "rename the other")
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


# PyYAML's problems, in words a teacher can act on (matched on the problem's text).
_YAML_HINTS = (
    ("found character '\\t'", "a tab is used to indent; YAML needs spaces",
     "replace the tabs at the start of the line by spaces"),
    ("expected <block end>", "this line is indented differently from the lines before it in "
     "the same item", "line it up with the other keys of its item (same number of spaces)"),
    ("did not find expected key", "this line is indented differently from the lines before it "
     "in the same item", "line it up with the other keys of its item (same number of spaces)"),
    ("did not find expected '-' indicator", "this list item is indented differently from "
     "the others", "start every item of the list with '- ' at the same indentation"),
    ("mapping values are not allowed", "a ': ' where YAML expects none (text that contains "
     "': ' must be quoted)", 'put the text in double quotes, e.g. description: "Note: ..."'),
    ("could not find expected ':'", "a key without ':' after it, or a line that belongs to "
     "the one before", "write `key: value`, or indent a continued line under its key"),
    ("unexpected end of stream", "a quote or bracket is opened and never closed",
     "close the quote or bracket"),
)


def _yaml_error(e: yaml.MarkedYAMLError, text: str, path: Path) -> RubricError:
    """A YAML syntax error as the teacher sees the file: the line and column, the line
    itself, what is wrong in plain words and how to fix it."""
    problem = f"{e.problem or ''} {e.context or ''}"
    # an unclosed quote is found at the end of the file: show where it was opened
    mark = (e.context_mark if "end of stream" in problem and e.context_mark
            else e.problem_mark or e.context_mark)
    plain, fix = next(((p, f) for key, p, f in _YAML_HINTS if key in problem),
                      (f"the YAML is not well formed ({(e.problem or 'syntax error').strip()})",
                       "fix the YAML syntax at that line"))
    if mark is None:
        return RubricError(f"not valid YAML: {plain}", path=path, fix=fix)
    lines = text.splitlines()
    shown = lines[mark.line] if mark.line < len(lines) else ""
    return RubricError(f"line {mark.line + 1}, column {mark.column + 1}: {plain}\n"
                       f"    {shown}", path=path, fix=f"{fix} (line {mark.line + 1})")


def parse_yaml(text: str, path: Path) -> Any:
    """YAML text through `_StrictLoader`; every problem is a RubricError with the line."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader: builds plain data only
    except _YamlRefused as e:
        where = f"line {e.line}: " if e.line else ""
        raise RubricError(f"{where}{e}", path=path, fix=e.fix) from None
    except yaml.MarkedYAMLError as e:
        raise _yaml_error(e, text, path) from None
    except yaml.YAMLError as e:
        raise RubricError(f"not valid YAML: {e}", path=path,
                          fix="fix the YAML syntax at the line shown") from None
    except RecursionError:
        raise RubricError("YAML is nested too deeply", path=path,
                          fix="a rubric needs only a few levels of nesting") from None


def rubric_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_rubric(path: Path) -> tuple[Rubric, str]:
    """Load and validate a rubric; returns it with the hash of its file text."""
    try:
        if path.stat().st_size > MAX_RUBRIC_BYTES:
            raise RubricError(f"rubric file is over {MAX_RUBRIC_BYTES // 1024} KB", path=path,
                              fix="a rubric is a few KB of YAML; check you passed the right file")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RubricError(
            "rubric file not found", path=path,
            fix="pass --rubric FILE, or put rubric.yaml in the class folder or grader.toml",
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise RubricError(f"cannot read rubric: {e}", path=path,
                          fix="save the rubric as UTF-8 YAML") from None
    data = parse_yaml(text, path)
    if not isinstance(data, dict):
        raise RubricError("rubric must be a YAML mapping (title:, criteria:, ...)", path=path,
                          fix="see rubrics/ for examples")
    try:
        rubric = Rubric.model_validate(data)
    except ValidationError as e:
        raise RubricError(
            "invalid rubric:\n" + format_validation_error(e), path=path,
            fix="correct the fields listed above; see rubrics/ for a complete example",
        ) from None
    return rubric, rubric_hash(text)


@dataclass(frozen=True)
class Reference:
    """A reference file as read for a run: sent with the marking scheme (through the Files API
    or a staging bucket when the backend has one), hashed by content."""

    name: str
    title: str
    mime_type: str
    data: bytes
    sha256: str


def _kind(data: bytes, suffix: str) -> str | None:
    """The file's MIME type when its first bytes match its suffix."""
    mime = REFERENCE_KINDS.get(suffix)
    magic = {"application/pdf": data[:5] == b"%PDF-", "image/png": data[:8] == b"\x89PNG\r\n\x1a\n",
             "image/jpeg": data[:3] == b"\xff\xd8\xff",
             "image/webp": data[:4] == b"RIFF" and data[8:12] == b"WEBP"}
    return mime if mime is not None and magic.get(mime) else None


def load_references(rubric: Rubric, rubric_file: Path) -> tuple[Reference, ...]:
    """Read the rubric's reference files (relative to the rubric, inside its folder, regular
    files of a kind Gemini reads, each at most MAX_REFERENCE_BYTES)."""
    base = rubric_file.resolve().parent
    out = []
    for n, ref in enumerate(rubric.reference_files):
        where = f"reference_files.{n}.path"
        path = base / ref.path.replace("\\", "/")
        try:
            real = path.resolve(strict=True)
            if not real.is_relative_to(base):
                raise RubricError(f"{where}: {ref.path!r} leads outside the rubric's folder",
                                  path=rubric_file, fix="copy the file next to the rubric")
            if not real.is_file():
                raise RubricError(f"{where}: {ref.path!r} is not a regular file",
                                  path=rubric_file, fix="name a PDF or image file")
            if real.stat().st_size > MAX_REFERENCE_BYTES:
                raise RubricError(
                    f"{where}: {ref.path!r} is over {MAX_REFERENCE_BYTES // (1024 * 1024)} MB",
                    path=rubric_file, fix="use a smaller PDF or image (export it again, or "
                    "split it)")
            data = real.read_bytes()
        except OSError as e:
            raise RubricError(f"{where}: cannot read {ref.path!r}: {e.strerror or e}",
                              path=rubric_file, fix="put the file next to the rubric, or "
                              "correct the path (it is relative to the rubric file)") from None
        mime = _kind(data, PurePosixPath(ref.path).suffix.lower())
        if mime is None:
            raise RubricError(f"{where}: {ref.path!r} is not a valid "
                              f"{PurePosixPath(ref.path).suffix.lower()} file",
                              path=rubric_file, fix="export the file again as PDF, PNG, JPEG "
                              "or WebP")
        out.append(Reference(name=ref.path, title=ref.title, mime_type=mime, data=data,
                             sha256=hashlib.sha256(data).hexdigest()))
    return tuple(out)
