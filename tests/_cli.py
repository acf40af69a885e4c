"""`grade` in this process (click's CliRunner), one query of a store, and a teacher's review in
review.xlsx: what most end-to-end tests need."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import openpyxl
from click.testing import CliRunner

from grader.cli import cli
from grader.testing.fake_gemini import FakeGemini

from _classgen import RUBRIC, make_big_class


def grade(*args: str) -> tuple[int, str]:
    """`grade ARGS...`: (exit code, everything it printed)."""
    res = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return res.exit_code, res.output


def q(db: Path, sql: str) -> list[tuple]:
    """The rows of one query of the store `db`."""
    with sqlite3.connect(db) as conn:
        return list(conn.execute(sql))


def review(out: Path, db: Path, *, approve: dict[str, str],
           scores: dict[str, dict[str, float]] | None = None) -> str:
    """Approve rows (with feedback to the student) and score rows by hand in OUT/review.xlsx,
    as a teacher does in Excel, then `grade review import` it; returns what the import said."""
    wb = openpyxl.load_workbook(out / "review.xlsx")
    ws = wb["Summary"]
    cols = {c.value: c.column for c in ws[1]}
    rows = {ws.cell(r, 1).value: r for r in range(2, ws.max_row + 1)}
    for sid, comment in approve.items():
        ws.cell(rows[sid], cols["Approved"]).value = "yes"
        ws.cell(rows[sid], cols["Feedback to the student"]).value = comment
    for sid, crit in (scores or {}).items():
        for title, value in crit.items():
            ws.cell(rows[sid], cols[f"Teacher: {title}"]).value = value
    wb.save(out / "review.xlsx")
    code, output = grade("review", "import", str(out / "review.xlsx"), "--db", str(db))
    assert code == 0, output
    return output


def generated(fake: FakeGemini) -> list[dict]:
    """The generateContent requests the fake received, oldest first."""
    return [r for r in fake.requests() if r["endpoint"] == "generateContent"]


def run_big(tmp_path: Path, n: int = 6, *extra: str) -> tuple[int, str, Path]:
    """`grade run` on a class of `n` with a marking scheme long enough to cache (made once in
    `tmp_path`): (exit code, output, store)."""
    class_dir = tmp_path / "class"
    if not class_dir.exists():
        make_big_class(tmp_path, n)
    db = tmp_path / "g.sqlite"
    code, output = grade("run", str(class_dir), "--db", str(db), "--out", str(tmp_path / "o"),
                         *extra)
    return code, output, db


def run_class_of(tmp_path: Path, texts: dict[str, str], extra: dict[str, str] | None = None
                 ) -> tuple[Path, Path, Path]:
    """`grade run` on a class of `texts` (student id -> answer, one .txt each) with
    _classgen's RUBRIC and `extra` files (name -> text): (class folder, output folder, store)."""
    cls = tmp_path / "class"
    cls.mkdir()
    (cls / "rubric.yaml").write_text(RUBRIC, encoding="utf-8")
    for name, text in (extra or {}).items():
        (cls / name).write_text(text, encoding="utf-8")
    for sid, text in texts.items():
        (cls / f"{sid}.txt").write_text(text, encoding="utf-8")
    out, db = tmp_path / "out", tmp_path / "g.sqlite"
    code, output = grade("run", str(cls), "--db", str(db), "--out", str(out))
    assert code == 0, output
    return cls, out, db
