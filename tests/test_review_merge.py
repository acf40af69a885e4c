"""Three-way review import: partial and parallel workbooks merge, a stale copy changes only what
it changed and reports conflicts by cell, a workbook from an older run lands in the latest run,
and the imported file is never overwritten."""

from __future__ import annotations

import shutil
from pathlib import Path

import openpyxl
import pytest
from click.testing import CliRunner

from grader.cli import cli
from grader.escape import unescape_text
from grader.reports import write_reports
from grader.review.final import FinalStudent, finals
from grader.review.importing import ReviewConflictError, import_workbook
from grader.review.merge import classify
from grader.store import Store

from _synthetic import SyntheticRun, build, rerun

COMMENT = "Feedback to the student"
STALE = "out/stale-source.xlsx"


@pytest.fixture
def synth(tmp_path: Path) -> SyntheticRun:
    run = build(tmp_path / "db.sqlite", n=20, k=6)
    write_reports(run.store, run.run_id, tmp_path / "out")
    return run


def _copy(tmp_path: Path, name: str, edits: dict[tuple[str, str], object],
          keep_only: set[str] | None = None, src: str = "out/review.xlsx") -> Path:
    """A copy of a workbook with `edits` {(student, header): value}; `keep_only`: delete every
    other student's row (a TA's partial workbook)."""
    wb = openpyxl.load_workbook(tmp_path / src)
    ws = wb["Summary"]
    cols = {c.value: c.column for c in ws[1]}
    rows = {unescape_text(str(ws.cell(r, 1).value)): r for r in range(2, ws.max_row + 1)}
    for (sid, header), value in edits.items():
        ws.cell(rows[sid], cols[header]).value = value
    if keep_only is not None:
        for r in sorted((r for s, r in rows.items() if s not in keep_only), reverse=True):
            ws.delete_rows(r)
    path = tmp_path / "out" / name  # saved beside the original: the store is found from it
    wb.save(path)
    return path


def _final(store: Store, sid: str) -> FinalStudent:
    return next(f for f in finals(store, store.latest_run().id) if f.student_id == sid)


def _teacher(store: Store) -> dict[tuple[str, str], object]:
    out: dict[tuple[str, str], object] = {}
    for fs in finals(store, store.latest_run().id):
        for c in fs.criteria:
            if c.teacher_score is not None:
                out[(fs.student_id, c.criterion.id)] = c.teacher_score
        if fs.teacher_comment:
            out[(fs.student_id, "comment")] = fs.teacher_comment
    return out


def test_classify_is_the_three_way_rule() -> None:
    assert classify(base=1, workbook=1, stored=5) == "unchanged"  # others' change survives
    assert classify(base=1, workbook=2, stored=1) == "apply"
    assert classify(base=1, workbook=2, stored=2) == "same"
    assert classify(base=1, workbook=2, stored=3) == "conflict"
    assert classify(base=None, workbook=None, stored=3) == "unchanged"
    assert classify(base=3, workbook=None, stored=3) == "apply"  # a cleared cell


TA1 = {("s00002", "Teacher: c2"): 5, ("s00002", COMMENT): "TA one was here",
       ("s00004", "Teacher: c1"): 0}
TA2 = {("s00012", "Teacher: c3"): 1, ("s00013", "Approved"): "yes",
       ("s00014", COMMENT): "TA two's words"}
BOTH = {("s00002", "c2"): 5.0, ("s00002", "comment"): "TA one was here", ("s00004", "c1"): 0.0,
        ("s00012", "c3"): 1.0, ("s00014", "comment"): "TA two's words"}


@pytest.mark.parametrize("order", ["ta1_first", "ta2_first"])
def test_two_tas_partial_workbooks_keep_both(synth: SyntheticRun, tmp_path: Path,
                                             order: str) -> None:
    """TA one edits a full copy; TA two deleted every row but their own. Either order keeps
    both TAs' decisions (the old import cleared everything the other TA had imported)."""
    ta1 = _copy(tmp_path, "ta1.xlsx", TA1)
    ta2 = _copy(tmp_path, "ta2.xlsx", TA2, keep_only={"s00012", "s00013", "s00014"})
    first, second = (ta1, ta2) if order == "ta1_first" else (ta2, ta1)
    import_workbook(synth.store, first)
    r = import_workbook(synth.store, second)
    assert r.conflicts == [] and r.applied == 3
    assert _teacher(synth.store) == BOTH
    assert _final(synth.store, "s00013").approved is True
    for path in (ta1, ta2):  # importing either again changes nothing
        assert import_workbook(synth.store, path).applied == 0
    assert _teacher(synth.store) == BOTH


