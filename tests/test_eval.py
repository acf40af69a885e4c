"""`grade human import` and `grade eval` end to end through the CLI on a hand-made store: every
figure equals scikit-learn/SciPy, a criterion where every score is equal is reported undefined
(not faked), two raters give human-vs-human figures, and the flags' catch rate is measured."""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import numpy as np
import openpyxl
import pytest
import yaml
from click.testing import CliRunner
from scipy import stats
from sklearn.metrics import accuracy_score, cohen_kappa_score, mean_absolute_error

from grader.cli import cli
from grader.grading.records import (
    CriterionRow,
    FlagRow,
    GradeRecord,
    HumanScore,
    OutcomeRecord,
    RunInfo,
    SubmissionRecord,
)
from grader.prompting.rubric import Rubric
from grader.quality.human import MAX_RATERS
from grader.quality.metrics import total_grid
from grader.review.workbook import MAX_UNPACKED_MB
from grader.store import Store

from _cli import grade, q
from _work import peak_allocated

RUBRIC = {
    "title": "Hand-made", "grade_bands": {"A": 80, "F": 0},
    "criteria": [
        {"id": "a", "title": "Argument", "max_points": 4},
        {"id": "b", "title": "Bits", "max_points": 2, "levels": [
            {"points": p, "descriptor": str(p)} for p in (0, 1, 2)]},
        {"id": "c", "title": "Cover page", "max_points": 2},
    ],
}
STUDENTS = [f"s{i}" for i in range(8)]
AI = {"a": [0, 1, 2, 2, 3, 4, 4, 1], "b": [0, 1, 2, 2, 1, 0, 2, 1], "c": [2] * 8}
ANN = {"a": [0, 1, 1, 2, 4, 4, 3, 2], "b": [0, 1, 2, 1, 1, 0, 2, 2], "c": [2] * 8}
BOB = {"a": [0, 2, 1, 2, 4, 3, 3, 2], "b": [0, 1, 1, 1, 1, 0, 2, 2], "c": [2] * 8}
FLAGGED = {"s4", "s6"}  # flagged for review by the run


def totals(scores: dict[str, list[float]]) -> list[float]:
    return [float(sum(v)) for v in zip(*scores.values(), strict=True)]


@pytest.fixture
def graded(tmp_path: Path) -> tuple[Path, Path]:
    """A class folder (rubric.yaml) and a store holding one finished run of it."""
    class_dir = tmp_path / "hw"
    class_dir.mkdir()
    (class_dir / "rubric.yaml").write_text(yaml.safe_dump(RUBRIC), encoding="utf-8")
    db = tmp_path / "g.sqlite"
    with Store(db) as store:
        run = store.begin_run(RunInfo(
            class_dir=str(class_dir.resolve()), backend="gemini", model="gemini-x",
            rubric_path="rubric.yaml", rubric_hash="r", prompt_hash="p", schema_hash="s",
            fingerprint="f", config_hash="c", sdk_version=None, grader_version="0",
            settings={}, rubric=Rubric.model_validate(RUBRIC).model_dump(mode="json")))
        for i, sid in enumerate(STUDENTS):
            sub = store.upsert_submission(SubmissionRecord(
                student_id=sid, name=None, email=None, source="file", content_hash=sid,
                body_hash=sid, files=[f"{sid}.txt"], late=False))
            crits = [CriterionRow(c, float(AI[c][i]), m, "j", [], "f")
                     for c, m in (("a", 4.0), ("b", 2.0), ("c", 2.0))]
            total = sum(c.score for c in crits)
            flags = [FlagRow("score_spread", "samples disagree")] if sid in FLAGGED else []
            gid = store.save_grade(GradeRecord(
                student_id=sid, submission_id=sub, fingerprint="f", sample=0, epoch=0,
                config_hash="c", run_id=run.id, status="graded", max_total=8, total=total,
                percent=100 * total / 8, overall_comment="", needs_review=False,
                review_reason=None, model="gemini-x", model_version=None, criteria=crits,
                flags=flags))
            store.record_outcome(OutcomeRecord(run_id=run.id, student_id=sid,
                                               submission_id=sub, grade_id=gid,
                                               status="graded"))
        store.finish_run(run.id, "done")
    return class_dir, db


