"""Detection and false-positive rates of the prompt-injection detector on the regression corpus
(tests/_injection_corpus.py), through the real intake (discovery, the extraction worker for
PDF/Word/notebooks, `grader.intake.injection`). No model is involved: this measures the
detector that runs before the model.

    python bench/eval_injection.py            # rates per category, then every miss
    python bench/eval_injection.py --verbose  # the evidence for every case
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

from _injection_corpus import CASES, Case


def materialise(root: Path, cases: list[Case]) -> Path:
    """One folder per case under `root`; returns the class folder."""
    for case in cases:
        folder = root / case.name
        folder.mkdir(parents=True)
        for name, data in case.files.items():
            if isinstance(data, str):
                (folder / name).write_text(data, encoding="utf-8")
            else:
                (folder / name).write_bytes(data)
    return root


def extract_all(cases: list[Case]) -> dict[str, Extracted]:
    with tempfile.TemporaryDirectory() as tmp:
        class_dir = materialise(Path(tmp) / "class", cases)
        with Extractor() as ex:
            return {s.student_id: ex.extract(s) for s in discover(class_dir)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    results = extract_all(CASES)
    by_cat: dict[str, list[bool]] = defaultdict(list)
    misses = []
    for case in CASES:
        ex = results[case.name]
        flagged = suspicious(ex.findings)
        by_cat[case.category].append(flagged)
        leaked = [h for h in case.hidden if h in ex.text]
        if flagged != case.attack or leaked:
            misses.append((case, ex, leaked))
        if args.verbose:
            print(f"{case.name}: {'FLAGGED' if flagged else 'clean'}")
            for f in ex.findings:
                print("   ", f.describe())
    attacks = [c for c in CASES if c.attack]
    looks = [c for c in CASES if not c.attack]
    detected = sum(suspicious(results[c.name].findings) for c in attacks)
    false_pos = sum(suspicious(results[c.name].findings) for c in looks)
    print("category      cases  flagged")
    for cat, flags in by_cat.items():
        print(f"{cat:<12} {len(flags):>6} {sum(flags):>8}")
    print(f"detection rate: {detected}/{len(attacks)} = {detected / len(attacks):.1%}")
    print(f"false-positive rate: {false_pos}/{len(looks)} = {false_pos / len(looks):.1%}")
    for case, ex, leaked in misses:
        what = "missed" if case.attack else "false positive"
        if leaked:
            what = f"hidden text reached the model text: {leaked}"
        print(f"  {case.name}: {what}")
        for f in ex.findings:
            print("     ", f.describe())
    return 0 if not misses else 1


if __name__ == "__main__":
    sys.exit(main())
