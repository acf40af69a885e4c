"""Uncertainty: K samples per student (median, spread), review flags (spread, band boundary, a
failed sample, evidence not in the submission). Pure policy first, then end to end through the
CLI against the fake server."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from grader.cli import cli
from grader.grading.judge import Grounds, judge, kept
from grader.grading.policy import Policy, Verdict, flagged
from grader.grading.records import CriterionRow, FlagRow
from grader.grading.uncertainty import check_evidence, combine, quote_found, spread_share
from grader.prompting import schema
from grader.prompting.rubric import Criterion, Level, Rubric
from grader.testing.fake_gemini import FakeGemini

from _classgen import make_class

RUBRIC = Rubric(title="t", grade_bands={"A": 80, "B": 50, "F": 0}, criteria=(
    Criterion(id="a", title="A", max_points=4),
    Criterion(id="b", title="B", max_points=6, levels=tuple(
        Level(points=p, descriptor=f"{p}") for p in (0, 2, 4, 6))),
))
POLICY = Policy(rubric=RUBRIC, validator=schema.validation_model(RUBRIC),
                reask_prompt=lambda e: e, max_spread=0.25, quote_similarity=90)
TEXT = "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a"


def verdict(a: float, b: float, *, evidence: tuple[str, ...] = ("a, b = 0, 1",),
            review: bool = False) -> Verdict:
    crits = (CriterionRow("a", a, 4, f"ja{a}", list(evidence), "fa"),
             CriterionRow("b", b, 6, f"jb{b}", [], "fb"))
    return Verdict(status="flagged" if review else "graded", criteria=crits, total=a + b,
                   percent=round(100 * (a + b) / 10, 2), overall_comment=f"total {a + b}",
                   needs_review=review, flags=(FlagRow("needs_review", "unsure"),) if review
                   else ())


def reasons(v: Verdict) -> list[str]:
    return [f.reason for f in v.flags]


def test_samples_combine_to_the_median_with_spread_and_totals_by_code() -> None:
    v = combine(POLICY, [verdict(1, 2), verdict(2, 2), verdict(3.5, 4)])
    assert [c.score for c in v.criteria] == [2, 2]
    assert [c.spread for c in v.criteria] == [2.5, 2]
    assert [list(c.samples) for c in v.criteria] == [[1, 2, 3.5], [2, 2, 4]]
    assert v.total == 4 and v.percent == 40 and v.status == "graded"
    assert v.criteria[0].justification == "ja2"  # from the sample at the median
    # a: spread 2.5 > 0.25 * 4; b: 2 > 0.25 * 6 -> both named
    spread = [f for f in v.flags if f.reason == "score_spread"]
    assert [f.message.split(":")[0] for f in spread] == ["a", "b"]
    assert spread_share(v.criteria) == pytest.approx(2.5 / 4)
    # an even number of samples keeps a score the model gave (the lower middle one)
    assert [c.score for c in combine(POLICY, [verdict(1, 2), verdict(2, 4)]).criteria] == [1, 2]
    # agreeing samples: no flag, no spread share
    calm = combine(POLICY, [verdict(3, 4)] * 3)
    assert calm.flags == () and spread_share(calm.criteria) == 0


def test_total_within_the_spread_of_a_band_boundary_is_flagged() -> None:
    # totals 4.5, 5, 5.5: median total 5 sits on B's boundary (50% of 10), spread 1
    v = combine(POLICY, [verdict(0.5, 4), verdict(1, 4), verdict(1.5, 4)])
    assert v.total == 5 and "near_band_boundary" in reasons(v)
    assert "band B" in next(f.message for f in v.flags if f.reason == "near_band_boundary")
    far = combine(POLICY, [verdict(3, 4), verdict(3.5, 4), verdict(3, 4)])  # 7: 1 from 8
    assert "near_band_boundary" not in reasons(far)


def test_a_failed_sample_is_left_out_and_flagged_and_review_requests_carry() -> None:
    bad = flagged("invalid_output", "the model's output did not match the rubric's schema twice")
    v = combine(POLICY, [verdict(2, 4), bad, verdict(2, 4, review=True)])
    assert v.status == "flagged" and v.needs_review and v.total == 6
    assert reasons(v) == ["needs_review", "sample_failed"]
    assert "sample 2 of 3" in v.flags[1].message and "invalid_output" in v.flags[1].message
    assert v.reason == "needs_review"  # sample_failed alone would leave the grade standing
    only_bad = combine(POLICY, [bad, bad])
    assert only_bad.status == "flagged" and only_bad.reason == "invalid_output"


@pytest.mark.parametrize("quote", [
    "a, b = 0, 1", "A,  B = 0,\n 1", "for _ in range(n):   a, b = b, a + b",
    "def fib(n): ... return a", "“return a”", "a, b = 0, 1;",  # a small slip passes
])
def test_quotes_that_occur_are_found(quote: str) -> None:
    assert quote_found(quote, " ".join(TEXT.casefold().split()), 90)


def test_a_fabricated_quote_is_flagged() -> None:
    v = check_evidence(POLICY, verdict(3, 4, evidence=("a, b = 0, 1",
                                                       "uses memoisation with lru_cache")), TEXT)
    assert reasons(v) == ["evidence_not_found"]
    assert "lru_cache" in v.flags[0].message and v.status == "graded" and v.reason is None
    # without text to check against (images), nothing is claimed
    assert check_evidence(POLICY, verdict(3, 4, evidence=("invented",)), None).flags == ()


def test_judge_checks_the_quotes_of_a_model_reply() -> None:
    crit = {"justification": "j", "feedback": "f"}
    reply = json.dumps({"criteria": {"a": {**crit, "score": 3, "evidence": ["return a"]},
                                     "b": {**crit, "score": 4, "evidence": []}},
                        "overall_comment": "ok", "needs_review": False, "review_reason": ""})
    from grader.grading.records import Reply

    v = judge(POLICY, [Reply(reply)], Grounds(quote_text=TEXT))
    assert isinstance(v, Verdict) and v.flags == () and kept(POLICY, [v]) == v
    invented = reply.replace("return a", "uses memoisation with lru_cache")
    v = judge(POLICY, [Reply(invented)], Grounds(quote_text=TEXT))
    assert isinstance(v, Verdict) and reasons(v) == ["evidence_not_found"]
    # the same reply judged without text to check against (images): nothing is claimed
    v = judge(POLICY, [Reply(invented)], Grounds(quote_text=None))
    assert isinstance(v, Verdict) and v.flags == ()


# --- end to end ----------------------------------------------------------------------------



def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def rows(db: Path, sql: str, args: tuple = ()) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return list(conn.execute(sql, args))


def test_three_samples_store_three_attempts_and_flag_a_disagreement(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    class_dir = make_class(tmp_path, 3, extra={
        "wobbly.txt": "FAKE_GEMINI:UNSURE Binary encoding, one bit per baud, perfect clocks."})
    db, out = tmp_path / "g.sqlite", tmp_path / "out"
    code, output = run_cli("run", str(class_dir), "--db", str(db), "--out", str(out),
                           "--samples", "3")
    assert code == 0, output
    # three paid attempts per student, one per sample index, each its own ledger entry
    per = rows(db, "SELECT student_id, group_concat(sample), COUNT(DISTINCT request_hash)"
                   " FROM attempts GROUP BY student_id")
    assert len(per) == 4
    assert all(sorted(s.split(",")) == ["0", "1", "2"] and hashes == 3 for _, s, hashes in per)
    # no seed is sent unless the teacher sets one: the samples are the same request, asked
    # three times (the model's own sampling makes the answers differ)
    assert not any("seed" in r["body"].get("generationConfig", {}) for r in gemini_env.requests())
    wobbly = [r for r in gemini_env.requests() if "UNSURE" in str(r["body"])]
    assert len(wobbly) == 3
    # per student: three single-sample versions (sample 0..2) and the combined one
    versions = rows(db, "SELECT sample, samples FROM grades WHERE student_id='wobbly'"
                        " ORDER BY id")
    assert versions == [(0, 1), (1, 1), (2, 1), (0, 3)]
    final = rows(db, "SELECT g.id, g.samples, g.status FROM outcomes o JOIN grades g"
                     " ON g.id = o.grade_id WHERE o.student_id='wobbly'")
    gid, samples, status = final[0]
    assert samples == 3 and status == "graded"  # the grade stands; the teacher is told
    spread = rows(db, "SELECT criterion_id, spread, samples_json FROM criterion_scores"
                      " WHERE grade_id=?", (gid,))
    assert any(s > 0 and len(json.loads(js)) == 3 for _, s, js in spread)
    flags = dict(rows(db, "SELECT o.student_id, group_concat(f.reason) FROM flags f JOIN outcomes o"
                          " ON o.grade_id = f.grade_id GROUP BY o.student_id"))
    assert "score_spread" in flags["wobbly"]
    assert not any("score_spread" in (flags.get(f"s{i:04d}") or "") for i in range(3))
    # shown: the workbook and the report put the uncertain student first in the review queue
    import openpyxl

    ws = openpyxl.load_workbook(out / "review.xlsx")["Summary"]
    head = [c.value for c in ws[1]]
    assert head[-1] == "Uncertainty" and ws.cell(2, 1).value == "wobbly"
    assert float(ws.cell(2, len(head)).value) > 0
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "score_spread" in html and "spread" in (out / "students" / "wobbly.html").read_text(
        encoding="utf-8")
    # a rerun with the same K pays nothing; K=1 reuses sample 0 without asking again
    billed = sum(gemini_env.stats()["billed_by_submission"].values())
    assert run_cli("run", str(class_dir), "--db", str(db), "--out", str(out),
                   "--samples", "3")[0] == 0
    assert run_cli("run", str(class_dir), "--db", str(db), "--out", str(out))[0] == 0
    assert sum(gemini_env.stats()["billed_by_submission"].values()) == billed
    assert rows(db, "SELECT COUNT(*) FROM outcomes o JOIN grades g ON g.id = o.grade_id"
                    " WHERE o.run_id = 3 AND g.samples = 1 AND g.sample = 0") == [(4,)]


def test_a_fabricated_evidence_quote_flags_the_student(gemini_env: FakeGemini,
                                                      tmp_path: Path) -> None:
    class_dir = make_class(tmp_path, 2, extra={
        "inventor.txt": "FAKE_GEMINI:FABRICATE Binary encoding because clocks are perfect."})
    db = tmp_path / "g.sqlite"
    code, output = run_cli("run", str(class_dir), "--db", str(db), "--out", str(tmp_path / "o"))
    assert code == 0, output
    got = rows(db, "SELECT o.student_id, o.status, f.reason, f.message FROM outcomes o"
                   " LEFT JOIN flags f ON f.grade_id = o.grade_id ORDER BY o.student_id")
    by_id = {sid: (status, reason, msg) for sid, status, reason, msg in got}
    status, reason, message = by_id["inventor"]
    assert (status, reason) == ("graded", "evidence_not_found")
    assert "P equals NP" in message
    assert by_id["s0000"][1] is None and by_id["s0001"][1] is None  # real quotes pass


def test_a_quote_of_a_redacted_first_name_is_not_taken_for_a_fabrication(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    # The work says "Noor" where the roster says "Noor Hassan": it is sent as [STUDENT_1] and
    # the reply's quotes of it are checked against what was sent, not against the work with
    # the roster's full name put back (which the work never contained).
    class_dir = make_class(tmp_path, 1, extra={
        "noor.txt": "# Noor - network coding\nBinary encoding because clocks are perfect."})
    (class_dir / "roster.csv").write_text("id,name,email\nnoor,Noor Hassan,\n", encoding="utf-8")
    db = tmp_path / "g.sqlite"
    code, output = run_cli("run", str(class_dir), "--db", str(db), "--out", str(tmp_path / "o"))
    assert code == 0, output
    quoted = rows(db, "SELECT c.evidence_json FROM criterion_scores c JOIN outcomes o"
                      " ON o.grade_id = c.grade_id WHERE o.student_id = 'noor'")
    assert any("Noor Hassan" in e for (e,) in quoted)  # the teacher sees the real name
    assert rows(db, "SELECT f.reason FROM flags f JOIN outcomes o ON o.grade_id = f.grade_id"
                    " WHERE o.student_id = 'noor'") == []
