"""`grade tune`: supervised tuning of a Gemini model on the teacher's reviewed grades (Gemini
Enterprise / Vertex AI only: the Developer API has no model tuning).

- `export()` writes the dataset in the documented JSONL format, one example per line:
  `{"systemInstruction": {"parts": [...]}, "contents": [{"role": "user", ...}, {"role": "model",
  ...}]}`. The user turn is exactly what grading sent for that student (the marking scheme, then
  the student's parts, as the response ledger kept them: redacted when the run redacted); the
  model turn is the JSON the teacher's final grade implies (the model's reply with the teacher's
  scores, feedback and comment in place of the model's, names in the teacher's text replaced by
  the request's placeholders). Only reviewed grades count (approved, or scored by hand); a
  deterministic share (by a hash of the student id) is held out as the validation split, and a
  `heldout_scores.csv` of the teacher's final scores on it serves `grade human import` and
  `grade eval --compare` (base against tuned, before anyone grades a class with it). Fewer than
  `MIN_EXAMPLES` training examples is refused.
- `start()` uploads the files to the staging bucket (`staging_bucket`), starts the job with
  `client.tunings.tune` and records it; `status()` follows (or cancels) recorded jobs. A
  succeeded job's model grades with `grade run --backend enterprise --model tuned:NAME`.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grader.backends import SupportsFiles, SupportsTuning, TuningInfo, create
from grader.config.settings import Settings, auto_backend, db_path, out_dir
from grader.errors import ConfigError, InputError, StoreError
from grader.escape import escape_cell
from grader.grading.records import TuningJob
from grader.intake.discover import Submission
from grader.intake.redact import Redactor
from grader.review.final import FinalStudent, finals, load_rubric
from grader.store import Store
from grader.store.opening import class_run, class_store

# The documented minimum of a Gemini supervised tuning dataset (Vertex AI: "minimum 16
# examples, 100-500 recommended"; the current page says "start with 100"), and the largest
# validation set it takes (256).
MIN_EXAMPLES = 16
MAX_VALIDATION = 256
TRAIN, VALIDATION, HELDOUT, MANIFEST = ("train.jsonl", "validation.jsonl",
                                        "heldout_scores.csv", "tuning.json")
TEACHER = "teacher-final"  # the rater name of heldout_scores.csv
Redact = Callable[[str], str]


@dataclass
class Exported:
    out: Path
    run_id: int
    train: int
    validation: int
    corrections: int
    approvals: int
    skipped: dict[str, int] = field(default_factory=dict)


def _placeholders(text: str, mapping: dict[str, str], redact: Redact | None) -> str:
    """The teacher's text as it may go into the dataset: what the request's placeholders stand
    for put back as them, then anything else the run's redaction finds (`redact`)."""
    for tag, original in sorted(mapping.items(), key=lambda kv: -len(kv[1])):
        if original:
            text = text.replace(original, tag)
    return redact(text) if redact is not None else text


def _points(v: float) -> float | int:
    return int(v) if float(v).is_integer() else float(v)


def model_turn(reply: dict[str, Any], fs: FinalStudent, mapping: dict[str, str],
               redact: Redact | None = None) -> str | None:
    """The JSON the teacher's final grade implies (None: a checklist criterion was rescored by
    hand, which no checklist answer can express)."""
    crits: dict[str, Any] = {}
    given = reply.get("criteria") if isinstance(reply.get("criteria"), dict) else {}
    for c in fs.criteria:
        theirs = given.get(c.criterion.id) if isinstance(given, dict) else None
        if not isinstance(theirs, dict) or c.final is None:
            return None
        if c.criterion.checklist:
            if c.overridden:
                return None
            crits[c.criterion.id] = theirs
            continue
        feedback = (_placeholders(c.teacher_feedback, mapping, redact) if c.teacher_feedback
                    else None)
        crits[c.criterion.id] = {
            "justification": feedback if c.overridden and feedback else
            str(theirs.get("justification", "")),
            "evidence": list(theirs.get("evidence") or []),
            "score": _points(c.final),
            "feedback": feedback or str(theirs.get("feedback", "")),
        }
    comment = fs.teacher_comment
    return json.dumps({
        "criteria": crits,
        "overall_comment": _placeholders(comment, mapping, redact) if comment
        else str(reply.get("overall_comment", "")),
        "needs_review": False, "review_reason": ""}, ensure_ascii=False)


