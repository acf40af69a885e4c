"""The quota against the fake server, through the real pipeline and google-genai (issue 24): a
429 storm is ridden out with every student paid once while the in-flight limit falls and grows
back, and a tokens-per-minute limit is never exceeded, as the fake counts it."""

from __future__ import annotations

import threading
from pathlib import Path

from grader.backends import create
from grader.backends.gemini import GeminiBackend
from grader.config.settings import Settings, resolve
from grader.online.pipeline import run_class
from grader.online.ratelimit import Quota
from grader.testing.fake_gemini import FakeGemini

from _classgen import make_class


def settings_for(fake: FakeGemini, tmp_path: Path, **more: object) -> Settings:
    return resolve({"backend": "gemini", "api_key": "k", "base_url": fake.url,
                    "db": str(tmp_path / "g.sqlite"), **more}, env={})


def paid_once(fake: FakeGemini, n: int) -> None:
    billed = fake.stats()["billed_by_request"]
    assert len(billed) == n and set(billed.values()) == {1}, billed


def test_a_429_storm_grades_the_class_paying_each_student_once(fake_gemini: FakeGemini,
                                                               tmp_path: Path) -> None:
    n = 40
    fake_gemini.configure(latency_ms=100, fail_rate=0.5, fault_kinds=["429"],
                          fault_retry_delay_s=0.05)
    settings = settings_for(fake_gemini, tmp_path, max_retries=30)
    backend = create("gemini", settings=settings)
    assert isinstance(backend, GeminiBackend)

    done = threading.Event()

    def calm() -> None:  # the storm passes once 48 requests have come in (or the run ends)
        while not done.is_set():
            try:
                fake_gemini.wait_for_requests(48, timeout=0.2)
            except TimeoutError:
                continue
            fake_gemini.configure(fail_rate=0.0)
            return

    weather = threading.Thread(target=calm, daemon=True)
    weather.start()
    try:
        summary = run_class(make_class(tmp_path, n), settings, backend=backend)
    finally:
        done.set()
        weather.join()
    assert summary.graded == n and summary.retries > 0
    paid_once(fake_gemini, n)
    q = backend.quota.stats
    assert q.refused == fake_gemini.stats()["by_status"]["429"]  # every 429 was told
    assert q.cuts >= 1
    limits = [limit for _, _, limit in q.trace]
    low = min(limits)
    after = limits[limits.index(low):]
    assert low < n / 2  # the storm cut what was sent...
    assert max(after) > low  # ...and replies grew it back
    assert q.peak_in_flight > low  # what was in flight before the cut, more than after it


def test_a_tokens_per_minute_limit_is_never_exceeded(fake_gemini: FakeGemini,
                                                     tmp_path: Path) -> None:
    # a two-second window, on both sides, so that the class needs several windows
    tpm = 2000
    fake_gemini.configure(latency_ms=50, tpm=tpm, rpm_window_s=2.0)
    settings = settings_for(fake_gemini, tmp_path)
    backend = create("gemini", settings=settings)
    assert isinstance(backend, GeminiBackend)
    backend.quota = Quota(tpm=tpm, period_s=2.0)
    n = 24
    summary = run_class(make_class(tmp_path, n), settings, backend=backend)
    assert summary.graded == n
    paid_once(fake_gemini, n)
    stats = fake_gemini.stats()
    assert stats["tpm_peak"] <= tpm
    sent = sum(stats["billed_by_request"].values())
    assert stats["rejected"]["tpm"] <= sent // 100 + 1  # at most about 1 % refused
    assert backend.quota.tokens.peak <= tpm  # and grader never thought it was over either
