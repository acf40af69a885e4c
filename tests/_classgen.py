"""Build small synthetic classes for end-to-end tests (tmp folders, no ../shared)."""

from __future__ import annotations

from pathlib import Path

RUBRIC = """\
title: Network encoding (short answer)
instructions: Grade each criterion independently.
question: Which encoding should a congested network with perfect clocks use? Give two reasons.
reference_answer: >-
  Binary encoding, because it is the most bandwidth efficient with one bit per baud, and
  self-clocking is not needed since all clocks are perfect.
criteria:
  - id: choice
    title: Correct encoding chosen
    max_points: 2
    levels:
      - {points: 0, descriptor: wrong or missing}
      - {points: 1, descriptor: partially right}
      - {points: 2, descriptor: binary encoding named}
  - id: reasons
    title: Reasons
    max_points: 3
    description: Two valid reasons (bandwidth efficiency, no clock recovery needed).
grade_bands: {A: 80, B: 60, C: 40, F: 0}
"""

ANSWERS = [
    "Binary encoding, since it uses one bit per baud which is bandwidth efficient, and "
    "the clocks are perfect so self-clocking is not needed.",
    "Manchester encoding because it is self-clocking.",
    "I would use binary encoding because it is simple and cheap.",
    "Differential Manchester, as it is robust against noise and polarity errors.",
    "Binary encoding: efficient bandwidth use (1 bit/baud) and perfect clocks mean no clock "
    "recovery is required.",
]


def make_class(root: Path, n: int, *, extra: dict[str, str] | None = None) -> Path:
    """A class folder with `n` text submissions plus rubric.yaml; `extra` adds named files."""
    class_dir = root / "class"
    class_dir.mkdir(parents=True, exist_ok=True)
    (class_dir / "rubric.yaml").write_text(RUBRIC, encoding="utf-8")
    for i in range(n):
        text = f"Student {i:04d} answer. " + ANSWERS[i % len(ANSWERS)]
        (class_dir / f"s{i:04d}.txt").write_text(text, encoding="utf-8")
    for name, text in (extra or {}).items():
        (class_dir / name).write_text(text, encoding="utf-8")
    return class_dir


def big_rubric(tokens: int) -> str:
    """RUBRIC with marking guidance long enough that the rendered scheme is about `tokens`
    tokens by the fake's estimate (4 characters a token): above the explicit-cache minimum."""
    line = ("Award the reasons point only when the explanation names the mechanism and ties it "
            "to the network's clocks or to its bandwidth; paraphrase is fine. ")
    guidance = "".join(f"  Note {n}: {line}\n" for n in range(tokens * 4 // (len(line) + 12)))
    return RUBRIC.replace("instructions: Grade each criterion independently.\n",
                          "instructions: |\n  Grade each criterion independently.\n" + guidance)


def make_big_class(root: Path, n: int, tokens: int = 6000) -> Path:
    """`make_class` with `big_rubric(tokens)`."""
    class_dir = make_class(root, n)
    (class_dir / "rubric.yaml").write_text(big_rubric(tokens), encoding="utf-8")
    return class_dir


def scanned_pdf(path: Path, megabytes: float) -> Path:
    """A valid one-page PDF with no text layer (as a scan is to a text reader), padded to
    `megabytes` with an unreferenced stream: it is sent to the model as a document."""
    pad = int(megabytes * 1024 * 1024)
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>",
               b"<< /Length %d >>\nstream\n" % pad + b"\x00" * pad + b"\nendstream"]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for n, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref)
    path.write_bytes(bytes(out))
    return path
