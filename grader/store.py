"""The SQLite store: the only module that contains SQL.

Two kinds of data are kept apart:

- **What was paid for**: `prefixes`, `requests` and `responses` form a content-addressed ledger
  keyed by the hash of the request as sent (insert-or-ignore, never updated or deleted);
  `attempts` records every request we sent (state `sent` is committed before it leaves), its
  usage and what became of it.
- **What a student got**: `grades` are per-student versions keyed by (student, submission,
  grading fingerprint, sample, epoch, generation config), never deleted; `outcomes` say what
  happened to each student in each run; `decisions` are the teacher's, per student and criterion,
  append-only.

Methods take and return small dataclasses. `atomic()` is the one transaction idiom (BEGIN at the
outermost level, SAVEPOINT inside); SQLite errors surface as `StoreError` with a fix.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from .errors import StoreError
from .migrations import migrate

P = ParamSpec("P")
T = TypeVar("T")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --- records in ----------------------------------------------------------------------------


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
    """A reply as it came back, with what the call cost."""

    text: str | None
    finish_reason: str | None
    blocked_reason: str | None
    model_version: str | None
    raw: dict[str, Any] | None
    prompt_tokens: int = 0
    output_tokens: int = 0
    thinking_tokens: int = 0
    cached_tokens: int = 0
    latency_ms: float = 0.0
    retries: int = 0
    cost_usd: float | None = None  # None: the model table has no price for the model
    model_status: str | None = None  # the lifecycle stage the service reported
    service_tier: str | None = None  # standard | flex (what the cost was computed for)


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
class StoredResponse:
    request_hash: str
    text: str | None
    finish_reason: str | None
    blocked_reason: str | None
    model_version: str | None
    thinking_tokens: int = 0
    output_tokens: int = 0


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
    source: str | None = None  # file | folder | canvas | moodle: where the id came from
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


# --- errors ------------------------------------------------------------------------------


def _store_error(e: sqlite3.Error, path: str) -> StoreError:
    text = str(e)
    low = text.lower()
    code = getattr(e, "sqlite_errorname", "") or ""
    if code in ("SQLITE_IOERR_WRITE", "SQLITE_IOERR_FSYNC", "SQLITE_IOERR_TRUNCATE") \
            and os.path.exists(path):
        low = "disk is full"  # a write to an existing file failed: no space (or a size limit)
    if "locked" in low or "busy" in low:
        fix = "another grader process is writing to this store; wait for it, then run again"
    elif "disk is full" in low:
        text = f"cannot write (no space left on the disk, or a file size limit): {text}"
        fix = ("free some disk space, then run the same command again: finished grades and "
               "paid replies are kept")
    elif "readonly" in low or "read-only" in low:
        fix = "make the store and its folder writable, or pass --db PATH"
    elif "no such table" in low or "malformed" in low or "not a database" in low:
        fix = "the store is damaged or not a grader store; move it aside or pass another --db PATH"
    elif "unable to open" in low or "disk i/o" in low:
        fix = "the store file or its folder vanished or cannot be read; check the path (--db)"
    else:
        fix = "rerun with --debug and report this"
    return StoreError(f"grade store error: {text}", path=path, fix=fix)


def _mapped(fn: Callable[P, T]) -> Callable[P, T]:
    """Turn SQLite errors raised by a Store method into StoreError (with a fix)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except sqlite3.Error as e:
            store = args[0]
            raise _store_error(e, getattr(store, "path", "?")) from e

    return wrapper


_IDENTITY_EVERY_S = 0.2  # how often a transaction checks that the store file is still there
_BATCH = 500  # outcome rows per batch in `results` (bounded memory, few queries)


def _loads(text: str | None, default: Any) -> Any:
    return json.loads(text) if text else default


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


_SQLITE_MAGIC = b"SQLite format 3\x00"


