"""pytest fixtures for the fake Gemini server, the real llama-cpp-python server with a counting,
fault-injecting proxy in front of it (`--backend openai`), and the `today` marker. Register with
`pytest_plugins = ["grader.testing.pytest_plugin"]` in tests/conftest.py.

`@pytest.mark.today` pins the day the model table is read for (prices, lifecycle, routing) to
`PINNED_DAY`, `@pytest.mark.today("2027-01-01")` to that day: it sets `GRADER_TODAY` for the
test, so grader, the in-process fake server and the processes the test starts all read the
table for that day. A test that names a model, a price or a default from the table pins its day;
every other test must pass on any day (CI runs the suite a second time 400 days ahead).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import TYPE_CHECKING

import pytest

from grader.config.models import TODAY_ENV
from grader.testing.fake_gemini import FakeGemini

if TYPE_CHECKING:
    from grader.testing._llama_server import LlamaServer
    from grader.testing._proxy import FaultProxy
    from grader.testing.gcs_emulator import GcsEmulator


# The day pinned tests read the model table for (the day the table was last checked).
PINNED_DAY = date(2026, 12, 6)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "today(day=PINNED_DAY): read the model table for `day` (YYYY-MM-DD): sets "
        f"{TODAY_ENV} for the test and the fake servers and processes it starts")


@pytest.fixture(autouse=True)
def _pinned_today(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Autouse, so it runs before the test's other function-scoped fixtures."""
    marker = request.node.get_closest_marker("today")
    if marker is not None:
        day = marker.args[0] if marker.args else PINNED_DAY.isoformat()
        monkeypatch.setenv(TODAY_ENV, str(day))


@pytest.fixture
def fake_gemini() -> Iterator[FakeGemini]:
    """A fresh fake server per test: zero latency, no quota, no faults."""
    with FakeGemini(latency_ms=0) as fake:
        yield fake


# The API key tests use against the fake server (tests check it never lands in a file).
TEST_API_KEY = "test-key-not-secret"


@pytest.fixture
def gemini_env(fake_gemini: FakeGemini, monkeypatch: pytest.MonkeyPatch) -> FakeGemini:
    """The fake server, with the environment of a teacher who has a Gemini key: `grade run` in
    this process (CliRunner) talks to the fake through the real google-genai client."""
    for var in ("GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_GENAI_USE_ENTERPRISE",
                "GOOGLE_CLOUD_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", TEST_API_KEY)
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", fake_gemini.url)
    return fake_gemini


@pytest.fixture(scope="session")
def fake_gemini_session() -> Iterator[FakeGemini]:
    """One fake server for the whole session; tests that use it must not change its config
    (or must restore it) and should read stats as differences, or call `reset_stats()`."""
    with FakeGemini(latency_ms=0) as fake:
        yield fake


@pytest.fixture
def gcs_emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[GcsEmulator]:
    """An in-memory GCS emulator with the bucket `grader-staging`, and STORAGE_EMULATOR_HOST
    pointing google-cloud-storage at it (`gcp-storage-emulator`, a dev dependency)."""
    from grader.testing.gcs_emulator import GcsEmulator

    with GcsEmulator() as gcs:
        for k, v in gcs.env().items():
            monkeypatch.setenv(k, v)
        yield gcs


@pytest.fixture(scope="session")
def llama_server() -> Iterator[LlamaServer]:
    """llama-cpp-python's OpenAI-compatible server on the bundled SmolLM2 model (n_ctx 4096),
    one for the session: it takes seconds to start. Skips where the `local` extra with the
    server's dependencies is not installed."""
    pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python[server] is not "
                        "installed (the local extra)")
    from grader.testing._llama_server import LlamaServer

    with LlamaServer(n_ctx=4096) as server:
        yield server


@pytest.fixture
def server_proxy(llama_server: LlamaServer) -> Iterator[FaultProxy]:
    """A fresh counting, fault-injecting proxy in front of the session's llama server."""
    from grader.testing._proxy import FaultProxy

    with FaultProxy(llama_server.url) as proxy:
        yield proxy
