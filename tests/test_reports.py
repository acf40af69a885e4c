"""Review workbook and statistics: structure, formula-injection safety, finals after review."""

from __future__ import annotations

import math
from pathlib import Path

import openpyxl
import pytest
from openpyxl.styles import Protection
from openpyxl.utils.escape import unescape as unescape_ooxml

from grader.escape import FORMULA_STARTS, escape_cell, escape_text, unescape_text
from grader.reports import write_reports
from grader.reports.stats import (
    agreement,
    criterion_stats,
    histogram,
    quadratic_weighted_kappa,
    summarize,
)
from grader.review.final import finals
from grader.review.importing import import_workbook

from _synthetic import FORMULA_EVIL, SyntheticRun, build


@pytest.fixture
def synth(tmp_path: Path) -> SyntheticRun:
    return build(tmp_path / "db.sqlite", n=40, k=6)


def _cols(ws: openpyxl.worksheet.worksheet.Worksheet) -> dict[str, int]:
    return {c.value: c.column for c in ws[1]}


# -- statistics ---------------------------------------------------------------------------------

def test_qwk_matches_hand_computed_example() -> None:
    # a=[0,1,2], b=[0,2,2], categories 0..2, w=(i-j)^2/4.
    # observed: one (1,2) disagreement -> sum w*O = 0.25
    # expected: hist_a=[1,1,1], hist_b=[1,0,2], E=outer/3 -> sum w*E = 3.75/3 = 1.25
    # kappa = 1 - 0.25/1.25 = 0.8
    assert quadratic_weighted_kappa([0, 1, 2], [0, 2, 2], [0, 1, 2]) == pytest.approx(0.8)


def test_qwk_second_hand_example_with_unused_category() -> None:
    # a=[0,0,3,3], b=[0,1,3,2], categories 0..3, w=(i-j)^2/9.
    # sum w*O = (1 + 1)/9 = 2/9.  hist_a=[2,0,0,2], hist_b=[1,1,1,1], n=4.
    # sum w*E = (2*(0+1+4+9) + 2*(9+4+1+0)) / 9 / 4 = 56/36.  kappa = 1 - (2/9)/(56/36) = 6/7
    kappa = quadratic_weighted_kappa([0, 0, 3, 3], [0, 1, 3, 2], [0, 1, 2, 3])
    assert kappa == pytest.approx(6 / 7)


def test_qwk_perfect_opposite_and_undefined() -> None:
    assert quadratic_weighted_kappa([0, 1, 2, 3], [0, 1, 2, 3]) == pytest.approx(1.0)
    assert quadratic_weighted_kappa([0, 3], [3, 0]) == pytest.approx(-1.0)
    assert quadratic_weighted_kappa([2, 2], [2, 2]) is None
    assert quadratic_weighted_kappa([], []) is None
    with pytest.raises(ValueError):
        quadratic_weighted_kappa([1], [1, 2])


def test_summary_and_histogram() -> None:
    s = summarize([1.0, 2.0, 3.0, 4.0])
    assert (s.n, s.mean, s.median, s.minimum, s.maximum) == (4, 2.5, 2.5, 1.0, 4.0)
    assert s.stdev == pytest.approx(math.sqrt(1.25))
    bins = histogram([0, 9.99, 10, 100, 55], 100.0)
    assert [b.count for b in bins] == [2, 1, 0, 0, 0, 1, 0, 0, 0, 1]
    assert summarize([]).mean is None


def test_criterion_stats_reflect_the_store(synth: SyntheticRun) -> None:
    students = list(finals(synth.store, synth.run_id))
    stats = criterion_stats(students)
    assert [s.criterion.id for s in stats] == ["c1", "c2", "c3", "c4", "c5", "c6"]
    c1 = [c.final for s in students for c in s.criteria if c.criterion.id == "c1"
          and c.final is not None]
    assert stats[0].summary.n == len(c1)
    assert stats[0].summary.mean == pytest.approx(sum(c1) / len(c1))
    assert sum(b.count for b in stats[0].distribution) == len(c1)
    assert [b.label for b in stats[0].distribution] == ["0", "1", "2", "3", "4"]
    assert stats[0].full_marks_share == pytest.approx(sum(1 for v in c1 if v == 4) / len(c1))
    assert agreement(students) == []  # nothing reviewed yet