def grader_store_problem(path: Path | str) -> str | None:
    """Why `path` is not an existing grader store (None when it is one). Reads the file
    read-only: never creates, migrates or changes anything, so it is safe on any file."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            head = fh.read(len(_SQLITE_MAGIC))
    except FileNotFoundError:
        return "does not exist"
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    if head != _SQLITE_MAGIC:
        return "is not an SQLite database"
    try:
        conn = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            names = {r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            conn.close()
    except sqlite3.Error as e:
        return f"cannot be opened read-only ({e})"
    if not {"schema_migrations", "runs", "outcomes"} <= names:
        return "is an SQLite database but not a grader store (no runs or schema_migrations table)"
    return None


def unsaved_path(db_path: str) -> Path:
    """Where replies that could not be committed (disk full) are kept until the next open."""
    return Path(db_path + ".unsaved-replies.jsonl")


_DAMAGED_FIX = ("move the file aside and rerun (its grades and paid replies are then not used), "
                "or save what is readable with `sqlite3 FILE .recover`")


class Store:
    """One connection per process, used from one thread (the pipeline's event loop).

    `create=False` opens only an existing grader store (a path taken from a workbook must never
    turn some other SQLite file into one). The file is checked for damage when it is opened. If
    it vanishes while open (deleted, or its folder moved), the next write rewrites it from the
    open connection and carries on; `notices` says so."""

    def __init__(self, path: Path | str, *, create: bool = True):
        self.path = str(path)
        self._depth = 0
        self.notices: list[str] = []
        self._identity: tuple[int, int] | None = None
        self._identity_due = 0.0  # when _ensure_file next looks at the file
        if self.path != ":memory:":
            problem = None if create else grader_store_problem(self.path)
            if problem is not None:
                raise StoreError(
                    f"not a grade store written by grader: the file {problem}",
                    path=self.path, fix="pass --db PATH pointing at the grader.sqlite of the "
                    "class (by default CLASS_DIR/.grader/grader.sqlite)")
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            import_unsaved_target = self.path
        else:
            import_unsaved_target = None
        try:
            self.conn = self._connect()
            existing = self.conn.execute(
                "SELECT COUNT(*) FROM sqlite_master").fetchone()[0]
            if existing:
                self._check_integrity()
            migrate(self.conn)
        except sqlite3.DatabaseError as e:
            raise StoreError(f"the grade store is damaged or not an SQLite file: {e}",
                             path=self.path, fix=_DAMAGED_FIX) from None
        if import_unsaved_target is not None:
            self._identity = _identity(self.path)
            self._import_unsaved()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def _check_integrity(self) -> None:
        """Damage inside the file is found here, not halfway through a report."""
        problems = [r[0] for r in self.conn.execute("PRAGMA quick_check(5)")]
        if problems != ["ok"]:
            raise StoreError("the grade store is damaged: " + "; ".join(problems[:3]),
                             path=self.path, fix=_DAMAGED_FIX)

    def _ensure_file(self) -> None:
        """If the store file vanished or was replaced while open, write it again from this
        connection (everything committed so far) and continue on the new file. Looked at most
        every `_IDENTITY_EVERY_S` (a stat per transaction cost 4% of a large run's CPU); what
        is committed in between stays in the open copy, so nothing is lost by looking later."""
        if self._identity is None:
            return
        t = time.monotonic()
        if t < self._identity_due:
            return
        self._identity_due = t + _IDENTITY_EVERY_S
        if _identity(self.path) == self._identity:
            return
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        moved = Path(self.path)
        if moved.exists():  # replaced by another file: keep it, under another name
            moved.rename(moved.with_name(moved.name + f".replaced-{os.getpid()}"))
        self.conn.execute("VACUUM INTO ?", (self.path,))
        self.conn.close()
        self.conn = self._connect()
        self._identity = _identity(self.path)
        self.notices.append(
            f"the grade store {self.path} was deleted or replaced during the run; it was "
            "written again from the open copy, and nothing was lost")

    def close(self) -> None:
        self._identity_due = 0.0  # a file deleted since the last look is written again now
        with suppress(sqlite3.Error, OSError):
            self._ensure_file()
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """All-or-nothing: BEGIN IMMEDIATE at the outermost level, a SAVEPOINT inside. The
        original exception always propagates, even if rolling back fails too."""
        outer = self._depth == 0
        name = f"sp{self._depth}"
        try:
            if outer:
                self._ensure_file()
            self.conn.execute("BEGIN IMMEDIATE" if outer else f"SAVEPOINT {name}")
        except sqlite3.Error as e:
            raise _store_error(e, self.path) from e
        self._depth += 1
        try:
            yield
        except BaseException:
            with suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK" if outer else f"ROLLBACK TO {name}")
                if not outer:
                    self.conn.execute(f"RELEASE {name}")
            raise
        else:
            try:
                self.conn.execute("COMMIT" if outer else f"RELEASE {name}")
            except sqlite3.Error as e:
                with suppress(sqlite3.Error):
                    self.conn.execute("ROLLBACK" if outer else f"ROLLBACK TO {name}")
                raise _store_error(e, self.path) from e
        finally:
            self._depth -= 1

    # --- runs --------------------------------------------------------------------------------

    @staticmethod
    def _run(r: sqlite3.Row) -> Run:
        return Run(
            id=r["id"], started_at=r["started_at"], finished_at=r["finished_at"],
            status=r["status"], class_dir=r["class_dir"], backend=r["backend"], model=r["model"],
            rubric_path=r["rubric_path"], rubric_hash=r["rubric_hash"],
            prompt_hash=r["prompt_hash"], schema_hash=r["schema_hash"],
            fingerprint=r["fingerprint"], config_hash=r["config_hash"], epoch=r["epoch"],
            mode=r["mode"], selection=_loads(r["selection_json"], {}),
            sdk_version=r["sdk_version"], grader_version=r["grader_version"],
            settings=_loads(r["settings_json"], {}), rubric=_loads(r["rubric_json"], {}),
            pid=r["pid"],
        )

    @_mapped
    def begin_run(self, info: RunInfo) -> Run:
        with self.atomic():
            cur = self.conn.execute(
                "INSERT INTO runs (started_at, class_dir, backend, model, rubric_path,"
                " rubric_hash, prompt_hash, schema_hash, sdk_version, grader_version,"
                " settings_json, rubric_json, fingerprint, config_hash, mode, selection_json, pid)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (now(), info.class_dir, info.backend, info.model, info.rubric_path,
                 info.rubric_hash, info.prompt_hash, info.schema_hash, info.sdk_version,
                 info.grader_version, json.dumps(info.settings, default=str),
                 json.dumps(info.rubric), info.fingerprint, info.config_hash, info.mode,
                 json.dumps(info.selection, sort_keys=True), os.getpid()),
            )
            run_id = int(cur.lastrowid or 0)
            epoch = info.epoch if info.epoch is not None else (
                run_id if info.mode != "normal" else 0)
            self.conn.execute("UPDATE runs SET epoch=? WHERE id=?", (epoch, run_id))
        return self.run(run_id)

    @_mapped
    def finish_run(self, run_id: int, status: str) -> None:
        self.conn.execute("UPDATE runs SET finished_at=?, status=? WHERE id=?",
                          (now(), status, run_id))

    @_mapped
    def interrupt_stale_runs(self) -> int:
        """Mark runs still 'running' as interrupted. Call only while holding the store's run
        lock: then no other process can be running, so their processes died (SIGKILL)."""
        return int(self.conn.execute(
            "UPDATE runs SET status='interrupted' WHERE status='running'").rowcount)

    @_mapped
    def run(self, run_id: int) -> Run:
        row = self.conn.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None:
            raise StoreError(f"no run {run_id} in the store", path=self.path,
                             fix="run `grade status CLASS_DIR` to list runs")
        return self._run(row)

    @_mapped
    def latest_run(self, class_dir: str | None = None) -> Run | None:
        if class_dir is None:
            row = self.conn.execute("SELECT * FROM runs ORDER BY id DESC LIMIT 1").fetchone()
        else:
            row = self.conn.execute(
                "SELECT * FROM runs WHERE class_dir=? ORDER BY id DESC LIMIT 1",
                (class_dir,)).fetchone()
        return self._run(row) if row is not None else None

    @_mapped
    def runs(self) -> list[Run]:
        return [self._run(r) for r in self.conn.execute("SELECT * FROM runs ORDER BY id")]

    @_mapped
    def unfinished_regrade(self, class_dir: str, fingerprint: str, mode: str,
                           selection: dict[str, Any]) -> Run | None:
        """The class's latest run, if it is a regrade of the same kind that did not finish:
        rerunning the same command continues it (its epoch) instead of paying again."""
        last = self.latest_run(class_dir)
        if (last is None or last.mode != mode or last.fingerprint != fingerprint
                or last.selection != selection or last.status not in ("interrupted", "running")):
            return None
        return last

    # --- students and submissions -----------------------------------------------------------

    @_mapped
    def upsert_submission(self, rec: SubmissionRecord) -> int:
        with self.atomic():
            self._upsert_student(rec.student_id, rec.name, rec.email, rec.source)
            row = self.conn.execute(
                "INSERT INTO submissions (student_id, content_hash, body_hash, files_json, late,"
                " notes_json) VALUES (?,?,?,?,?,?) ON CONFLICT(student_id, content_hash)"
                " DO UPDATE SET late=excluded.late, body_hash=excluded.body_hash,"
                " notes_json=excluded.notes_json RETURNING id",
                (rec.student_id, rec.content_hash, rec.body_hash, json.dumps(list(rec.files)),
                 int(rec.late), json.dumps(list(rec.notes))),
            ).fetchone()
        return int(row["id"])

    def _upsert_student(self, sid: str, name: str | None, email: str | None,
                        source: str | None) -> None:
        self.conn.execute(
            "INSERT INTO students (id, name, email, source) VALUES (?,?,?,?)"
            " ON CONFLICT(id) DO UPDATE SET name=COALESCE(excluded.name, name),"
            " email=COALESCE(excluded.email, email), source=COALESCE(excluded.source, source)",
            (sid, name, email, source),
        )

    # --- the ledger: what was paid for -------------------------------------------------------

    @_mapped
    def save_prefix(self, hash: str, system: str, static_prefix: str,
                    schema: dict[str, Any]) -> None:
        self.conn.execute(
            "INSERT OR IGNORE INTO prefixes (hash, system, static_prefix, schema_json, created_at)"
            " VALUES (?,?,?,?,?)", (hash, system, static_prefix, json.dumps(schema), now()))

    @_mapped
    def response_for(self, request_hash: str) -> StoredResponse | None:
        """A reply already paid for with this exact request, if any."""
        r = self.conn.execute(
            "SELECT r.request_hash, r.text, r.finish_reason, r.blocked_reason, r.model_version,"
            " a.thinking_tokens, a.output_tokens FROM responses r"
            " LEFT JOIN attempts a ON a.id = r.attempt_id"
            " WHERE r.request_hash=?", (request_hash,)).fetchone()
        if r is None:
            return None
        return StoredResponse(r["request_hash"], r["text"], r["finish_reason"],
                              r["blocked_reason"], r["model_version"],
                              r["thinking_tokens"] or 0, r["output_tokens"] or 0)

    @_mapped
    def paid_attempt(self, request_hash: str, student_id: str, submission_id: int) -> int | None:
        """This student's attempt that paid for the ledger's reply to this request, if any (a
        reply reused after a crash still belongs to the grade it completes)."""
        r = self.conn.execute(
            "SELECT r.attempt_id FROM responses r JOIN attempts a ON a.id = r.attempt_id"
            " WHERE r.request_hash=? AND a.student_id=? AND a.submission_id=?",
            (request_hash, student_id, submission_id)).fetchone()
        return int(r[0]) if r is not None else None

    @_mapped
    def begin_attempt(self, *, run_id: int, student_id: str, submission_id: int,
                      request: RequestRecord, sample: int, n: int, state: str = "sent",
                      job_ref: str | None = None,
                      redaction: Mapping[str, str] | None = None) -> int:
        """Record a request before it leaves (committed: after a crash, `grade status` shows it
        as sent but unanswered). `redaction`: what the request's placeholders stand for."""
        stamp = now()
        with self.atomic():
            self.conn.execute(
                "INSERT OR IGNORE INTO requests (hash, prefix_hash, model, body_json, created_at)"
                " VALUES (?,?,?,?,?)",
                (request.hash, request.prefix_hash, request.model,
                 json.dumps(request.body, default=str), stamp))
            cur = self.conn.execute(
                "INSERT INTO attempts (run_id, student_id, submission_id, request_hash, sample,"
                " n, state, job_ref, created_at, sent_at, redaction_json)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (run_id, student_id, submission_id, request.hash, sample, n, state, job_ref,
                 stamp, stamp if state == "sent" else None,
                 json.dumps(dict(redaction), ensure_ascii=False) if redaction else None))
        return int(cur.lastrowid or 0)

    def answer_attempt(self, attempt_id: int, request_hash: str, answer: Answer) -> None:
        """Keep a reply (insert-or-ignore: the first paid reply for a request stays) and what it
        cost, in one commit. If the commit fails (a full disk), the reply is written to a side
        file beside the store instead, read back the next time the store is opened, and the
        StoreError says so: a paid reply is never dropped."""
        try:
            self._answer(attempt_id, request_hash, answer, now())
        except (sqlite3.Error, StoreError) as e:
            err = e if isinstance(e, StoreError) else _store_error(e, self.path)
            where = self._keep_unsaved(attempt_id, request_hash, answer)
            raise StoreError(
                f"{err.message}; the reply that just arrived was "
                + (f"kept in {where} and is stored the next time the store is opened"
                   if where else "NOT saved: it may be paid for again"),
                path=self.path, fix=err.fix) from e

    def _answer(self, attempt_id: int, request_hash: str, answer: Answer, stamp: str) -> None:
        with self.atomic():
            self.conn.execute(
                "INSERT OR IGNORE INTO responses (request_hash, attempt_id, created_at, text,"
                " finish_reason, blocked_reason, model_version, raw_json)"
                " VALUES (?,?,?,?,?,?,?,?)",
                (request_hash, attempt_id, stamp, answer.text, answer.finish_reason,
                 answer.blocked_reason, answer.model_version,
                 json.dumps(answer.raw, default=str) if answer.raw is not None else None))
            self.conn.execute(
                "UPDATE attempts SET state='answered', answered_at=?, retries=?, latency_ms=?,"
                " prompt_tokens=?, output_tokens=?, thinking_tokens=?, cached_tokens=?,"
                " model_version=?, cost_usd=?, model_status=?, service_tier=? WHERE id=?",
                (stamp, answer.retries, answer.latency_ms, answer.prompt_tokens,
                 answer.output_tokens, answer.thinking_tokens, answer.cached_tokens,
                 answer.model_version, answer.cost_usd, answer.model_status,
                 answer.service_tier, attempt_id))

    def _keep_unsaved(self, attempt_id: int, request_hash: str, answer: Answer) -> Path | None:
        line = json.dumps({"attempt_id": attempt_id, "request_hash": request_hash,
                           "at": now(), "answer": asdict(answer)}, default=str) + "\n"
        try:
            with unsaved_path(self.path).open("a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError:
            return None
        return unsaved_path(self.path)

    def _import_unsaved(self) -> None:
        path = unsaved_path(self.path)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError:
            return
        for line in lines:
            try:
                item = json.loads(line)
                answer = Answer(**item["answer"])
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short when the disk filled up
            try:
                self._answer(int(item["attempt_id"]), str(item["request_hash"]), answer,
                             str(item["at"]))
            except sqlite3.Error as e:
                raise _store_error(e, self.path) from e
        path.unlink()
        self.notices.append(f"{len(lines)} reply(ies) kept in {path} while the disk was full "
                            "were stored")

    @_mapped
    def fail_attempt(self, attempt_id: int, *, error: str, status: int | None, retries: int,
                     latency_ms: float) -> None:
        self.conn.execute(
            "UPDATE attempts SET state='failed', error=?, error_status=?, retries=?,"
            " latency_ms=? WHERE id=?", (error, status, retries, latency_ms, attempt_id))

    @_mapped
    def unanswered(self, class_dir: str | None = None, *,
                   include_running: bool = False) -> list[Unanswered]:
        """Attempts sent by runs that are over and never answered. `include_running`: count runs
        still marked running too (the caller knows no process holds the store)."""
        sql = ("SELECT a.id, a.run_id, a.student_id, a.sent_at FROM attempts a"
               " JOIN runs r ON r.id = a.run_id WHERE a.state='sent'")
        if not include_running:
            sql += " AND r.status != 'running'"
        args: tuple[Any, ...] = ()
        if class_dir is not None:
            sql += " AND r.class_dir=?"
            args = (class_dir,)
        return [Unanswered(r["id"], r["run_id"], r["student_id"], r["sent_at"])
                for r in self.conn.execute(sql + " ORDER BY a.id", args)]

    # --- what a run keeps on the service: context caches and uploaded files ------------------

    @_mapped
    def begin_cache(self, *, run_id: int, backend: str, model: str, content_hash: str,
                    display_name: str) -> int:
        """Record a cache before it is asked for (a kill before the reply leaves it findable by
        its display name)."""
        cur = self.conn.execute(
            "INSERT INTO caches (run_id, backend, model, content_hash, display_name, created_at,"
            " state) VALUES (?,?,?,?,?,?,'creating')",
            (run_id, backend, model, content_hash, display_name, now()))
        return int(cur.lastrowid or 0)

    @_mapped
    def cache_live(self, cache_id: int, *, name: str, tokens: int, create_usd: float | None,
                   usd_per_hour: float | None, expires_at: str) -> None:
        self.conn.execute(
            "UPDATE caches SET name=?, tokens=?, create_usd=?, usd_per_hour=?, expires_at=?,"
            " created_at=?, state='live' WHERE id=?",
            (name, tokens, create_usd, usd_per_hour, expires_at, now(), cache_id))

    @_mapped
    def cache_expires(self, cache_id: int, expires_at: str, *, run_id: int | None = None
                      ) -> None:
        """A new expiry (the TTL was extended); `run_id`: the run that now holds the cache."""
        self.conn.execute("UPDATE caches SET expires_at=?, run_id=COALESCE(?, run_id)"
                          " WHERE id=?", (expires_at, run_id, cache_id))

    @_mapped
    def end_cache(self, cache_id: int, state: str, storage_usd: float | None,
                  ended_at: str | None = None) -> None:
        self.conn.execute("UPDATE caches SET state=?, storage_usd=?, ended_at=? WHERE id=?",
                          (state, storage_usd, ended_at or now(), cache_id))

    @_mapped
    def open_caches(self, backend: str) -> list[CacheRow]:
        """Caches on `backend` not known to be gone (being created, or live)."""
        return [CacheRow(**dict(r)) for r in self.conn.execute(
            "SELECT * FROM caches WHERE state IN ('creating', 'live') AND backend=? ORDER BY id",
            (backend,))]

    @_mapped
    def caches(self, run_id: int) -> list[CacheRow]:
        return [CacheRow(**dict(r)) for r in self.conn.execute(
            "SELECT * FROM caches WHERE run_id=? ORDER BY id", (run_id,))]

    @_mapped
    def begin_upload(self, *, run_id: int | None, backend: str, purpose: str, sha256: str,
                     size: int, mime_type: str, display_name: str, name: str | None = None,
                     job_ref: str | None = None) -> int:
        """Record an upload before it starts (a kill during it leaves it findable)."""
        cur = self.conn.execute(
            "INSERT INTO uploads (run_id, job_ref, backend, purpose, sha256, size, mime_type,"
            " display_name, name, created_at, state) VALUES (?,?,?,?,?,?,?,?,?,?,'uploading')",
            (run_id, job_ref, backend, purpose, sha256, size, mime_type, display_name, name,
             now()))
        return int(cur.lastrowid or 0)

    @_mapped
    def upload_active(self, upload_id: int, *, name: str, uri: str,
                      expires_at: str | None) -> None:
        self.conn.execute(
            "UPDATE uploads SET name=?, uri=?, expires_at=?, created_at=?, state='active'"
            " WHERE id=?", (name, uri, expires_at, now(), upload_id))

    @_mapped
    def end_upload(self, upload_id: int, state: str) -> None:
        self.conn.execute("UPDATE uploads SET state=?, ended_at=? WHERE id=?",
                          (state, now(), upload_id))

    @_mapped
    def open_uploads(self, backend: str, *, job_ref: str | None = None) -> list[UploadRow]:
        """Uploads on `backend` not known to be gone, held by online runs (`job_ref` None) or
        by the batch job `job_ref`."""
        sql = ("SELECT * FROM uploads WHERE state IN ('uploading', 'active') AND backend=?"
               + (" AND job_ref=?" if job_ref is not None else " AND job_ref IS NULL")
               + " ORDER BY id")
        args: tuple[Any, ...] = (backend, job_ref) if job_ref is not None else (backend,)
        return [UploadRow(**dict(r)) for r in self.conn.execute(sql, args)]

    @_mapped
    def adopt_upload(self, upload_id: int, run_id: int) -> None:
        self.conn.execute("UPDATE uploads SET run_id=? WHERE id=?", (run_id, upload_id))

    # --- batch jobs ----------------------------------------------------------------------------

    _OPEN_JOB = "state NOT IN ('collected', 'abandoned')"

    @_mapped
    def begin_batch_job(self, *, run_id: int, class_dir: str, backend: str, model: str,
                        display_name: str, mode: str, round: int,
                        items: Sequence[BatchItemIn]) -> tuple[int, list[int]]:
        """The job and one `rendered` attempt per item, in one commit, before the provider's
        job is created (a crash in between leaves a `preparing` job to recover)."""
        stamp = now()
        with self.atomic():
            cur = self.conn.execute(
                "INSERT INTO batch_jobs (run_id, class_dir, backend, model, display_name, mode,"
                " round, state, requests, created_at) VALUES (?,?,?,?,?,?,?,'preparing',?,?)",
                (run_id, class_dir, backend, model, display_name, mode, round, len(items),
                 stamp))
            job_id = int(cur.lastrowid or 0)
            self.conn.executemany(
                "INSERT OR IGNORE INTO requests (hash, prefix_hash, model, body_json, created_at)"
                " VALUES (?,?,?,?,?)",
                [(i.request.hash, i.request.prefix_hash, i.request.model,
                  json.dumps(i.request.body, default=str), stamp) for i in items])
            ids = []
            for i in items:
                a = self.conn.execute(
                    "INSERT INTO attempts (run_id, student_id, submission_id, request_hash,"
                    " sample, n, state, job_ref, created_at, redaction_json)"
                    " VALUES (?,?,?,?,0,?,'rendered',?,?,?)",
                    (run_id, i.student_id, i.submission_id, i.request.hash, i.n, display_name,
                     stamp, json.dumps(dict(i.redaction), ensure_ascii=False)
                     if i.redaction else None))
                aid = int(a.lastrowid or 0)
                ids.append(aid)
                self.conn.execute(
                    "INSERT INTO batch_items (attempt_id, job_id, previous, epoch, request_json,"
                    " flags_json, state) VALUES (?,?,?,?,?,?,'pending')",
                    (aid, job_id, i.previous, i.epoch, i.request_json, i.flags_json))
        return job_id, ids

    @_mapped
    def batch_job_created(self, job_id: int, *, name: str, state: str,
                          input_ref: str | None) -> None:
        """The provider accepted the job: its attempts are `sent`."""
        stamp = now()
        with self.atomic():
            self.conn.execute(
                "UPDATE batch_jobs SET name=?, state=?, input_ref=COALESCE(?, input_ref),"
                " submitted_at=? WHERE id=?", (name, state, input_ref, stamp, job_id))
            self.conn.execute(
                "UPDATE attempts SET state='sent', sent_at=? WHERE state='rendered' AND id IN"
                " (SELECT attempt_id FROM batch_items WHERE job_id=?)", (stamp, job_id))

    @_mapped
    def batch_job_input(self, job_id: int, input_ref: str) -> None:
        self.conn.execute("UPDATE batch_jobs SET input_ref=? WHERE id=?", (input_ref, job_id))

    @_mapped
    def batch_job_state(self, job_id: int, state: str, *, ended: bool = False,
                        error: str | None = None) -> None:
        self.conn.execute(
            "UPDATE batch_jobs SET state=?, ended_at=CASE WHEN ? THEN COALESCE(ended_at, ?)"
            " ELSE ended_at END, error=COALESCE(?, error) WHERE id=?",
            (state, int(ended), now(), error, job_id))

    @_mapped
    def batch_job_collected(self, job_id: int, state: str = "collected") -> None:
        self.conn.execute("UPDATE batch_jobs SET state=?, collected_at=? WHERE id=?",
                          (state, now(), job_id))

    @_mapped
    def batch_jobs(self, class_dir: str | None = None, *, open_only: bool = False
                   ) -> list[BatchJobRow]:
        sql, args = "SELECT * FROM batch_jobs WHERE 1=1", []
        if class_dir is not None:
            sql += " AND class_dir=?"
            args.append(class_dir)
        if open_only:
            sql += " AND " + self._OPEN_JOB
        return [BatchJobRow(**dict(r)) for r in self.conn.execute(sql + " ORDER BY id", args)]

    @_mapped
    def batch_job(self, ref: str) -> BatchJobRow | None:
        """A job by the provider's name or our display name."""
        r = self.conn.execute("SELECT * FROM batch_jobs WHERE name=? OR display_name=?",
                              (ref, ref)).fetchone()
        return BatchJobRow(**dict(r)) if r is not None else None

    _ITEM = ("SELECT b.attempt_id, b.job_id, a.run_id, a.student_id, a.submission_id,"
             " a.request_hash, a.n, b.epoch, b.previous, b.request_json, b.flags_json,"
             " a.redaction_json, b.state FROM batch_items b JOIN attempts a"
             " ON a.id = b.attempt_id")

    @staticmethod
    def _item(r: sqlite3.Row) -> BatchItem:
        return BatchItem(r["attempt_id"], r["job_id"], r["run_id"], r["student_id"],
                         r["submission_id"], r["request_hash"], r["n"], r["epoch"],
                         r["previous"], r["request_json"], r["flags_json"],
                         _loads(r["redaction_json"], {}), r["state"])

    @_mapped
    def batch_item(self, attempt_id: int) -> BatchItem | None:
        r = self.conn.execute(self._ITEM + " WHERE b.attempt_id=?", (attempt_id,)).fetchone()
        return self._item(r) if r is not None else None

    @_mapped
    def batch_items(self, job_id: int, state: str | None = None) -> list[BatchItem]:
        sql = self._ITEM + " WHERE b.job_id=?" + (" AND b.state=?" if state else "")
        args: tuple[Any, ...] = (job_id, state) if state else (job_id,)
        return [self._item(r) for r in self.conn.execute(sql + " ORDER BY b.attempt_id", args)]

    @_mapped
    def batch_unfollowed(self, class_dir: str) -> list[BatchItem]:
        """Items judged to need a second round whose second round was never sent (or sent in
        a job that was never created)."""
        sql = (self._ITEM + " JOIN batch_jobs j ON j.id = b.job_id WHERE j.class_dir=? AND"
               " b.state='reasked' AND NOT EXISTS (SELECT 1 FROM batch_items f"
               " WHERE f.previous = b.attempt_id AND f.state != 'dropped')"
               " ORDER BY b.attempt_id")
        return [self._item(r) for r in self.conn.execute(sql, (class_dir,))]

    @_mapped
    def batch_item_done(self, attempt_id: int, state: str, error: str | None = None) -> None:
        self.conn.execute("UPDATE batch_items SET state=?, error=? WHERE attempt_id=?",
                          (state, error, attempt_id))

    @_mapped
    def batch_drop_job(self, job_id: int, reason: str) -> None:
        """A job that was never created: its attempts failed, its students free to submit."""
        with self.atomic():
            self.conn.execute(
                "UPDATE attempts SET state='failed', error=? WHERE id IN"
                " (SELECT attempt_id FROM batch_items WHERE job_id=? AND state='pending')",
                (reason, job_id))
            self.conn.execute("UPDATE batch_items SET state='dropped', error=? WHERE job_id=?"
                              " AND state='pending'", (reason, job_id))
            self.conn.execute("UPDATE batch_jobs SET state='abandoned', error=?, collected_at=?"
                              " WHERE id=?", (reason, now(), job_id))

    @_mapped
    def batch_busy(self, class_dir: str) -> dict[tuple[str, int], str]:
        """(student, submission) -> 'pending' for work in an open job, 'failed' for work whose
        latest batch line failed (resubmitted only with --retry-failed)."""
        rows = self.conn.execute(
            "SELECT a.student_id, a.submission_id, b.state FROM batch_items b"
            " JOIN attempts a ON a.id = b.attempt_id JOIN batch_jobs j ON j.id = b.job_id"
            " WHERE j.class_dir=? AND b.state IN ('pending', 'failed', 'stored', 'reasked')"
            " ORDER BY b.attempt_id", (class_dir,))
        out: dict[tuple[str, int], str] = {}
        for r in rows:  # the latest item decides; a re-asked one is still in flight
            key = (r["student_id"], r["submission_id"])
            if r["state"] == "stored":
                out.pop(key, None)
            else:
                out[key] = "pending" if r["state"] == "reasked" else r["state"]
        return out

    @_mapped
    def batch_job_counts(self, job_id: int) -> dict[str, float]:
        """Items per state, and the cost of the replies stored so far."""
        out: dict[str, float] = {r[0]: r[1] for r in self.conn.execute(
            "SELECT state, COUNT(*) FROM batch_items WHERE job_id=? GROUP BY state", (job_id,))}
        out["cost_usd"] = float(self.conn.execute(
            "SELECT COALESCE(SUM(a.cost_usd), 0) FROM attempts a JOIN batch_items b"
            " ON b.attempt_id = a.id WHERE b.job_id=?", (job_id,)).fetchone()[0])
        return out

    @_mapped
    def reply_of(self, attempt_id: int) -> StoredResponse | None:
        """The reply an attempt's request got (from whichever attempt paid for it)."""
        r = self.conn.execute("SELECT request_hash FROM attempts WHERE id=?",
                              (attempt_id,)).fetchone()
        return self.response_for(r[0]) if r is not None else None

    # --- grades: what a student got ---------------------------------------------------------

    @_mapped
    def latest_grade(self, *, student_id: str, submission_id: int, fingerprint: str,
                     sample: int = 0, epoch: int | None = None,
                     samples: int = 1) -> GradeVersion | None:
        """The newest grade version for this student's submission under this fingerprint that
        combines `samples` samples (only of `epoch`, when given)."""
        sql = ("SELECT id, run_id, status, total, epoch, config_hash, samples, exemplars_hash"
               " FROM grades"
               " WHERE student_id=? AND submission_id=? AND fingerprint=? AND sample=?"
               " AND samples=?")
        args: tuple[Any, ...] = (student_id, submission_id, fingerprint, sample, samples)
        if epoch is not None:
            sql += " AND epoch=?"
            args += (epoch,)
        r = self.conn.execute(sql + " ORDER BY id DESC LIMIT 1", args).fetchone()
        if r is None:
            return None
        flags = [FlagRow(f["reason"], f["message"]) for f in self.conn.execute(
            "SELECT reason, message FROM flags WHERE grade_id=? ORDER BY id", (r["id"],))]
        return GradeVersion(r["id"], r["run_id"], r["status"], r["total"], r["epoch"],
                            r["config_hash"], flags, r["samples"], r["exemplars_hash"])

    @_mapped
    def save_grade(self, g: GradeRecord) -> int:
        """Add a grade version with its scores and flags; the attempts that produced it become
        `stored`. Idempotent: the same version twice keeps the first and returns its id."""
        with self.atomic():
            cur = self.conn.execute(
                "INSERT OR IGNORE INTO grades (student_id, submission_id, fingerprint, sample,"
                " epoch, config_hash, run_id, status, total, max_total, percent, overall_comment,"
                " needs_review, review_reason, model, model_version, created_at, samples,"
                " exemplars_hash) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (g.student_id, g.submission_id, g.fingerprint, g.sample, g.epoch,
                 g.config_hash, g.run_id, g.status, g.total, g.max_total, g.percent,
                 g.overall_comment, int(g.needs_review), g.review_reason, g.model,
                 g.model_version, now(), g.samples, g.exemplars_hash))
            if cur.rowcount:
                gid = int(cur.lastrowid or 0)
                self.conn.executemany(
                    "INSERT INTO grade_exemplars (grade_id, position, exemplar, source,"
                    " student_id, submission_id, similarity) VALUES (?,?,?,?,?,?,?)",
                    [(gid, i, e.exemplar, e.source, e.student_id, e.submission_id,
                      e.similarity) for i, e in enumerate(g.exemplars)])
                self.conn.executemany(
                    "INSERT INTO criterion_scores (grade_id, criterion_id, position, score,"
                    " max_points, justification, evidence_json, feedback, spread, samples_json,"
                    " items_json) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    [(gid, c.criterion_id, i, c.score, c.max_points, c.justification,
                      json.dumps(c.evidence), c.feedback, c.spread,
                      json.dumps(list(c.samples)) if c.samples else None,
                      json.dumps([[t.item_id, t.met, t.quote] for t in c.items])
                      if c.items else None)
                     for i, c in enumerate(g.criteria)])
                stamp = now()
                self.conn.executemany(
                    "INSERT INTO flags (grade_id, run_id, student_id, reason, message,"
                    " created_at) VALUES (?,?,?,?,?,?)",
                    [(gid, g.run_id, g.student_id, f.reason, f.message, stamp)
                     for f in g.flags])
            else:
                gid = int(self.conn.execute(
                    "SELECT id FROM grades WHERE student_id=? AND submission_id=? AND"
                    " fingerprint=? AND sample=? AND epoch=? AND config_hash=?",
                    (g.student_id, g.submission_id, g.fingerprint, g.sample, g.epoch,
                     g.config_hash)).fetchone()[0])
            if g.attempt_ids:
                self.conn.executemany(
                    "UPDATE attempts SET state='stored', grade_id=? WHERE id=?",
                    [(gid, a) for a in g.attempt_ids])
        return gid

    @_mapped
    def grade_exemplars(self, grade_id: int) -> list[ExemplarUse]:
        """The graded examples a grade version was shown, in prompt order."""
        return [ExemplarUse(exemplar=r["exemplar"], source=r["source"],
                            similarity=r["similarity"], student_id=r["student_id"],
                            submission_id=r["submission_id"])
                for r in self.conn.execute(
                    "SELECT * FROM grade_exemplars WHERE grade_id=? ORDER BY position",
                    (grade_id,))]

    @_mapped
    def submission_facts(self, ids: Sequence[int]) -> dict[int, tuple[str | None, str | None,
                                                                        str | None]]:
        """(body hash, the student's name, e-mail) of these submissions."""
        out: dict[int, tuple[str | None, str | None, str | None]] = {}
        for r in self.conn.execute(
                "SELECT s.id, s.body_hash, t.name, t.email FROM submissions s"
                " JOIN students t ON t.id = s.student_id"
                f" WHERE s.id IN ({','.join('?' * len(ids))})", tuple(ids)):
            out[int(r["id"])] = (r["body_hash"], r["name"], r["email"])
        return out

    @_mapped
    def add_flags(self, grade_id: int, run_id: int, student_id: str,
                  flags: Sequence[FlagRow]) -> None:
        """Flags found after a grade was stored (the run's score-jump check)."""
        stamp = now()
        with self.atomic():
            self.conn.executemany(
                "INSERT INTO flags (grade_id, run_id, student_id, reason, message, created_at)"
                " VALUES (?,?,?,?,?,?)",
                [(grade_id, run_id, student_id, f.reason, f.message, stamp) for f in flags])

    @_mapped
    def sent_parts(self, run_id: int) -> dict[str, tuple[float, list[dict[str, Any]]]]:
        """(percent, the student's parts of the first request as sent) of every student of the
        run whose grade has a percent and was paid for by an attempt of its own."""
        out: dict[str, tuple[float, list[dict[str, Any]]]] = {}
        for r in self.conn.execute(
                "SELECT o.student_id, g.percent, q.body_json FROM outcomes o"
                " JOIN grades g ON g.id = o.grade_id"
                " JOIN attempts a ON a.grade_id = g.id AND a.n = 1"
                " JOIN requests q ON q.hash = a.request_hash"
                " WHERE o.run_id=? AND g.percent IS NOT NULL", (run_id,)):
            body = _loads(r["body_json"], {})
            parts = body.get("parts") if isinstance(body, dict) else None
            out[r["student_id"]] = (float(r["percent"]),
                                    [p for p in parts or [] if isinstance(p, dict)])
        return out

    @_mapped
    def record_outcome(self, o: OutcomeRecord) -> None:
        with self.atomic():
            if o.submission_id is None:  # otherwise upsert_submission wrote the student
                self._upsert_student(o.student_id, o.name, o.email, o.source)
            self.conn.execute(
                "INSERT OR REPLACE INTO outcomes (run_id, student_id, submission_id, grade_id,"
                " status, reused, reason, message) VALUES (?,?,?,?,?,?,?,?)",
                (o.run_id, o.student_id, o.submission_id, o.grade_id, o.status, int(o.reused),
                 o.reason, o.message))

    # --- reads for reports -------------------------------------------------------------------

    @_mapped
    def grade_count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM grades").fetchone()[0])

    @_mapped
    def run_student_ids(self, run_id: int) -> set[str]:
        return {r[0] for r in self.conn.execute(
            "SELECT student_id FROM outcomes WHERE run_id=?", (run_id,))}

    @_mapped
    def usage(self, run_id: int) -> dict[str, float]:
        """Calls made, tokens billed and what they cost in a run (replies reused from the ledger
        cost nothing). `cost_usd` sums the priced calls; `unpriced` counts answered calls the
        model table had no price for; `cache_create_usd` and `cache_storage_usd` are what the
        run's explicit caches cost to create and to keep (storage is booked when a cache
        ends)."""
        row = self.conn.execute(
            "SELECT COUNT(*) AS calls, COALESCE(SUM(prompt_tokens),0) AS prompt_tokens,"
            " COALESCE(SUM(output_tokens),0) AS output_tokens,"
            " COALESCE(SUM(thinking_tokens),0) AS thinking_tokens,"
            " COALESCE(SUM(cached_tokens),0) AS cached_tokens,"
            " COALESCE(SUM(latency_ms),0) AS latency_ms,"
            " COALESCE(SUM(retries),0) AS retries,"
            " COALESCE(SUM(cost_usd),0) AS cost_usd,"
            " COUNT(*) FILTER (WHERE answered_at IS NOT NULL AND cost_usd IS NULL) AS unpriced"
            " FROM attempts WHERE run_id=? AND state != 'rendered'", (run_id,),
        ).fetchone()
        cache = self.conn.execute(
            "SELECT COUNT(*) AS caches, COALESCE(SUM(create_usd),0) AS cache_create_usd,"
            " COALESCE(SUM(storage_usd),0) AS cache_storage_usd FROM caches"
            " WHERE run_id=? AND name IS NOT NULL", (run_id,)).fetchone()
        return {**dict(row), **dict(cache)}

    @_mapped
    def served_models(self, run_id: int) -> list[ServedModel]:
        """The model versions (and lifecycle stages) that answered the run's calls."""
        return [ServedModel(r[0], r[1], r[2]) for r in self.conn.execute(
            "SELECT model_version, model_status, COUNT(*) FROM attempts"
            " WHERE run_id=? AND answered_at IS NOT NULL"
            " GROUP BY model_version, model_status ORDER BY COUNT(*) DESC", (run_id,))]

    def _identical(self, run_id: int) -> dict[str, list[str]]:
        """Students of the run whose whole submission is byte-identical to someone else's."""
        out: dict[str, list[str]] = {}
        for r in self.conn.execute(
            "SELECT group_concat(o.student_id, char(31)) AS ids FROM outcomes o"
            " JOIN submissions sub ON sub.id = o.submission_id"
            " WHERE o.run_id=? AND sub.body_hash IS NOT NULL"
            " GROUP BY sub.body_hash HAVING COUNT(*) > 1", (run_id,)):
            ids = sorted(r["ids"].split("\x1f"))
            for sid in ids:
                out[sid] = [i for i in ids if i != sid]
        return out

    def results(self, run_id: int) -> Iterator[StudentResult]:
        """Every student's outcome in a run, ordered by student id, streamed row by row."""
        try:
            yield from self._results(run_id)
        except sqlite3.Error as e:
            raise _store_error(e, self.path) from e

    def _results(self, run_id: int) -> Iterator[StudentResult]:
        identical = self._identical(run_id)
        rows = self.conn.execute(
            "SELECT o.*, s.name, s.email, s.source, sub.files_json, sub.late, sub.notes_json,"
            " g.status AS grade_status, g.total, g.max_total, g.percent, g.overall_comment,"
            " g.needs_review, g.review_reason, g.model_version, g.samples FROM outcomes o"
            " JOIN students s ON s.id = o.student_id"
            " LEFT JOIN submissions sub ON sub.id = o.submission_id"
            " LEFT JOIN grades g ON g.id = o.grade_id WHERE o.run_id=? ORDER BY o.student_id",
            (run_id,),
        )
        while batch := rows.fetchmany(_BATCH):
            yield from self._result_batch(batch, identical)

    def _result_batch(self, batch: list[sqlite3.Row],
                      identical: dict[str, list[str]]) -> Iterator[StudentResult]:
        """Results for a batch of outcome rows: scores and flags read with one query each."""
        gids = [r["grade_id"] for r in batch if r["grade_id"] is not None]
        marks = ",".join("?" * len(gids))
        crits: dict[int, list[CriterionRow]] = {}
        flags: dict[int, list[FlagRow]] = {}
        if gids:
            cur = self.conn.cursor()
            cur.row_factory = None  # plain tuples: 60,000 rows for a class of 10,000
            for (gid, cid, score, max_points, justification, evidence, feedback, spread,
                 samples, items) in cur.execute(
                    "SELECT grade_id, criterion_id, score, max_points, justification,"
                    " evidence_json, feedback, spread, samples_json, items_json"
                    f" FROM criterion_scores WHERE grade_id IN ({marks})"
                    " ORDER BY grade_id, position", gids):
                crits.setdefault(gid, []).append(CriterionRow(
                    cid, score, max_points, justification,
                    json.loads(evidence) if evidence != "[]" else [], feedback, spread,
                    _loads(samples, []), [ItemRow(*t) for t in _loads(items, [])]))
            for gid, reason, message in cur.execute(
                    f"SELECT grade_id, reason, message FROM flags WHERE grade_id IN ({marks})"
                    " ORDER BY id", gids):
                flags.setdefault(gid, []).append(FlagRow(reason, message))
        for r in batch:
            res = StudentResult(
                student_id=r["student_id"], name=r["name"], email=r["email"], status=r["status"],
                reason=r["reason"], message=r["message"], reused=bool(r["reused"]),
                late=bool(r["late"]), files=_loads(r["files_json"], []),
                submission_id=r["submission_id"], notes=_loads(r["notes_json"], []),
                source=r["source"],
                grade_id=r["grade_id"], grade_status=r["grade_status"], total=r["total"],
                max_total=r["max_total"], percent=r["percent"],
                overall_comment=r["overall_comment"], needs_review=bool(r["needs_review"]),
                review_reason=r["review_reason"], model_version=r["model_version"],
                samples=r["samples"] or 1,
            )
            if r["grade_id"] is not None:
                res.criteria = crits.get(r["grade_id"], [])
                res.flags = flags.get(r["grade_id"], [])
            if r["reason"] and not any(f.reason == r["reason"] for f in res.flags):
                res.flags.insert(0, FlagRow(r["reason"], r["message"] or r["reason"]))
            others = identical.get(res.student_id)
            if others:
                res.flags.append(FlagRow(
                    "identical_to", "the whole submission is byte-identical to that of "
                    + ", ".join(others) + " (graded once); check for copying or an unchanged "
                    "starter file"))
            yield res

    @_mapped
    def sent_text(self, submission_id: int, grade_id: int | None = None) -> SentText | None:
        """The student's parts of the first request of grade `grade_id` (the request that
        grade answers), else of the first request sent for this submission; else those of a
        byte-identical submission's request (its reply was shared); None when nothing was ever
        sent (flagged at intake) or the request predates the ledger."""
        row = self.conn.execute(
            "SELECT r.body_json, a.redaction_json FROM attempts a"
            " JOIN requests r ON r.hash = a.request_hash"
            " WHERE a.grade_id=? AND a.submission_id=? ORDER BY a.n, a.id LIMIT 1",
            (grade_id, submission_id)).fetchone() if grade_id is not None else None
        if row is None:
            row = self.conn.execute(
                "SELECT r.body_json, a.redaction_json FROM attempts a"
                " JOIN requests r ON r.hash = a.request_hash"
                " WHERE a.submission_id=? ORDER BY a.n, a.id LIMIT 1",
                (submission_id,)).fetchone()
        own = row is not None
        if row is None:
            row = self.conn.execute(
                "SELECT r.body_json, a.redaction_json FROM submissions s"
                " JOIN submissions o ON o.body_hash = s.body_hash AND o.id != s.id"
                " JOIN attempts a ON a.submission_id = o.id"
                " JOIN requests r ON r.hash = a.request_hash"
                " WHERE s.id=? AND s.body_hash IS NOT NULL ORDER BY a.n, a.id LIMIT 1",
                (submission_id,)).fetchone()
        if row is None:
            return None
        parts = _loads(row["body_json"], {}).get("parts")
        if not isinstance(parts, list):
            return None
        mapping = _loads(row["redaction_json"], {})
        return SentText(parts=[p for p in parts if isinstance(p, dict)], own=own,
                        redaction={str(k): str(v) for k, v in mapping.items()}
                        if isinstance(mapping, dict) else {})

    # --- teacher decisions -------------------------------------------------------------------

    @_mapped
    def decisions(self) -> dict[str, list[Decision]]:
        """Every teacher decision, grouped by student, oldest first."""
        out: dict[str, list[Decision]] = {}
        for r in self.conn.execute("SELECT * FROM decisions ORDER BY id"):
            out.setdefault(r["student_id"], []).append(Decision(
                student_id=r["student_id"], field=r["field"], value=r["value"],
                criterion_id=r["criterion_id"], submission_id=r["submission_id"],
                ai_basis=r["ai_basis"], run_id=r["run_id"], grade_id=r["grade_id"],
                cell=r["cell"], workbook_sha256=r["workbook_sha256"],
                decided_at=r["decided_at"], id=r["id"]))
        return out

    @_mapped
    def add_decisions(self, decisions: Sequence[Decision]) -> None:
        """Append decisions in one transaction (nothing is ever updated or deleted)."""
        stamp = now()
        with self.atomic():
            self.conn.executemany(
                "INSERT INTO decisions (student_id, criterion_id, field, value, submission_id,"
                " ai_basis, run_id, grade_id, cell, workbook_sha256, decided_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [(d.student_id, d.criterion_id, d.field, d.value, d.submission_id, d.ai_basis,
                  d.run_id, d.grade_id, d.cell, d.workbook_sha256, d.decided_at or stamp)
                 for d in decisions])

    # --- tuning jobs ---------------------------------------------------------------------------

    @_mapped
    def graded_exchange(self, grade_id: int) -> tuple[str, str, list[dict[str, Any]],
                                                      str | None, dict[str, str]] | None:
        """What a grade was asked and answered: (system, static prefix, the first request's
        student parts as the ledger keeps them, the last reply's text, the redaction mapping);
        None when the grade has no request of its own (shared, or from before the ledger)."""
        first = self.conn.execute(
            "SELECT p.system, p.static_prefix, q.body_json, a.redaction_json FROM attempts a"
            " JOIN requests q ON q.hash = a.request_hash JOIN prefixes p ON p.hash ="
            " q.prefix_hash WHERE a.grade_id=? ORDER BY a.n, a.id LIMIT 1",
            (grade_id,)).fetchone()
        if first is None:
            return None
        last = self.conn.execute(
            "SELECT r.text FROM attempts a JOIN responses r ON r.request_hash = a.request_hash"
            " WHERE a.grade_id=? ORDER BY a.n DESC, a.id DESC LIMIT 1", (grade_id,)).fetchone()
        parts = _loads(first["body_json"], {}).get("parts")
        mapping = _loads(first["redaction_json"], {})
        return (first["system"], first["static_prefix"],
                [p for p in parts or [] if isinstance(p, dict)],
                last["text"] if last is not None else None,
                {str(k): str(v) for k, v in mapping.items()} if isinstance(mapping, dict)
                else {})

    @_mapped
    def save_tuning_job(self, job: TuningJob) -> None:
        stamp = now()
        with self.atomic():
            self.conn.execute(
                "INSERT INTO tuning_jobs (name, display_name, base_model, train_uri,"
                " validation_uri, train_examples, validation_examples, state, tuned_model,"
                " endpoint, error, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (job.name, job.display_name, job.base_model, job.train_uri, job.validation_uri,
                 job.train_examples, job.validation_examples, job.state, job.tuned_model,
                 job.endpoint, job.error, stamp, stamp))

    @_mapped
    def update_tuning_job(self, name: str, *, state: str, tuned_model: str | None,
                          endpoint: str | None, error: str | None) -> None:
        with self.atomic():
            self.conn.execute(
                "UPDATE tuning_jobs SET state=?, tuned_model=?, endpoint=?, error=?,"
                " updated_at=? WHERE name=?", (state, tuned_model, endpoint, error, now(), name))

    @_mapped
    def tuning_jobs(self) -> list[TuningJob]:
        """Every recorded tuning job, newest first."""
        return [TuningJob(**{k: v for k, v in dict(r).items() if k != "id"})
                for r in self.conn.execute("SELECT * FROM tuning_jobs ORDER BY id DESC")]

    # --- human scores and calibrations (grading quality) -----------------------------------

    @_mapped
    def import_human_scores(self, class_dir: str, path: str, sha256: str,
                            scores: Sequence[HumanScore]) -> int | None:
        """Store one file's human scores in one transaction; None when this class already
        holds that file (same hash): importing twice changes nothing."""
        with self.atomic():
            cur = self.conn.execute(
                "INSERT OR IGNORE INTO human_imports (class_dir, path, sha256, rows, imported_at)"
                " VALUES (?,?,?,?,?)", (class_dir, path, sha256, len(scores), now()))
            if not cur.rowcount:
                return None
            import_id = int(cur.lastrowid or 0)
            self.conn.executemany(
                "INSERT INTO human_scores (import_id, class_dir, student_id, criterion_id, rater,"
                " score) VALUES (?,?,?,?,?,?)",
                [(import_id, class_dir, h.student_id, h.criterion_id, h.rater, h.score)
                 for h in scores])
        return import_id

    @_mapped
    def human_scores(self, class_dir: str) -> list[HumanScore]:
        """The class's human scores: per (student, criterion, rater), the newest import's."""
        rows = self.conn.execute(
            "SELECT student_id, criterion_id, rater, score FROM human_scores h"
            " WHERE class_dir=? AND import_id = (SELECT MAX(import_id) FROM human_scores x"
            " WHERE x.class_dir = h.class_dir AND x.student_id = h.student_id"
            " AND x.criterion_id = h.criterion_id AND x.rater = h.rater)"
            " ORDER BY rater, student_id, criterion_id", (class_dir,))
        return [HumanScore(r["student_id"], r["criterion_id"], r["rater"], r["score"])
                for r in rows]

    @_mapped
    def save_calibration(self, *, class_dir: str, fingerprint: str, run_id: int, rater: str,
                         students: Sequence[str], figures: dict[str, dict[str, Any]]) -> int:
        with self.atomic():
            cur = self.conn.execute(
                "INSERT INTO calibrations (class_dir, fingerprint, run_id, rater, created_at,"
                " students_json, figures_json) VALUES (?,?,?,?,?,?,?)",
                (class_dir, fingerprint, run_id, rater, now(), json.dumps(list(students)),
                 json.dumps(figures)))
        return int(cur.lastrowid or 0)

    @_mapped
    def latest_calibration(self, class_dir: str, fingerprint: str) -> Calibration | None:
        r = self.conn.execute(
            "SELECT * FROM calibrations WHERE class_dir=? AND fingerprint=?"
            " ORDER BY id DESC LIMIT 1", (class_dir, fingerprint)).fetchone()
        if r is None:
            return None
        return Calibration(r["id"], r["class_dir"], r["fingerprint"], r["run_id"], r["rater"],
                           r["created_at"], json.loads(r["students_json"]),
                           json.loads(r["figures_json"]))
