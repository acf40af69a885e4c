"""A price for a model on the school's own server (`--backend openai`), set in grader.toml: the
pricing policy, without a server. Priced, a call costs its usage at that price and `--budget`
applies; unpriced, nothing is counted ("local, unpriced") and a budget is refused. The runs and
estimates through a real server are in test_openai_backend.py."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from grader.config.generation import configure
from grader.config.models import Pricing, packaged, table
from grader.config.settings import Settings, resolve
from grader.errors import ConfigError
from grader.prompting.planning import spending_for
from grader.prompting.request import Usage

from _cli import grade

DAY = date(2026, 12, 1)
MODEL = "qwen2.5:7b-instruct"
SERVER = {"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": MODEL}
PRICED = (f'[grader.models."{MODEL}"]\n'
          'prices = [{from = 2026-01-01, input = 0.2, output = 0.8, cached_input = 0.05,'
          ' source = "our GPU server: power and depreciation, 2026"}]\n')


def settings(tmp_path: Path, toml: str = "", **flags: object) -> Settings:
    (tmp_path / "grader.toml").write_text(toml, encoding="utf-8")
    return resolve({**SERVER, **flags}, class_dir=tmp_path, env={})


def test_a_server_model_is_priced_only_by_its_grader_toml_row(tmp_path: Path) -> None:
    s = settings(tmp_path, PRICED)
    pricing = Pricing.of_server(table(s.models), s.models, MODEL)
    usage = Usage(prompt_tokens=1_000, cached_tokens=200, output_tokens=300)
    assert pricing.known and pricing.mode == "standard"
    assert pricing.cost(usage, DAY) == pytest.approx((800 * 0.2 + 200 * 0.05 + 300 * 0.8) / 1e6)
    # no row, or a row without prices: unpriced
    assert not Pricing.of_server(packaged(), None, MODEL).known
    named = {MODEL: {"name": "Qwen 2.5 7B"}}
    assert not Pricing.of_server(table(named), named, MODEL).known
    # a server model named like a Gemini model is not priced at Google's prices
    assert Pricing.of(packaged(), "gemini-3.8-flash").known
    assert not Pricing.of_server(table(s.models), s.models, "gemini-3.8-flash").known


def test_a_bad_price_row_names_the_file_and_the_field(tmp_path: Path) -> None:
    bad = PRICED.replace("input = 0.2", "input = -1").replace(
        ', source = "our GPU server: power and depreciation, 2026"', "")
    with pytest.raises(ConfigError) as err:
        settings(tmp_path, bad)
    text = str(err.value)
    assert text.startswith(f"{tmp_path / 'grader.toml'}: invalid model table override")
    assert f"models.{MODEL}.prices.0.input: Input should be greater than or equal to 0" in text
    assert f"models.{MODEL}.prices.0.source: Field required" in text
    with pytest.raises(ConfigError, match=r"prices\.0\.currency: Extra inputs are not permitted"):
        settings(tmp_path, PRICED.replace("source =", "currency = 'EUR', source ="))


def test_a_priced_server_run_counts_its_calls_and_keeps_to_its_budget(tmp_path: Path) -> None:
    # usage_tier sets Gemini's spend-rate limit: not the school's server's
    s = settings(tmp_path, PRICED + "[grader]\nusage_tier = \"1\"\n", budget=0.5)
    tbl = table(s.models)
    gen = configure(s, MODEL, "openai", tbl, DAY)
    assert any("costs are counted at the price set in grader.toml ($0.2 input, $0.8 output"
               in n for n in gen.notices)
    spending = spending_for(s, gen, tbl, criteria=1)
    assert spending is not None and spending.budget is not None and spending.rate is None
    assert spending.budget.limit == 0.5
    cost = spending.settle(None, Usage(prompt_tokens=2_000, output_tokens=500))
    assert cost == pytest.approx((2_000 * 0.2 + 500 * 0.8) / 1e6) == spending.cost


def test_an_unpriced_server_counts_nothing_and_refuses_a_budget(tmp_path: Path) -> None:
    s = settings(tmp_path, "[grader]\nusage_tier = \"1\"\n")
    tbl = table(s.models)
    gen = configure(s, MODEL, "openai", tbl, DAY)
    assert any("costs are not counted (local, unpriced)" in n for n in gen.notices)
    assert spending_for(s, gen, tbl, criteria=1) is None
    with pytest.raises(ConfigError) as err:
        spending_for(settings(tmp_path, budget=5), gen, tbl, criteria=1)
    text = str(err.value)
    assert f"a budget of $5 needs a price for {MODEL}" in text and "local, unpriced" in text
    assert "leave --budget unset" in text and f'[grader.models."{MODEL}"]' in text


def test_grade_run_refuses_a_budget_for_an_unpriced_server_before_anything(tmp_path: Path
                                                                         ) -> None:
    class_dir = tmp_path / "class"
    class_dir.mkdir()
    (class_dir / "rubric.yaml").write_text(
        "title: t\nquestion: q\ncriteria:\n  - {id: c, title: C, max_points: 2}\n",
        encoding="utf-8")
    (class_dir / "ada.txt").write_text("an answer", encoding="utf-8")
    db = tmp_path / "g.sqlite"
    code, out = grade("run", str(class_dir), "--backend", "openai", "--base-url",
                      "http://127.0.0.1:9/v1", "--model", MODEL, "--budget", "5", "--db", str(db))
    assert code == 2 and f"error: a budget of $5 needs a price for {MODEL}" in out, out
    assert "grading 1 students" not in out and not db.exists()


def test_a_reply_without_usage_is_charged_its_estimate_not_nothing() -> None:
    from grader.backends.openai_compat import reply_usage
    answer = '{"scores": [' + "1, " * 100 + "]}"
    assert reply_usage(None, answer, 900) == Usage(prompt_tokens=900,
                                                   output_tokens=len(answer) // 4)
    assert reply_usage({"prompt_tokens": 120}, answer, 900).prompt_tokens == 120
    reported = {"prompt_tokens": 120, "completion_tokens": 30,
                "prompt_tokens_details": {"cached_tokens": 64}}
    assert reply_usage(reported, answer, 900) == Usage(prompt_tokens=120, output_tokens=30,
                                                       cached_tokens=64)