def test_half_point_scores_get_one_bin_per_score() -> None:
    from grader.prompting.rubric import Criterion
    from grader.reports.stats import score_distribution

    crit = Criterion(id="c", title="C", max_points=4)
    bins = score_distribution([0.5, 1.5, 1.5, 4.0], crit)
    assert [b.label for b in bins] == ["0", "0.5", "1", "1.5", "2", "2.5", "3", "3.5", "4"]
    assert [b.count for b in bins] == [0, 1, 0, 2, 0, 0, 0, 0, 1]
    wide = score_distribution([12.5, 99.0], Criterion(id="w", title="W", max_points=100))
    assert len(wide) == 10 and wide[0].label == "0–10"  # big scales: ten equal bins


# -- escaping -----------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["=1+1", "+1", "-1", "@x", "\tx", "\rx"])
def test_escape_prefixes_formula_starts(text: str) -> None:
    assert escape_text(text) == "'" + text
    assert unescape_text(escape_text(text)) == text


def test_escape_leaves_plain_text_and_numbers() -> None:
    assert escape_text("fine = ok") == "fine = ok"
    assert escape_cell(-3) == -3
    assert escape_cell(None) is None
    assert escape_text("a\x00b\x07c") == "abc"


# -- workbook -----------------------------------------------------------------------------------

def test_write_reports_outputs(synth: SyntheticRun, tmp_path: Path) -> None:
    out = tmp_path / "out"
    paths = write_reports(synth.store, synth.run_id, out)
    assert out / "review.xlsx" in paths and out / "report.html" in paths
    pages = sorted((out / "students").glob("*.html"))
    assert len(pages) == len(synth.student_ids)
    assert all(p.stat().st_size > 500 for p in paths)


def _column_style(ws: openpyxl.worksheet.worksheet.Worksheet, index: int) -> object:
    """The format an empty cell of column `index` shows (XlsxWriter groups equal columns)."""
    return next(d for d in ws.column_dimensions.values() if d.min <= index <= d.max)


def test_workbook_structure(synth: SyntheticRun, tmp_path: Path) -> None:
    write_reports(synth.store, synth.run_id, tmp_path)
    wb = openpyxl.load_workbook(tmp_path / "review.xlsx")
    assert wb.sheetnames == ["How to review", "Summary", "Feedback", "Criteria", "Run",
                             "_grader_meta"]
    run_sheet = {r[0]: r[1] for r in wb["Run"].iter_rows(values_only=True)}
    assert run_sheet["Model calls"] > 0 and run_sheet["Thinking tokens"] > 0
    assert "model table prices, checked" in run_sheet["Prices"]
    assert wb["_grader_meta"].sheet_state == "hidden"
    ws = wb["Summary"]
    cols = _cols(ws)
    for h in ("Student ID", "Name", "AI: c1", "AI total", "AI %", "AI band", "Flags",
              "Review status", "Teacher: c1", "Teacher: c6", "Feedback to the student",
              "Private note (never shown to the student)", "Approved",
              "Final: c1", "Final total", "Final %", "Final band"):
        assert h in cols, h
    assert ws.max_row == len(synth.student_ids) + 1
    assert ws.freeze_panes == "C2"
    assert ws.auto_filter.ref is not None
    # protected without a password; only the header row is locked, so sorting works
    assert ws.protection.sheet is True and not ws.protection.password
    assert ws.protection.sort is False and ws.protection.autoFilter is False  # = allowed
    assert ws.cell(1, cols["Teacher: c1"]).protection.locked is True
    letter = openpyxl.utils.get_column_letter
    for h in ("Student ID", "AI: c1", "AI total", "Teacher: c1", "Approved", "Final total"):
        cell = ws.cell(2, cols[h])
        # an empty cell is not written: it takes its column's (unlocked) format
        style = cell if cell.value is not None else _column_style(ws, cols[h])
        assert style.protection.locked is False, h
    # validation: levels list for c1, 0..10 decimal for c2, yes/no for approval
    dvs = {str(dv.sqref).split(":")[0]: dv for dv in ws.data_validations.dataValidation}
    assert dvs[f"{letter(cols['Teacher: c1'])}2"].formula1 == '"0,1,2,3,4"'
    c2 = dvs[f"{letter(cols['Teacher: c2'])}2"]
    assert (c2.type, c2.formula1, c2.formula2) == ("decimal", "0", "10")
    assert dvs[f"{letter(cols['Approved'])}2"].formula1 == '"yes,no"'
    assert len(ws.conditional_formatting) >= 2
    # finals are live formulas: teacher value when given, else AI
    final = ws.cell(2, cols["Final: c1"]).value
    assert final.startswith("=IF(") and letter(cols["Teacher: c1"]) in final
    # flagged rows show their reasons
    flagged_rows = [r for r in ws.iter_rows(min_row=2, values_only=True)
                    if r[cols["Flags"] - 1]]
    assert len(flagged_rows) == len(synth.flagged_ids)
    fb = wb["Feedback"]
    assert fb.max_row == 1 + 6 * len(synth.student_ids)
    assert fb.cell(1, 10).value == "Teacher feedback to the student"
    assert _column_style(fb, 10).protection.locked is False
    assert fb.cell(1, 10).protection.locked
    crit = wb["Criteria"]
    assert [crit.cell(r, 1).value for r in range(2, 8)] == [f"c{i}" for i in range(1, 7)]


