"""Review by answer group, end to end through the CLI against the fake Gemini server: groups in
the store and on review.xlsx's Groups sheet, a group decision reaching the members without one
of their own, two TAs' copies merged, the `inconsistent_with_group` flag, the calibration pilot
one answer per group. The pure policy: tests/test_groups.py."""

from __future__ import annotations

import csv
from pathlib import Path

import openpyxl
import pytest

from grader.testing.fake_gemini import FakeGemini

from _classgen import ANSWERS as CLASS_ANSWERS
from _classgen import make_class
from _cli import grade, q, run_class_of

SIMPLE = "I would use binary encoding because it is simple and cheap."
MANCH = "Manchester encoding because it is self-clocking and robust against clock drift."
DIFF = "Differential Manchester, as it is robust against noise and polarity errors."
ANSWERS = {
    "a1": SIMPLE, "a2": SIMPLE,  # byte-identical
    "a3": SIMPLE.replace("simple", "simple to build"),  # near-identical
    "a4": SIMPLE + " FAKE_GEMINI:OBEY",  # near-identical, and the fake gives it full marks
    "m1": MANCH, "m2": MANCH.replace("clock drift", "drift of the clocks"),
    "d1": DIFF,
}


@pytest.fixture
def graded(gemini_env: FakeGemini, tmp_path: Path) -> tuple[Path, Path, Path]:
    return run_class_of(tmp_path, ANSWERS)


