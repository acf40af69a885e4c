"""What the teacher sees when something unexpected happens: one line and the fix, never a
traceback without --debug; library warnings in the log, never over the progress bar; an --out
that is a file refused before any call."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from click.testing import CliRunner

from grader.backends import register
from grader.backends.base import _REGISTRY
from grader.cli import EXIT_BUG, cli
from grader.prompting.request import GradeRequest, GradeResponse
from grader.testing.fake_gemini import FakeGemini

from _classgen import make_class

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "intro-python"


class BuggyBackend:
    """A third-party backend plugged in through the registry, with a bug in it."""

    name: ClassVar[str] = "buggy"
    model = "buggy-1"

    def __init__(self, **_: object) -> None:
        pass

    async def generate(self, request: GradeRequest) -> GradeResponse:
        raise RuntimeError("plugin bug: index out of range")

    async def count_tokens(self, request: GradeRequest) -> int:
        return 0

    async def aclose(self) -> None:
        return None


@pytest.fixture
def buggy() -> Iterator[None]:
    register("buggy", lambda: BuggyBackend)
    yield
    _REGISTRY.pop("buggy", None)


def test_unexpected_error_is_one_line_without_debug(buggy: None, tmp_path: Path) -> None:
    class_dir = make_class(tmp_path, 2)
    args = ["run", str(class_dir), "--backend", "buggy", "--db", str(tmp_path / "g.db"),
            "--out", str(tmp_path / "o")]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == EXIT_BUG
    assert "error: unexpected RuntimeError: plugin bug: index out of range" in res.output
    assert "rerun with --debug" in res.output and "Traceback" not in res.output
    debug = CliRunner().invoke(cli, ["--debug", *args])
    assert isinstance(debug.exception, RuntimeError)  # with --debug the exception propagates


def test_library_warnings_go_to_the_log_not_the_terminal(
        fake_gemini: FakeGemini, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "k")
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", fake_gemini.url)
    class_dir = make_class(tmp_path, 1)
    pdf = (SAMPLES / "emil.pdf").read_bytes()
    # a wrong startxref offset: pypdf repairs it and logs "incorrect startxref pointer"
    m = re.search(rb"startxref\s+(\d+)", pdf)
    assert m is not None
    bad = pdf[:m.start(1)] + str(int(m.group(1)) + 7).encode() + pdf[m.end(1):]
    (class_dir / "zoe.pdf").write_bytes(bad)
    shutil.copy(SAMPLES / "emil.pdf", class_dir / "emil.pdf")
    res = CliRunner().invoke(cli, ["run", str(class_dir), "--db", str(tmp_path / "g.db"),
                                   "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert "pypdf" not in res.output and "Warning" not in res.output
    log = (tmp_path / "grader.log").read_text(encoding="utf-8")
    assert "incorrect startxref pointer" in log and "zoe" in log
    assert "HTTP Request" not in log  # the HTTP client's chatter is left out


def test_out_that_is_a_file_is_refused_before_any_call(fake_gemini: FakeGemini, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "k")
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", fake_gemini.url)
    class_dir = make_class(tmp_path, 2)
    (tmp_path / "out.txt").write_text("not a folder")
    res = CliRunner().invoke(cli, ["run", str(class_dir), "--db", str(tmp_path / "g.db"),
                                   "--out", str(tmp_path / "out.txt")])
    assert res.exit_code == 2 and "is a file" in res.output
    assert sum(fake_gemini.stats()["billed_by_request"].values()) == 0
