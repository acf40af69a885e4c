"""The day the model table is read for: `GRADER_TODAY` moves grader and the fake server together,
and each dated fact of the table is checked on both sides of its date, through the CLI."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest

from grader.config.models import TODAY_ENV, today, today_override
from grader.errors import ConfigError
from grader.testing.fake_gemini import FakeGemini

from _classgen import make_class
from _cli import grade, q

COST = re.compile(r"^cost: \$(\d+\.\d+)", re.MULTILINE)
ONLINE = re.compile(r"^online\s+\$(\d+\.\d+)\s", re.MULTILINE)


def test_grader_today_sets_the_day_and_a_bad_value_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TODAY_ENV, "2027-01-02")
    assert today() == date(2027, 1, 2) == today_override()
    monkeypatch.setenv(TODAY_ENV, "")
    assert today_override() is None
    for bad in ("2027-13-01", "02/01/2027", "20270102", "tomorrow"):
        monkeypatch.setenv(TODAY_ENV, bad)
        with pytest.raises(ConfigError) as err:
            today()
        assert f"{TODAY_ENV}={bad!r} is not a date" in str(err.value)
        assert "YYYY-MM-DD" in str(err.value.fix)


def test_a_bad_grader_today_stops_the_cli_with_the_fix(
        gemini_env: FakeGemini, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TODAY_ENV, "1/1/2027")
    class_dir = make_class(tmp_path, 2)
    for args in (("run", "--db", str(tmp_path / "g.db")), ("estimate",)):
        code, output = grade(*args, str(class_dir))
        assert code == 2, output
        assert "GRADER_TODAY='1/1/2027' is not a date" in output and "YYYY-MM-DD" in output
        assert "Traceback" not in output
    assert gemini_env.stats()["by_endpoint"] == {}  # nothing was sent


@pytest.mark.parametrize(("day", "served"), [("2026-11-30", "gemini-2.5-flash"),
                                              ("2026-12-01", "gemini-3.5-flash-lite")])
def test_2_5_flash_is_routed_from_its_shutdown_day_in_grader_and_the_fake(
        gemini_env: FakeGemini, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        day: str, served: str) -> None:
    monkeypatch.setenv(TODAY_ENV, day)
    class_dir, db = make_class(tmp_path, 2), tmp_path / "g.db"
    code, output = grade("run", str(class_dir), "--db", str(db), "--out", str(tmp_path / "o"),
                         "--model", "gemini-2.5-flash")
    assert code == 0, output
    flat = " ".join(output.split())
    assert f"the model table (prices, lifecycle, routing) is read as of {day}, set by " \
           f"{TODAY_ENV}" in flat
    # the fake answered as the table says Google does on that day ...
    assert q(db, "SELECT DISTINCT model_version FROM attempts") == [(served,)]
    # ... and grader said so before it sent anything
    routed = "Google silently serves gemini-3.5-flash-lite instead"
    if served == "gemini-2.5-flash":
        assert routed not in flat
        assert "gemini-2.5-flash shuts down on the Developer API on 2026-12-01" in flat
    else:
        assert routed in flat
        assert "asked for gemini-2.5-flash, the service answered with gemini-3.5-flash-lite" \
               in flat


def test_3_8_flash_doubles_its_price_on_2027_01_01_in_the_estimate_the_run_and_the_fake(
        gemini_env: FakeGemini, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class_dir = make_class(tmp_path, 3)
    estimates, costs, billed = {}, {}, {}
    for day in ("2026-12-31", "2027-01-01"):
        monkeypatch.setenv(TODAY_ENV, day)
        code, output = grade("estimate", str(class_dir))
        assert code == 0, output
        price = "0.75" if day == "2026-12-31" else "1.5"
        assert f"prices: gemini-3.8-flash on {day}: ${price} input" in output
        estimates[day] = float(ONLINE.search(output).group(1))
        gemini_env.reset_stats()
        code, output = grade("run", str(class_dir), "--db", str(tmp_path / f"{day}.db"),
                             "--out", str(tmp_path / day))
        assert code == 0, output
        costs[day] = float(COST.search(output).group(1))
        billed[day] = gemini_env.stats()["spend_usd"]
        assert costs[day] == pytest.approx(billed[day], abs=1e-4)  # grader and the fake agree
    before, after = "2026-12-31", "2027-01-01"
    assert estimates[after] == pytest.approx(2 * estimates[before], rel=0.01)
    assert billed[after] == pytest.approx(2 * billed[before], rel=1e-6)
    assert costs[after] == pytest.approx(2 * costs[before], abs=2e-4)
