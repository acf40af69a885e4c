"""Mutation fuzzing: seeded random byte mutations of every sample format, all in one class
folder, graded in one `grade run` against the fake server. The run must end normally (exit 0
or 1, never a traceback) with every student graded or flagged with a reason."""

from __future__ import annotations

import csv
import io
import json
import random
import zipfile
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner

from grader.cli import cli
from grader.errors import SubmissionError
from grader.intake.discover import Submission, discover
from grader.intake.extract import Extracted, extract
from grader.intake.isolation import Extractor
from grader.testing.fake_gemini import FakeGemini

from _classgen import RUBRIC
from _make_fixtures import make_docx, make_notebook, make_pdf, make_png

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "intro-python"
SEED = 20_251_122
PER_SEED = 28  # mutants per seed file: 12 seeds -> 336 students

TOKENS = [b"\x00", b"\xff" * 4, b"<<", b">>", b"obj", b"endobj", b"stream", b"R", b"[" * 64,
          b"{" * 64, b'"', b"\\ud800", b"\xed\xa0\x80", b"\x1b[2J", b"</submission>",
          b"9999999999", b"-1", b"/FlateDecode", b"PK\x03\x04", b"\r\n", b"%PDF-1.7"]


def seeds() -> dict[str, bytes]:
    notebook = make_notebook([
        ("markdown", "# Fibonacci", []),
        ("code", "def fib(n):\n    return n", [
            {"output_type": "stream", "name": "stdout", "text": "1\n1\n2\n"},
            {"output_type": "display_data", "metadata": {},
             "data": {"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"}}]),
    ])
    return {
        "txt": (SAMPLES / "dara.txt").read_bytes(),
        "py": (SAMPLES / "alice.py").read_bytes(),
        "md": (SAMPLES / "chen.md").read_bytes(),
        "html": next(SAMPLES.glob("*onlinetext_/onlinetext.html")).read_bytes(),
        "ipynb": (SAMPLES / "gus.ipynb").read_bytes(),
        "pdf": (SAMPLES / "emil.pdf").read_bytes(),
        "docx": (SAMPLES / "fatima.docx").read_bytes(),
        "png": (SAMPLES / "hana.png").read_bytes(),
        "gen.ipynb": notebook,
        "gen.pdf": make_pdf(["def fib(n):", "It is O(n)."]),
        "gen.docx": make_docx(["fib is O(n)"], table=[["n", "fib"], ["10", "55"]],
                              image=make_png()),
        "gen.png": make_png(8, 8),
    }


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to four random edits: flip, insert, delete, duplicate, splice a token, truncate."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not buf:
            buf += rng.choice(TOKENS)
        i = rng.randrange(len(buf))
        op = rng.randrange(6)
        if op == 0:
            for _ in range(rng.randint(1, 16)):
                buf[rng.randrange(len(buf))] = rng.randrange(256)
        elif op == 1:
            buf[i:i] = rng.randbytes(rng.randint(1, 64))
        elif op == 2:
            del buf[i:i + rng.randint(1, 256)]
        elif op == 3:
            j = rng.randrange(len(buf))
            buf[i:i] = buf[j:j + rng.randint(1, 512)]
        elif op == 4:
            tok = rng.choice(TOKENS)
            buf[i:i + len(tok)] = tok
        else:
            del buf[rng.randint(len(buf) // 4, len(buf)):]
    return bytes(buf)


def mutate_inside_zip(data: bytes, rng: random.Random) -> bytes:
    """A .docx with one XML part mutated and re-zipped, so the parser sees the damage."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        names = [n for n in src.namelist() if n.endswith(".xml") or n.endswith(".rels")]
        victim = rng.choice(names)
        for info in src.infolist():
            part = src.read(info)
            dst.writestr(info.filename, mutate(part, rng) if info.filename == victim else part)
    return out.getvalue()


JSON_VALUES: list[object] = [None, 0, -1, 1e308, True, "", "text", "\ud800", [], {}, [None],
                             {"x": 1}, [[[]]], {"output_type": "stream"}]


def mutate_json(data: bytes, rng: random.Random) -> bytes:
    """A notebook with one to three values (anywhere in its JSON tree) replaced by a value of
    a random type, so the notebook reader sees valid JSON of the wrong shape."""
    doc = json.loads(data)
    for _ in range(rng.randint(1, 3)):
        node: object = doc
        path: list[tuple[object, object]] = []
        while isinstance(node, (dict, list)) and node and rng.random() < 0.8:
            key = rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))
            path.append((node, key))
            node = node[key]  # type: ignore[index]
        if path:
            parent, key = path[-1]
            parent[key] = rng.choice(JSON_VALUES)  # type: ignore[index]
    return json.dumps(doc).encode()


def build_class(root: Path) -> dict[str, str]:
    """The mutants as one class folder; returns student id -> seed name."""
    rng = random.Random(SEED)
    cls = root / "fuzz"
    cls.mkdir()
    (cls / "rubric.yaml").write_text(RUBRIC, encoding="utf-8")
    made = {}
    for name, data in seeds().items():
        ext = name.rsplit(".", 1)[-1]
        for i in range(PER_SEED):
            if ext == "docx" and i % 2 == 0:
                mutant = mutate_inside_zip(data, rng)
            elif ext == "ipynb" and i % 2 == 0:
                mutant = mutate_json(data, rng)
            else:
                mutant = mutate(data, rng)
            sid = f"m{name.replace('.', '')}{i:02d}"
            (cls / f"{sid}.{ext}").write_bytes(mutant)
            made[sid] = name
    return made



def test_mutated_samples_never_stop_a_run(gemini_env: FakeGemini, tmp_path: Path) -> None:
    made = build_class(tmp_path)
    assert len(made) >= 300
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", str(tmp_path / "fuzz"), "--db",
                                      str(tmp_path / "g.sqlite"), "--out", str(out)])
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    assert result.exit_code in (0, 1), result.output
    assert "Traceback" not in result.output
    with (out / "grades.csv").open(newline="", encoding="utf-8") as fh:
        rows = {r["student_id"]: r for r in csv.DictReader(fh)}
    assert set(rows) == set(made)
    for sid, row in rows.items():
        assert row["status"] in ("graded", "flagged"), (sid, made[sid], row)
        assert row["status"] == "graded" or row["flags"], (sid, made[sid], row)
    flagged = sum(r["status"] == "flagged" for r in rows.values())
    print(f"\nfuzz: {len(rows)} mutants, {flagged} flagged")
    # each graded mutant cost at most one request (no retry storm); identical ones share one
    assert sum(gemini_env.stats()["billed_by_request"].values()) <= len(rows) - flagged


def test_mutants_read_the_same_in_the_worker(tmp_path: Path) -> None:
    """The same mutants through the isolated extractor: the same text or the same flag."""
    build_class(tmp_path)

    def outcome(run: Callable[[Submission], Extracted], sub: Submission) -> object:
        try:
            ex = run(sub)
        except SubmissionError as e:
            return (e.reason, e.message)
        return (ex.text, ex.content_hash, ex.notes)

    subs = list(discover(tmp_path / "fuzz"))
    with Extractor() as worker:
        for sub in subs:
            assert outcome(worker.extract, sub) == outcome(extract, sub), sub.student_id
