"""`grade init`: lay out a new assignment folder a teacher can fill in."""

from __future__ import annotations

from pathlib import Path

from grader.errors import InputError, RubricError
from grader.prompting.rubric import Rubric

# The template's placeholders (in RUBRIC below): a rubric that still holds one was never edited.
QUESTION_PLACEHOLDER = "Write the question the students answered here."
ANSWER_PLACEHOLDER = "Write a model answer here. The grader compares each submission against it."

RUBRIC = """\
# The marking scheme. Every field is checked when you run `grade run`; see docs/rubrics.md.
title: "Assignment 1: explain your answer"
instructions: |
  Grade each criterion independently. Be fair to unusual but correct answers.
question: |
  Write the question the students answered here.
reference_answer: |
  Write a model answer here. The grader compares each submission against it.
criteria:
  - id: correctness
    title: Correctness
    max_points: 4
    description: The answer is factually and technically correct.
  - id: reasoning
    title: Reasoning
    max_points: 4
    description: The answer explains why, not only what.
    levels:
      - {points: 4, descriptor: "Clear, complete explanation with a relevant example."}
      - {points: 2, descriptor: "Some explanation, with gaps or vague steps."}
      - {points: 0, descriptor: "No explanation."}
  - id: clarity
    title: Clarity
    max_points: 2
    description: Well organised and easy to follow.
grade_bands: {A: 85, B: 70, C: 55, D: 40, F: 0}
"""

CONFIG = """\
# Settings for this assignment. Flags and GRADER_* environment variables override them.
[grader]
rubric = "rubric.yaml"
out = "reports"
db = ".grader/grader.sqlite"
# backend = "gemini"          # gemini | enterprise | local (default: gemini when a key is set)
# model = "gemini-3.8-flash"  # the model table's default; cheaper: "gemini-3.5-flash-lite"
# thinking = "low"            # minimal | low | medium | high (default: the model table's)
# store = false               # privacy: keep requests out of Google's logs (the default)
# budget = 5.0                # USD this run may spend; students left are skipped
# usage_tier = "1"            # your Gemini API tier: keeps below its spend limit ($10 per 10 min)
# rpm = 1000                  # your quota (AI Studio > Rate limits): then no request is refused
# tpm = 1000000               # ...and tokens per minute; unset, grader learns them from 429s
# concurrency = 64            # a cap on requests in flight (default: what the quota allows)
"""


def init_assignment(folder: Path) -> list[Path]:
    """Create rubric.yaml, grader.toml and submissions/ in `folder`; never overwrite."""
    folder.mkdir(parents=True, exist_ok=True)
    targets = {folder / "rubric.yaml": RUBRIC, folder / "grader.toml": CONFIG}
    existing = [p for p in targets if p.exists()]
    if existing:
        raise InputError(
            f"{existing[0].name} already exists", path=folder,
            fix="choose an empty folder, or edit the existing files",
        )
    created = []
    for path, text in targets.items():
        path.write_text(text, encoding="utf-8")
        created.append(path)
    subs = folder / "submissions"
    subs.mkdir(exist_ok=True)
    created.append(subs)
    return created


def check_edited(rubric: Rubric, path: Path) -> None:
    """Refuse the unedited `grade init` template: grading against its placeholder question and
    model answer would spend a run on meaningless scores. Names the lines to edit."""
    fields = {"question": (rubric.question, QUESTION_PLACEHOLDER),
              "reference_answer": (rubric.reference_answer, ANSWER_PLACEHOLDER)}
    left = [name for name, (value, placeholder) in fields.items()
            if value is not None and value.strip() == placeholder]
    if not left:
        return
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        lines = []
    where = []
    for name in left:
        placeholder = fields[name][1]
        at = [i for i, line in enumerate(lines, start=1) if placeholder in line]
        where.append(f"{name} (line {at[0]})" if at else name)
    raise RubricError(
        "the rubric is still the `grade init` template: edit " + " and ".join(where)
        + ", and check the criteria below them", path=path,
        fix="write the question your students answered and a model answer in place of the "
            "placeholder text, then run `grade run` again")