def write_scores(path: Path, raters: dict[str, dict[str, list[float]]],
                 total_only: str | None = None) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["Student ID", "Criterion", "Score", "Rater", "comment"])
        for rater, scores in raters.items():
            for i, sid in enumerate(STUDENTS):
                if rater == total_only:
                    w.writerow([sid, "total", totals(scores)[i], rater, ""])
                    continue
                for cid, values in scores.items():
                    w.writerow([sid, cid, values[i], rater, "ok"])
    return path


def cli_run(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return r.exit_code, r.output


def read_csv(path: Path) -> dict[tuple[str, str], dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return {(r["grader"], r["criterion"]): r for r in csv.DictReader(fh)}


def test_eval_equals_sklearn_and_scipy(graded: tuple[Path, Path], tmp_path: Path) -> None:
    class_dir, db = graded
    scores = write_scores(tmp_path / "human.csv", {"ann": ANN, "bob": BOB})
    code, out = cli_run("human", "import", str(scores), str(class_dir), "--db", str(db))
    assert code == 0 and "imported 48 scores for 8 students by ann, bob" in out
    code, out = cli_run("human", "import", str(scores), str(class_dir), "--db", str(db))
    assert code == 0 and "already imported" in out

    table = tmp_path / "eval.csv"
    code, out = cli_run("eval", str(class_dir), "--db", str(db), "--csv", str(table))
    assert code == 0, out
    got = read_csv(table)
    grid = total_grid(Rubric.model_validate(RUBRIC))
    for cid in ("a", "b", "total"):
        ai = totals(AI) if cid == "total" else AI[cid]
        ann = totals(ANN) if cid == "total" else ANN[cid]
        row = got["AI", cid]
        labels = list(grid) if cid == "total" else None
        assert (row["comparison"], row["reference"], row["n"]) == ("model", "ann", "8")
        assert float(row["qwk"]) == pytest.approx(
            cohen_kappa_score(ai, ann, weights="quadratic", labels=labels), abs=1e-6)
        assert float(row["mae"]) == pytest.approx(mean_absolute_error(ann, ai), abs=1e-6)
        assert float(row["pearson"]) == pytest.approx(stats.pearsonr(ai, ann).statistic,
                                                      abs=1e-6)
        assert float(row["spearman"]) == pytest.approx(stats.spearmanr(ai, ann).statistic,
                                                       abs=1e-6)
        assert float(row["exact"]) == pytest.approx(accuracy_score(ann, ai), abs=1e-6)
        assert float(row["bias"]) == pytest.approx(np.mean(np.subtract(ai, ann)), abs=1e-6)
        assert float(row["qwk_lo"]) <= float(row["qwk_hi"])
        assert float(row["mae_lo"]) <= float(row["mae"]) <= float(row["mae_hi"])
    # every score equal on c: QWK and correlations are undefined and say so; no number is made up
    c = got["AI", "c"]
    assert (c["qwk"], c["qwk_lo"], c["pearson"], c["spearman"]) == ("", "", "", "")
    assert (c["mae"], c["exact"], c["adjacent"]) == ("0.0", "1.0", "1.0")
    assert "QWK undefined: every score is 2" in c["notes"]
    assert "QWK undefined" in out and "correlations undefined" in out
    # human against human beside the model: bob against the reference ann
    bob = got["bob", "a"]
    assert bob["comparison"] == "human"
    assert float(bob["qwk"]) == pytest.approx(cohen_kappa_score(BOB["a"], ANN["a"],
                                                                weights="quadratic"))
    # the flags' catch rate: flagged s4 and s6 against the rest, totals off by >= 1 point
    off = {sid for sid, x, y in zip(STUDENTS, totals(AI), totals(ANN), strict=True)
           if abs(x - y) >= 1}
    flagged_off = len(off & FLAGGED) / len(FLAGGED)
    rest_off = len(off - FLAGGED) / (len(STUDENTS) - len(FLAGGED))
    assert (f"flags: 2 flagged students, {100 * flagged_off:.0f}% of them off by ≥ 1 point "
            f"from ann on the total; 6 not flagged, {100 * rest_off:.0f}% off by ≥ 1 point") in out
    # the reference rater can be chosen; an unknown one is refused with the ones there are
    code, out = cli_run("eval", str(class_dir), "--db", str(db), "--rater", "bob")
    assert code == 0 and "score by bob" in out
    code, out = cli_run("eval", str(class_dir), "--db", str(db), "--rater", "zed")
    assert code == 2 and "ann, bob" in out


def test_eval_section_in_the_html_report(graded: tuple[Path, Path], tmp_path: Path) -> None:
    class_dir, db = graded
    out_dir = tmp_path / "out"
    assert cli_run("report", str(class_dir), "--db", str(db), "--out", str(out_dir))[0] == 0
    assert "Agreement with human graders" not in (out_dir / "report.html").read_text("utf-8")
    scores = write_scores(tmp_path / "human.csv", {"ann": ANN}, total_only=None)
    cli_run("human", "import", str(scores), str(class_dir), "--db", str(db))
    assert cli_run("report", str(class_dir), "--db", str(db), "--out", str(out_dir))[0] == 0
    html = (out_dir / "report.html").read_text("utf-8")
    assert "Agreement with human graders" in html
    qwk = cohen_kappa_score(AI["a"], ANN["a"], weights="quadratic")
    assert f"{qwk:.2f}" in html and "QWK undefined" in html


def test_total_only_scores_and_xlsx(graded: tuple[Path, Path], tmp_path: Path) -> None:
    class_dir, db = graded
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["student_id", "criterion", "score", "rater"])
    for sid, t in zip(STUDENTS, totals(ANN), strict=True):
        ws.append([sid, "total", t, "ann"])
    wb.save(tmp_path / "totals.xlsx")
    code, out = cli_run("human", "import", str(tmp_path / "totals.xlsx"), str(class_dir),
                        "--db", str(db))
    assert code == 0, out
    table = tmp_path / "e.csv"
    assert cli_run("eval", str(class_dir), "--db", str(db), "--csv", str(table))[0] == 0
    got = read_csv(table)
    assert got["AI", "total"]["n"] == "8" and got["AI", "a"]["n"] == "0"


@pytest.mark.parametrize(("row", "message"), [
    (["s1", "zz", "1", "ann"], "criterion 'zz' is not in the rubric"),
    (["s1", "a", "5", "ann"], "5 is out of range for a"),
    (["s1", "b", "1.5", "ann"], "1.5 is not a level of b"),
    (["s1", "a", "lots", "ann"], "'lots' is not a number"),
    (["s1", "a", "", "ann"], "no score given"),
    (["s1", "a", "1", ""], "the rater must be a name"),
    (["s1", "a", "2", "ann"], "s1/a by ann is already given at line 2"),
])
def test_a_bad_row_is_named_and_nothing_is_stored(graded: tuple[Path, Path], tmp_path: Path,
                                                  row: list[str], message: str) -> None:
    class_dir, db = graded
    path = tmp_path / "bad.csv"
    path.write_text("student_id,criterion,score,rater\ns1,a,1,ann\n" + ",".join(row) + "\n",
                    encoding="utf-8")
    code, out = cli_run("human", "import", str(path), str(class_dir), "--db", str(db))
    assert code == 2 and "line 3" in out and message in out and "nothing was stored" in out
    with Store(db) as store:
        assert store.human_scores(str(class_dir.resolve())) == []
    path.write_text("student,score\n", encoding="utf-8")
    code, out = cli_run("human", "import", str(path), str(class_dir), "--db", str(db))
    assert code == 2 and "student_id, criterion, rater" in out


def test_eval_without_human_scores_says_how_to_import(graded: tuple[Path, Path]) -> None:
    class_dir, db = graded
    code, out = cli_run("eval", str(class_dir), "--db", str(db))
    assert code == 2 and "grade human import FILE" in out


# --- bounds on what an import reads and what eval prints (issue 27 items 3 and 4) -------------

MB = 1024 * 1024


@pytest.fixture(scope="module")
def xlsx_bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid scores workbook whose sheet, after its header and first score, repeats one row
    deflated: twice the unpacked limit (hundreds of MB) in a file of a few MB."""
    path = tmp_path_factory.mktemp("bomb") / "scores.xlsx"
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Scores"
    ws.append(["student_id", "criterion", "score", "rater"])
    ws.append(["s0", "a", 1, "ann"])
    wb.save(path)
    with zipfile.ZipFile(path) as z:
        parts = {i.filename: z.read(i) for i in z.infolist()}
    sheet = "xl/worksheets/sheet1.xml"
    xml = parts[sheet].replace(b'<dimension ref="A1:D2"/>', b'<dimension ref="A1:D1048576"/>')
    head, _, rest = xml.partition(b"</sheetData>")  # the header and row 2 stay
    row = (b'<row><c t="inlineStr"><is><t>s0</t></is></c><c t="inlineStr"><is><t>a</t></is>'
           b'</c><c><v>1</v></c><c t="inlineStr"><is><t>ann</t></is></c></row>')
    chunk = row * (MB // len(row))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for name, data in parts.items():
            if name != sheet:
                z.writestr(name, data)
        with z.open(sheet, "w", force_zip64=True) as fh:
            fh.write(head)
            for _ in range(2 * MAX_UNPACKED_MB):
                fh.write(chunk)
            fh.write(b"</sheetData>" + rest)
    assert path.stat().st_size < 8 * MB
    return path


def test_an_xlsx_bomb_is_refused_from_its_zip_directory(graded: tuple[Path, Path],
                                                        xlsx_bomb: Path) -> None:
    class_dir, db = graded
    with peak_allocated() as peak:
        code, out = grade("human", "import", str(xlsx_bomb), str(class_dir), "--db", str(db))
    assert code == 2, out
    assert str(xlsx_bomb) in out and "unpacks to" in out and "zip bomb" in out
    assert f"over the limit of {MAX_UNPACKED_MB} MB" in out and "export the scores as CSV" in out
    # refused before openpyxl parsed the sheet: parsing it takes gigabytes
    assert peak.total < 64 * MB
    assert q(db, "SELECT COUNT(*) FROM human_scores") == [(0,)]
    # `grade review import` refuses the same workbook with the same check
    code, out = grade("review", "import", str(xlsx_bomb), "--db", str(db))
    assert code == 2 and str(xlsx_bomb) in out and "unpacks to" in out and "grade report" in out


def test_an_import_past_the_class_row_cap_is_refused(graded: tuple[Path, Path],
                                                     tmp_path: Path) -> None:
    """8 students x 4 criteria (with the total) x MAX_RATERS raters is the most the class takes:
    one row more is refused, reading stops right there, and nothing is stored."""
    class_dir, db = graded
    cap = len(STUDENTS) * 4 * MAX_RATERS
    rows = [[sid, cid, 1, f"r{k:02d}"] for k in range(MAX_RATERS) for sid in STUDENTS
            for cid in ("a", "b", "c", "total")]
    path = tmp_path / "many.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([["student_id", "criterion", "score", "rater"], *rows,
                                  ["s0", "a", 1, "one too many"], *rows])
    code, out = grade("human", "import", str(path), str(class_dir), "--db", str(db))
    assert code == 2, out
    assert str(path) in out and f"more than {cap:,} rows of scores" in out
    assert f"reading stopped at line {cap + 2}" in out
    assert f"8 students × 4 criteria (with total) × {MAX_RATERS} raters" in out
    assert "nothing was stored" in out and "fix:" in out
    assert q(db, "SELECT COUNT(*) FROM human_scores") == [(0,)]
    assert q(db, "SELECT COUNT(*) FROM human_imports") == [(0,)]
    # at the cap it is accepted, and the raters are listed a few at a time
    path.write_text("student_id,criterion,score,rater\n" + "".join(
        ",".join(map(str, r)) + "\n" for r in rows), encoding="utf-8")
    code, out = grade("human", "import", str(path), str(class_dir), "--db", str(db))
    assert code == 0, out
    assert f"imported {cap} scores for 8 students by r00, r01, r02, r03, r04 and 15 more" in out
    assert q(db, "SELECT COUNT(*) FROM human_scores") == [(cap,)]


def test_eval_with_thousands_of_raters_prints_bounded_messages(graded: tuple[Path, Path]
                                                               ) -> None:
    """A store can gather raters over many imports (or from an import before the cap): an
    unknown --rater names the closest one and a few others, and eval compares and lists a
    bounded number of them."""
    class_dir, db = graded
    raters = [f"rater{i:04d}" for i in range(5_000)]
    with Store(db) as store:
        store.import_human_scores(str(class_dir.resolve()), "many.csv", "x", [
            *(HumanScore(sid, "a", "annabel", float(AI["a"][i]))
              for i, sid in enumerate(STUDENTS)),
            *(HumanScore(STUDENTS[i % 8], "a", r, 1.0) for i, r in enumerate(raters))])
    code, out = grade("eval", str(class_dir), "--db", str(db), "--rater", "anabel")
    assert code == 2, out
    assert len(out) < 1_000, out
    assert "did you mean 'annabel'?" in out and "5,001 raters" in out
    assert "and 4,996 more" in out and str(class_dir) in out and "--rater" in out
    code, out = grade("eval", str(class_dir), "--db", str(db))
    assert code == 0, out
    assert "a score by annabel" in out and "and 4,981 more" in out
    assert f"the {MAX_RATERS - 1} other raters with the most scores" in out
    assert len(out) < 20_000