def test_workbook_reads_well(synth: SyntheticRun, tmp_path: Path) -> None:
    """Header height, one-line flags with notes, print setup, links to student pages."""
    write_reports(synth.store, synth.run_id, tmp_path)
    wb = openpyxl.load_workbook(tmp_path / "review.xlsx")
    howto = wb["How to review"]
    text = "\n".join(str(c.value) for c in howto["A"] if c.value)
    assert "never on a student page" in text and "Feedback to the student" in text
    ws = wb["Summary"]
    cols = _cols(ws)
    # the wrapped header is two lines tall, so it never covers the first student
    assert ws.row_dimensions[1].height >= 30
    flags = [ws.cell(r, cols["Flags"]) for r in range(2, ws.max_row + 1)]
    flagged = [c for c in flags if c.value]
    assert flagged and all("\n" not in c.value for c in flagged)  # one line each
    two_part = [c for c in flagged if c.comment is not None]
    assert len(two_part) == len(flagged)  # the full messages are in the cell's note
    assert all(":" in c.comment.text for c in two_part)
    # landscape, one page wide, header row repeated on every page
    for name in ("Summary", "Feedback"):
        sheet = wb[name]
        assert sheet.page_setup.orientation == "landscape"
        assert sheet.page_setup.fitToWidth in (1, None) and sheet.page_setup.fitToHeight == 0
        assert sheet.sheet_properties.pageSetUpPr.fitToPage is True
        assert sheet.print_title_rows in ("1:1", "$1:$1")
    # each name links to the student's page
    links = {ws.cell(r, 1).value: ws.cell(r, cols["Name"]).hyperlink
             for r in range(2, ws.max_row + 1)}
    assert links["s00002"].target.replace("\\", "/") == "students/s00002.html"
    assert all(h is not None for h in links.values())
    # multi-line Feedback cells get tall rows instead of being clipped
    fb = wb["Feedback"]
    assert fb.row_dimensions[2].height and fb.row_dimensions[2].height > 15


def test_workbook_written_by_a_second_process_is_the_same(synth: SyntheticRun,
                                                          tmp_path: Path) -> None:
    """Large classes get the workbook from a child process (reading the store itself) while the
    HTML renders here; it must be the same workbook, and it is remembered as grader's own."""
    one, two = tmp_path / "one", tmp_path / "two"
    write_reports(synth.store, synth.run_id, one, parallel=False)
    paths = write_reports(synth.store, synth.run_id, two, parallel=True)
    assert two / "review.xlsx" in paths and (two / "students").is_dir()

    def cells(path: Path) -> list[list[object]]:
        wb = openpyxl.load_workbook(path / "review.xlsx", data_only=True)
        return [[c.value for c in row] for name in ("Summary", "Feedback", "Criteria")
                for row in wb[name].iter_rows()]

    assert cells(one) == cells(two)
    assert (two / ".grader-workbooks").read_text().count("review.xlsx") == 1


