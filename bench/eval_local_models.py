"""Compare candidate local models on a SAF subset: schema-valid rate, agreement with tutors, speed.

SAF (Short Answer Feedback v2, Filighera et al. 2022, MIT) has per-question XML files with the
question, a reference answer and tutor-scored student answers. Each question becomes a one-criterion
rubric (0..max score seen for that question); every model grades the same answers through
`LocalBackend` with the rubric's JSON schema, and we compare its normalised score with the tutor's.

    .venv/bin/python bench/eval_local_models.py --per-question 4 \
        --model smollm2=/path/SmolLM2-135M-Instruct.Q4_1.gguf --model qwen=/path/q.gguf

Reads ../shared/datasets/saf-v2 (bench only; tests never do).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp

from grader.backends.local import LocalBackend
from grader.config.settings import Settings
from grader.prompting.prompts import load_prompts
from grader.prompting.request import GradeRequest
from grader.prompting.rubric import Criterion, Rubric
from grader.prompting.schema import json_schema, parse
from grader.reports.stats import quadratic_weighted_kappa

SAF = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "saf-v2"
PROMPTS = load_prompts()


@dataclass
class Item:
    qid: str
    question: str
    reference: str
    answer: str
    score: float
    max_score: float


def load_items(folder: Path, per_question: int, max_questions: int) -> list[Item]:
    """Deterministic subset: per question, answers spread evenly over the score range."""
    items: list[Item] = []
    for path in sorted(folder.glob("*.xml"))[:max_questions]:
        root = ET.parse(path).getroot()
        question = (root.findtext("questionText") or "").strip()
        reference = (root.findtext("referenceAnswers/referenceAnswer") or "").strip()
        answers = [
            ((a.findtext("response") or "").strip(), float(a.findtext("score") or 0))
            for a in root.iter("studentAnswer")
        ]
        answers = [a for a in answers if a[0]]
        if not answers:
            continue
        top = max(s for _, s in answers)
        if top <= 0:
            continue
        answers.sort(key=lambda a: (a[1], a[0]))
        step = max(1, len(answers) // per_question)
        for text, score in answers[::step][:per_question]:
            items.append(Item(root.get("id", path.stem), question, reference, text, score, top))
    return items


def rubric_for(item: Item) -> Rubric:
    return Rubric(
        title=f"SAF question {item.qid}",
        question=item.question,
        reference_answer=item.reference,
        criteria=(Criterion(
            id="correctness", title="Correctness and completeness", max_points=item.max_score,
            description="Points for each correct, relevant element of the reference answer; "
            "0 for a wrong or irrelevant answer.",
        ),),
    )


def request_for(item: Item, rubric: Rubric) -> GradeRequest:
    """The pipeline's own prompts (grader/prompting/prompts.py, prompts/*.j2)."""
    return GradeRequest(
        key=item.qid, model="local", system=PROMPTS.system(),
        static_prefix=PROMPTS.static_prefix(rubric),
        student_parts=PROMPTS.student_parts(item.answer, (), ("answer.txt",)),
        response_schema=json_schema(rubric), max_output_tokens=1024,
    )


def spearman(a: list[float], b: list[float]) -> float:
    def ranks(xs: list[float]) -> list[float]:
        order = sorted(range(len(xs)), key=lambda i: xs[i])
        out = [0.0] * len(xs)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2
            i = j + 1
        return out

    ra, rb = ranks(a), ranks(b)
    if len(set(ra)) < 2 or len(set(rb)) < 2:
        return float("nan")
    return statistics.correlation(ra, rb)


def qwk(a: list[float], b: list[float], bins: int = 5) -> float:
    """Quadratic weighted kappa on normalised scores binned to 0, .25, .5, .75, 1."""
    cats = [k / (bins - 1) for k in range(bins)]
    value = quadratic_weighted_kappa([round(v * (bins - 1)) / (bins - 1) for v in a],
                                     [round(v * (bins - 1)) / (bins - 1) for v in b], cats)
    return float("nan") if value is None else value


async def evaluate(name: str, path: Path, items: list[Item], threads: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    backend = LocalBackend(Settings(model_path=path, n_ctx=4096, n_threads=threads))
    load_s = time.perf_counter() - t0
    ctx = backend._llm.ctx
    llama_cpp.llama_perf_context_reset(ctx)
    truth: list[float] = []
    pred: list[float] = []
    valid = 0
    cached = prompt = out_tok = 0
    t1 = time.perf_counter()
    for item in items:
        rubric = rubric_for(item)
        resp = await backend.generate(request_for(item, rubric))
        prompt += resp.usage.prompt_tokens
        out_tok += resp.usage.output_tokens
        cached += resp.usage.cached_tokens
        try:
            grade = parse(rubric, resp.text or "")
        except ValueError:
            continue
        valid += 1
        truth.append(item.score / item.max_score)
        pred.append(grade.criteria["correctness"].score / item.max_score)
    wall = time.perf_counter() - t1
    perf = llama_cpp.llama_perf_context(ctx)
    await backend.aclose()
    mean_t = statistics.fmean(truth) if truth else 0.0
    return {
        "model": name, "file": path.name, "size_mb": path.stat().st_size / 1e6,
        "load_s": load_s, "n": len(items), "valid": valid,
        "mae": statistics.fmean(abs(p - t) for p, t in zip(pred, truth, strict=True))
        if truth else float("nan"),
        "mae_mean_baseline": statistics.fmean(abs(mean_t - t) for t in truth)
        if truth else float("nan"),
        "spearman": spearman(pred, truth) if len(truth) > 2 else float("nan"),
        "qwk": qwk(pred, truth) if truth else float("nan"),
        "pred_mean": statistics.fmean(pred) if pred else float("nan"),
        "prompt_tps": perf.n_p_eval / perf.t_p_eval_ms * 1000 if perf.t_p_eval_ms else 0.0,
        "gen_tps": perf.n_eval / perf.t_eval_ms * 1000 if perf.t_eval_ms else 0.0,
        "s_per_answer": wall / max(1, len(items)), "prompt_tokens": prompt,
        "cached_tokens": cached, "output_tokens": out_tok,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", required=True, metavar="NAME=PATH")
    ap.add_argument("--split", default="unseen_answers")
    ap.add_argument("--per-question", type=int, default=4)
    ap.add_argument("--max-questions", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    items = load_items(SAF / args.split, args.per_question, args.max_questions)
    print(f"{len(items)} SAF answers from {SAF / args.split}")
    rows = []
    for spec in args.model:
        name, _, path = spec.partition("=")
        row = asyncio.run(evaluate(name, Path(path), items, args.threads))
        rows.append(row)
        print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in row.items()), flush=True)
    print("\n| model | size MB | valid | MAE | MAE always-mean | Spearman | QWK | prompt tok/s "
          "| gen tok/s | s/answer |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['size_mb']:.0f} | {r['valid']}/{r['n']} | {r['mae']:.3f} "
              f"| {r['mae_mean_baseline']:.3f} | {r['spearman']:.2f} | {r['qwk']:.2f} "
              f"| {r['prompt_tps']:.0f} | {r['gen_tps']:.1f} | {r['s_per_answer']:.1f} |")


if __name__ == "__main__":
    main()
