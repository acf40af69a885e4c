"""`--budget` and the spend-rate limit: never above the ceiling with many requests in flight,
students not started are skipped with reason `budget`, and a rerun with a larger budget finishes
the class without paying twice. Unit tests for the reservation arithmetic, then end to end
through the CLI against the fake server."""

from __future__ import annotations

import asyncio
import json
import random
import re
from pathlib import Path

import pytest

from grader.errors import BudgetExceeded
from grader.online.budget import Budget, CallCost, Quote, smallest_budget
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
    # worst case $0.30 a call (0.05 input + 1,000 output tokens at $0.00025), smallest cap 200
    # tokens ($0.10); real costs between $0.02 and the worst case of the cap each was sent with
    q = Quote(input_usd=0.05, output_usd=0.00025, cap=1000, least=200)

    async def go() -> tuple[Budget, int, float, list[int]]:
        budget = Budget(1.0)
        worst_seen = 0.0
        refused = 0
        caps: list[int] = []
        rng = random.Random(4)

        async def call() -> None:
            nonlocal worst_seen, refused
            try:
                cap, held = await budget.reserve(q)
            except BudgetExceeded:
                refused += 1
                return
            caps.append(cap)
            assert held == q.usd(cap) and q.least <= cap <= q.cap
            worst_seen = max(worst_seen, budget.spent + budget.reserved)
            await asyncio.sleep(rng.uniform(0, 0.01))
            budget.settle(held, rng.uniform(0.02, held))  # the real cost is at most the worst

        await asyncio.gather(*(call() for _ in range(40)))
        return budget, refused, worst_seen, caps

    budget, refused, worst_seen, caps = asyncio.run(go())
    assert worst_seen <= 1.0 and budget.spent <= 1.0 and budget.reserved == 0
    # never starved: it stopped only when not even the smallest cap fitted beside what was spent
    assert refused > 0 and budget.spent > 1.0 - q.usd(q.least)
    assert min(caps) < q.cap  # the last calls went out with a smaller cap, one at a time


def test_a_call_waits_for_calls_in_flight_before_it_is_sent_with_a_smaller_cap() -> None:
    q = Quote(input_usd=0.1, output_usd=0.001, cap=500, least=100)  # $0.60 worst, $0.20 least

    async def go() -> list[str]:
        budget = Budget(1.0)
        order: list[str] = []
        _, first = await budget.reserve(q)  # $0.60 held: $0.40 free, too little for $0.60

        async def second() -> None:
            cap, _ = await budget.reserve(q)
            order.append(f"second sent with cap {cap}")

        task = asyncio.create_task(second())
        await asyncio.sleep(0.01)
        order.append("first settles at $0.25")
        budget.settle(first, 0.25)  # $0.75 free: the whole cap fits after all
        await task
        return order

    assert asyncio.run(go()) == ["first settles at $0.25", "second sent with cap 500"]


async def _spent(usd: float) -> Budget:
    """A $1 budget of which `usd` is spent, nothing in flight."""
    budget = Budget(1.0)
    _, held = await budget.reserve(Quote(input_usd=usd, output_usd=0.0, cap=1, least=1))
    budget.settle(held, usd)
    return budget


def test_a_call_is_sent_with_the_cap_that_fits_or_refused_when_even_its_least_does_not() -> None:
    q = Quote(input_usd=0.1, output_usd=0.001, cap=500, least=100)  # $0.60 worst, $0.20 least

    async def go() -> None:
        budget = await _spent(0.65)  # $0.35 left, nothing in flight: the cap that fits
        assert await budget.reserve(q) == (250, pytest.approx(0.35))
        budget = await _spent(0.85)  # $0.15 left: below the least the call may hold
        with pytest.raises(BudgetExceeded, match=r"\$0\.8500 spent .* may cost up to \$0\.2000"
                           r" even with its smallest output cap \(100 tokens\)"):
            await budget.reserve(q)
        no_shrink = Quote(input_usd=0.1, output_usd=0.001, cap=500, least=500)
        budget = await _spent(0.65)  # a retry after a thinking cut-off: its whole cap or none
        with pytest.raises(BudgetExceeded):
            await budget.reserve(no_shrink)

    asyncio.run(go())

