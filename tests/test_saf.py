"""Real graded work: bench/saf_to_class.py turns SAF (a small derived fixture here, so tests never
need ../shared) into class folders, rubrics and a human-scores file; `grade run`, `grade human
import` and `grade eval` then run on them end to end against the fake server."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from grader.cli import cli
from grader.testing.fake_gemini import FakeGemini

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "saf"


def converter():  # bench/ is scripts, not a package
    spec = importlib.util.spec_from_file_location("saf_to_class", ROOT / "bench" /
                                                  "saf_to_class.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["saf_to_class"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_conversion_writes_rubrics_human_scores_and_attribution(tmp_path: Path) -> None:
    rows = converter().convert(FIXTURE, tmp_path)
    assert [(r["class"], r["answers"], r["max"], r["step"]) for r in rows] == [
        ("q1_6", 7, 2.5, 0.5), ("q10_3_tc", 6, 1.0, 0.25)]
    rubric = yaml.safe_load((tmp_path / "classes" / "q1_6" / "rubric.yaml").read_text("utf-8"))
    crit = rubric["criteria"][0]
    assert crit["max_points"] == 2.5  # the question's highest tutor score
    assert [lv["points"] for lv in crit["levels"]] == [0, 0.5, 1, 1.5, 2, 2.5]
    assert "Binary Encoding" in rubric["reference_answer"]
    students = sorted(p.stem for p in (tmp_path / "classes" / "q1_6").glob("*.txt"))
    assert students == ["t1118", "t1332", "t2092", "t985", "u314", "u320", "u72"]
    with (tmp_path / "human" / "q1_6.csv").open(encoding="utf-8") as fh:
        human = list(csv.DictReader(fh))
    assert {h["student_id"] for h in human} == set(students)
    assert {(h["criterion"], h["rater"]) for h in human} == {("correctness", "saf_tutor")}
    assert {h["student_id"]: h["score"] for h in human}["u314"] == "0"
    readme = (tmp_path / "README.md").read_text("utf-8")
    assert "Filighera" in readme and "MIT" in readme and (tmp_path / "LICENSE").is_file()
    # a subset spread over the score range
    sub = converter().convert(FIXTURE, tmp_path / "sub", per_question=2,
                              questions={"10.3_TC"})
    assert [r["answers"] for r in sub] == [2]
    with (tmp_path / "sub" / "human" / "q10_3_tc.csv").open(encoding="utf-8") as fh:
        assert sorted(float(h["score"]) for h in csv.DictReader(fh)) == [0.0, 1.0]


def test_grade_run_and_eval_on_saf(fake_gemini: FakeGemini, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOOGLE_GENAI_USE_VERTEXAI", raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", "k")
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", fake_gemini.url)
    monkeypatch.chdir(tmp_path)
    converter().convert(FIXTURE, tmp_path / "saf")
    classes = sorted((tmp_path / "saf" / "classes").iterdir())
    runner = CliRunner()
    for c in classes:
        r = runner.invoke(cli, ["run", str(c)], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        r = runner.invoke(cli, ["human", "import", str(tmp_path / "saf" / "human" /
                                                      f"{c.name}.csv"), str(c)])
        assert r.exit_code == 0 and "by saf_tutor" in r.output, r.output
    r = runner.invoke(cli, ["eval", *map(str, classes), "--csv", "eval.csv"],
                      catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "q1_6 (run 1, gemini:" in r.output and "q10_3_tc (run 1" in r.output
    assert "pooled" not in r.output  # different maxima: pooling would mean nothing
    with (tmp_path / "eval.csv").open(encoding="utf-8") as fh:
        table = list(csv.DictReader(fh))
    groups = {t["class"]: t for t in table if t["comparison"] == "answer groups"}
    assert set(groups) == {"q1_6", "q10_3_tc"}  # each class's answer groups, a row apart
    assert all(0 < float(g["group_purity"]) <= 1 and int(g["groups"]) >= 1
               for g in groups.values())
    table = [t for t in table if t["comparison"] != "answer groups"]
    assert {(t["class"], t["criterion"], t["n"]) for t in table} == {
        ("q1_6", "correctness", "7"), ("q1_6", "total", "7"),
        ("q10_3_tc", "correctness", "6"), ("q10_3_tc", "total", "6")}
    assert all(t["mae"] != "" and t["baseline_mae"] != "" for t in table)