def test_every_final_cell_has_a_cached_value(synth: SyntheticRun, tmp_path: Path) -> None:
    """Previews, phones and pandas read cached values: every Final cell has one, equal to the
    final grade (or a word saying why there is none)."""
    write_reports(synth.store, synth.run_id, tmp_path)
    ws = openpyxl.load_workbook(tmp_path / "review.xlsx", data_only=True)["Summary"]
    cols = _cols(ws)
    finals_by_id = {s.student_id: s for s in finals(synth.store, synth.run_id)}
    final_cols = [h for h in cols if str(h).startswith("Final")]
    assert len(final_cols) == 6 + 3
    for r in range(2, ws.max_row + 1):
        s = finals_by_id[unescape(ws.cell(r, 1).value)]
        for h in final_cols:
            assert ws.cell(r, cols[h]).value is not None, (r, h)
        total = ws.cell(r, cols["Final total"]).value
        assert total == (s.final_total if s.final_total is not None else "incomplete")
        assert ws.cell(r, cols["Final band"]).value == (s.band or "—")
    assert any(ws.cell(r, cols["Final total"]).value == "incomplete"
               for r in range(2, ws.max_row + 1))  # the ungraded students say so


def test_sorting_the_summary_in_libreoffice_keeps_rows_and_protection(
        synth: SyntheticRun, tmp_path: Path) -> None:
    """LibreOffice headless sorts the protected Summary by the AI total, a column the teacher
    does not edit; rows move whole, the sheet stays protected, and the import still finds each
    teacher value's student.

    The AI columns are not *locked*, only grey and ignored by the import: under sheet
    protection Excel and LibreOffice both refuse to sort a range that holds a locked cell. The
    control below locks the AI total column of a copy and shows LibreOffice refusing the very
    same sort, so a sort by a locked column cannot work, and this test notices if locking
    creeps back into the data rows. Only the header row is locked."""
    from _libreoffice import sort_summary

    write_reports(synth.store, synth.run_id, tmp_path)
    wb = openpyxl.load_workbook(tmp_path / "review.xlsx")
    ws = wb["Summary"]
    cols = _cols(ws)
    rows = {unescape(ws.cell(r, 1).value): r for r in range(2, ws.max_row + 1)}
    ws.cell(rows["s00004"], cols["Teacher: c2"]).value = 0
    wb.save(tmp_path / "edited.xlsx")
    locked = openpyxl.load_workbook(tmp_path / "edited.xlsx")
    for r in range(2, locked["Summary"].max_row + 1):
        locked["Summary"].cell(r, cols["AI total"]).protection = Protection(locked=True)
    locked.save(tmp_path / "locked.xlsx")

    profile = tmp_path / "lo-profile"
    sort_summary(tmp_path / "edited.xlsx", tmp_path / "sorted.xlsx", "AI total", profile)
    sort_summary(tmp_path / "locked.xlsx", tmp_path / "refused.xlsx", "AI total", profile)

    def totals(path: Path) -> list[object]:
        sheet = openpyxl.load_workbook(path, data_only=True)["Summary"]
        return [sheet.cell(r, cols["AI total"]).value for r in range(2, sheet.max_row + 1)]

    before, after = totals(tmp_path / "edited.xlsx"), totals(tmp_path / "sorted.xlsx")
    numbers = [t for t in after if isinstance(t, int | float)]
    assert numbers == sorted(numbers, reverse=True) and after != before
    assert totals(tmp_path / "refused.xlsx") == before  # locked cells: LibreOffice refused
    sorted_ws = openpyxl.load_workbook(tmp_path / "sorted.xlsx", data_only=True)["Summary"]
    assert sorted_ws.protection.sheet is True
    r = next(i for i in range(2, sorted_ws.max_row + 1)
             if unescape(sorted_ws.cell(i, 1).value) == "s00004")
    assert sorted_ws.cell(r, cols["Teacher: c2"]).value == 0
    assert sorted_ws.cell(r, cols["Final: c2"]).value == 0  # formulas moved with their rows
    result = import_workbook(synth.store, tmp_path / "sorted.xlsx")
    assert result.applied == 1
    fs = next(f for f in finals(synth.store, synth.run_id) if f.student_id == "s00004")
    assert fs.criteria[1].teacher_score == 0


