"""How well answer groups hold answers the tutors scored alike, on SAF (Short Answer Feedback v2),
one question at a time, by TF-IDF: what review by group (review.xlsx's Groups sheet) would save.

For each question, its answers (the chosen splits; `bench/saf_to_class.py` reads them) are
grouped by `grader.review.groups.group` at each `--similarity` threshold, exactly as a run groups
a class's answers by TF-IDF (no model is called), and compared with the tutors' scores:

- groups (of one or more) vs students, and how many groups have two members or more;
- purity: the share of answers whose tutor score is their group's most common one;
- review decisions by group (one per group, plus one per answer off its group's most common
  score) vs one per student.

The baseline row puts every answer of a question in one group (purity = the share of the most
common score). Needs ../shared/datasets/saf-v2 (tests never do):

    python bench/saf_groups.py --split unseen_answers --similarity 0.5,0.6,0.7,0.8

prints one row per threshold, pooled over the questions (--per-question adds a row per question).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from saf_to_class import SAF, SPLITS, read_question

from grader.review.groups import Answer, Figures, Group, figures, group


def questions(saf: Path, splits: tuple[str, ...]) -> list[tuple[str, list[Answer],
                                                                 dict[str, float]]]:
    """(question id, its answers, the tutors' score per answer) for every question."""
    names = sorted({p.name for s in splits for p in (saf / s).glob("*.xml")})
    out = []
    for name in names:
        q = read_question([(s, saf / s / name) for s in splits if (saf / s / name).is_file()])
        if q is None:
            continue
        out.append((q.qid, [Answer(a.student_id, a.text) for a in q.answers],
                    {a.student_id: a.score for a in q.answers}))
    return out


def pooled(figs: list[Figures]) -> Figures:
    return Figures(*(sum(getattr(f, k) for f in figs)
                     for k in ("groups", "students", "agreeing", "decisions")))


def row(label: str, f: Figures, multi: int, seconds: float | None = None) -> str:
    took = f"{seconds:7.2f}" if seconds is not None else "      –"
    return (f"| {label} | {f.students} | {f.groups} | {multi} | {100 * (f.purity or 0):.1f}% | "
            f"{f.decisions} ({100 * f.decisions / f.students:.0f}%) | {took} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--saf", type=Path, default=SAF)
    ap.add_argument("--split", action="append", choices=SPLITS,
                    help="splits to read (repeatable; default: both)")
    ap.add_argument("--similarity", default="0.6",
                    help="comma-separated group_similarity thresholds")
    ap.add_argument("--per-question", action="store_true")
    args = ap.parse_args()
    qs = questions(args.saf, tuple(args.split or SPLITS))
    print(f"SAF {', '.join(args.split or SPLITS)}: {len(qs)} questions, "
          f"{sum(len(a) for _, a, _ in qs)} answers")
    print("| threshold | students | groups | groups of 2+ | purity | review decisions by "
          "group | seconds |")
    print("|---|---|---|---|---|---|---|")
    whole = [figures([Group("G1", tuple(sorted(s)), "")], s) for _, _, s in qs]
    print(row("one group per question (baseline)", pooled(whole), len(qs)))
    for t in (float(x) for x in args.similarity.split(",")):
        figs, multi, started = [], 0, time.perf_counter()
        for qid, answers, scores in qs:
            groups = group(answers, t)
            f = figures(groups, scores)
            figs.append(f)
            multi += sum(1 for g in groups if g.size > 1)
            if args.per_question:
                print(row(f"{t:g} {qid}", f, sum(1 for g in groups if g.size > 1)))
        print(row(f"{t:g}", pooled(figs), multi, time.perf_counter() - started))


if __name__ == "__main__":
    main()
