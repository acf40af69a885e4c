"""Do graded examples help? SAF answers graded without and with `--exemplars K`, compared with the
tutors' scores (paired: the same answers both ways).

For each chosen SAF question this converts `--per-question` answers of the `unseen_answers` split
into a class (bench/saf_to_class.py), and writes a second rubric whose `exemplars:` are `--bank`
answers of the `training` split with their tutor scores (spread over the score range, snapped to
the rubric's grid): the bank. Then, per class, in one store:

    grade run CLASS --backend local                                       # run 1: no examples
    grade run CLASS --backend local --rubric bank.yaml --exemplars K      # run 2: K examples
    grade human import human.csv CLASS

and prints each run's wall time and the pooled paired figures (QWK, MAE, exact agreement, and
B − A with paired bootstrap 95% intervals; every chosen question must share one score grid) as
`grade eval --compare` computes them per class. Needs the local extra (llama.cpp) and ../shared.

    GRADER_N_THREADS=1 python bench/saf_exemplars.py --out /tmp/saf-ex --per-question 4 \
        --bank 8 --k 2 --questions 10.3_TC,12.2_PE,4.13,6.2_IPP,8.3_MM

(one llama.cpp thread: on a busy machine more threads spin and are far slower). Run again with
the same --out, it only recomputes the figures from the stores. See docs/examples-and-tuning.md,
"When exemplars help".
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from saf_to_class import SAF, read_question, snap, subset
from saf_to_class import convert as to_classes

from grader.quality import metrics
from grader.quality.evaluation import ai_table, human_tables
from grader.review.final import finals, load_rubric
from grader.store import Store

GRADE = str(Path(sys.executable).with_name("grade"))


def bank_rubric(cls: Path, saf: Path, qid: str, n: int) -> Path:
    """rubric.yaml plus `exemplars:` from the training split (n answers, snapped to the grid)."""
    rub = yaml.safe_load((cls / "rubric.yaml").read_text(encoding="utf-8"))
    crit = rub["criteria"][0]
    top = float(crit["max_points"])
    levels = sorted(float(lv["points"]) for lv in crit["levels"])
    step = levels[1] - levels[0]
    name = next(p.name for p in (saf / "training").glob("*.xml")
                if (q := read_question([("training", p)])) is not None and q.qid == qid)
    q = read_question([("training", saf / "training" / name)])
    assert q is not None
    rub["exemplars"] = [{"submission": a.text, "scores": {crit["id"]: snap(a.score, step, top)}}
                        for a in subset(q.answers, n)]
    out = cls.parent.parent / "bank" / f"{cls.name}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(rub, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return out


def _graded_both(db: Path) -> bool:
    if not db.exists():
        return False
    with Store(db) as store:
        return sum(1 for r in store.runs() if r.status == "done") >= 2


def run(*args: str) -> float:
    started = time.perf_counter()
    subprocess.run([GRADE, *args], check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "GRADER_CONCURRENCY": "1"})
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--saf", type=Path, default=SAF)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--questions", required=True)
    ap.add_argument("--per-question", type=int, default=4)
    ap.add_argument("--bank", type=int, default=8, help="training answers per question")
    ap.add_argument("--k", type=int, default=2, help="examples per prompt")
    ap.add_argument("--max-output-tokens", type=int, default=600,
                    help="per reply (a tiny model can loop to any cap; both runs get the same)")
    a = ap.parse_args()
    rows = to_classes(a.saf, a.out, splits=("unseen_answers",),
                      questions=set(a.questions.split(",")), per_question=a.per_question)
    pooled: dict[str, list[float]] = {"a": [], "b": [], "ref": []}
    grids = set()
    for r in rows:
        cls = a.out / "classes" / r["class"]
        db, out = a.out / "stores" / f"{r['class']}.sqlite", a.out / "out" / r["class"]
        bank = bank_rubric(cls, a.saf, r["question"], a.bank)
        common = ("--backend", "local", "--db", str(db), "--max-output-tokens",
                  str(a.max_output_tokens))
        if not _graded_both(db):  # rerunning the script only recomputes the figures
            off = run("run", str(cls), *common, "--out", str(out / "off"))
            on = run("run", str(cls), *common, "--out", str(out / "on"), "--rubric",
                     str(bank), "--exemplars", str(a.k))
            run("human", "import", str(a.out / "human" / f"{r['class']}.csv"), str(cls),
                "--db", str(db))
            print(f"{r['question']}: {r['answers']} answers, without examples {off:.0f} s, "
                  f"with {a.k} examples {on:.0f} s", flush=True)
        with Store(db) as store:
            rubric = load_rubric(store, 1)
            t_a = ai_table(list(finals(store, 1, rubric))).get("correctness", {})
            t_b = ai_table(list(finals(store, 2, rubric))).get("correctness", {})
            ref = human_tables(store.human_scores(str(cls.resolve())), rubric)["saf_tutor"][
                "correctness"]
        print(f"{r['question']}: scored by the model {len(t_a)} of {r['answers']} without "
              f"examples, {len(t_b)} with", flush=True)
        grids.add(metrics.score_grid(rubric.all_criteria[0]))
        for sid in sorted(set(t_a) & set(t_b) & set(ref)):
            pooled["a"].append(t_a[sid])
            pooled["b"].append(t_b[sid])
            pooled["ref"].append(ref[sid])
    if len(grids) != 1:
        sys.exit(f"the questions have different score grids {sorted(grids)}: not pooled")
    p = metrics.paired(pooled["a"], pooled["b"], pooled["ref"], grids.pop())
    print(f"pooled, n={p.n} (A = no examples, B = {a.k} examples), against the tutors:")
    for name in metrics.PAIRED:
        ci = p.ci.get(name)
        interval = f"[{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "[–]"
        va, vb, d = p.a.get(name), p.b.get(name), p.diff.get(name)
        print(f"  {name:<6} A {'–' if va is None else f'{va:.2f}'}  "
              f"B {'–' if vb is None else f'{vb:.2f}'}  "
              f"B−A {'–' if d is None else f'{d:+.2f}'} {interval}")


if __name__ == "__main__":
    main()
