"""Turn SAF (Short Answer Feedback v2, English) into grader class folders with human scores.

SAF (MIT licence, Filighera, Ochs et al., "Your Answer is Incorrect... Would you like to know
why? Introducing a Bilingual Short Answer Feedback Dataset", ACL 2022) holds, per question, the
question, a reference answer and student answers scored by tutors. For each question this writes

    OUT/classes/<question>/rubric.yaml     one criterion, `correctness`
    OUT/classes/<question>/<student>.txt   one answer per student
    OUT/human/<question>.csv               the tutors' scores (rater `saf_tutor`)
    OUT/README.md, OUT/LICENSE             what was converted, SAF's licence and attribution

so that `grade run`, `grade human import` and `grade eval` run on real graded work:

    python bench/saf_to_class.py --out /tmp/saf
    for q in /tmp/saf/classes/*/; do
        grade run "$q" && grade human import "/tmp/saf/human/$(basename "$q").csv" "$q"
    done
    grade eval /tmp/saf/classes/*/

The rubric's maximum is the question's highest tutor score over every answer of the chosen
splits. Its levels are the tutors' score grid: the coarsest step of 0.5, 0.25, 0.125 or 0.1
that holds every score of the question (within 0.006, so SAF's rounded 0.88 is 0.875), else
the coarsest that holds 95% of them, the others moved to the nearest level (README.md counts
them).
Student ids are the SAF answer number with the split's initial (`t313` training, `u313`
unseen_answers: a few numbers occur in both splits for different answers).
"""

from __future__ import annotations

import argparse
import csv
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SAF = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "saf-v2"
SPLITS = ("training", "unseen_answers")
STEPS = (0.5, 0.25, 0.125, 0.1)
FIT = 0.95  # share of scores a grid must hold
TOLERANCE = 0.006
CRITERION = "correctness"
RATER = "saf_tutor"


@dataclass
class Answer:
    student_id: str
    text: str
    score: float


@dataclass
class Question:
    qid: str
    text: str
    reference: str
    answers: list[Answer]

    @property
    def slug(self) -> str:
        return "q" + self.qid.lower().replace(".", "_")


def read_question(files: list[tuple[str, Path]]) -> Question | None:
    """One question from its XML file in each split (split name, path)."""
    answers: list[Answer] = []
    qid = text = reference = ""
    for split, path in files:
        root = ET.parse(path).getroot()
        qid = root.get("id") or path.stem
        text = (root.findtext("questionText") or "").strip()
        reference = (root.findtext("referenceAnswers/referenceAnswer") or "").strip()
        for a in root.iter("studentAnswer"):
            response = (a.findtext("response") or "").strip()
            score = a.findtext("score")
            if not response or score is None:
                continue
            number = (a.get("id") or "").rsplit(".", 1)[-1]
            answers.append(Answer(f"{split[0]}{number}", response, float(score)))
    return Question(qid, text, reference, answers) if answers else None


def on_grid(x: float, step: float) -> bool:
    return abs(x / step - round(x / step)) * step <= TOLERANCE


def grid_step(scores: list[float], top: float) -> float:
    """The coarsest step that holds every score (and the maximum); failing that, FIT of them."""
    for share in (1.0, FIT):
        for step in STEPS:
            if on_grid(top, step) and sum(on_grid(s, step) for s in scores) >= share * len(
                    scores):
                return step
    return STEPS[-1]


def snap(x: float, step: float, top: float) -> float:
    return min(top, round(round(x / step) * step, 6))


def rubric(q: Question, top: float, step: float) -> dict[str, Any]:
    points = [round(n * step, 6) for n in range(round(top / step) + 1)]
    levels = []
    for p in points:
        if p == top:
            descriptor = "correct and complete: everything the reference answer asks for"
        elif p == 0:
            descriptor = "incorrect, irrelevant or missing"
        else:
            descriptor = (f"partially correct: about {round(100 * p / top)}% of the reference "
                          "answer's content, correctly stated")
        levels.append({"points": p, "descriptor": descriptor})
    return {
        "title": f"SAF question {q.qid}",
        "instructions": "Grade the answer against the reference answer: points for each "
                        "correct, relevant element it contains; nothing for wrong statements.",
        "question": q.text,
        "reference_answer": q.reference,
        "criteria": [{"id": CRITERION, "title": "Correctness and completeness",
                      "max_points": top, "levels": levels}],
    }