def test_the_smallest_budget_is_the_expected_cost_and_room_for_the_last_call() -> None:
    calls = [CallCost(0.004, 0.011), CallCost(0.005, 0.010), CallCost(0.003, 0.012)]
    assert smallest_budget(calls) == pytest.approx(0.012 + 0.009)
    assert smallest_budget([]) == 0.0


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


def test_a_budget_below_one_calls_expected_cost_grades_none_and_says_what_is_needed(
        fake: FakeGemini, tmp_path: Path) -> None:
    # each call is expected to cost about $0.009 here (some 600 input tokens at $2/1M, 220
    # answer and 600 thinking tokens at $10/1M): $0.002 pays for none of them
    class_dir = make_class(tmp_path, 5)
    (class_dir / "grader.toml").write_text(PINNED)
    db = tmp_path / "g.db"
    run = ("run", str(class_dir), "--db", str(db), "--out", str(tmp_path / "o"))
    code, output = grade(*run, "--budget", "0.002")
    assert code == 0, output
    assert q(db, "SELECT status, reason, COUNT(*) FROM outcomes GROUP BY status, reason") == [
        ("skipped", "budget", 5)]
    assert fake.stats()["billed_by_request"] == {} and q(db, "SELECT COUNT(*) FROM attempts") == [
        (0,)]
    need = re.search(r"budget \$0\.002: 5 students skipped, rerun with a larger --budget to "
                     r"continue \(paid work is reused\); --budget (\d+\.\d{4}) would grade them",
                     output)
    assert need is not None, output
    message = q(db, "SELECT message FROM outcomes LIMIT 1")[0][0]
    assert "may cost up to $" in message and "even with its smallest output cap" in message

    code, output = grade(*run, "--budget", need.group(1))  # what the run said is needed
    assert code == 0, output
    assert q(db, "SELECT status, COUNT(*) FROM outcomes WHERE run_id = 2 GROUP BY status") == [
        ("graded", 5)]
    assert q(db, "SELECT SUM(cost_usd) FROM attempts")[0][0] <= float(need.group(1))
    assert fake_spend(fake) <= float(need.group(1))


@pytest.mark.parametrize("budget", [0.08, 0.13])
def test_spending_never_exceeds_the_budget_and_stops_only_when_the_money_is_gone(
        fake: FakeGemini, tmp_path: Path, budget: float) -> None:
    # worst case of a call here: about $0.03 (its input bounded by its bytes, 2,000 output
    # tokens at $10/1M); it is expected to cost about $0.009: calls go out 8 at a time, then,
    # close to the ceiling, one at a time with a smaller output cap
    class_dir = make_class(tmp_path, 16)
    (class_dir / "grader.toml").write_text(PINNED)
    db = tmp_path / "g.db"
    code, output = grade("run", str(class_dir), "--db", str(db), "--out", str(tmp_path / "o"),
                         "--concurrency", "8", "--max-output-tokens", "2000",
                         "--budget", str(budget))
    assert code == 0, output
    spent = q(db, "SELECT SUM(cost_usd) FROM attempts")[0][0]
    assert 0 < spent <= budget and fake_spend(fake) <= budget  # never above, by either count
    assert fake.stats()["max_in_flight"] > 1
    assert set(fake.stats()["billed_by_request"].values()) == {1}
    outcomes = dict(q(db, "SELECT status, COUNT(*) FROM outcomes GROUP BY status"))
    assert outcomes["graded"] + outcomes.get("skipped", 0) == 16
    assert re.search(r"; \d+ calls? sent with a smaller output cap to fit it", output)
    caps = [r["body"]["generationConfig"]["maxOutputTokens"] for r in fake.requests()
            if r["endpoint"] == "generateContent"]
    assert max(caps) == 2000 and min(caps) < 2000
    # a smaller cap is another request: the store keeps the cap each attempt was sent with
    kept = sorted(json.loads(b)["config"]["max_output_tokens"] for (b,) in q(
        db, "SELECT r.body_json FROM attempts a JOIN requests r ON r.hash = a.request_hash"))
    assert kept == sorted(caps)
    # a student is skipped only when not even the smallest cap fits beside what was spent
    for (message,) in q(db, "SELECT message FROM outcomes WHERE status = 'skipped'"):
        least = float(re.search(r"may cost up to \$(\d+\.\d+)", message).group(1))
        assert spent + least > budget - 1e-4  # (the message rounds to 4 places)


