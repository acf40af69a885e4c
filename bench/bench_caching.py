"""What explicit context caching saves: the same class graded twice through the real pipeline
and the real google-genai client against the fake Gemini server (never real Gemini), once with
`--cache off` and once with `--cache auto`.

The class: a marking scheme of about 6,000 tokens (instructions, four criteria with levels, three
graded exemplars) and 200 short answers. The figures are what the fake billed (its `stats()`:
prompt, cached, output and thinking tokens; cache creation and storage), priced with grader's
model table (`grader.config.models.Pricing`, the default model's price of today);
grader's own stored run cost is printed beside them as a cross-check.

    python bench/bench_caching.py                        # 200 students, 1,000 ms latency
    python bench/bench_caching.py --n 50 --latency-ms 0  # quick

Target: input cost with caching (cached and fresh input, creating the cache and keeping it for
the run) at most 25 % of the input cost without. The total (output and thinking included, the
same in both runs) is printed beside it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

from grader.config.models import Pricing, packaged
from grader.config.settings import DEFAULT_GEMINI_MODEL, resolve
from grader.online.pipeline import run_class
from grader.prompting.prompts import load_prompts
from grader.prompting.rubric import Rubric, parse_yaml
from grader.testing.fake_gemini import FakeGemini

LEVELS = {
    "correctness": [(4, "every case right, including the edge cases"), (3, "one edge case wrong"),
                    (2, "the main case right, edge cases wrong"), (1, "an attempt"),
                    (0, "missing or unrelated")],
    "reasoning": [(3, "the mechanism is named and tied to the question"),
                  (2, "the mechanism is named"), (1, "a relevant fact"), (0, "nothing relevant")],
    "evidence": [(2, "a concrete example or measurement"), (1, "a vague example"),
                 (0, "none")],
    "clarity": [(1, "clear and ordered"), (0, "hard to follow")],
}
ANSWERS = [
    "Binary encoding, because it sends one bit per baud and is therefore the most bandwidth "
    "efficient; with perfect clocks no self-clocking is needed.",
    "Manchester encoding, since it is self-clocking and robust.",
    "Binary encoding is best: it halves the baud rate compared to Manchester, which matters on "
    "a congested link, and synchronisation is free because every clock is perfect.",
    "I would pick differential Manchester because polarity errors do not matter.",
    "Use binary (NRZ). Efficiency: 1 bit per signal change. Clock recovery: not needed here.",
]


def marking_scheme(tokens: int) -> str:
    """A rubric whose rendered marking scheme (system instruction and rubric, as grader sends
    them) is about `tokens` tokens at the fake's 4 characters a token."""
    prompts = load_prompts()
    lines = 0
    while True:
        text = _scheme(lines)
        rubric = Rubric.model_validate(parse_yaml(text, Path("rubric.yaml")))
        if len(prompts.system()) + len(prompts.static_prefix(rubric)) >= tokens * 4:
            return text
        lines += 1


def _scheme(lines: int) -> str:
    guidance = [f"  {n}. When a student compares encodings, credit the comparison only if it "
                "says which property matters on this network and why; do not credit a list of "
                "properties without that link. Spelling is not graded.\n"
                for n in range(1, lines + 1)] or ["  Grade each criterion on its own.\n"]
    crits = []
    for cid, levels in LEVELS.items():
        lv = "".join(f"      - {{points: {p}, descriptor: \"{d}\"}}\n" for p, d in levels)
        crits.append(f"  - id: {cid}\n    title: {cid.title()}\n    max_points: {levels[0][0]}\n"
                     f"    description: Judge the {cid} of the answer against the reference.\n"
                     f"    levels:\n{lv}")
    exemplars = "".join(
        f"  - submission: \"{a}\"\n    scores: {{correctness: {s}, reasoning: {min(s, 3)}, "
        f"evidence: {min(s, 2)}, clarity: 1}}\n    comment: Example {i}.\n"
        for i, (a, s) in enumerate(zip(ANSWERS[:3], (4, 1, 4), strict=True), 1))
    return ("title: Network encoding (bench)\ninstructions: |\n" + "".join(guidance)
            + "question: Which encoding should a congested network with perfect clocks use?\n"
            "reference_answer: >-\n  Binary encoding: one bit per baud is the most bandwidth "
            "efficient, and self-clocking is not needed because the clocks are perfect.\n"
            "criteria:\n" + "".join(crits) + "exemplars:\n" + exemplars
            + "grade_bands: {A: 80, B: 60, C: 40, F: 0}\n")


def make_class(root: Path, n: int, tokens: int) -> Path:
    class_dir = root / "class"
    class_dir.mkdir(parents=True)
    (class_dir / "rubric.yaml").write_text(marking_scheme(tokens), encoding="utf-8")
    for i in range(n):
        (class_dir / f"s{i:04d}.txt").write_text(f"Answer {i}. {ANSWERS[i % len(ANSWERS)]}",
                                                 encoding="utf-8")
    return class_dir