def subset(answers: list[Answer], n: int | None) -> list[Answer]:
    """All answers, or `n` spread evenly over the score range (deterministic)."""
    if n is None or n >= len(answers):
        return answers
    ordered = sorted(answers, key=lambda a: (a.score, a.student_id))
    return [ordered[round(i * (len(ordered) - 1) / max(1, n - 1))] for i in range(n)]


def convert(saf: Path, out: Path, *, splits: tuple[str, ...] = SPLITS,
            questions: set[str] | None = None, per_question: int | None = None) -> list[dict]:
    """Write the class folders; returns one summary row per question."""
    names = sorted({p.name for s in splits for p in (saf / s).glob("*.xml")})
    rows = []
    for name in names:
        files = [(s, saf / s / name) for s in splits if (saf / s / name).is_file()]
        q = read_question(files)
        if q is None or (questions is not None and q.qid not in questions):
            continue
        top = max(a.score for a in q.answers)
        if top <= 0:
            continue
        step = grid_step([a.score for a in q.answers], top)
        chosen = subset(q.answers, per_question)
        folder = out / "classes" / q.slug
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "rubric.yaml").write_text(
            yaml.safe_dump(rubric(q, top, step), sort_keys=False, allow_unicode=True),
            encoding="utf-8")
        (out / "human").mkdir(parents=True, exist_ok=True)
        moved = 0
        with (out / "human" / f"{q.slug}.csv").open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["student_id", "criterion", "score", "rater"])
            for a in chosen:
                (folder / f"{a.student_id}.txt").write_text(a.text + "\n", encoding="utf-8")
                score = snap(a.score, step, top)
                moved += abs(score - a.score) > TOLERANCE
                w.writerow([a.student_id, CRITERION, f"{score:g}", RATER])
        rows.append({"question": q.qid, "class": q.slug, "answers": len(chosen),
                     "max": top, "step": step, "moved": moved})
    write_readme(saf, out, rows, splits, per_question)
    return rows


def write_readme(saf: Path, out: Path, rows: list[dict], splits: tuple[str, ...],
                 per_question: int | None) -> None:
    if (saf / "LICENSE").is_file():
        shutil.copy(saf / "LICENSE", out / "LICENSE")
    lines = [
        "# SAF v2 (English) as grader classes",
        "",
        "Derived from Short Answer Feedback v2.0 by Anna Filighera, Sebastian Ochs et al. "
        "(\"Your Answer is Incorrect... Would you like to know why? Introducing a Bilingual "
        "Short Answer Feedback Dataset\", ACL 2022), MIT licence (LICENSE, copyright 2021 "
        "Sebastian Ochs, Anna Filighera). Converted by bench/saf_to_class.py.",
        "",
        f"Splits: {', '.join(splits)}; "
        + (f"{per_question} answers per question, spread over the score range."
           if per_question else "every non-empty answer."),
        "Maximum: the question's highest tutor score. Levels: the tutors' score grid (step); "
        "`moved`: tutor scores off that grid, moved to the nearest level.",
        "",
        "| question | class | answers | max | step | moved |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['question']} | {r['class']} | {r['answers']} | {r['max']:g} | "
              f"{r['step']:g} | {r['moved']} |" for r in rows]
    (out / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--saf", type=Path, default=SAF, help="the saf-v2 folder")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--split", choices=(*SPLITS, "both"), default="both")
    ap.add_argument("--questions", help="comma-separated question ids (default: all)")
    ap.add_argument("--per-question", type=int, help="answers per question (default: all)")
    args = ap.parse_args()
    splits = SPLITS if args.split == "both" else (args.split,)
    questions = set(args.questions.split(",")) if args.questions else None
    rows = convert(args.saf, args.out, splits=splits, questions=questions,
                   per_question=args.per_question)
    print(f"{len(rows)} classes, {sum(r['answers'] for r in rows)} answers, "
          f"{sum(r['moved'] for r in rows)} scores moved to the grid -> {args.out}")


if __name__ == "__main__":
    main()
