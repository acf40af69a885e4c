"""A teacher's review survives rerunning the class: decisions are carried into the new run for
every student whose submission and grade did not change, and dropped for one who resubmitted."""

from __future__ import annotations

import csv
import sqlite3
from pathlib import Path

import openpyxl
import pytest
from click.testing import CliRunner

from grader.cli import cli
from grader.testing.fake_gemini import FakeGemini

from _classgen import make_class


def invoke(*args: str) -> str:
    res = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


def test_review_carried_into_rerun(fake_gemini: FakeGemini, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "k")
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", fake_gemini.url)
    class_dir = make_class(tmp_path, 3)
    out, db = tmp_path / "out", tmp_path / "g.sqlite"
    run = ("run", str(class_dir), "--out", str(out), "--db", str(db))
    invoke(*run)

    wb = openpyxl.load_workbook(out / "review.xlsx")
    ws = wb["Summary"]
    cols = {c.value: c.column for c in ws[1]}
    rows = {ws.cell(r, 1).value: r for r in range(2, ws.max_row + 1)}
    for sid in ("s0000", "s0001"):
        ws.cell(rows[sid], cols["Teacher: reasons"]).value = 0.5
        ws.cell(rows[sid], cols["Feedback to the student"]).value = f"checked {sid}"
    wb.save(out / "review.xlsx")
    invoke("review", "import", str(out / "review.xlsx"), "--db", str(db))

    (class_dir / "s0001.txt").write_text("A resubmitted answer: binary encoding.")
    invoke(*run)  # s0000 and s0002 reused, s0001 graded again

    # grades.csv of the new run: s0000 keeps the teacher's score (same submission, same AI
    # score); s0001 resubmitted, so its decision no longer applies
    with (out / "grades.csv").open(newline="", encoding="utf-8") as fh:
        table = {r["student_id"]: r for r in csv.DictReader(fh)}
    assert float(table["s0000"]["final_reasons"]) == 0.5
    assert table["s0000"]["ai_reasons"] != "0.5"
    assert table["s0001"]["final_reasons"] == table["s0001"]["ai_reasons"]
    with sqlite3.connect(db) as conn:  # nothing was copied: decisions belong to the student
        assert conn.execute("SELECT COUNT(*) FROM decisions").fetchone()[0] == 4

    # the new run's export uses the carried teacher score; the resubmitted one is the AI's
    output = invoke("export", str(out), "--format", "csv", "--db", str(db))
    assert "grades of run 2" in output  # the latest run, though review.xlsx is run 1's
    exported = Path(output.split("wrote ", 1)[1].split(":", 1)[0])
    with exported.open(newline="", encoding="utf-8") as fh:
        table = {r["student_id"]: r for r in csv.DictReader(fh)}
    assert float(table["s0000"]["reasons"]) == 0.5
    assert table["s0000"]["teacher_comment"] == "checked s0000"
    assert table["s0001"]["teacher_comment"] == ""
