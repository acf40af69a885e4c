"""`--budget` and the spend-rate limit: never above the ceiling with many requests in flight,
students not started are skipped with reason `budget`, and a rerun with a larger budget finishes
the class without paying twice. Unit tests for the reservation arithmetic, then end to end
through the CLI against the fake server."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from grader.errors import BudgetExceeded
from grader.online.budget import Budget
from grader.online.ratelimit import SpendRate
from grader.testing.fake_gemini import FakeGemini

from _classgen import make_class
from _cli import grade, q

# Prices pinned in grader.toml so the arithmetic does not depend on today's date.
IN_PRICE, OUT_PRICE = 2.0, 10.0
PINNED = ('[grader.models."gemini-3.8-flash"]\n'
          f'prices = [{{from = 2020-01-01, input = {IN_PRICE}, output = {OUT_PRICE},'
          ' cached_input = 0.2, source = "test"}]\n')


def test_reservations_never_exceed_the_budget_under_concurrency() -> None:
    async def go() -> tuple[Budget, int, float]:
        budget = Budget(1.0)
        worst_seen = 0.0
        refused = 0
        rng = random.Random(4)

        async def call() -> None:
            nonlocal worst_seen, refused
            try:
                await budget.reserve(0.3)
            except BudgetExceeded:
                refused += 1
                return
            worst_seen = max(worst_seen, budget.spent + budget.reserved)
            await asyncio.sleep(rng.uniform(0, 0.01))
            budget.settle(0.3, rng.uniform(0.05, 0.3))  # the real cost is at most the worst

        await asyncio.gather(*(call() for _ in range(40)))
        return budget, refused, worst_seen

    budget, refused, worst_seen = asyncio.run(go())
    assert worst_seen <= 1.0 and budget.spent <= 1.0 and budget.reserved == 0
    assert refused > 0 and budget.spent > 0.7 - 1e-9  # stopped only when 0.3 no longer fit


def test_spend_rate_waits_for_the_window_and_for_calls_in_flight() -> None:
    async def go() -> list[str]:
        rate = SpendRate(1.0, window_s=0.3)
        order: list[str] = []
        await rate.reserve(0.6)

        async def second() -> None:
            await rate.reserve(0.6)  # 0.6 in flight + 0.6 > 1.0: waits
            order.append("second admitted")

        task = asyncio.create_task(second())
        await asyncio.sleep(0.05)
        order.append("first settles")
        rate.settle(0.6, 0.5)  # 0.5 spent in the window + 0.6 > 1.0: still waits
        await asyncio.sleep(0.05)
        order.append("window not over")
        await task  # admitted once the 0.5 leaves the 0.3 s window
        with pytest.raises(ValueError):
            await rate.reserve(1.5)  # one call worth more than the whole limit
        return order

    assert asyncio.run(go()) == ["first settles", "window not over", "second admitted"]


@pytest.fixture
def fake(fake_gemini: FakeGemini, monkeypatch: pytest.MonkeyPatch) -> FakeGemini:
    for var in ("GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_GENAI_USE_ENTERPRISE",
                "GOOGLE_CLOUD_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", "test-key")
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", fake_gemini.url)
    fake_gemini.configure(latency_ms=100)  # so that 8 requests are in flight together
    return fake_gemini


def fake_spend(fake: FakeGemini) -> float:
    """What the fake delivered, at the pinned prices (output includes thinking)."""
    t = fake.stats()["tokens"]
    return (t["prompt"] * IN_PRICE + (t["candidates"] + t["thoughts"]) * OUT_PRICE) / 1e6


def test_budget_stops_at_the_ceiling_and_a_larger_budget_finishes(fake: FakeGemini,
                                                                  tmp_path: Path) -> None:
    class_dir = make_class(tmp_path, 40)
    (class_dir / "grader.toml").write_text(PINNED)
    db = tmp_path / "g.db"
    run = ("run", str(class_dir), "--db", str(db), "--out", str(tmp_path / "o"),
           "--concurrency", "8", "--max-output-tokens", "2000")
    code, output = grade(*run, "--budget", "0.25")
    assert code == 0, output
    spent = q(db, "SELECT SUM(cost_usd) FROM attempts WHERE run_id = 1")[0][0]
    assert 0 < spent <= 0.25 and fake_spend(fake) <= 0.25  # never above, by either count
    assert fake.stats()["max_in_flight"] == 8
    outcomes = dict(q(db, "SELECT status, COUNT(*) FROM outcomes WHERE run_id = 1"
                          " GROUP BY status"))
    assert outcomes["graded"] >= 10 and outcomes["skipped"] >= 5
    assert outcomes["graded"] + outcomes["skipped"] == 40
    assert q(db, "SELECT DISTINCT reason FROM outcomes WHERE status = 'skipped'") == [("budget",)]
    assert "skipped, rerun with a larger --budget to continue" in output
    # skipped students were never sent: no attempt, nothing billed
    assert q(db, "SELECT COUNT(*) FROM attempts a JOIN outcomes o ON o.student_id ="
                 " a.student_id WHERE o.status = 'skipped'") == [(0,)]

    code, output = grade(*run, "--budget", "1")
    assert code == 0, output
    assert q(db, "SELECT status, COUNT(*) FROM outcomes WHERE run_id = 2 GROUP BY status") == [
        ("graded", 40)]
    assert set(fake.stats()["billed_by_request"].values()) == {1}  # nobody paid twice
    assert q(db, "SELECT COUNT(*) FROM attempts") == [(40,)]
    assert fake_spend(fake) <= 0.25 + 1.0


def test_a_budget_needs_a_price(fake: FakeGemini, tmp_path: Path) -> None:
    class_dir = make_class(tmp_path, 2)
    code, output = grade("run", str(class_dir), "--db", str(tmp_path / "g.db"),
                         "--model", "gemini-9-nova", "--budget", "1")
    assert code == 2 and "need a price for gemini-9-nova" in output
    assert fake.stats()["requests"] == 0


def test_the_spend_rate_limit_bounds_what_is_in_flight(fake: FakeGemini, tmp_path: Path) -> None:
    # worst case per call here is about $0.029 (input bound + 2,000 output tokens at $10/1M):
    # a $0.06 limit per 10 minutes admits two at a time, and a third once those are settled
    class_dir = make_class(tmp_path, 3)
    (class_dir / "grader.toml").write_text(PINNED.replace(
        "[grader.models", "[grader]\nspend_per_10min = 0.06\n[grader.models", 1))
    code, output = grade("run", str(class_dir), "--db", str(tmp_path / "g.db"),
                         "--out", str(tmp_path / "o"), "--concurrency", "8",
                         "--max-output-tokens", "2000")
    assert code == 0, output
    assert fake.stats()["max_in_flight"] == 2 and fake.stats()["by_status"] == {"200": 3}
    assert fake_spend(fake) <= 0.06
    (class_dir / "grader.toml").write_text("[grader]\nspend_per_10min = 0.001\n")
    code, output = grade("run", str(class_dir), "--db", str(tmp_path / "g.db"), "--regrade")
    assert code == 2 and "more than the whole spend limit" in output
    assert "fix: raise spend_per_10min" in output and fake.stats()["requests"] == 3
