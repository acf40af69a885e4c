"""Gemini as it is in December 2026 (issue 25), through the CLI against the fake server: the
Gemini 4 family's rules are checked before any call, a class graded on Hydrogen sends nothing a
Gemini 4 model refuses and creates no explicit cache, a reply that asks to continue is not
followed, `grade models` shows the table, and a run says when its model is about to change."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from grader.config.models import TODAY_ENV
from grader.testing._fake_json import normalise
from grader.testing.fake_gemini import FakeGemini

from _classgen import make_class
from _cli import grade, q

ROOT = Path(__file__).resolve().parent.parent


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.today
@pytest.mark.parametrize(("flags", "commands", "words"), [
    (("--cache", "on"), [("run",)],
     "--cache on: gemini-4-hydrogen has no explicit context cache"),
    (("--thinking", "minimal"), [("run",), ("estimate",), ("batch", "submit")],
     "gemini-4-hydrogen does not accept thinking level 'minimal'"),
])
def test_what_gemini_4_refuses_is_refused_before_any_call(
        gemini_env: FakeGemini, tmp_path: Path, flags: tuple[str, ...],
        commands: list[tuple[str, ...]], words: str) -> None:
    class_dir = make_class(tmp_path, 2)
    for command in commands:
        db = () if command == ("estimate",) else ("--db", str(tmp_path / "g.db"))
        code, output = grade(*command, str(class_dir), "--model", "gemini-4-hydrogen", *flags,
                             *db)
        assert code == 2, output
        assert words in flat(output), output
    assert gemini_env.stats()["by_endpoint"] == {}  # nothing was sent, nothing paid


@pytest.mark.today
def test_grade_models_lists_the_gemini_4_family_with_dated_prices(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_CLOUD_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    code, output = grade("models")
    assert code == 0, output
    text = flat(output)
    for model, price in (("gemini-4-hydrogen", "$1.50 / $7.50 since 2026-11-12"),
                         ("gemini-4-neon", "$3.00 / $15.00 since 2026-11-18"),
                         ("gemini-4-carbon", "$4.00 / $20.00 since 2026-12-01"),
                         ("gemini-4-argon", "$4.00 / $20.00 since 2026-12-01")):
        block = text.split(f"{model} ", 1)[1]
        assert f"price {price}" in block.split(" caching ", 1)[0], block[:300]
        assert "implicit only, from 4,096 tokens" in block.split(" caching ", 1)[1][:80]
    assert "gemini-3.8-flash [default]" in text
    assert "$0.75 / $3.75 since 2026-09-02; $1.50 / $7.50 from 2027-01-01" in text
    assert "Google promises 45 days' notice" in text.split("gemini-4-hydrogen ", 1)[1]
    assert "default: gemini-3.8-flash — the longest support window" in text
    code, output = grade("models", "--check")
    assert code == 2 and "no Gemini credentials" in output  # --check needs the service


@pytest.mark.parametrize(("day", "said"), [("2026-12-06", True), ("2026-11-15", False)])
def test_a_run_says_when_its_models_price_changes_within_30_days(
        gemini_env: FakeGemini, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        day: str, said: bool) -> None:
    monkeypatch.setenv(TODAY_ENV, day)
    class_dir = make_class(tmp_path, 1)
    code, output = grade("run", str(class_dir), "--db", str(tmp_path / "g.db"),
                         "--out", str(tmp_path / "o"))
    assert code == 0, output
    notice = "gemini-3.8-flash's price changes on 2027-01-01"
    assert (notice in flat(output)) is said
    if said:
        assert "in 26 days" in flat(output) and flat(output).count(notice) == 1


def test_the_sample_class_is_estimated_at_the_2027_rates_on_2027_01_02(
        gemini_env: FakeGemini, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TODAY_ENV, "2027-01-02")
    code, output = grade("estimate", str(ROOT / "samples" / "intro-python"))
    assert code == 0, output
    assert "prices: gemini-3.8-flash on 2027-01-02: $1.5 input, $7.5 output" in flat(output)


def sent_bodies(fake: FakeGemini) -> list[dict]:
    """The generateContent bodies as the service reads them (either JSON spelling: camelCase)."""
    return [normalise(r["body"]) for r in fake.requests() if r["endpoint"] == "generateContent"]


def test_a_class_on_hydrogen_creates_no_cache_and_sends_nothing_it_refuses(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    class_dir = make_class(tmp_path, 4)
    # a marking scheme long enough for the implicit cache (4,096 tokens: about 16,000 characters)
    rubric = (class_dir / "rubric.yaml").read_text(encoding="utf-8")
    long = "instructions: >-\n" + "".join(
        f"  Point {i}: judge the reasoning, not the wording, and accept any correct encoding "
        "argument that names bandwidth and clock recovery.\n" for i in range(160))
    (class_dir / "rubric.yaml").write_text(
        rubric.replace("instructions: Grade each criterion independently.\n", long),
        encoding="utf-8")
    db = tmp_path / "g.db"
    code, output = grade("run", str(class_dir), "--model", "gemini-4-hydrogen", "--db", str(db),
                         "--out", str(tmp_path / "o"))
    assert code == 0, output
    stats = gemini_env.stats()
    assert not any(e.startswith("cachedContents") for e in stats["by_endpoint"]), stats
    assert stats["by_status"] == {"200": 4}  # no 400: nothing refused was sent
    assert "gemini-4-hydrogen has no explicit context cache: none is created" in flat(output)
    bodies = sent_bodies(gemini_env)
    for body in bodies:
        cfg = body.get("generationConfig", {})
        assert cfg["thinkingConfig"] == {"thinkingLevel": "LOW"}  # grader's level, not HIGH
        assert not {"frequencyPenalty", "presencePenalty", "candidateCount"} & set(cfg)
    # the marking scheme goes first, byte for byte the same for every student
    prefixes = {json.dumps([b["systemInstruction"], b["contents"][0]["parts"][0]])
                for b in bodies}
    assert len(prefixes) == 1
    assert q(db, "SELECT COUNT(*) FROM grades WHERE status = 'graded'") == [(4,)]
    # the implicit cache served the marking scheme from the second student on, and the run
    # reports the cached tokens the replies showed
    hits = gemini_env.stats()["implicit_cached_tokens"]
    assert hits > 3 * 4096
    assert f"cached {hits} in 4 calls" in flat(output)


def test_a_reply_that_asks_to_continue_is_flagged_and_not_followed(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    class_dir = make_class(tmp_path, 2, extra={"long.txt": "An essay. FAKE_GEMINI:CONTINUE"})
    db = tmp_path / "g.db"
    code, output = grade("run", str(class_dir), "--model", "gemini-4-hydrogen", "--db", str(db),
                         "--out", str(tmp_path / "o"))
    assert code == 0, output
    rows = q(db, "SELECT reason, message FROM flags WHERE student_id = 'long'")
    assert [r[0] for r in rows] == ["blocked_max_tokens"], rows
    assert "asked to continue (finish reason CONTINUATION)" in rows[0][1]
    assert gemini_env.stats()["continuations_requested"] == 0  # no second segment asked for
    bodies = [json.dumps(b) for b in sent_bodies(gemini_env)]
    assert not any(re.search(r"continuation", b, re.IGNORECASE) for b in bodies)


@pytest.mark.today
def test_grade_models_check_names_what_the_service_lists_and_the_table_lacks(
        gemini_env: FakeGemini) -> None:
    gemini_env.configure(listed_extra=["gemini-5-helium"], listed_hidden=["gemini-3.6-flash"])
    code, output = grade("models", "--check")
    assert code == 1, output
    text = flat(output)
    assert "listed by the service, not in the table (new models: the table is stale): " \
           "gemini-5-helium" in text
    assert "no longer listed by the service (retired or renamed: do not choose them): " \
           "gemini-3.6-flash" in text
    assert "models.list" in gemini_env.stats()["by_endpoint"]
    gemini_env.configure(listed_extra=[], listed_hidden=[])
    code, output = grade("models", "--check")
    assert code == 0 and "the table and the service agree" in output, output