def grade(class_dir: Path, fake: FakeGemini, db: Path, cache: str,
          concurrency: int) -> dict[str, Any]:
    fake.reset_stats()
    settings = resolve({"db": str(db), "cache": cache, "concurrency": concurrency,
                        "backend": "gemini", "api_key": "bench", "base_url": fake.url},
                       class_dir=class_dir, env={})
    start = time.perf_counter()
    summary = run_class(class_dir, settings)
    wall = time.perf_counter() - start
    assert summary.graded == summary.students, "every student must be graded"
    stats = fake.stats()
    return {"summary": summary, "stats": stats, "wall": wall}


def priced(r: dict[str, Any], pricing: Pricing, day: date) -> dict[str, float]:
    """What the fake billed, at the model table's prices."""
    p = pricing.price(day)
    assert p is not None
    t = r["stats"]["tokens"]
    cached = t["cached"]
    fresh = t["prompt"] - cached
    out = {
        "prompt": t["prompt"], "cached": cached, "fresh": fresh,
        "fresh_usd": fresh * p.input / 1e6, "cached_usd": cached * p.cached_input / 1e6,
        "create_usd": r["stats"]["cache_usd"]["create"],
        "storage_usd": r["stats"]["cache_usd"]["storage"],
        "output_usd": (t["candidates"] + t["thoughts"]) * p.output / 1e6,
    }
    out["input_usd"] = (out["fresh_usd"] + out["cached_usd"] + out["create_usd"]
                        + out["storage_usd"])
    out["total_usd"] = out["input_usd"] + out["output_usd"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200, help="students")
    ap.add_argument("--tokens", type=int, default=6000, help="marking scheme size")
    ap.add_argument("--latency-ms", type=float, default=1000.0, help="the fake's latency")
    ap.add_argument("--concurrency", type=int, default=8)
    a = ap.parse_args()
    day = date.today()
    pricing = Pricing.of(packaged(), DEFAULT_GEMINI_MODEL)
    price = pricing.price(day)
    assert price is not None and price.cache_storage_hour is not None
    with tempfile.TemporaryDirectory(prefix="bench-caching-") as tmp, \
            FakeGemini(latency_ms=a.latency_ms) as fake:
        root = Path(tmp)
        class_dir = make_class(root, a.n, a.tokens)
        off = grade(class_dir, fake, root / "off.sqlite", "off", a.concurrency)
        on = grade(class_dir, fake, root / "on.sqlite", "auto", a.concurrency)
    report = on["summary"].cache
    assert report is not None and report.used, "the marking scheme was not cached"
    p_off, p_on = priced(off, pricing, day), priced(on, pricing, day)
    print(f"bench_caching (fake server, not real Gemini): {a.n} students, marking scheme "
          f"{report.tokens:,} tokens (countTokens), {DEFAULT_GEMINI_MODEL} at the model table's "
          f"prices of {day}: input ${price.input}/1M, cached input ${price.cached_input}/1M, "
          f"storage ${price.cache_storage_hour}/1M tokens an hour, output ${price.output}/1M; "
          f"latency {a.latency_ms:g} ms, concurrency {a.concurrency}")
    rows = [
        ("billed input tokens", f"{p_off['prompt']:,}", f"{p_on['prompt']:,}"),
        ("  of them cached", f"{p_off['cached']:,}", f"{p_on['cached']:,}"),
        ("fresh input", f"${p_off['fresh_usd']:.4f}", f"${p_on['fresh_usd']:.4f}"),
        ("cached input", f"${p_off['cached_usd']:.4f}", f"${p_on['cached_usd']:.4f}"),
        ("cache creation", "-", f"${p_on['create_usd']:.4f}"),
        ("cache storage", "-", f"${p_on['storage_usd']:.6f} ({on['wall']:.0f} s)"),
        ("input cost", f"${p_off['input_usd']:.4f}", f"${p_on['input_usd']:.4f}"),
        ("output + thinking cost", f"${p_off['output_usd']:.4f}", f"${p_on['output_usd']:.4f}"),
        ("total cost", f"${p_off['total_usd']:.4f}", f"${p_on['total_usd']:.4f}"),
        ("grader's stored run cost", f"${off['summary'].cost_usd:.4f}",
         f"${on['summary'].cost_usd:.4f}"),
        ("wall time", f"{off['wall']:.1f} s", f"{on['wall']:.1f} s"),
    ]
    print(f"{'':26}{'--cache off':>16}{'--cache auto':>26}")
    for label, x, y in rows:
        print(f"{label:26}{x:>16}{y:>26}")
    input_ratio = p_on["input_usd"] / p_off["input_usd"]
    total_ratio = p_on["total_usd"] / p_off["total_usd"]
    print(f"input cost ratio (with / without, creation and storage included): {input_ratio:.3f} "
          f"(target <= 0.25: {'met' if input_ratio <= 0.25 else 'NOT met'}); "
          f"total cost ratio: {total_ratio:.3f}")


if __name__ == "__main__":
    main()
