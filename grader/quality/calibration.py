"""The calibration gate: measure, on a few students the teacher scores blind, whether the model
reads the rubric the way the teacher does, before the class's budget is spent.

`grade calibrate CLASS_DIR [--n 10]` runs in two steps:

1. It picks `n` students, one per answer group, the largest groups first (`pick_sample`: the
   pilot covers the class's range of answers, and the same class always gives the same
   sample), and writes `OUT/calibration.xlsx`: one row per student and criterion with the
   submission and an empty score cell, and no AI score anywhere (blind).
2. Run again once the teacher has filled it: the scores are imported as human scores (the checks
   of `grade human import`), the sample is graded (`--only` those students), the agreement is
   printed, and the calibration is stored for this grading fingerprint (model, prompts, rubric).

`grade run` on the class then refuses, without `--force`, when the calibration for its
fingerprint has a criterion whose quadratic weighted kappa is below `calibration_min_qwk`, and
names the criteria that disagree most (usually a rubric wording to fix). A criterion whose QWK is
undefined because teacher and model gave every student the same score agrees and passes; one
with no graded pair fails (nothing shows the model reads it right). Changing the rubric, the
prompts or the model changes the fingerprint: calibrate again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from openpyxl import Workbook
from openpyxl.styles import Alignment, Font, PatternFill, Protection
from openpyxl.worksheet.datavalidation import DataValidation

from grader.config.settings import Settings, db_path, limits, out_dir
from grader.errors import CalibrationError, GraderError
from grader.escape import escape_text
from grader.intake.isolation import Extractor
from grader.online.pipeline import RunSummary, run_class
from grader.outputs import mark_output_folder
from grader.prompting.planning import Plan, plan, students
from grader.prompting.rubric import Rubric
from grader.quality import evaluation
from grader.quality.gate import below_bar
from grader.quality.human import COLUMNS, SCORES_SHEET, TOTAL, class_cap, read_scores
from grader.review.final import finals
from grader.review.groups import Answer, group, unit_vectors
from grader.store import Store

WORKBOOK = "calibration.xlsx"
DEFAULT_N = 10
DEFAULT_RATER = "teacher"
MAX_CELL = 32000
LENGTH_WEIGHT = 0.5  # weight of the (standardised) log length beside the unit TF-IDF vector


def pick_sample(texts: Mapping[str, str], n: int, similarity: float = 0.6) -> list[str]:
    """`n` student ids covering the class's range of answers, reproducibly: one answer per
    answer group (`review.groups` at `similarity`, `group_similarity`), the largest groups
    first, each by its representative (the answer nearest the group's centre).

    When the class has fewer groups than `n`, the rest are spread over submission length and
    content: each submission is a TF-IDF vector of its words (scikit-learn; unit length) plus
    its standardised log length, and the one farthest from everything chosen so far is added
    until there are `n` (farthest-point sampling). Ties go to the smaller student id, so the
    same class gives the same sample."""
    ids = sorted(texts)
    if len(ids) <= n:
        return ids
    groups = group([Answer(sid, texts[sid]) for sid in ids], similarity)
    chosen_ids = [g.representative for g in groups[:n]]
    if len(chosen_ids) == n:
        return sorted(chosen_ids)
    docs = [texts[i] for i in ids]
    content = unit_vectors(docs)
    lengths = np.log1p([len(d) for d in docs])
    spread = lengths.std() or 1.0
    features = np.hstack([content, (LENGTH_WEIGHT * (lengths - lengths.mean()) / spread)[:, None]])
    chosen = [ids.index(sid) for sid in chosen_ids]
    nearest = np.min([np.linalg.norm(features - features[c], axis=1) for c in chosen], axis=0)
    while len(chosen) < n:
        nxt = int(np.argmax(nearest))  # argmax takes the first (smallest id) on a tie
        chosen.append(nxt)
        nearest = np.minimum(nearest, np.linalg.norm(features - features[nxt], axis=1))
    return sorted(ids[i] for i in chosen)


def allowed_text(rubric: Rubric, cid: str) -> str:
    c = rubric.criterion(cid)
    if c.allowed_points is not None:
        return "one of " + ", ".join(f"{p:g}" for p in c.allowed_points)
    return f"0 to {c.max_points:g}"


def write_blind_workbook(path: Path, rubric: Rubric, sample: Sequence[tuple[str, str]],
                         rater: str) -> Path:
    """The workbook the teacher scores: submissions and empty score cells, no AI scores."""
    wb = Workbook()
    ws = wb.active
    ws.title = SCORES_SHEET
    headers = [*COLUMNS, "criterion title", "max", "allowed scores", "submission"]
    ws.append(headers)
    bold, fill = Font(bold=True), PatternFill("solid", fgColor="FFF8DC")
    for cell in ws[1]:
        cell.font = bold
    validations: dict[str, DataValidation] = {}
    for c in rubric.all_criteria:
        if c.allowed_points is not None:
            dv = DataValidation(type="list", allow_blank=True, formula1='"' + ",".join(
                f"{p:g}" for p in c.allowed_points) + '"')
        else:
            dv = DataValidation(type="decimal", operator="between", formula1="0",
                                formula2=f"{c.max_points:g}", allow_blank=True)
        dv.error, dv.showErrorMessage = f"{c.id}: {allowed_text(rubric, c.id)}", True
        validations[c.id] = dv
        ws.add_data_validation(dv)
    for sid, text in sample:
        body = escape_text(text)
        body = body if len(body) <= MAX_CELL else body[:MAX_CELL] + "…"
        for c in rubric.all_criteria:
            ws.append([escape_text(sid), c.id, None, escape_text(rater), escape_text(c.title),
                       c.max_points, allowed_text(rubric, c.id), body])
            row = ws.max_row
            for col in (3, 4):
                ws.cell(row, col).protection = Protection(locked=False)
                ws.cell(row, col).fill = fill
            ws.cell(row, len(headers)).alignment = Alignment(wrap_text=True, vertical="top")
            validations[c.id].add(f"C{row}")
    for letter, width in zip("ABCDEFGH", (14, 14, 8, 12, 24, 6, 16, 100), strict=True):
        ws.column_dimensions[letter].width = width
    ws.freeze_panes = "D2"
    ws.protection.sheet = True  # only the score and rater cells are editable (no password)
    notes = wb.create_sheet("How to score")
    for line in (
        "Score every row of the Scores sheet from the submission alone, as you would grade it.",
        "The model's scores are not shown on purpose: the point is to see whether it agrees "
        "with you.",
        "Then run the same `grade calibrate` command again: it imports these scores, grades the "
        "same students and prints the agreement per criterion.",
    ):
        notes.append([line])
    notes.column_dimensions["A"].width = 120
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    wb.save(tmp)
    tmp.replace(path)
    return path


@dataclass(frozen=True)
class Written:
    """Step 1: the sample was picked and the blind workbook written."""

    path: Path
    students: list[str]
    skipped: int  # students that could not be read (flagged at intake), never sampled


@dataclass(frozen=True)
class Calibrated:
    """Step 2: the teacher's scores against the model's on the sample."""

    path: Path
    evaluation: evaluation.ClassEval
    summary: RunSummary
    failing: list[tuple[str, dict[str, Any]]]  # criterion id, figures; worst first
    bar: float

    @property
    def passed(self) -> bool:
        return not self.failing


def _sample_texts(p: Plan) -> tuple[dict[str, str], int]:
    texts: dict[str, str] = {}
    skipped = 0
    settings = p.settings
    with Extractor(max_file_mb=settings.max_file_mb, limits=limits(settings)) as ex:
        for sub in students(p):
            try:
                got = ex.extract(sub)
            except GraderError:
                skipped += 1
                continue
            if got.has_text and got.text.strip():
                texts[sub.student_id] = got.text
            else:
                skipped += 1
    return texts, skipped


def figures_of(ev: evaluation.ClassEval) -> dict[str, dict[str, Any]]:
    """What a calibration keeps per criterion (and the total): the model's figures."""
    return {r.criterion: {"n": r.figures.n, "qwk": r.figures.qwk, "exact": r.figures.exact,
                          "mae": r.figures.mae, "notes": r.figures.notes}
            for r in ev.rows if r.grader == evaluation.MODEL}


def calibrate(class_dir: Path, settings: Settings, *, n: int = DEFAULT_N,
              rater: str = DEFAULT_RATER) -> Written | Calibrated:
    """`grade calibrate`: step 1 or step 2 (see the module docstring)."""
    p = plan(class_dir, settings)
    book = out_dir(class_dir, settings) / WORKBOOK
    if not book.exists():
        texts, skipped = _sample_texts(p)
        if not texts:
            raise CalibrationError("no submission with text to calibrate on", path=class_dir,
                                   fix="put the students' submissions in the class folder")
        sample = pick_sample(texts, n, settings.group_similarity)
        mark_output_folder(book.parent, class_dir)
        write_blind_workbook(book, p.rubric, [(sid, texts[sid]) for sid in sample], rater)
        return Written(book, sample, skipped)
    scores = [s for s in read_scores(book, p.rubric, class_cap(class_dir, settings, p.rubric))
              if s.criterion_id != TOTAL]
    sample = sorted({s.student_id for s in scores})
    if not sample:
        raise CalibrationError("the calibration workbook holds no scores", path=book,
                               fix="score the rows of its Scores sheet, then run the same "
                                   "command again (or delete it to pick a new sample)")
    from hashlib import sha256

    key = str(class_dir.resolve())
    with Store(db_path(class_dir, settings)) as store:
        store.import_human_scores(key, str(book.resolve()), sha256(book.read_bytes()).hexdigest(),
                                  scores)
    grading = settings.model_copy(update={"only": tuple(sample), "force": True, "out": None})
    summary = run_class(class_dir, grading)
    with Store(db_path(class_dir, settings)) as store:
        run = store.run(summary.run_id)
        graded = [s for s in finals(store, run.id, p.rubric) if s.student_id in set(sample)]
        ev = evaluation.evaluate(p.rubric, graded, scores, name=class_dir.resolve().name,
                                 run_id=run.id, model=f"{run.backend}:{run.model}")
        figures = figures_of(ev)
        store.save_calibration(class_dir=key, fingerprint=run.fingerprint or "",
                               run_id=run.id, rater=ev.reference, students=sample,
                               figures=figures)
    bar = settings.calibration_min_qwk
    return Calibrated(book, ev, summary, below_bar(figures, bar), bar)