def test_a_reply_cut_at_the_smaller_cap_skips_the_student_and_is_not_paid_for_twice(
        fake: FakeGemini, tmp_path: Path) -> None:
    # THINK_HARD thinks 3,000 tokens; $0.03 leaves room for about 2,100 output tokens, more
    # than half again the 820 expected: the call is sent with that cap, and cut at it
    class_dir = make_class(tmp_path, 0, extra={"deep.txt": "Binary. FAKE_GEMINI:THINK_HARD"})
    (class_dir / "grader.toml").write_text(PINNED)
    db = tmp_path / "g.db"
    run = ("run", str(class_dir), "--db", str(db), "--out", str(tmp_path / "o"))
    code, output = grade(*run, "--budget", "0.03")
    assert code == 0, output
    ((status, reason, message),) = q(db, "SELECT status, reason, message FROM outcomes")
    assert (status, reason) == ("skipped", "budget")  # not flagged for a cap it did not choose
    assert "the reply was cut at the smaller output cap the budget left room for" in message
    ((cap, cost),) = q(db, "SELECT json_extract(r.body_json, '$.config.max_output_tokens'),"
                           " a.cost_usd FROM attempts a JOIN requests r ON r.hash ="
                           " a.request_hash")
    assert 1230 <= cap < 3000 and 0 < cost <= 0.03 and fake_spend(fake) <= 0.03
    assert "--budget 0.0" in output and "would grade them" in output

    code, output = grade(*run, "--budget", "1")  # the whole cap: graded
    assert code == 0, output
    assert q(db, "SELECT status FROM outcomes WHERE run_id = 2") == [("graded",)]
    assert sorted(json.loads(b)["config"]["max_output_tokens"] for (b,) in q(
        db, "SELECT body_json FROM requests")) == [cap, 8192]
    assert set(fake.stats()["billed_by_request"].values()) == {1}


def test_a_complete_reply_at_the_smaller_cap_is_not_paid_for_again(fake: FakeGemini,
                                                                   tmp_path: Path) -> None:
    # the first answer is invalid and needs a re-ask; the budget leaves room for the first
    # call at a smaller cap and not for the re-ask: the student waits for a larger budget,
    # and the next run reuses the complete first reply it paid for (it used to pay it again,
    # every run, at whatever cap that run's budget left)
    class_dir = make_class(tmp_path, 1)
    (class_dir / "s0000.txt").write_text(
        "FAKE_GEMINI:INVALID_ONCE Binary encoding, one bit per baud.", encoding="utf-8")
    (class_dir / "grader.toml").write_text(PINNED.replace(f"input = {IN_PRICE}", "input = 0.75")
                                           .replace(f"output = {OUT_PRICE}", "output = 3.75"))
    db = tmp_path / "g.db"
    run = ("run", str(class_dir), "--db", str(db), "--out", str(tmp_path / "o"))
    budget = 0.009
    code, output = grade(*run, "--budget", str(budget))
    assert code == 0, output
    assert q(db, "SELECT status, reason FROM outcomes") == [("skipped", "budget")], output
    assert "sent with a smaller output cap" in output
    assert sum(fake.stats()["billed_by_request"].values()) == 1
    needed = re.search(r"--budget (\d+\.\d+) would grade them", output)
    assert needed is not None, output
    code, output = grade(*run, "--budget", needed[1])  # what it said would grade them
    assert code == 0, output
    assert q(db, "SELECT status FROM outcomes WHERE run_id = 2") == [("graded",)], output
    billed = fake.stats()["billed_by_request"]
    assert len(billed) == 2 and set(billed.values()) == {1}  # the ask and the re-ask, once each
