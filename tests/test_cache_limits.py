"""A cache that keeps vanishing, and a budget that cannot pay for one (issue 27 item 8): the run
recreates its explicit cache at most `MAX_RECREATES` times, then sends the marking scheme
inline, and with `--budget` buys the cache only when the budget pays for it and a student's
call beside it. Against the fake Gemini server, through the CLI; counts only."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from grader.online.caching import MAX_RECREATES
from grader.testing.fake_gemini import FakeGemini

from _cli import generated, q, run_big


def test_a_cache_that_expires_on_every_request_is_given_up_and_no_student_fails(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    gemini_env.inject(*["expire_cache"] * 40)  # every request naming a cache finds it gone
    code, output, db = run_big(tmp_path, 6, "--concurrency", "2")
    assert code == 0, output
    creates = [r for r in gemini_env.requests() if r["endpoint"] == "cachedContents.create"]
    assert len(creates) <= 1 + MAX_RECREATES
    assert q(db, "SELECT COUNT(*) FROM outcomes WHERE status = 'graded'") == [(6,)]
    assert q(db, "SELECT COUNT(*) FROM outcomes WHERE status = 'failed'") == [(0,)]
    assert output.count("it is not created again") == 1
    # after giving up, the scheme goes inline: the last requests name no cache
    last = generated(gemini_env)[-1]["body"]
    assert "cachedContent" not in last and "systemInstruction" in last
    assert "Note 1:" in last["contents"][0]["parts"][0]["text"]


@pytest.mark.today  # the budget's arithmetic is at one day's prices
def test_a_budget_that_cannot_pay_for_the_cache_sends_the_scheme_inline(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    # a tiny budget: the run says what the cache and the least call cost, and buys neither
    code, output, _ = run_big(tmp_path, 4, "--budget", "0.0001")
    reason = re.search(r"context cache \(\$(\d+\.\d+) for creating it.*?at least "
                       r"\$(\d+\.\d+)\)", output, re.DOTALL)
    assert reason is not None, output
    cache_usd, call_usd = float(reason.group(1)), float(reason.group(2))
    assert cache_usd > 0 and call_usd > 0
    # a budget that pays for a call but not for the cache beside it
    budget = call_usd + cache_usd / 2
    code, output, db = run_big(tmp_path / "again", 4, "--budget", f"{budget:.6f}")
    assert code == 0, output
    assert gemini_env.stats()["by_endpoint"].get("cachedContents.create", 0) == 0
    assert q(db, "SELECT COUNT(*) FROM caches") == [(0,)]
    graded = q(db, "SELECT COUNT(*) FROM outcomes WHERE status = 'graded'")[0][0]
    assert graded >= 1
    assert q(db, "SELECT COUNT(*) FROM outcomes WHERE status = 'failed'") == [(0,)]
    sent = generated(gemini_env)
    assert sent and all("cachedContent" not in r["body"] for r in sent)
    assert all("Note 1:" in r["body"]["contents"][0]["parts"][0]["text"] for r in sent)
    assert "cache: not used: the budget left" in output
    assert "a student's call beside it" in output