def _line(system: str, prefix: str, parts: list[dict[str, Any]], answer: str) -> dict[str, Any]:
    return {"systemInstruction": {"parts": [{"text": system}]},
            "contents": [{"role": "user", "parts": [{"text": prefix},
                                                    *({"text": p["text"]} for p in parts)]},
                         {"role": "model", "parts": [{"text": answer}]}]}


def _held_out(student_id: str) -> str:
    return hashlib.sha256(f"heldout/1\x00{student_id}".encode()).hexdigest()


def export(class_dir: Path, settings: Settings, *, out: Path | None = None,
           run_id: int | None = None, validation: float = 0.1) -> Exported:
    """Write train.jsonl, validation.jsonl, heldout_scores.csv and tuning.json to `out`
    (default: <reports>/tuning)."""
    path = db_path(class_dir, settings)
    if not 0 < validation < 1:
        raise InputError(f"--validation {validation:g} is not a share between 0 and 1",
                         fix="pass --validation 0.1 (a tenth held out)")
    with class_store(class_dir, settings) as store:
        run = class_run(store, class_dir, run_id)
        if run is None:
            raise StoreError("the store holds no run of this class", path=path,
                             fix=f"run `grade run {class_dir}` first")
        rubric = load_rubric(store, run.id)
        if rubric.reference_files:
            raise InputError("the rubric has reference files, which a tuning dataset of text "
                             "cannot carry", path=run.rubric_path,
                             fix="tune with a rubric without reference_files")
        students = list(finals(store, run.id, rubric))
        redactor = (Redactor([Submission(student_id=fs.student_id, name=fs.result.name,
                                         email=fs.result.email) for fs in students])
                    if _redacted(run.settings, run.backend) else None)
        rows, skipped = _examples(store, students, redactor)
    rows.sort(key=lambda r: _held_out(r[0].student_id))
    n_val = min(MAX_VALIDATION, max(1, round(validation * len(rows)))) if rows else 0
    held, train = rows[:n_val], rows[n_val:]
    if len(train) < MIN_EXAMPLES:
        raise InputError(
            f"only {len(train)} teacher-reviewed grades to train on (of {len(rows)}, "
            f"{n_val} held out); supervised tuning needs at least {MIN_EXAMPLES} examples, "
            "and Google recommends 100 to 500", path=class_dir,
            fix="approve or correct more grades in review.xlsx, import them with `grade "
                "review import`, and export again")
    target = out if out is not None else out_dir(class_dir, settings) / "tuning"
    target.mkdir(parents=True, exist_ok=True)
    for name, chosen in ((TRAIN, train), (VALIDATION, held)):
        (target / name).write_text("".join(json.dumps(line, ensure_ascii=False) + "\n"
                                           for _, line in chosen), encoding="utf-8")
    with (target / HELDOUT).open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["student_id", "criterion", "score", "rater"])
        for fs, _ in held:
            for c in fs.criteria:
                w.writerow([escape_cell(fs.student_id), c.criterion.id, c.final, TEACHER])
    corrections = sum(1 for fs, _ in rows if any(c.overridden for c in fs.criteria))
    result = Exported(out=target, run_id=run.id, train=len(train), validation=len(held),
                      corrections=corrections, approvals=len(rows) - corrections,
                      skipped=skipped)
    (target / MANIFEST).write_text(json.dumps({
        "run_id": run.id, "class": class_dir.resolve().name, "train": len(train),
        "validation": len(held), "corrections": corrections,
        "approvals": result.approvals, "skipped": skipped,
        "validation_students": sorted(fs.student_id for fs, _ in held)}, indent=2),
        encoding="utf-8")
    return result


def _redacted(settings: dict[str, Any], backend: str) -> bool:
    """Whether the run redacted what it sent (`redacting`, from the settings it recorded)."""
    given = settings.get("redact")
    return bool(given) if given is not None else backend != "local"


