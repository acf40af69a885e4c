"""The records the store takes and returns: small frozen dataclasses, no SQL and no I/O.

Pure modules (policy, selection, uncertainty, reports) use these types without importing the
store; `grader.store.Store` is the only place they are read from or written to SQLite.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from grader.prompting.request import GradeResponse


@dataclass(frozen=True)
class RunInfo:
    """What a new run is: written once when it starts (settings never include secrets)."""

    class_dir: str
    backend: str
    model: str
    rubric_path: str | None
    rubric_hash: str
    prompt_hash: str
    schema_hash: str
    fingerprint: str
    config_hash: str
    sdk_version: str | None
    grader_version: str
    settings: dict[str, Any]
    rubric: dict[str, Any]
    mode: str = "normal"
    selection: dict[str, Any] = field(default_factory=dict)
    epoch: int | None = None  # None: 0 for a normal run, the run's own id for a regrade


@dataclass(frozen=True)
class SubmissionRecord:
    student_id: str
    name: str | None
    email: str | None
    source: str
    content_hash: str
    body_hash: str | None
    files: Sequence[str]
    late: bool
    notes: Sequence[str] = ()


@dataclass(frozen=True)
class ItemRow:
    """One item of a checklist criterion as the model answered it."""

    item_id: str
    met: bool
    quote: str


@dataclass(frozen=True)
class CriterionRow:
    criterion_id: str
    score: float
    max_points: float
    justification: str
    evidence: list[str]
    feedback: str
    spread: float | None = None  # max - min of the samples' scores (None: one sample)
    samples: Sequence[float] = ()  # each sample's score, when several were asked
    items: Sequence[ItemRow] = ()  # checklist criteria: the answer per item


@dataclass(frozen=True)
class FlagRow:
    reason: str
    message: str


@dataclass(frozen=True)
class RequestRecord:
    """A request as sent: `hash` is the ledger key, `body` what is kept of it (text in full,
    media by hash and size, the static prefix by its hash)."""

    hash: str
    prefix_hash: str | None
    model: str
    body: dict[str, Any]


@dataclass(frozen=True)
class Answer:
    """A reply as it came back (`response`: text, tokens, latency, retries), with what the call
    cost (None: the model table has no price for the model) and the service tier that cost was
    computed for (standard | flex | batch)."""

    response: GradeResponse
    cost_usd: float | None = None
    service_tier: str | None = None


@dataclass(frozen=True)
class GradeRecord:
    student_id: str
    submission_id: int
    fingerprint: str
    sample: int
    epoch: int
    config_hash: str
    run_id: int
    status: str  # graded | flagged
    max_total: float
    total: float | None
    percent: float | None
    overall_comment: str | None
    needs_review: bool
    review_reason: str | None
    model: str
    model_version: str | None
    criteria: Sequence[CriterionRow] = ()
    flags: Sequence[FlagRow] = ()
    attempt_ids: Sequence[int] = ()
    samples: int = 1  # how many samples this grade combines (median per criterion)
    exemplars_hash: str | None = None  # digest of the graded examples shown (None: none)
    exemplars: Sequence[ExemplarUse] = ()


@dataclass(frozen=True)
class ExemplarUse:
    """One graded example a grade was shown, in prompt order (`grade run --exemplars K`)."""

    exemplar: str  # the bank key: rubric:<n>, or submission:<id>
    source: str  # rubric | approved | corrected
    similarity: float
    student_id: str | None = None
    submission_id: int | None = None


@dataclass(frozen=True)
class TuningJob:
    """An Enterprise supervised tuning job started by `grade tune start`."""

    name: str
    display_name: str
    base_model: str
    train_uri: str
    validation_uri: str | None
    train_examples: int
    validation_examples: int
    state: str
    tuned_model: str | None = None
    endpoint: str | None = None
    error: str | None = None
    created_at: str = ""
    updated_at: str = ""


@dataclass(frozen=True)
class OutcomeRecord:
    run_id: int
    student_id: str
    status: str  # graded | flagged | failed | skipped
    submission_id: int | None = None
    grade_id: int | None = None
    reused: bool = False
    reason: str | None = None
    message: str | None = None
    name: str | None = None
    email: str | None = None
    source: str | None = None


@dataclass(frozen=True)
class Decision:
    """One teacher decision. `value` is JSON text (None clears an earlier decision);
    `ai_basis` is JSON of what the AI said when the teacher decided (the criterion's score, or
    every criterion's score for `comment`/`approved`), so a decision follows the student to a
    new grade version only while the submission and the AI's score are unchanged."""

    student_id: str
    field: str  # score | feedback | comment (to the student) | note (private) | approved
    value: str | None
    criterion_id: str = ""
    submission_id: int | None = None
    ai_basis: str | None = None
    run_id: int | None = None
    grade_id: int | None = None
    cell: str | None = None
    workbook_sha256: str | None = None
    decided_at: str = ""
    id: int = 0
    group: str | None = None  # the answer group it was entered for (None: the student's own)
    workbook_base: str | None = None  # the written workbook it came from (`lineage`)


@dataclass(frozen=True)
class GroupMember:
    """A student's place in a run's answer groups (`review.groups`): the group's label, whether
    the student is its representative, and the `inconsistent_with_group` message (if any)."""

    student_id: str
    label: str
    representative: bool = False
    flag: str | None = None


# --- records out ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    id: int
    started_at: str
    finished_at: str | None
    status: str
    class_dir: str
    backend: str
    model: str
    rubric_path: str | None
    rubric_hash: str
    prompt_hash: str
    schema_hash: str
    fingerprint: str | None
    config_hash: str | None
    epoch: int
    mode: str
    selection: dict[str, Any]
    sdk_version: str | None
    grader_version: str
    settings: dict[str, Any]
    rubric: dict[str, Any]
    pid: int | None


@dataclass(frozen=True)
class CacheRow:
    """An explicit context cache a run asked the service for (`name` None until created)."""

    id: int
    run_id: int
    backend: str
    model: str
    content_hash: str
    display_name: str
    name: str | None
    tokens: int | None
    create_usd: float | None
    usd_per_hour: float | None
    created_at: str
    expires_at: str | None
    ended_at: str | None
    storage_usd: float | None
    state: str  # creating | live | deleted | expired | failed


@dataclass(frozen=True)
class UploadRow:
    """A file a run (or a batch job: `job_ref`) uploaded to the service (`name` None until the
    service named it; a staging-bucket object is named before it is written)."""

    id: int
    run_id: int | None
    job_ref: str | None
    backend: str
    purpose: str
    sha256: str
    size: int
    mime_type: str
    display_name: str
    name: str | None
    uri: str | None
    created_at: str
    expires_at: str | None
    ended_at: str | None
    state: str  # uploading | active | deleted | expired | failed


@dataclass(frozen=True)
class Reply:
    """A model reply, from the backend or from the response ledger (the reply already paid
    for a request: `Store.response_for`)."""

    text: str | None
    finish_reason: str | None = None
    blocked_reason: str | None = None
    model_version: str | None = None
    thinking_tokens: int = 0
    output_tokens: int = 0  # the visible answer's tokens

    @property
    def cut_by_thinking(self) -> bool:
        """Ended at the output cap, mostly spent on thinking: thinking and the answer share
        `max_output_tokens`, so the model thought until too little was left to answer. (An
        answer that is itself too long is not cured by more room: it is flagged at once.)"""
        return self.text is None and self.blocked_reason == "MAX_TOKENS" \
            and self.thinking_tokens > self.output_tokens


@dataclass(frozen=True)
class ServedModel:
    """Which model version answered a run's calls, in which lifecycle stage, how often."""

    model_version: str | None
    model_status: str | None
    calls: int


@dataclass(frozen=True)
class GradeVersion:
    id: int
    run_id: int
    status: str
    total: float | None
    epoch: int
    config_hash: str
    flags: list[FlagRow]
    samples: int = 1
    exemplars_hash: str | None = None


@dataclass(frozen=True)
class HumanScore:
    """A human grader's score for one student: a criterion id, or "total"."""

    student_id: str
    criterion_id: str
    rater: str
    score: float


@dataclass(frozen=True)
class Calibration:
    """The agreement of a blind-scored sample with the model under one grading fingerprint."""

    id: int
    class_dir: str
    fingerprint: str
    run_id: int
    rater: str
    created_at: str
    students: list[str]
    figures: dict[str, dict[str, Any]]  # criterion id -> {"n", "qwk", "exact", "mae", ...}


@dataclass(frozen=True)
class Unanswered:
    """An attempt recorded as sent whose reply never arrived (the process died or gave up):
    the service may have billed it."""

    attempt_id: int
    run_id: int
    student_id: str | None
    sent_at: str | None


@dataclass(frozen=True)
class SentText:
    """The student's parts of a request as the store keeps them (`{"text": ...}` in full, media
    as `{"mime_type", "bytes", "sha256"}`). `own`: False when the text comes from another
    student's byte-identical submission (this student's reply was reused, never sent).
    `redaction`: what the request's placeholders stand for (empty when nothing was redacted)."""

    parts: list[dict[str, Any]]
    own: bool
    redaction: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchJobRow:
    """A provider batch job as the store knows it (`name` None until the job exists)."""

    id: int
    run_id: int
    class_dir: str
    backend: str
    model: str
    display_name: str
    mode: str
    round: int
    name: str | None
    input_ref: str | None
    state: str
    requests: int
    created_at: str
    submitted_at: str | None
    ended_at: str | None
    collected_at: str | None
    error: str | None


@dataclass(frozen=True)
class BatchItemIn:
    """One request going into a batch job."""

    student_id: str
    submission_id: int
    request: RequestRecord
    n: int
    epoch: int
    request_json: str
    flags_json: str
    redaction: Mapping[str, str] | None = None
    previous: int | None = None


@dataclass(frozen=True)
class BatchItem:
    """One request of a batch job, with what judging its reply needs."""

    attempt_id: int
    job_id: int
    run_id: int
    student_id: str
    submission_id: int
    request_hash: str
    n: int
    epoch: int
    previous: int | None
    request_json: str
    flags_json: str
    redaction: dict[str, str]
    state: str


@dataclass
class StudentResult:
    """One student's outcome in one run, with the grade version it points to (if any)."""

    student_id: str
    name: str | None
    email: str | None
    status: str
    reason: str | None
    message: str | None
    reused: bool
    late: bool
    files: list[str]
    submission_id: int | None = None
    source: str | None = None  # file | folder | canvas | moodle | roster: where the id came from
    notes: list[str] = field(default_factory=list)
    grade_id: int | None = None
    grade_status: str | None = None
    total: float | None = None
    max_total: float | None = None
    percent: float | None = None
    overall_comment: str | None = None
    needs_review: bool = False
    review_reason: str | None = None
    model_version: str | None = None
    samples: int = 1
    criteria: list[CriterionRow] = field(default_factory=list)
    flags: list[FlagRow] = field(default_factory=list)


@dataclass(frozen=True)
class ScreenVerdict:
    """What the model-based injection check said of one text (`grader.grading.screen`), and
    what asking cost (`cost_usd` None: unpriced, e.g. a local model). `readable` False: the
    reply could not be read, so there is no verdict (`injection` is False, `reason` says why)."""

    key: str
    model: str
    injection: bool
    reason: str
    prompt_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    readable: bool = True
