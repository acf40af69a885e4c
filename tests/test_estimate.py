"""`grade estimate`: the projection for samples/intro-python agrees with what the run then
costs (against the fake server, whose thinking per level is the table's stated assumption, so
this checks the estimate's counting and arithmetic, not real-model output lengths)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from grader.testing.fake_gemini import FakeGemini

from _classgen import make_big_class, make_class, scanned_pdf
from _cli import grade, q

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples" / "intro-python"
ROW = re.compile(r"^(online|flex|batch)\s+\$(\d+\.\d+)\s+(.*)$", re.MULTILINE)
CACHED = re.compile(r"^cached\s+\$(\d+\.\d+)\s+", re.MULTILINE)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI",
                "GOOGLE_GENAI_USE_ENTERPRISE", "GOOGLE_CLOUD_PROJECT"):
        monkeypatch.delenv(var, raising=False)


def sample_class(tmp_path: Path) -> Path:
    """samples/intro-python with its rubric and roster."""
    class_dir = tmp_path / "intro-python"
    shutil.copytree(SAMPLES, class_dir)
    (class_dir / "grader.toml").write_text(
        f'[grader]\nrubric = "{ROOT / "rubrics" / "intro-python.yaml"}"\nroster = "roster.csv"\n')
    return class_dir


def test_estimate_of_the_sample_class_agrees_with_the_run_within_10_percent(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    fake_gemini = gemini_env
    class_dir = sample_class(tmp_path)
    code, output = grade("estimate", str(class_dir))
    assert code == 0, output
    assert "(countTokens)" in output and "13 of 16 students" in output
    # counting is not grading: 13 requests, and the marking scheme once (could it be cached?)
    assert fake_gemini.stats()["by_endpoint"] == {"countTokens": 14}
    assert re.search(r"^cached\s+-\s+not available: the marking scheme is about [\d,]+ tokens, "
                     r"below gemini-3.8-flash's explicit-cache minimum of 4,096", output, re.M)
    modes = {m: (float(cost), rest) for m, cost, rest in ROW.findall(output)}
    assert set(modes) == {"online", "flex", "batch"}
    assert modes["flex"][0] == pytest.approx(modes["online"][0] / 2, abs=1e-4)
    assert modes["batch"][0] == pytest.approx(modes["online"][0] / 2, abs=1e-4)
    estimated = modes["online"][0]

    code, output = grade("run", str(class_dir), "--db", str(tmp_path / "g.db"),
                         "--out", str(tmp_path / "o"))
    assert code == 0, output
    actual = float(re.search(r"^cost: \$(\d+\.\d+)", output, re.MULTILINE).group(1))
    print(f"\nsamples/intro-python against the fake server: estimated ${estimated:.4f}, "
          f"actual ${actual:.4f} ({100 * (estimated - actual) / actual:+.1f}%)")
    assert abs(estimated - actual) <= 0.10 * actual


def test_without_credentials_the_estimate_is_local_and_says_so(
        fake_gemini: FakeGemini, env: None, tmp_path: Path) -> None:
    class_dir = make_class(tmp_path, 5, extra={"empty.txt": ""})
    code, output = grade("estimate", str(class_dir), "--concurrency", "50", "--rpm", "60")
    assert code == 0, output
    assert "local estimate (no Gemini credentials)" in output
    assert "5 of 6 students" in output and "1 would be flagged" in output
    assert fake_gemini.stats()["requests"] == 0
    online = dict((m, rest) for m, _, rest in ROW.findall(output))["online"]
    # 5 calls fit the 60 rpm window at once: the physical bound is one 10 s latency
    assert online.startswith("~10 s")
    code, output = grade("estimate", str(class_dir), "--concurrency", "50", "--rpm", "2")
    online = dict((m, rest) for m, _, rest in ROW.findall(output))["online"]
    assert online.startswith("~2 min")  # 2 a minute: the 5th call in the third window, +10 s
    assert "thinking tokens (assumed 600 a call" in output  # the default level, low


def test_the_cached_estimate_agrees_with_a_cached_run_within_10_percent(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    fake_gemini = gemini_env
    class_dir = make_big_class(tmp_path, 20)
    code, output = grade("estimate", str(class_dir))
    assert code == 0, output
    estimated = float(CACHED.search(output).group(1))
    online = float(dict((m, c) for m, c, _ in ROW.findall(output))["online"])
    assert estimated < online / 2
    assert "online with the marking scheme (" in output
    code, output = grade("run", str(class_dir), "--db", str(tmp_path / "g.db"),
                         "--out", str(tmp_path / "o"))
    assert code == 0, output
    assert fake_gemini.stats()["caches"]["created"] == 1
    actual = float(re.search(r"^cost: \$(\d+\.\d+)", output, re.MULTILINE).group(1))
    print(f"\n20 students, 6,000-token scheme, fake server: cached estimate ${estimated:.4f}, "
          f"cached run ${actual:.4f}; online estimate ${online:.4f}")
    assert abs(estimated - actual) <= 0.10 * actual


def test_the_estimate_counts_what_the_run_would_send_redacted_with_its_examples(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    # countTokens is a call to Google: it must get no more of a student than `grade run` sends
    # (redacted by default), and it must count the graded examples the run would show.
    fake_gemini = gemini_env
    class_dir = sample_class(tmp_path)
    alice = class_dir / "alice.py"
    alice.write_text("# Alice Martin <alice.martin@example.edu>\n"
                     + alice.read_text(encoding="utf-8"), encoding="utf-8")

    def counted(*flags: str) -> tuple[str, str]:
        fake_gemini.reset_stats()
        code, output = grade("estimate", str(class_dir), *flags)
        assert code == 0, output
        calls = fake_gemini.stats()["by_endpoint"]["countTokens"]  # 13 students (+ the scheme)
        bodies = [r["body"] for r in fake_gemini.requests()[-calls:]]
        assert [r["endpoint"] for r in fake_gemini.requests()[-calls:]] == ["countTokens"] * calls
        assert sum("Grade this submission against" in json.dumps(b) for b in bodies) == 13
        return json.dumps(bodies), output

    header = "Graded examples follow"  # prompts/examples.j2: the examples in a student's part
    sent, _ = counted()
    assert (sent.count("Alice Martin"), sent.count("alice.martin@example.edu")) == (0, 0)
    assert sent.count(header) == 0
    sent, _ = counted("--exemplars", "2")
    assert sent.count("Alice Martin") == 0 and sent.count(header) == 13
    sent, _ = counted("--no-redact")
    assert sent.count("Alice Martin") == 1  # the teacher's choice, as for `grade run --no-redact`


SMALLEST = re.compile(r"^budget: `grade run --budget (\d+\.\d{4})` is the smallest that grades "
                      r"all 13 students sent", re.MULTILINE)
INTAKE_FLAGS = {"binary", "empty", "missing"}  # the sample class's students flagged on purpose


def graded_within(fake: FakeGemini, class_dir: Path, tmp_path: Path, budget: float,
                  samples: int = 1) -> None:
    """`grade run --budget` grades every student of the sample class that intake does not flag,
    and neither the store nor the fake server counts a cent above the budget."""
    fake.reset_stats()
    db = tmp_path / f"{budget}.db"
    code, output = grade("run", str(class_dir), "--db", str(db), "--out", str(tmp_path / "o"),
                         "--budget", f"{budget}")
    assert code == 0, output
    rows = q(db, "SELECT status, reason FROM outcomes")
    assert len(rows) == 16 and sum(s == "graded" for s, _ in rows) == 13, output
    assert {r for s, r in rows if s != "graded"} == INTAKE_FLAGS
    assert {s for s, _ in rows if s != "graded"} == {"flagged"}
    spent = q(db, "SELECT SUM(cost_usd) FROM attempts")[0][0]
    assert spent <= budget and fake.stats()["spend_usd"] <= budget
    billed = fake.stats()["billed_by_request"]  # by body: a student's samples share one
    assert len(billed) == 13 if samples == 1 else sum(billed.values()) >= 13 * samples


def estimated(class_dir: Path) -> tuple[float, str]:
    """`grade estimate CLASS_DIR`: the online cost, and all it printed."""
    code, output = grade("estimate", str(class_dir))
    assert code == 0, output
    return float(dict((m, c) for m, c, _ in ROW.findall(output))["online"]), output


@pytest.mark.today
def test_the_estimates_smallest_budget_grades_the_sample_class(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    class_dir = sample_class(tmp_path)
    online, output = estimated(class_dir)
    smallest = SMALLEST.search(output)
    assert smallest is not None, output
    budget = float(smallest.group(1))
    print(f"\nsamples/intro-python: online estimate ${online:.4f}, smallest budget ${budget}")
    assert online < budget < 1.2 * online  # the expected cost, and room for one call
    graded_within(gemini_env, class_dir, tmp_path, budget)


@pytest.mark.today
def test_a_budget_of_the_estimate_and_a_fifth_grades_the_sample_class(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    class_dir = sample_class(tmp_path)
    online, _ = estimated(class_dir)
    graded_within(gemini_env, class_dir, tmp_path, round(1.2 * online, 4))


@pytest.mark.today
def test_the_estimate_counts_every_sample(gemini_env: FakeGemini, tmp_path: Path) -> None:
    # `samples = 3`: every student is asked three times and each ask is billed; the estimate
    # and its smallest budget were a third of that, and that budget graded a few students
    class_dir = sample_class(tmp_path)
    one, _ = estimated(class_dir)
    toml = class_dir / "grader.toml"
    toml.write_text(toml.read_text(encoding="utf-8") + "samples = 3\n", encoding="utf-8")
    three, output = estimated(class_dir)
    assert three == pytest.approx(3 * one, rel=0.01), output
    smallest = SMALLEST.search(output)
    assert smallest is not None, output
    graded_within(gemini_env, class_dir, tmp_path, float(smallest.group(1)), samples=3)


def test_with_a_reference_pdf_the_budget_the_estimate_gives_grades_the_class(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    class_dir = make_class(tmp_path, 2)
    rubric = class_dir / "rubric.yaml"
    rubric.write_text(rubric.read_text(encoding="utf-8")
                      + "reference_files:\n  - {path: model_answer.pdf, title: Model}\n",
                      encoding="utf-8")
    scanned_pdf(class_dir / "model_answer.pdf", 0.01)
    code, out = grade("estimate", str(class_dir))
    assert code == 0, out
    budget = out.split("--budget ")[1].split("`")[0]
    db = tmp_path / "g.sqlite"
    code, out = grade("run", str(class_dir), "--db", str(db), "--out", str(tmp_path / "o"),
                      "--budget", budget)
    assert code == 0, out
    assert q(db, "SELECT status, COUNT(*) FROM outcomes GROUP BY status") == [("graded", 2)], out


def test_without_credentials_a_reference_pdf_is_in_the_estimated_input(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    class_dir = make_class(tmp_path, 2)

    def tokens() -> int:
        code, out = grade("estimate", str(class_dir))
        assert code == 0, out
        return int(out.split("input: ")[1].split(" tokens")[0].replace(",", ""))

    before = tokens()
    rubric = class_dir / "rubric.yaml"
    rubric.write_text(rubric.read_text(encoding="utf-8")
                      + "reference_files:\n  - {path: model_answer.pdf, title: Model}\n",
                      encoding="utf-8")
    scanned_pdf(class_dir / "model_answer.pdf", 0.01)
    assert tokens() - before >= 2 * 560  # a page a call, as Gemini 3 bills a PDF page
