"""The calibration gate: a reproducible, diverse sample; a blind workbook; its scores imported and
compared with the model's; `grade run` refused below the bar and let through with --force, or
once the calibration passes. End to end through the CLI against the fake server."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import openpyxl
from click.testing import CliRunner

from grader.cli import cli
from grader.quality.calibration import pick_sample
from grader.testing.fake_gemini import FakeGemini

from _classgen import make_class

TOPICS = {
    "net": "binary encoding bandwidth clocks baud manchester signal",
    "cook": "flour butter oven sugar whisk dough bake",
    "sport": "goal keeper referee penalty striker match league",
}


def test_the_sample_spreads_over_content_and_length_and_is_reproducible() -> None:
    texts = {}
    for t, (topic, words) in enumerate(TOPICS.items()):
        for i in range(6):
            texts[f"{topic}{i}"] = " ".join([words] * (1 + 3 * i + t))
    sample = pick_sample(texts, 3)
    assert sample == pick_sample(dict(reversed(list(texts.items()))), 3)  # same class, same sample
    assert len(sample) == 3 and {s[:-1] for s in sample} == set(TOPICS)  # one per topic
    wider = pick_sample(texts, 6)
    lengths = sorted(len(texts[s]) for s in wider)
    every = sorted(len(t) for t in texts.values())
    assert lengths[0] <= every[len(every) // 3] and lengths[-1] >= every[-len(every) // 3]
    assert pick_sample({"a": "x", "b": "y"}, 10) == ["a", "b"]
    assert len(pick_sample({f"s{i}": "1 2 3" for i in range(5)}, 2)) == 2  # no words at all



def cli_run(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return r.exit_code, r.output


def billed(fake: FakeGemini) -> int:
    return sum(fake.stats()["billed_by_submission"].values())


def fill(book: Path, score: dict[str, float] | None = None, *, reverse: bool = False,
         leave_blank: int = 0) -> list[str]:
    """Score the blind workbook like a teacher would; returns the students in it."""
    wb = openpyxl.load_workbook(book)
    ws = wb["Scores"]
    head = [c.value for c in ws[1]]
    col = {h: i + 1 for i, h in enumerate(head)}
    students = []
    for r in range(2, ws.max_row + 1 - leave_blank):
        sid, cid = ws.cell(r, col["student_id"]).value, ws.cell(r, col["criterion"]).value
        students.append(sid)
        if score is not None:
            ws.cell(r, col["score"]).value = score[f"{sid}/{cid}"]
            continue
        good = "binary" in ws.cell(r, col["submission"]).value.lower()
        top = float(ws.cell(r, col["max"]).value)
        ws.cell(r, col["score"]).value = (0 if good else top) if reverse else (top if good
                                                                                else 0)
    wb.save(book)
    return sorted(set(students))


def test_calibration_blocks_a_run_below_the_bar_and_force_passes_it(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    class_dir = make_class(tmp_path, 10)
    out, db = tmp_path / "out", tmp_path / "g.sqlite"
    args = (str(class_dir), "--db", str(db), "--out", str(out))
    # step 1: a blind workbook, no model call
    code, output = cli_run("calibrate", *args, "--n", "4")
    assert code == 0, output
    book = out / "calibration.xlsx"
    assert book.exists() and billed(gemini_env) == 0
    ws = openpyxl.load_workbook(book)["Scores"]
    head = [c.value for c in ws[1]]
    assert head[:4] == ["student_id", "criterion", "score", "rater"]
    assert not any(h and ("AI" in h or "model" in h.lower()) for h in head)
    assert ws.max_row == 1 + 4 * 2 and all(ws.cell(r, 3).value is None
                                           for r in range(2, ws.max_row + 1))
    assert ws.cell(2, head.index("submission") + 1).value.startswith("Student ")
    # the same command again with the workbook half scored: it says which cells are missing
    fill(book, reverse=True, leave_blank=2)
    code, output = cli_run("calibrate", *args)
    assert code == 2 and "Scores!row 9: no score given" in output and billed(gemini_env) == 0
    # step 2: the teacher disagrees with the model on everything -> below the bar
    sample = fill(book, reverse=True)
    code, output = cli_run("calibrate", *args)
    assert code == 1, output
    assert "calibration below the bar" in output and "choice QWK" in output
    assert billed(gemini_env) == 4  # only the sample was graded
    with sqlite3.connect(db) as conn:
        (students, figures), = conn.execute("SELECT students_json, figures_json FROM"
                                            " calibrations").fetchall()
        assert json.loads(students) == sample
        assert json.loads(figures)["choice"]["qwk"] < 0.6
        assert conn.execute("SELECT COUNT(*) FROM human_scores").fetchone()[0] == 8
    # the full run refuses and names the criteria; nothing is paid
    code, output = cli_run("run", *args)
    assert code == 2 and "calibration_min_qwk = 0.6" in output and "choice QWK" in output
    assert "--force" in output and billed(gemini_env) == 4
    # --only is not a full run; --force runs the class anyway
    assert cli_run("run", *args, "--only", "s0009")[0] == 0
    code, output = cli_run("run", *args, "--force")
    assert code == 0, output
    assert billed(gemini_env) == 10  # the sample's grades were reused


def test_a_calibration_that_agrees_lets_the_run_start(gemini_env: FakeGemini,
                                                      tmp_path: Path) -> None:
    class_dir = make_class(tmp_path, 8)
    out, db = tmp_path / "out", tmp_path / "g.sqlite"
    args = (str(class_dir), "--db", str(db), "--out", str(out))
    assert cli_run("calibrate", *args, "--n", "5")[0] == 0
    book = out / "calibration.xlsx"
    fill(book, reverse=True)
    assert cli_run("calibrate", *args)[0] == 1
    # the teacher rescored: this time exactly what the model gave
    with sqlite3.connect(db) as conn:
        ai = {f"{sid}/{cid}": score for sid, cid, score in conn.execute(
            "SELECT o.student_id, c.criterion_id, c.score FROM outcomes o JOIN criterion_scores c"
            " ON c.grade_id = o.grade_id WHERE o.run_id = (SELECT MAX(id) FROM runs)")}
    fill(book, ai)
    code, output = cli_run("calibrate", *args)
    assert code == 0 and "calibration passed" in output, output
    code, output = cli_run("run", *args)
    assert code == 0, output
