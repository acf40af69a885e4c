"""Gradebook exports: final grades only, withheld students marked (never a silent zero),
teacher overrides reflected, and no csv cell a spreadsheet would evaluate."""

from __future__ import annotations

import csv
from pathlib import Path

import openpyxl
import pytest
from click.testing import CliRunner

from grader._escape import FORMULA_STARTS, unescape_text
from grader.errors import InputError
from grader.final import finals
from grader.reports import write_reports
from grader.reports.export import NOT_EXPORTED, export_gradebook
from grader.review import import_workbook

from _synthetic import FORMULA_EVIL, SyntheticRun, build


@pytest.fixture
def synth(tmp_path: Path) -> SyntheticRun:
    return build(tmp_path / "db.sqlite", n=30, k=6)


def _read(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def test_plain_csv_exports_finals_and_marks_withheld(synth: SyntheticRun, tmp_path: Path) -> None:
    path = export_gradebook(synth.store, synth.run_id, "csv", tmp_path)
    rows = _read(path)
    head, body = rows[0], rows[1:]
    assert head[:8] == ["student_id", "name", "email", "export_status", "total", "max_total",
                        "percent", "band"]
    assert len(body) == len(synth.student_ids)
    by_id = {unescape_text(r[0]): dict(zip(head, r, strict=True)) for r in body}
    expected = {s.student_id: s for s in finals(synth.store, synth.run_id)}
    for sid in synth.flagged_ids:
        row = by_id[sid]
        assert row["export_status"].startswith(NOT_EXPORTED)
        assert row["total"] == "" and row["percent"] == ""  # never a zero
    clean = [sid for sid in synth.student_ids if sid not in synth.flagged_ids]
    for sid in clean:
        assert by_id[sid]["export_status"] == "exported"
        assert float(by_id[sid]["total"]) == expected[sid].final_total


def test_moodle_and_canvas_formats(synth: SyntheticRun, tmp_path: Path) -> None:
    moodle = _read(export_gradebook(synth.store, synth.run_id, "moodle", tmp_path))
    assert moodle[0] == ["identifier", "grade", "feedback"]
    held = [r for r in moodle[1:] if r[1] == ""]
    assert len(held) == len(synth.flagged_ids)
    assert all(r[2].startswith(NOT_EXPORTED) for r in held)
    assert all(float(r[1]) >= 0 for r in moodle[1:] if r[1])

    canvas = _read(export_gradebook(synth.store, synth.run_id, "canvas", tmp_path))
    assert canvas[0][:5] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]
    assert canvas[1][0].strip() == "Points Possible" and canvas[1][5] == "54"
    assert sum(1 for r in canvas[2:] if r[5] == "") == len(synth.flagged_ids)
    withheld = _read(tmp_path / "gradebook_canvas_withheld.csv")
    assert sorted(unescape_text(r[0]) for r in withheld[1:]) == sorted(synth.flagged_ids)


def test_review_releases_flagged_students_with_teacher_scores(synth: SyntheticRun,
                                                              tmp_path: Path) -> None:
    write_reports(synth.store, synth.run_id, tmp_path)
    wb = openpyxl.load_workbook(tmp_path / "review.xlsx")
    ws = wb["Summary"]
    cols = {c.value: c.column for c in ws[1]}
    ungraded = synth.ungraded_ids[0]
    flagged = next(s for s in synth.flagged_ids if s not in synth.ungraded_ids)
    for r in range(2, ws.max_row + 1):
        sid = unescape_text(str(ws.cell(r, 1).value))
        if sid == ungraded:  # no AI grade at all: the teacher scores every criterion
            for i in range(1, 7):
                ws.cell(r, cols[f"Teacher: c{i}"]).value = 2
        if sid == flagged:  # model asked for review: the teacher approves with one change
            ws.cell(r, cols["Approved"]).value = "yes"
            ws.cell(r, cols["Teacher: c2"]).value = 0
    wb.save(tmp_path / "edited.xlsx")
    import_workbook(synth.store, tmp_path / "edited.xlsx")

    rows = _read(export_gradebook(synth.store, synth.run_id, "csv", tmp_path))
    by_id = {unescape_text(r[0]): dict(zip(rows[0], r, strict=True)) for r in rows[1:]}
    assert by_id[ungraded]["export_status"] == "exported" and by_id[ungraded]["total"] == "12"
    fin = next(s for s in finals(synth.store, synth.run_id) if s.student_id == flagged)
    assert by_id[flagged]["c2"] == "0"
    assert float(by_id[flagged]["total"]) == fin.final_total
    assert fin.final_total == sum(c.ai_score or 0 for c in fin.criteria[2:]) + (
        fin.criteria[0].ai_score or 0)


def test_no_csv_cell_starts_a_formula(synth: SyntheticRun, tmp_path: Path) -> None:
    seen: set[str] = set()
    for fmt in ("csv", "moodle", "canvas"):
        export_gradebook(synth.store, synth.run_id, fmt, tmp_path)  # type: ignore[arg-type]
    for path in tmp_path.glob("*.csv"):
        for row in _read(path):
            for cell in row:
                assert not cell.startswith(FORMULA_STARTS), (path.name, cell)
                seen.update(e for e in FORMULA_EVIL if cell.startswith("'" + e))
    assert seen >= {'=HYPERLINK("http://x","y")', "=cmd|' /C calc'!A0"}


def test_unknown_format(synth: SyntheticRun, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown export format"):
        export_gradebook(synth.store, synth.run_id, "xls", tmp_path)  # type: ignore[arg-type]


def test_cli_export(synth: SyntheticRun, tmp_path: Path) -> None:
    from grader.cli import cli

    out = tmp_path / "out"
    write_reports(synth.store, synth.run_id, out)
    for fmt, name in (("canvas", "gradebook_canvas.csv"), ("moodle", "gradebook_moodle.csv"),
                      ("csv", "gradebook.csv")):
        res = CliRunner().invoke(cli, ["export", str(out), "--format", fmt])
        assert res.exit_code == 0, res.output
        assert (out / name).exists() and name in res.output
    res = CliRunner().invoke(cli, ["export", str(tmp_path / "nowhere"), "--format", "csv"])
    assert res.exit_code == 2