def _groups(db: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for label, sid in q(db, "SELECT label, student_id FROM answer_groups ORDER BY student_id"):
        out.setdefault(label, []).append(sid)
    return out


def _sheet(book: Path, name: str) -> tuple[openpyxl.Workbook, dict[str, int], dict[str, int]]:
    wb = openpyxl.load_workbook(book)
    ws = wb[name]
    cols = {c.value: c.column for c in ws[1]}
    rows = {ws.cell(r, 1).value: r for r in range(2, ws.max_row + 1)}
    return wb, cols, rows


def test_similar_answers_share_a_group_and_the_odd_grade_is_flagged(
        graded: tuple[Path, Path, Path]) -> None:
    _, out, db = graded
    assert _groups(db) == {"G1": ["a1", "a2", "a3", "a4"], "G2": ["m1", "m2"], "G3": ["d1"]}
    totals = dict(q(db, "SELECT o.student_id, g.total FROM outcomes o JOIN grades g"
                        " ON g.id = o.grade_id"))
    assert totals["a4"] == 5 and totals["a1"] < 3  # the marker made the model answer apart
    flagged = {sid for (sid,) in q(db, "SELECT student_id FROM answer_groups"
                                      " WHERE flag IS NOT NULL")}
    assert flagged == {"a4"}
    wb, cols, rows = _sheet(out / "review.xlsx", "Summary")
    flags = wb["Summary"].cell(rows["a4"], cols["Flags"]).value
    assert "inconsistent_with_group" in flags
    ws = wb["Summary"]
    clean = [r for sid, r in rows.items() if not ws.cell(r, cols["Flags"]).value]
    assert clean and rows["a4"] < min(clean)  # in the review queue, before the clean rows
    note = wb["Summary"].cell(rows["a4"], cols["Flags"]).comment.text
    assert f"a1 {totals['a1']:g}" in note and "G1" in note  # with the group's other scores
    with open(out / "grades.csv", encoding="utf-8") as fh:
        assert "inconsistent_with_group" in next(line for line in fh if line.startswith("a4,"))
    cls, _, _ = graded
    code, output = grade("run", str(cls), "--db", str(db), "--out", str(out))  # all reused
    assert code == 0 and "flagged inconsistent_with_group after grading: a4 " in output, output


def test_the_groups_sheet_lists_each_group_with_links_to_its_members(
        graded: tuple[Path, Path, Path]) -> None:
    _, out, _ = graded
    wb, cols, rows = _sheet(out / "review.xlsx", "Groups")
    ws = wb["Groups"]
    assert list(rows) == ["G1", "G2"]  # a group of one is its Summary row
    g1 = rows["G1"]
    assert ws.cell(g1, cols["Size"]).value == 4
    assert ws.cell(g1, cols["Representative"]).value in ("a1", "a2", "a3")
    assert "binary encoding" in ws.cell(g1, cols["Representative answer"]).value
    assert ws.cell(g1, cols["AI total"]).value.endswith(" – 5")
    assert ws.cell(g1, cols["Inconsistent"]).value == 1
    links = [ws.cell(g1, cols[f"Member {i}"]) for i in range(1, 5)]
    assert [c.value.split()[0] for c in links] == ["a1", "a2", "a3", "a4"]
    summary_rows = _sheet(out / "review.xlsx", "Summary")[2]
    assert links[3].hyperlink.location == f"'Summary'!A{summary_rows['a4']}"


def _decide(book: Path, group: dict[str, dict[str, object]],
            own: dict[str, dict[str, object]] | None = None, save: Path | None = None) -> Path:
    wb, cols, rows = _sheet(book, "Groups")
    for label, cells in group.items():
        for header, value in cells.items():
            wb["Groups"].cell(rows[label], cols[header]).value = value
    ws = wb["Summary"]
    scols = {c.value: c.column for c in ws[1]}
    srows = {ws.cell(r, 1).value: r for r in range(2, ws.max_row + 1)}
    for sid, cells in (own or {}).items():
        for header, value in cells.items():
            ws.cell(srows[sid], scols[header]).value = value
    wb.save(save or book)
    return save or book


def _finals(out: Path) -> dict[str, dict[str, str]]:
    import csv

    with open(out / "grades.csv", encoding="utf-8") as fh:
        return {r["student_id"]: r for r in csv.DictReader(fh)}


def test_a_group_decision_reaches_every_member_without_one_of_their_own(
        graded: tuple[Path, Path, Path]) -> None:
    _, out, db = graded
    book = _decide(out / "review.xlsx", {"G1": {"Teacher: choice": 1, "Approved": "yes"}},
                   own={"a3": {"Teacher: choice": 2}})
    code, output = grade("review", "import", str(book), "--db", str(db))
    assert code == 0, output
    assert "group G1 (Groups!" in output
    assert "score choice) -> 1: reached 3 of 4 students (1 with a value of their own" in output
    # a4, graded apart from its group (inconsistent_with_group), keeps the AI's score on the
    # other criterion: the group's approval does not pass it
    assert ("approved) -> yes: reached 3 of 4 students (1 flagged inconsistent_with_group not "
            "approved") in output, output
    finals = _finals(out)
    assert [finals[s]["final_choice"] for s in ("a1", "a2", "a3", "a4")] == ["1", "1", "2", "1"]
    assert {finals[s]["review_status"] for s in ("a1", "a2", "a3")} == {"approved"}
    assert finals["a4"]["review_status"] == "needs review"
    assert finals["m1"]["review_status"] != "approved"  # another group: untouched
    stored = q(db, "SELECT student_id, group_label, cell FROM decisions"
                   " WHERE field='score' ORDER BY student_id")
    assert [(s, g) for s, g, _ in stored] == [("a1", "G1"), ("a2", "G1"), ("a3", None),
                                              ("a3", "G1"), ("a4", "G1")]
    # a member's own decision wins whenever it is made: a later one for a1 too (in the fresh
    # workbook the import wrote beside the teacher's file)
    book = _decide(out / "review-updated.xlsx", {}, own={"a1": {"Teacher: choice": 0}})
    code, output = grade("review", "import", str(book), "--db", str(db))
    assert code == 0, output
    assert _finals(out)["a1"]["final_choice"] == "0" and _finals(out)["a2"]["final_choice"] == "1"
    # the group's value is on the fresh workbook, and the history keeps every decision
    wb, cols, rows = _sheet(out / "review-updated.xlsx", "Groups")
    assert wb["Groups"].cell(rows["G1"], cols["Teacher: choice"]).value == 1
    assert q(db, "SELECT COUNT(*) FROM decisions")[0][0] == 9


def test_two_tas_deciding_the_same_group_merge_as_today(graded: tuple[Path, Path, Path],
                                                        tmp_path: Path) -> None:
    _, out, db = graded
    ta1 = _decide(out / "review.xlsx", {"G1": {"Teacher: choice": 1}}, save=tmp_path / "ta1.xlsx")
    ta2 = _decide(out / "review.xlsx", {"G1": {"Feedback to the student": "Name a reason."}},
                  save=tmp_path / "ta2.xlsx")
    ta3 = _decide(out / "review.xlsx", {"G1": {"Teacher: choice": 2}}, save=tmp_path / "ta3.xlsx")
    for book in (ta1, ta2):  # different cells of one group: both kept, in either order
        code, output = grade("review", "import", str(book), "--db", str(db))
        assert code == 0, output
    finals = _finals(out)
    assert finals["a2"]["final_choice"] == "1"
    comments = q(db, "SELECT DISTINCT value FROM decisions WHERE field='comment'")
    assert comments == [('"Name a reason."',)]
    # the same cell changed by another TA since their copy was written: a conflict
    code, output = grade("review", "import", str(ta3), "--db", str(db))
    assert code != 0 and "changed both" in output and "(G1, score choice)" in output
    assert _finals(out)["a2"]["final_choice"] == "1"  # nothing stored
    # importing the first TA's copy again changes nothing
    code, output = grade("review", "import", str(ta1), "--db", str(db))
    assert code == 0 and "0 values changed" in output


def test_the_calibration_pilot_takes_one_answer_per_group_largest_first(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    from grader.quality.calibration import pick_sample

    texts = {"a1": SIMPLE, "a2": SIMPLE, "a3": SIMPLE + " Cheap.", "m1": MANCH,
             "m2": MANCH + " Yes.", "d1": DIFF}
    assert pick_sample(texts, 2) in (["a1", "m1"], ["a1", "m2"])  # the two largest groups
    assert len({s[0] for s in pick_sample(texts, 3)}) == 3  # one per group
    # through the CLI: 10 students, 5 answers (each twice, with the student's number)
    class_dir = make_class(tmp_path, 10)
    out = tmp_path / "out"
    code, output = grade("calibrate", str(class_dir), "--db", str(tmp_path / "g.sqlite"),
                         "--out", str(out), "--n", "4")
    assert code == 0, output
    ws = openpyxl.load_workbook(out / "calibration.xlsx")["Scores"]
    picked = sorted({ws.cell(r, 1).value for r in range(2, ws.max_row + 1)})
    assert len(picked) == 4
    assert len({int(sid[1:]) % len(CLASS_ANSWERS) for sid in picked}) == 4  # 4 answers, not 2x2
    assert sum(1 for r in gemini_env.requests() if r["endpoint"] == "generateContent") == 0


def test_eval_measures_the_groups_against_the_human_scores(
        graded: tuple[Path, Path, Path], tmp_path: Path) -> None:
    class_dir, _, db = graded
    # the tutor agrees within G1 except a3, and splits G2; d1 is alone
    totals = {"a1": 1, "a2": 1, "a3": 2, "a4": 1, "m1": 3, "m2": 4, "d1": 2}
    scores = tmp_path / "human.csv"
    scores.write_text("student_id,criterion,score,rater\n" + "".join(
        f"{sid},total,{t},tutor\n" for sid, t in totals.items()), encoding="utf-8")
    code, output = grade("human", "import", str(scores), str(class_dir), "--db", str(db))
    assert code == 0, output
    code, output = grade("eval", str(class_dir), "--db", str(db))
    assert code == 0, output
    # 3 groups of 7; 5 members hold their group's most common total (3 of G1, 1 of G2, d1);
    # decisions: 3 groups + a3 + one of G2
    assert ("answer groups: 3 groups of 7 students scored by tutor; purity 71%" in output
            and "review decisions: 5 by group" in output and "vs 7 one per student" in output)
    table = tmp_path / "eval.csv"
    code, output = grade("eval", str(class_dir), "--db", str(db), "--csv", str(table))
    assert code == 0, output
    with table.open(newline="", encoding="utf-8") as fh:
        (row,) = [r for r in csv.DictReader(fh) if r["comparison"] == "answer groups"]
    assert (row["n"], row["groups"], row["group_decisions"]) == ("7", "3", "5")
    assert float(row["group_purity"]) == pytest.approx(5 / 7, abs=1e-6)


def _group_g1_scores_1(out: Path, db: Path) -> None:
    """The teacher gives G1 the choice score 1 in review.xlsx and imports it."""
    code, output = grade("review", "import",
                         str(_decide(out / "review.xlsx", {"G1": {"Teacher: choice": 1}})),
                         "--db", str(db))
    assert code == 0, output


def test_a_group_value_shown_has_reached_every_member_and_entering_it_reaches_a_newcomer(
        graded: tuple[Path, Path, Path]) -> None:
    class_dir, out, db = graded
    _group_g1_scores_1(out, db)
    # a late submission with the same answer joins G1 on the next run: it has no decision, so
    # the Groups sheet no longer claims the group holds 1
    (class_dir / "a9.txt").write_text(SIMPLE, encoding="utf-8")
    code, output = grade("run", str(class_dir), "--db", str(db), "--out", str(out))
    assert code == 0, output
    book = out / "review-updated.xlsx"
    wb, cols, rows = _sheet(book, "Groups")
    (label,) = [g for g, r in rows.items()
                if "a9" in str([c.value for c in wb["Groups"][r]])]
    assert wb["Groups"].cell(rows[label], cols["Teacher: choice"]).value is None
    assert _finals(out)["a9"]["final_choice"] != "1"
    # entering 1 again is a change: stored for every member, a9 too
    code, output = grade("review", "import", str(_decide(book, {label: {"Teacher: choice": 1}})),
                         "--db", str(db))
    assert code == 0, output
    assert all(_finals(out)[s]["final_choice"] == "1" for s in ("a1", "a2", "a9")), output


def test_clearing_a_members_cell_after_the_group_value_gives_back_the_ai_score(
        graded: tuple[Path, Path, Path]) -> None:
    _, out, db = graded
    _group_g1_scores_1(out, db)
    ai = _finals(out)["a1"]["ai_choice"]
    assert _finals(out)["a1"]["final_choice"] == "1" != ai
    book = _decide(out / "review-updated.xlsx", {}, own={"a1": {"Teacher: choice": None}})
    code, output = grade("review", "import", str(book), "--db", str(db))
    assert code == 0, output
    finals = _finals(out)
    assert finals["a1"]["final_choice"] == ai and finals["a2"]["final_choice"] == "1"


def test_a_group_approval_leaves_a_flagged_member_with_ai_scores_to_its_own_row(
        graded: tuple[Path, Path, Path]) -> None:
    _, out, db = graded
    book = _decide(out / "review.xlsx", {"G1": {"Approved": "yes"}})
    code, output = grade("review", "import", str(book), "--db", str(db))
    assert code == 0, output
    # a4 is flagged inconsistent_with_group: its AI score is not approved by the group
    assert "approved) -> yes: reached 3 of 4 students" in output, output
    assert "1 flagged inconsistent_with_group not approved" in output
    finals = _finals(out)
    assert {finals[s]["review_status"] for s in ("a1", "a2", "a3")} == {"approved"}
    assert finals["a4"]["review_status"] != "approved"
    assert q(db, "SELECT COUNT(*) FROM decisions WHERE student_id = 'a4'") == [(0,)]
    # the Groups sheet no longer shows the group approved (not every member is); scored on every
    # criterion by the group, a4 is the teacher's to approve with it
    book = out / "review-updated.xlsx"
    wb, cols, rows = _sheet(book, "Groups")
    assert wb["Groups"].cell(rows["G1"], cols["Approved"]).value in (None, "")
    book = _decide(book, {"G1": {"Teacher: choice": 1, "Teacher: reasons": 1,
                                 "Approved": "yes"}})
    code, output = grade("review", "import", str(book), "--db", str(db))
    assert code == 0, output
    assert "approved) -> yes: reached 4 of 4 students" in output, output
    assert _finals(out)["a4"]["review_status"] == "approved"


def test_a_group_decision_never_imported_stops_the_export(
        graded: tuple[Path, Path, Path]) -> None:
    """Scored and approved on the Groups sheet, saved, not imported: the gradebook would have
    the AI's grades, so the export stops, naming the group."""
    _, out, db = graded
    _decide(out / "review.xlsx", {"G2": {"Teacher: reasons": 3, "Approved": "yes"}})
    code, said = grade("export", str(out), "--format", "csv")
    assert code == 2, said
    assert "answer group(s) G2 on the Groups sheet that were never imported" in " ".join(
        said.split()), said
    assert not (out / "gradebook.csv").exists()
    assert grade("review", "import", str(out / "review.xlsx"), "--db", str(db))[0] == 0
    assert grade("export", str(out), "--format", "csv")[0] == 0


def test_a_group_decision_on_the_old_scale_is_a_conflict_after_a_rescale(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    """Full marks for a group (3 of 3) typed into a workbook, imported after the rubric put
    the criterion out of 10: a conflict naming the change, not 3 of 10 for every member."""
    cls, out, db = run_class_of(tmp_path, {"e1": "I do not know.", "e2": "I do not know.",
                                           "b": CLASS_ANSWERS[0]})
    label = next(lbl for lbl, sid in q(db, "SELECT label, student_id FROM answer_groups")
                 if sid == "e1")
    old_book = _decide(out / "review.xlsx", {label: {"Teacher: reasons": 3}},
                       save=tmp_path / "old.xlsx")
    rubric = (cls / "rubric.yaml").read_text(encoding="utf-8")
    (cls / "rubric.yaml").write_text(rubric.replace("    max_points: 3\n", "    max_points: 10\n"),
                                     encoding="utf-8")
    assert grade("run", str(cls), "--db", str(db), "--out", str(out))[0] == 0
    code, said = grade("review", "import", str(old_book), "--db", str(db))
    assert code != 0 and "the maximum of reasons changed from 3 to 10" in said, said
    assert q(db, "SELECT COUNT(*) FROM decisions") == [(0,)]
