"""Redaction on the redaction corpus (tests/fixtures/redaction_corpus.toml): the share of name,
e-mail, id and phone variants redacted and the share of ordinary words wrongly blanked, through
the redactor a run uses (`grader.intake.redact.Redactor`, the corpus's roster, each text as a
submission of the roster's first student, the roster's SIS ids as a run passes them). No model
is involved.

    python bench/bench_redaction.py            # both shares, by kind, then every miss
    python bench/bench_redaction.py --region DE
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _redaction_corpus import load, score

from grader.intake.redact import Redactor


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--region", default="US", help="phone_region (default US, the setting's)")
    args = ap.parse_args()
    corpus = load()
    redactor = Redactor(corpus.students(), phone_region=args.region,
                        other_ids=corpus.other_ids())
    author = corpus.roster[0]["id"]
    s = score(corpus, lambda text: redactor.redact([text], author)[0][0])
    print(f"phone_region {args.region}")
    print("kind     variants  redacted")
    for kind, oks in s.redacted.items():
        print(f"{kind:<8} {len(oks):>8} {sum(oks):>9}")
    done, total = s.variants
    print(f"variants redacted: {done}/{total} = {done / total:.1%}")
    print(f"ordinary words blanked: {s.blanked}/{s.words} = {s.blanked / s.words:.1%} "
          f"(in {len(s.wrong)} of {len(corpus.ordinary)} sentences)")
    for v, sent, leaked in s.misses:
        why = f" (known: {v.known_miss})" if v.known_miss else ""
        print(f"  missed ({v.kind}){why}: {v.text!r} -> {sent!r} keeps {leaked}")
    for o, sent, lost in s.wrong:
        print(f"  blanked: {o.text!r} -> {sent!r} loses {lost}")
    return 0 if all(v.known_miss for v, _, _ in s.misses) and not s.wrong else 1


if __name__ == "__main__":
    sys.exit(main())
