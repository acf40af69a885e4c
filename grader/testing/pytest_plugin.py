"""pytest fixtures for the fake Gemini server. Register with
`pytest_plugins = ["grader.testing.pytest_plugin"]` in tests/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .fake_gemini import FakeGemini


@pytest.fixture
def fake_gemini() -> Iterator[FakeGemini]:
    """A fresh fake server per test: zero latency, no quota, no faults."""
    with FakeGemini(latency_ms=0) as fake:
        yield fake


@pytest.fixture(scope="session")
def fake_gemini_session() -> Iterator[FakeGemini]:
    """One fake server for the whole session; tests that use it must not change its config
    (or must restore it) and should read stats as differences, or call `reset_stats()`."""
    with FakeGemini(latency_ms=0) as fake:
        yield fake
