"""The model table (grader/data/models.toml), its prices and the checks made before any call:
pure, fast unit tests."""

from __future__ import annotations

import tomllib
from datetime import date
from importlib import resources
from pathlib import Path

import pytest

from grader.config.generation import configure, served_notice
from grader.config.models import LEVELS, Pricing, packaged, table
from grader.config.settings import DEFAULT_GEMINI_MODEL, Settings, resolve
from grader.errors import ConfigError
from grader.prompting.request import Usage

DAY = date(2026, 11, 22)


def test_every_row_and_price_names_its_source_and_the_file_is_dated() -> None:
    raw = tomllib.loads(resources.files("grader.data").joinpath("models.toml").read_text())
    assert isinstance(raw["checked"], date)
    tbl = packaged()
    assert tbl.models and tbl.multipliers.source and tbl.media.source and tbl.estimate.source
    for model in tbl.models.values():
        assert model.sources and all(u.startswith("https://") for u in model.sources), model.id
        for life in (model.developer, model.enterprise):
            assert life is None or life.source.startswith("http"), model.id
        assert model.prices, f"{model.id} has no price"
        for price in model.prices:
            assert "http" in price.source, (model.id, price.since)


def test_default_is_a_current_ga_flash_model_with_its_thinking_default() -> None:
    tbl = packaged()
    assert DEFAULT_GEMINI_MODEL == tbl.default_model == "gemini-3.8-flash"
    row = tbl.get(DEFAULT_GEMINI_MODEL)
    assert row is not None and row.developer is not None
    assert row.developer.stage == "ga" and row.developer.routed(DAY) is None
    assert row.thinking == "low" and "minimal" not in row.thinking_levels and row.thinking_why
    cheap = tbl.get(tbl.cheap_model)
    assert cheap is not None and cheap.thinking == "minimal"
    assert cheap.price_on(DAY).input < row.price_on(DAY).input  # the cheaper profile is cheaper


def test_prices_change_on_their_effective_dates() -> None:
    flash, argon = packaged().get("gemini-3.8-flash"), packaged().get("gemini-4-argon")
    assert flash.price_on(date(2026, 12, 31)).input == 0.75
    assert flash.price_on(date(2027, 1, 1)).input == 1.50
    assert flash.price_on(date(2027, 1, 1)).output == 7.50
    assert argon.price_on(date(2026, 11, 30)).output == 10.0
    assert argon.price_on(date(2026, 12, 1)).output == 20.0
    assert flash.price_on(date(2020, 1, 1)).input == 0.75  # the first row prices earlier days


def test_cost_counts_fresh_and_cached_input_and_thinking_as_output() -> None:
    usage = Usage(prompt_tokens=10_000, cached_tokens=4_000, output_tokens=500,
                  thinking_tokens=1_500)
    std = Pricing.of(packaged(), "gemini-3.8-flash", "standard")
    # 6,000 fresh at 0.75, 4,000 cached at 0.075, 2,000 output (incl. thinking) at 3.75
    assert std.cost(usage, DAY) == pytest.approx((6000 * 0.75 + 4000 * 0.075 + 2000 * 3.75)
                                                 / 1e6)
    for mode in ("batch", "flex"):
        half = Pricing.of(packaged(), "gemini-3.8-flash", mode)
        # half price, except cached input (priced as outside a batch)
        assert half.cost(usage, DAY) == pytest.approx(
            (6000 * 0.375 + 4000 * 0.075 + 2000 * 1.875) / 1e6)
    assert std.cost(usage, date(2027, 1, 2)) == pytest.approx(2 * std.cost(usage, DAY))
    pro = Pricing.of(packaged(), "gemini-3.1-pro-preview")
    long = Usage(prompt_tokens=250_000, output_tokens=1000)
    assert pro.cost(long, DAY) == pytest.approx((250_000 * 4.0 + 1000 * 18.0) / 1e6)
    assert Pricing.of(packaged(), "some-tuned-model").cost(usage, DAY) is None
    assert std.worst_case(1000, 8192, DAY) == pytest.approx((1000 * 0.75 + 8192 * 3.75) / 1e6)


def test_grader_toml_overrides_a_row_or_adds_one(tmp_path: Path) -> None:
    (tmp_path / "grader.toml").write_text(
        '[grader.models."gemini-3.8-flash"]\n'
        'prices = [{from = 2020-01-01, input = 9, output = 10, cached_input = 1,'
        ' source = "our contract"}]\n'
        '[grader.models."my-tuned-model"]\n'
        'thinking_levels = ["low", "high"]\n'
        'prices = [{from = 2026-01-01, input = 2, output = 4, cached_input = 0.2,'
        ' source = "console"}]\n')
    tbl = table(resolve({}, class_dir=tmp_path, env={}).models)
    assert tbl.get("gemini-3.8-flash").price_on(DAY).input == 9
    assert tbl.get("gemini-3.8-flash").thinking == "low"  # the rest of the row is kept
    assert tbl.get("my-tuned-model").price_on(DAY).output == 4
    assert packaged().get("gemini-3.8-flash").price_on(DAY).input == 0.75  # not mutated
    with pytest.raises(ConfigError) as err:
        table({"gemini-3.8-flash": {"prices": [{"from": "2020-01-01", "input": 1, "output": 1,
                                                "cached_input": 0}]}})
    assert "grader.toml" in str(err.value) and "source" in str(err.value)