def _examples(store: Store, students: list[FinalStudent], redactor: Redactor | None
              ) -> tuple[list[tuple[FinalStudent, dict[str, Any]]], dict[str, int]]:
    rows: list[tuple[FinalStudent, dict[str, Any]]] = []
    skipped: dict[str, int] = {}

    def skip(why: str) -> None:
        skipped[why] = skipped.get(why, 0) + 1

    for fs in students:
        if not fs.reviewed or fs.final_total is None or fs.result.grade_id is None:
            continue
        sent = store.graded_exchange(fs.result.grade_id)
        if sent is None:
            skip("no request of its own (a shared or older grade)")
            continue
        system, prefix, parts, reply_text, mapping = sent
        if any("text" not in p for p in parts):
            skip("images or scanned pages (text only)")
            continue
        try:
            reply = json.loads(reply_text or "")
        except json.JSONDecodeError:
            reply = None
        redact = (None if redactor is None else
                  lambda text, sid=fs.student_id: redactor.redact([text], sid)[0][0])
        answer = model_turn(reply, fs, mapping, redact) if isinstance(reply, dict) else None
        if answer is None:
            skip("no usable reply, or a checklist rescored by hand")
            continue
        rows.append((fs, _line(system, prefix, parts, answer)))
    return rows, skipped


# --- the job ---------------------------------------------------------------------------------


def _tuner(settings: Settings) -> Any:
    name = auto_backend(settings)
    if name not in ("vertex", "enterprise"):
        raise ConfigError("model tuning exists only on Gemini Enterprise (Vertex AI)",
                          fix="pass --backend enterprise with --project (and set "
                              "staging_bucket in grader.toml)")
    backend = create(name, settings=settings)
    if not isinstance(backend, SupportsTuning) or not isinstance(backend, SupportsFiles):
        raise ConfigError(f"the {name} backend cannot run tuning jobs",
                          fix="pass --backend enterprise")
    return backend


async def start(class_dir: Path, settings: Settings, *, base_model: str, data: Path,
                display_name: str, epochs: int | None = None,
                backend: Any | None = None) -> TuningJob:
    """Upload `data`'s train/validation files to the staging bucket, start the job, record it.
    A `backend` passed in is the caller's to close."""
    files = [data / TRAIN, data / VALIDATION]
    if not files[0].is_file():
        raise InputError("no tuning dataset there", path=files[0],
                         fix=f"run `grade tune export {class_dir}` first, or pass --data DIR")
    counts = [sum(1 for ln in f.read_text(encoding="utf-8").splitlines() if ln.strip())
              if f.is_file() else 0 for f in files]
    owned = backend is None
    backend = backend if backend is not None else _tuner(settings)
    try:
        if not backend.files_available:
            raise ConfigError("tuning reads its dataset from the staging bucket, and none is set",
                              fix=backend.files_fix)
        uris: list[str | None] = []
        for f, n in zip(files, counts, strict=True):
            if not n:
                uris.append(None)
                continue
            digest = hashlib.sha256(f.read_bytes()).hexdigest()[:16]
            info = await backend.upload_file(f, mime_type="application/jsonl",
                                             display_name=f"grader-tuning-{digest}-{f.name}")
            uris.append(info.uri)
        job: TuningInfo = await backend.start_tuning(
            base_model=base_model, train_uri=str(uris[0]), validation_uri=uris[1],
            display_name=display_name, epochs=epochs)
    finally:
        if owned:
            await backend.aclose()
    record = TuningJob(name=job.name, display_name=display_name, base_model=base_model,
                       train_uri=str(uris[0]), validation_uri=uris[1], train_examples=counts[0],
                       validation_examples=counts[1], state=job.state)
    with Store(db_path(class_dir, settings)) as store:
        store.save_tuning_job(record)
    return record


async def status(class_dir: Path, settings: Settings, *, cancel: str | None = None,
                 backend: Any | None = None) -> list[TuningJob]:
    """The class's recorded jobs, those still going asked again (`cancel`: a job's name or
    display name to cancel first)."""
    with Store(db_path(class_dir, settings)) as store:
        jobs = store.tuning_jobs()
    if cancel is not None and not any(cancel in (j.name, j.display_name) for j in jobs):
        raise InputError(f"no recorded tuning job called {cancel!r}",
                         fix="pass --cancel with a name `grade tune status` lists")
    going = [j for j in jobs if not TuningInfo(j.name, j.state, "", "").ended]
    if not going:
        return jobs
    owned = backend is None
    backend = backend if backend is not None else _tuner(settings)
    try:
        fresh = {}
        for j in going:
            if cancel in (j.name, j.display_name):
                await backend.cancel_tuning(j.name)
            fresh[j.name] = await backend.get_tuning(j.name)
    finally:
        if owned:
            await backend.aclose()
    with Store(db_path(class_dir, settings)) as store:
        for name, info in fresh.items():
            store.update_tuning_job(name, state=info.state, tuned_model=info.tuned_model,
                                    endpoint=info.endpoint, error=info.error)
        return store.tuning_jobs()