def test_formula_injection_lands_as_text_in_every_xlsx_cell(synth: SyntheticRun,
                                                            tmp_path: Path) -> None:
    write_reports(synth.store, synth.run_id, tmp_path)
    wb = openpyxl.load_workbook(tmp_path / "review.xlsx")
    seen: set[str] = set()
    for ws in wb.worksheets:
        for row in ws.iter_rows():
            for cell in row:
                v = cell.value
                if not isinstance(v, str):
                    continue
                if cell.data_type == "f":
                    # only our own Final formulas in Summary, built from cell references
                    assert ws.title == "Summary" and v.startswith("=IF("), (cell.coordinate, v)
                    assert "HYPERLINK" not in v and "cmd" not in v
                    continue
                assert cell.data_type == "s", (ws.title, cell.coordinate)
                assert not v.startswith(FORMULA_STARTS), (ws.title, cell.coordinate, v)
                for evil in FORMULA_EVIL:  # control characters are stored as _x000D_
                    if unescape_ooxml(v).startswith("'" + evil):
                        seen.add(evil)
    assert seen == set(FORMULA_EVIL)  # every hostile string reached the workbook, escaped


def test_regenerated_workbook_shows_imported_decisions(synth: SyntheticRun,
                                                       tmp_path: Path) -> None:
    write_reports(synth.store, synth.run_id, tmp_path)
    wb = openpyxl.load_workbook(tmp_path / "review.xlsx")
    ws = wb["Summary"]
    cols = _cols(ws)
    # rows come in review order (the flagged first): take the first student the AI scored
    r = next(r for r in range(2, ws.max_row + 1) if ws.cell(r, cols["AI: c2"]).value is not None)
    ws.cell(r, cols["Teacher: c2"]).value = 1
    ws.cell(r, cols["Approved"]).value = "yes"
    ws.cell(r, cols["Feedback to the student"]).value = "Good effort"
    sid = unescape(ws.cell(r, cols["Student ID"]).value)
    wb.save(tmp_path / "edited.xlsx")
    import_workbook(synth.store, tmp_path / "edited.xlsx")

    write_reports(synth.store, synth.run_id, tmp_path)
    ws = openpyxl.load_workbook(tmp_path / "review.xlsx")["Summary"]
    row = next(r for r in ws.iter_rows(min_row=2) if unescape(r[0].value) == sid)
    assert row[cols["Teacher: c2"] - 1].value == 1
    assert row[cols["Approved"] - 1].value == "yes"
    assert row[cols["Feedback to the student"] - 1].value == "Good effort"
    assert row[cols["Review status"] - 1].value == "approved"
    student = next(s for s in finals(synth.store, synth.run_id) if s.student_id == sid)
    c2 = student.criteria[1]
    assert c2.final == 1 and c2.teacher_score == 1 and c2.ai_score is not None
    assert student.final_total == pytest.approx(
        sum(c.ai_score or 0 for c in student.criteria) - (c2.ai_score or 0) + 1)


def unescape(v: object) -> str:
    return unescape_text(str(v))


def test_the_ooxml_unescape_reads_cells_as_openpyxl_does() -> None:
    from grader.reports.excel import unescape_ooxml as ours
    for text in ("plain", "a_x000D_b", "_x000a__x0009_", "_x00zz_ _X000A_ _x000A_",
                 "_x" + "0041_", "no escape _x_"):
        assert ours(text) == unescape_ooxml(text), text