def test_stale_copy_changes_only_its_own_cells_and_reports_conflicts(
        synth: SyntheticRun, tmp_path: Path) -> None:
    stale_src = tmp_path / STALE
    shutil.copy(tmp_path / "out" / "review.xlsx", stale_src)
    import_workbook(synth.store, _copy(tmp_path, "first.xlsx", TA1))
    write_reports(synth.store, synth.run_id, tmp_path / "out")  # later workbook

    # a stale copy touching a cell nobody else touched: only that cell changes
    quiet = _copy(tmp_path, "quiet.xlsx", {("s00007", "Teacher: c4"): 2}, src=STALE)
    r = import_workbook(synth.store, quiet)
    assert r.applied == 1 and r.conflicts == []
    assert _teacher(synth.store) == {**{k: v for k, v in BOTH.items() if k[0] in
                                        ("s00002", "s00004")}, ("s00007", "c4"): 2.0}

    # a stale copy that changed cells the store changed since: conflicts by cell, nothing stored
    clash = _copy(tmp_path, "clash.xlsx", {("s00002", "Teacher: c2"): 9,
                                           ("s00002", COMMENT): "stale words",
                                           ("s00008", "Teacher: c5"): 3}, src=STALE)
    decisions = sum(len(v) for v in synth.store.decisions().values())
    with pytest.raises(ReviewConflictError) as err:
        import_workbook(synth.store, clash)
    msg = str(err.value)
    wb = openpyxl.load_workbook(clash)
    ws = wb["Summary"]
    cols = {c.value: c.column for c in ws[1]}
    row = next(r for r in range(2, ws.max_row + 1) if ws.cell(r, 1).value == "s00002")
    letter = openpyxl.utils.get_column_letter
    assert f"Summary!{letter(cols['Teacher: c2'])}{row} (s00002, score c2): yours 9, the " \
           "store's now 5" in msg
    assert f"Summary!{letter(cols[COMMENT])}{row} (s00002, comment)" in msg
    assert "2 cell(s) were changed both" in msg and "--force" in msg
    assert sum(len(v) for v in synth.store.decisions().values()) == decisions  # all or nothing
    assert _teacher(synth.store)[("s00002", "c2")] == 5.0

    # --dry-run shows the diff and the conflicts and stores nothing
    res = CliRunner().invoke(cli, ["review", "import", str(clash), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "s00008 (Student 8):" in res.output and "score c5): 3 ->" not in res.output
    assert "(s00008, score c5): (empty) -> 3" in res.output
    assert "2 conflict(s)" in res.output and "dry run: nothing was stored" in res.output
    assert sum(len(v) for v in synth.store.decisions().values()) == decisions

    # --force: the workbook wins
    r = import_workbook(synth.store, clash, force=True)
    assert r.applied == 3
    assert _teacher(synth.store)[("s00002", "c2")] == 9.0
    assert _teacher(synth.store)[("s00008", "c5")] == 3.0


def test_workbook_from_an_older_run_lands_in_the_latest_run(synth: SyntheticRun,
                                                            tmp_path: Path) -> None:
    shutil.copy(tmp_path / "out" / "review.xlsx", tmp_path / "out" / "run1.xlsx")
    new_run = rerun(synth.store, synth.run_id, resubmit=("s00005",),
                    regrade={"s00006": {"c2": 0.0}})
    ai_c2 = next(c.ai_score for c in _final(synth.store, "s00006").criteria
                 if c.criterion.id == "c2")
    assert ai_c2 == 0.0
    old = _copy(tmp_path, "old.xlsx", {("s00002", "Teacher: c2"): 4,
                                       ("s00005", "Teacher: c1"): 3,
                                       ("s00006", "Teacher: c3"): 2})
    res = CliRunner().invoke(cli, ["review", "import", str(old)])
    assert res.exit_code == 0, res.output
    assert f"written for run {synth.run_id}; its decisions go to run {new_run}" in res.output
    assert "handed in a new submission since" in res.output and "s00005" in res.output
    decided = _teacher(synth.store)
    assert decided[("s00002", "c2")] == 4.0  # unchanged submission: applied to the new run
    assert decided[("s00006", "c3")] == 2.0  # same submission, c3's AI score unchanged
    assert ("s00005", "c1") not in decided
    d = synth.store.decisions()["s00002"][-1]
    assert d.run_id == new_run

    # a change to a criterion whose AI score moved since is a conflict
    moved = _copy(tmp_path, "moved.xlsx", {("s00006", "Teacher: c2"): 7}, src="out/run1.xlsx")
    with pytest.raises(ReviewConflictError, match=r"the AI's score changed from \d+ to 0"):
        import_workbook(synth.store, moved)


def test_the_imported_file_is_never_overwritten(synth: SyntheticRun, tmp_path: Path) -> None:
    out = tmp_path / "out"
    wb = openpyxl.load_workbook(out / "review.xlsx")
    ws = wb["Summary"]
    cols = {c.value: c.column for c in ws[1]}
    ws.cell(3, cols["Teacher: c2"]).value = 6
    ws.cell(1, ws.max_column + 1).value = "my own column"  # the teacher's additions
    wb.save(out / "review.xlsx")
    edited = (out / "review.xlsx").read_bytes()
    res = CliRunner().invoke(cli, ["review", "import", str(out / "review.xlsx")])
    assert res.exit_code == 0, res.output
    assert (out / "review.xlsx").read_bytes() == edited
    fresh = openpyxl.load_workbook(out / "review-updated.xlsx")["Summary"]
    assert fresh.cell(3, cols["Teacher: c2"]).value == 6
    assert "review-updated.xlsx" in res.output and "was left as it is" in res.output

    # a regenerated report replaces the fresh workbook (grader wrote it) but not the edited one
    # (--run: the synthetic run graded another folder than tmp_path)
    res = CliRunner().invoke(cli, ["report", str(tmp_path), "--db", str(tmp_path / "db.sqlite"),
                                   "--out", str(out), "--run", str(synth.run_id)])
    assert res.exit_code == 0, res.output
    assert (out / "review.xlsx").read_bytes() == edited
    assert not (out / "review-updated-2.xlsx").exists()
    assert "review.xlsx was left as it is" in res.output
