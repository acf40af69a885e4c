"""Hostile rubrics: infinite and huge numbers, out-of-range exemplar scores and grade bands,
duplicate keys and alias bombs are refused with the field path (or line) and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from grader.errors import RubricError
from grader.prompting.rubric import MAX_POINTS, load_rubric

from _cli import grade
from _work import peak_allocated

BASE = """\
title: Fibonacci
criteria:
  - id: correctness
    title: Correct
    max_points: {max_points}
  - id: style
    title: Style
    max_points: 2
    levels:
      - {{points: 0, descriptor: none}}
      - {{points: {level}, descriptor: some}}
      - {{points: 2, descriptor: good}}
{extra}"""


def rubric_error(tmp_path: Path, text: str) -> RubricError:
    path = tmp_path / "rubric.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RubricError) as err:
        load_rubric(path)
    assert str(path) in str(err.value) and err.value.fix
    return err.value


def rubric(max_points: str = "4", level: str = "1", extra: str = "") -> str:
    return BASE.format(max_points=max_points, level=level, extra=extra)


def test_the_template_itself_is_valid(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(rubric(extra="exemplars:\n  - {submission: s, scores: "
                                            "{correctness: 4, style: 1}}\n"))
    assert load_rubric(tmp_path / "r.yaml")[0].max_total == 6


@pytest.mark.parametrize(("value", "message"), [
    (".inf", "criteria.0.max_points: Input should be a finite number"),
    ("-.inf", "criteria.0.max_points: Input should be a finite number"),
    (".nan", "criteria.0.max_points: Input should be a finite number"),
    ("1e308", f"criteria.0.max_points: Input should be less than or equal to {MAX_POINTS}"),
    ("1.0e+308", f"criteria.0.max_points: Input should be less than or equal to {MAX_POINTS}"),
    ("10001", f"criteria.0.max_points: Input should be less than or equal to {MAX_POINTS}"),
    ("0", "criteria.0.max_points: Input should be greater than 0"),
])
def test_max_points_finite_and_bounded(tmp_path: Path, value: str, message: str) -> None:
    assert message in str(rubric_error(tmp_path, rubric(max_points=value)))


@pytest.mark.parametrize("value", [".inf", ".nan", "-1"])
def test_level_points_finite_and_bounded(tmp_path: Path, value: str) -> None:
    assert "criteria.1.levels.1.points" in str(rubric_error(tmp_path, rubric(level=value)))


@pytest.mark.parametrize(("scores", "message"), [
    ("{correctness: 5, style: 2}", "exemplars.0.scores.correctness: 5 is over max_points 4"),
    ("{correctness: 1, style: 1.5}",
     "exemplars.0.scores.style: 1.5 is not one of the level points 0, 1, 2"),
    ("{correctness: .inf}", "exemplars.0.scores.correctness: Input should be a finite number"),
    ("{correctness: -1}", "exemplars.0.scores.correctness: Input should be greater than or equal"),
])
def test_exemplar_scores_range_checked(tmp_path: Path, scores: str, message: str) -> None:
    extra = f"exemplars:\n  - {{submission: an answer, scores: {scores}}}\n"
    assert message in str(rubric_error(tmp_path, rubric(extra=extra)))


@pytest.mark.parametrize(("bands", "message"), [
    ("{A: .nan, F: 0}", "grade_bands.A: Input should be a finite number"),
    ("{A: .inf, F: 0}", "grade_bands.A: Input should be a finite number"),
    ("{A: 150, F: 0}", "grade_bands.A: Input should be less than or equal to 100"),
    ("{A: 90, F: -5}", "grade_bands.F: Input should be greater than or equal to 0"),
    ('{"A\\x1b[2J": 90}', "grade_bands"),
])
def test_grade_bands_finite_and_within_0_100(tmp_path: Path, bands: str, message: str) -> None:
    assert message in str(rubric_error(tmp_path, rubric(extra=f"grade_bands: {bands}\n")))


@pytest.mark.parametrize(("change", "path"), [
    ({"max_points": "true"}, "criteria.0.max_points"),
    ({"level": "yes"}, "criteria.1.levels.1.points"),
    ({"extra": "exemplars:\n  - {submission: s, scores: {correctness: on}}\n"},
     "exemplars.0.scores.correctness"),
    ({"extra": "grade_bands: {A: true, F: 0}\n"}, "grade_bands.A"),
    ({"extra": "  - id: tests\n    title: Tests\n    checklist:\n"
               "      - {id: runs, text: it runs, points: true}\n"},
     "criteria.2.checklist.0.points"),
])
def test_a_yaml_boolean_is_never_a_number(tmp_path: Path, change: dict[str, str],
                                          path: str) -> None:
    """`max_points: true` would be 1 point to pydantic: every number of a rubric refuses a
    YAML boolean, and `grade run` says which field and to write a number (exit 2)."""
    class_dir = tmp_path / "class"
    class_dir.mkdir()
    (class_dir / "rubric.yaml").write_text(rubric(**change), encoding="utf-8")
    (class_dir / "s1.txt").write_text("an answer", encoding="utf-8")
    code, out = grade("run", str(class_dir), "--backend", "local", "--dry-run")
    assert code == 2, out
    assert f"{path}: true is a yes/no value in YAML, not a number: write a number" in out \
        or f"{path}: false is a yes/no value" in out, out
    assert "max_points: Field required" not in out, out


def test_duplicate_keys_are_refused_with_the_line(tmp_path: Path) -> None:
    err = rubric_error(tmp_path, rubric() + "title: Another title\n")
    assert "line 13: key 'title' appears twice" in str(err) and "keep one 'title'" in str(err.fix)
    nested = rubric().replace("    max_points: 2\n", "    max_points: 2\n    max_points: 200\n")
    assert "line 9: key 'max_points' appears twice" in str(rubric_error(tmp_path, nested))


def test_alias_bomb_is_refused_at_once(tmp_path: Path) -> None:
    lines = ['a0: &a0 "' + "x" * 1000 + '"']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 12)]
    bomb = "\n".join(lines) + "\n" + rubric().replace("title: Fibonacci", "title: *a11")
    with peak_allocated() as memory:
        err = rubric_error(tmp_path, bomb)
    assert memory.total < 1_000_000, memory.total  # refused before any alias was expanded
    assert "line 2: alias *a0 is not allowed" in str(err)


def test_merge_keys_need_aliases_and_are_refused_too(tmp_path: Path) -> None:
    text = rubric().replace("  - id: style\n", "  - &s\n    id: style\n") + \
        "questions:\n  - {<<: *s, id: q2}\n"
    assert "alias *s is not allowed" in str(rubric_error(tmp_path, text))


def test_deeply_nested_yaml_and_huge_files_are_refused(tmp_path: Path) -> None:
    deep = "title: " + "[" * 3000 + "]" * 3000 + "\n"
    assert "nested too deeply" in str(rubric_error(tmp_path, deep))
    huge = rubric(extra="instructions: '" + "x" * (1024 * 1024) + "'\n")
    assert "over 1024 KB" in str(rubric_error(tmp_path, huge))
