"""Detection and false-positive rates of the prompt-injection checks on the regression corpus
(tests/_injection_corpus.py), per category, twice:

1. **the pattern check alone**: the real intake (discovery, the extraction worker for
   PDF/Word/notebooks, `grader.intake.injection`); no model is involved;
2. **with the model check**: `grade run --injection-check` on the whole corpus against the
   FAKE Gemini server (real HTTP, the real google-genai client, the store), counting the
   students flagged `injection_suspected`. The fake answers the check with the project's own
   patterns plus one small rule (`grader.testing._fake_content.judges_injection`), so these
   rates describe that stand-in, NOT what Gemini would catch.

    python bench/eval_injection.py               # both, then every miss
    python bench/eval_injection.py --verbose     # the pattern evidence for every case
    python bench/eval_injection.py --no-model    # the pattern check only
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from grader.intake.discover import discover
from grader.intake.extract import Extracted
from grader.intake.injection import suspicious
from grader.intake.isolation import Extractor

from _injection_corpus import CASES, Case, write_cases


def extract_all(cases: list[Case]) -> dict[str, Extracted]:
    with tempfile.TemporaryDirectory() as tmp:
        class_dir = write_cases(Path(tmp) / "class", cases)
        with Extractor() as ex:
            return {s.student_id: ex.extract(s) for s in discover(class_dir)}


def with_model_check() -> set[str]:
    """The students `grade run --injection-check` flags `injection_suspected`, against the fake
    Gemini server."""
    import os
    import sqlite3

    from click.testing import CliRunner

    from grader.cli import cli
    from grader.testing.fake_gemini import FakeGemini

    from _classgen import RUBRIC

    with tempfile.TemporaryDirectory() as tmp, FakeGemini(latency_ms=0) as fake:
        class_dir = write_cases(Path(tmp) / "class", CASES)
        (class_dir / "rubric.yaml").write_text(RUBRIC, encoding="utf-8")
        db = Path(tmp) / "g.sqlite"
        env = {"GEMINI_API_KEY": "fake-key", "GOOGLE_GEMINI_BASE_URL": fake.url,
               "GOOGLE_API_KEY": None, "GOOGLE_GENAI_USE_VERTEXAI": None,
               "GOOGLE_GENAI_USE_ENTERPRISE": None}
        old = {k: os.environ.get(k) for k in env}
        for k, v in env.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        try:
            res = CliRunner().invoke(cli, ["run", str(class_dir), "--db", str(db), "--out",
                                           str(Path(tmp) / "out"), "--injection-check"])
        finally:
            for k, v in old.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        if res.exit_code != 0:
            raise SystemExit(f"grade run failed:\n{res.output}")
        with sqlite3.connect(db) as conn:
            return {sid for (sid,) in conn.execute(
                "SELECT o.student_id FROM outcomes o JOIN flags f ON f.grade_id = o.grade_id"
                " WHERE f.reason = 'injection_suspected'")}


def table(title: str, flagged: dict[str, bool]) -> list[Case]:
    """Print the rates of one check (`flagged`: case name -> flagged); return its misses."""
    by_cat: dict[str, list[bool]] = defaultdict(list)
    for case in CASES:
        by_cat[case.category].append(flagged[case.name])
    attacks = [c for c in CASES if c.attack]
    looks = [c for c in CASES if not c.attack]
    detected = sum(flagged[c.name] for c in attacks)
    false_pos = sum(flagged[c.name] for c in looks)
    print(f"\n{title}\ncategory      cases  flagged")
    for cat, flags in by_cat.items():
        print(f"{cat:<12} {len(flags):>6} {sum(flags):>8}")
    print(f"detection rate: {detected}/{len(attacks)} = {detected / len(attacks):.1%}")
    print(f"false-positive rate: {false_pos}/{len(looks)} = {false_pos / len(looks):.1%}")
    misses = [c for c in CASES if flagged[c.name] != c.attack]
    for case in misses:
        print(f"  {case.name}: {'missed' if case.attack else 'false positive'}")
    return misses


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--no-model", action="store_true", help="the pattern check only")
    args = ap.parse_args()
    results = extract_all(CASES)
    leaks = []
    for case in CASES:
        ex = results[case.name]
        leaked = [h for h in case.hidden if h in ex.text]
        if leaked:
            leaks.append(case.name)
            print(f"  {case.name}: hidden text reached the model text: {leaked}")
        if args.verbose:
            print(f"{case.name}: {'FLAGGED' if suspicious(ex.findings) else 'clean'}")
            for f in ex.findings:
                print("   ", f.describe())
    misses = table("pattern check alone (no model)",
                   {c.name: suspicious(results[c.name].findings) for c in CASES})
    expected = [c for c in misses if not c.needs_model]  # needs_model: patterns cannot
    if not args.no_model:
        flagged = with_model_check()
        misses = table("with the model check (measured against the FAKE Gemini server, whose "
                       "answer is the patterns plus one small rule; not real Gemini)",
                       {c.name: c.name in flagged for c in CASES})
        expected += misses
    return 0 if not expected and not leaks else 1


if __name__ == "__main__":
    sys.exit(main())
