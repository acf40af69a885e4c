"""Checklist criteria: yes/no items each worth points; the model answers a boolean and a quote per
item, and code sums the points. Validation, schema, totals, and a run end to end."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from grader.cli import cli
from grader.errors import RubricError
from grader.grading.policy import Policy, Reask, Verdict, decide
from grader.grading.records import Reply
from grader.prompting import schema
from grader.prompting.rubric import Rubric, load_rubric
from grader.quality.metrics import score_grid, total_grid
from grader.testing.fake_gemini import FakeGemini

CHECKLIST = {
    "id": "method", "title": "Method",
    "checklist": [
        {"id": "names_binary", "text": "names binary (NRZ) encoding", "points": 2},
        {"id": "bandwidth", "text": "gives bandwidth efficiency as a reason", "points": 1},
        {"id": "clocks", "text": "says perfect clocks make self-clocking unnecessary",
         "points": 1.5},
    ],
}
RUBRIC = Rubric.model_validate({
    "title": "Encoding", "question": "Which encoding? Give two reasons.",
    "reference_answer": "Binary encoding: one bit per baud (bandwidth), perfect clocks.",
    "criteria": [CHECKLIST, {"id": "style", "title": "Clarity", "max_points": 2}],
})
POLICY = Policy(rubric=RUBRIC, validator=schema.validation_model(RUBRIC),
                reask_prompt=lambda e: f"fix: {e}")


def reply(met: dict[str, bool], style: float = 1.5, drop: str | None = None) -> Reply:
    items = {k: {"quote": "binary encoding" if v else "", "met": v} for k, v in met.items()
             if k != drop}
    return Reply(json.dumps({"criteria": {
        "method": {"justification": "j", "items": items, "feedback": "f"},
        "style": {"justification": "j", "evidence": [], "score": style, "feedback": "f"},
    }, "overall_comment": "ok", "needs_review": False, "review_reason": ""}))


def test_max_points_defaults_to_the_sum_and_must_agree() -> None:
    assert RUBRIC.criteria[0].max_points == 4.5 and RUBRIC.max_total == 6.5
    with pytest.raises(ValueError, match="not the sum of the checklist"):
        Rubric.model_validate({"title": "t", "criteria": [{**CHECKLIST, "max_points": 5}]})
    with pytest.raises(ValueError, match="either levels or a checklist"):
        Rubric.model_validate({"title": "t", "criteria": [{
            **CHECKLIST, "levels": [{"points": 0, "descriptor": "x"}]}]})
    dup = {**CHECKLIST, "checklist": [CHECKLIST["checklist"][0]] * 2}
    with pytest.raises(ValueError, match="unique"):
        Rubric.model_validate({"title": "t", "criteria": [dup]})
    with pytest.raises(ValueError, match="greater than 0"):
        Rubric.model_validate({"title": "t", "criteria": [{
            **CHECKLIST, "checklist": [{"id": "a", "text": "x", "points": 0}]}]})


def test_a_bad_checklist_in_yaml_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "rubric.yaml"
    path.write_text("title: t\ncriteria:\n  - id: m\n    title: M\n    checklist:\n"
                    "      - {id: a, text: x}\n", encoding="utf-8")
    with pytest.raises(RubricError, match=r"criteria\.0\.checklist\.0\.points"):
        load_rubric(path)


def test_schema_asks_a_quote_and_a_boolean_per_item_and_no_score() -> None:
    s = schema.json_schema(RUBRIC)["properties"]["criteria"]["properties"]["method"]
    assert "score" not in s["properties"] and s["required"] == ["justification", "items",
                                                                  "feedback"]
    items = s["properties"]["items"]
    assert items["required"] == ["names_binary", "bandwidth", "clocks"]
    one = items["properties"]["bandwidth"]
    assert one["properties"]["met"]["type"] == "boolean"
    assert one["properties"]["quote"]["type"] == "string"
    assert one["required"] == ["quote", "met"]


def test_the_score_is_the_sum_of_the_items_met() -> None:
    v = decide(POLICY, [reply({"names_binary": True, "bandwidth": False, "clocks": True})])
    assert isinstance(v, Verdict) and v.status == "graded"
    method = v.criteria[0]
    assert method.score == 3.5 and [i.met for i in method.items] == [True, False, True]
    assert method.evidence == ["binary encoding", "binary encoding"]  # quotes of items met
    assert v.total == 5.0 and v.percent == pytest.approx(76.92)
    none = decide(POLICY, [reply(dict.fromkeys(("names_binary", "bandwidth", "clocks"), False),
                                 style=0)])
    assert isinstance(none, Verdict) and none.total == 0


def test_a_missing_item_is_invalid_and_reasked() -> None:
    bad = reply({"names_binary": True, "bandwidth": True, "clocks": True}, drop="clocks")
    first = decide(POLICY, [bad])
    assert isinstance(first, Reask) and "clocks" in first.history[1].text
    second = decide(POLICY, [bad, bad])
    assert isinstance(second, Verdict) and second.reason == "invalid_output"


def test_grids_are_the_sums_the_items_can_reach() -> None:
    assert score_grid(RUBRIC.criteria[0]) == (0, 1, 1.5, 2, 2.5, 3, 3.5, 4.5)
    assert total_grid(RUBRIC)[-1] == 6.5 and 4.5 + 0.5 in total_grid(RUBRIC)


def test_checklist_run_end_to_end(fake_gemini: FakeGemini, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOOGLE_GENAI_USE_VERTEXAI", raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", "k")
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", fake_gemini.url)
    class_dir = tmp_path / "class"
    class_dir.mkdir()
    import yaml

    (class_dir / "rubric.yaml").write_text(yaml.safe_dump(RUBRIC.model_dump(mode="json")),
                                           encoding="utf-8")
    (class_dir / "good.txt").write_text("Binary encoding: one bit per baud gives the best "
                                        "bandwidth, and perfect clocks.", encoding="utf-8")
    (class_dir / "poor.txt").write_text("Manchester.", encoding="utf-8")
    db = tmp_path / "g.sqlite"
    result = CliRunner().invoke(cli, ["run", str(class_dir), "--db", str(db), "--out",
                                      str(tmp_path / "out")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    prompt = fake_gemini.requests()[0]["body"]["contents"][0]["parts"][0]["text"]
    assert "item `clocks` (1.5 points)" in prompt
    with sqlite3.connect(db) as conn:
        got = {sid: (score, json.loads(items), total) for sid, score, items, total in conn.execute(
            "SELECT o.student_id, c.score, c.items_json, g.total FROM outcomes o JOIN grades g"
            " ON g.id = o.grade_id JOIN criterion_scores c ON c.grade_id = g.id"
            " WHERE c.criterion_id = 'method'")}
    score, items, total = got["good"]
    assert total >= score
    assert score == 4.5 and [met for _, met, _ in items] == [True, True, True]
    assert got["poor"][0] == 0 and not any(met for _, met, _ in got["poor"][1])
    with sqlite3.connect(db) as conn:
        sums = conn.execute("SELECT g.total, SUM(c.score) FROM grades g JOIN criterion_scores c"
                            " ON c.grade_id = g.id GROUP BY g.id").fetchall()
    assert all(t == pytest.approx(s) for t, s in sums)  # totals computed by code
    page = (tmp_path / "out" / "students" / "good.html").read_text(encoding="utf-8")
    assert "✓ clocks" in page