def test_removed_settings_say_what_replaces_them(tmp_path: Path) -> None:
    (tmp_path / "grader.toml").write_text("[grader]\nprice_per_mtok = [1, 2, 0]\n")
    with pytest.raises(ConfigError, match=r"grader\.models"):
        resolve({}, class_dir=tmp_path, env={})
    with pytest.raises(ConfigError, match="--thinking"):
        resolve({}, env={"GRADER_THINKING_BUDGET": "0"})


def test_lower_level_steps_down_within_what_the_model_accepts() -> None:
    flash, lite = packaged().get("gemini-3.8-flash"), packaged().get("gemini-3.5-flash-lite")
    assert flash.lower_level("medium") == "low" and flash.lower_level("low") is None
    assert lite.lower_level("low") == "minimal" and lite.lower_level("minimal") is None
    assert [lv for lv in LEVELS if lv in lite.thinking_levels] == list(LEVELS[:4])
    hydrogen = packaged().get("gemini-4-hydrogen")
    assert hydrogen.lower_level("xhigh") == "high" and hydrogen.lower_level("low") is None


def test_configure_picks_the_table_default_and_refuses_what_the_model_would() -> None:
    tbl = packaged()
    gen = configure(Settings(), "gemini-3.8-flash", "gemini", tbl, DAY)
    assert gen.thinking_level == "low" and gen.temperature is None and gen.seed is None
    assert gen.notices == ()
    assert configure(Settings(), "gemini-3.5-flash-lite", "gemini", tbl, DAY).thinking_level \
        == "minimal"
    with pytest.raises(ConfigError) as err:
        configure(Settings(thinking="minimal"), "gemini-3.8-flash", "gemini", tbl, DAY)
    text = str(err.value)
    assert "'minimal'" in text and "low, medium, high" in text and "--thinking low" in text
    with pytest.raises(ConfigError, match="--max-output-tokens 32768"):
        configure(Settings(max_output_tokens=60_000), "gemini-4-argon", "gemini", tbl, DAY)
    with pytest.raises(ConfigError, match="no thinking level"):
        configure(Settings(thinking="low"), "gemini-2.5-flash", "gemini", tbl, DAY)
    local = configure(Settings(thinking="minimal"), "x.gguf", "local", tbl, DAY)
    assert local.thinking_level is None and local.row is None  # llama.cpp: nothing to check


def test_notices_for_routed_deprecated_unknown_models_and_ignored_sampling() -> None:
    tbl = packaged()
    routed = configure(Settings(), "gemini-3.5-flash", "gemini", tbl, DAY).notices
    assert any("serves gemini-3.6-flash" in n and "--model gemini-3.8-flash" in n
               for n in routed)
    # on Enterprise the same id is GA: no routing notice there
    assert not configure(Settings(), "gemini-3.5-flash", "enterprise", tbl, DAY).notices
    assert any("shuts down" in n for n in configure(
        Settings(), "gemini-3.1-flash-lite", "gemini", tbl, DAY).notices)
    assert any("not in the model table" in n for n in configure(
        Settings(), "gemini-9-nova", "gemini", tbl, DAY).notices)
    sampled = configure(Settings(temperature=0.2, seed=3), "gemini-3.8-flash", "gemini", tbl,
                        DAY)
    assert sampled.temperature == 0.2 and sampled.seed == 3  # sent, as the user asked
    assert any("ignores temperature" in n for n in sampled.notices)
    assert any("seed is best effort" in n for n in sampled.notices)
    low_t = configure(Settings(temperature=0.0), "gemini-3.1-flash-lite", "gemini", tbl, DAY)
    assert any("advises keeping the default 1.0" in n for n in low_t.notices)


def test_served_notice_only_for_another_model_or_an_old_stage() -> None:
    assert served_notice("gemini-3.8-flash", "gemini-3.8-flash", "STABLE") is None
    assert served_notice("gemini-3.8-flash", "gemini-3.8-flash-001", None) is None
    note = served_notice("gemini-3.7-flash", "gemini-3.8-flash", "DEPRECATED")
    assert note is not None and "answered with gemini-3.8-flash" in note and "DEPRECATED" in note


def test_the_embedding_row_prices_input_tokens() -> None:
    emb = packaged().embedding
    assert emb.model.startswith("gemini-embedding") and emb.batch_size <= 100
    assert emb.cost(2_000_000, date(2026, 11, 22)) == pytest.approx(0.30)
    assert emb.cost(1_000_000, date(2020, 1, 1)) == pytest.approx(0.15)  # first row: earlier
