"""Local backend speed: overhead against llama-cpp-python called directly, and prefix reuse.

1. Tokens per second of `LocalBackend.generate` against `Llama.create_chat_completion` on the
   same model instance, the same messages and the same JSON-schema grammar (both from a cold
   KV cache, interleaved A/B/B/A to spread the noise of a shared CPU). Target: ratio >= 0.9.
2. Grading the sample class in order with the rubric prefix kept in the KV cache (what a run
   does) against resetting the cache before every student: wall time and prompt-eval time.

    .venv/bin/python bench/bench_local.py [--class-dir samples/intro-python]
        [--rubric rubrics/intro-python.yaml] [--model-path X.gguf] [--threads 2] [--limit 8]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import llama_cpp

from grader.backends.local import LocalBackend, ordered_schema, student_text
from grader.config.settings import Settings
from grader.errors import GraderError
from grader.intake.discover import discover
from grader.intake.extract import extract
from grader.prompting.prompts import load_prompts
from grader.prompting.request import GradeRequest
from grader.prompting.rubric import load_rubric
from grader.prompting.schema import json_schema

ROOT = Path(__file__).resolve().parents[1]


def class_requests(class_dir: Path, rubric_path: Path, limit: int) -> list[GradeRequest]:
    """The pipeline's requests for the sample class (media-only students left out)."""
    rubric, _ = load_rubric(rubric_path)
    prompts = load_prompts()
    out: list[GradeRequest] = []
    for sub in discover(class_dir):
        try:
            ex = extract(sub)
        except GraderError:
            continue
        if not ex.text.strip():
            continue
        out.append(GradeRequest(
            key=sub.student_id, model="local", system=prompts.system(),
            static_prefix=prompts.static_prefix(rubric),
            student_parts=prompts.student_parts(ex.text, ex.parts, ex.files),
            response_schema=json_schema(rubric), max_output_tokens=1024,
        ))
        if len(out) >= limit:
            break
    return out


def direct(llm: Any, req: GradeRequest, max_tokens: int) -> tuple[int, int]:
    """llama-cpp-python's own chat path on the same prompt and schema."""
    text, _ = student_text(req.student_parts)
    out = llm.create_chat_completion(
        messages=[{"role": "system", "content": req.system},
                  {"role": "user", "content": req.static_prefix + text}],
        response_format={"type": "json_object", "schema": ordered_schema(req.response_schema)},
        temperature=req.temperature, seed=req.seed, max_tokens=max_tokens,
    )
    return out["usage"]["prompt_tokens"], out["usage"]["completion_tokens"]


def ours(backend: LocalBackend, req: GradeRequest) -> tuple[int, int, int]:
    resp = asyncio.run(backend.generate(req))
    u = resp.usage
    return u.prompt_tokens, u.output_tokens, u.cached_tokens


def overhead(backend: LocalBackend, reqs: list[GradeRequest], rounds: int) -> None:
    llm = backend._llm
    t_ours = t_direct = 0.0
    tok_ours = tok_direct = out_ours = out_direct = 0
    pairs: list[float] = []
    for r in range(rounds):
        for n, req in enumerate(reqs):
            order = ("ours", "direct") if (n + r) % 2 == 0 else ("direct", "ours")
            rate: dict[str, float] = {}
            for who in order:
                llm.reset()
                start = time.perf_counter()
                if who == "ours":
                    p, o, _ = ours(backend, req)
                    dt = time.perf_counter() - start
                    t_ours += dt
                    tok_ours += p + o
                    out_ours += o
                else:
                    p, o = direct(llm, req, max_tokens=1024)
                    dt = time.perf_counter() - start
                    t_direct += dt
                    tok_direct += p + o
                    out_direct += o
                rate[who] = (p + o) / dt
            pairs.append(rate["ours"] / rate["direct"])
    ratio = (tok_ours / t_ours) / (tok_direct / t_direct)
    print(f"LocalBackend  {tok_ours / t_ours:8.1f} tok/s (prompt+output)  "
          f"{out_ours / t_ours:6.1f} output tok/s  ({out_ours} output tokens, {t_ours:.1f} s)")
    print(f"llama direct  {tok_direct / t_direct:8.1f} tok/s (prompt+output)  "
          f"{out_direct / t_direct:6.1f} output tok/s  ({out_direct} output tokens, "
          f"{t_direct:.1f} s)")
    print(f"ratio         {ratio:8.3f}   (target >= 0.9); median of per-student ratios "
          f"{statistics.median(pairs):.3f} (less sensitive to a shared CPU)")


def prefix_reuse(backend: LocalBackend, reqs: list[GradeRequest]) -> None:
    llm = backend._llm
    results: dict[str, dict[str, float]] = {}
    for mode in ("without reuse", "with reuse"):
        llm.reset()
        llama_cpp.llama_perf_context_reset(llm.ctx)
        cached = prompt = 0
        start = time.perf_counter()
        for req in reqs:
            if mode == "without reuse":
                llm.reset()
            p, _, c = ours(backend, req)
            prompt += p
            cached += c
        wall = time.perf_counter() - start
        perf = llama_cpp.llama_perf_context(llm.ctx)
        results[mode] = {"wall": wall, "p_eval_ms": perf.t_p_eval_ms,
                         "n_p_eval": perf.n_p_eval, "cached": cached, "prompt": prompt}
        print(f"{mode:14s} wall {wall:6.1f} s   prompt tokens evaluated {perf.n_p_eval:6d} "
              f"of {prompt:6d} ({perf.t_p_eval_ms / 1000:5.1f} s)   cached_tokens {cached}")
    a, b = results["without reuse"], results["with reuse"]
    print(f"speed-up from prefix reuse: wall x{a['wall'] / b['wall']:.2f}, "
          f"prompt evaluation x{a['p_eval_ms'] / max(b['p_eval_ms'], 1e-9):.2f} "
          f"({len(reqs)} students)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--class-dir", type=Path, default=ROOT / "samples" / "intro-python")
    ap.add_argument("--rubric", type=Path, default=ROOT / "rubrics" / "intro-python.yaml")
    ap.add_argument("--model-path", type=Path)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--n-ctx", type=int, default=8192)
    ap.add_argument("--limit", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    reqs = class_requests(args.class_dir, args.rubric, args.limit)
    backend = LocalBackend(Settings(model_path=args.model_path, n_threads=args.threads,
                                    n_ctx=args.n_ctx))
    sizes = [len(backend.build_prompt(r).tokens) for r in reqs]
    prefix = backend.build_prompt(reqs[0]).prefix_len
    print(f"model {backend.model_version}; {len(reqs)} students from {args.class_dir}; "
          f"prompt tokens median {statistics.median(sizes):.0f}, rubric prefix {prefix}")
    print("-- overhead vs llama-cpp-python direct (cold cache each call)")
    overhead(backend, reqs, args.rounds)
    print("-- prefix reuse over the class")
    prefix_reuse(backend, reqs)
    asyncio.run(backend.aclose())


if __name__ == "__main__":
    main()
