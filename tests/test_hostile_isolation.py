"""The extraction worker: the same results as in-process extraction, a wall-clock, CPU and memory
budget per submission, no secrets in its environment, and library chatter logged, not printed."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from grader.errors import SubmissionError
from grader.intake.discover import Submission, discover
from grader.intake.extract import Extracted, extract
from grader.intake.isolation import Extractor, is_light
from grader.intake.limits import Limits

from _make_fixtures import make_pdf, write

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "intro-python"


def one(class_dir: Path) -> Submission:
    subs = list(discover(class_dir))
    assert len(subs) == 1
    return subs[0]


def heavy_pdf(pages: int, lines: int) -> bytes:
    return make_pdf(["\n".join(f"line {j} of page {i}: some words to extract" for j in range(lines))
                     for i in range(pages)])


def outcome(run: Callable[[Submission], Extracted], sub: Submission) -> object:
    try:
        return run(sub)
    except SubmissionError as e:
        return (e.reason, e.message, e.fix)


def test_worker_gives_the_same_results_as_in_process() -> None:
    subs = list(discover(SAMPLES, SAMPLES / "roster.csv"))
    with Extractor(workers=1) as ex:
        for sub in subs:
            assert outcome(ex.isolated, sub) == outcome(extract, sub), sub.student_id
            assert outcome(ex.extract, sub) == outcome(extract, sub), sub.student_id


def test_small_text_never_starts_a_worker(tmp_path: Path) -> None:
    write(tmp_path / "cls" / "a.py", "print(1)")
    sub = one(tmp_path / "cls")
    assert is_light(sub)
    with Extractor() as ex:
        assert ex.extract(sub).text == "print(1)"
        assert ex._idle == []


def test_text_file_holding_a_pdf_goes_to_the_worker(tmp_path: Path) -> None:
    write(tmp_path / "cls" / "answer.txt", make_pdf(["hidden pdf"]))
    sub = one(tmp_path / "cls")
    assert is_light(sub)  # by name and size...
    with Extractor() as ex:
        assert "hidden pdf" in ex.extract(sub).text
        assert len(ex._idle) == 1  # ...but its bytes are a PDF: parsed in the worker


def test_wall_clock_timeout_kills_the_worker_and_flags(tmp_path: Path) -> None:
    write(tmp_path / "cls" / "slow.pdf", heavy_pdf(400, 60))
    write(tmp_path / "ok" / "fine.pdf", make_pdf(["fine"]))
    limits = Limits(worker_wall_s=0.3, max_chars=10**9)
    with Extractor(limits=limits, workers=1) as ex:
        with pytest.raises(SubmissionError) as err:
            ex.extract(one(tmp_path / "cls"))
        assert err.value.reason == "timeout" and "slow.pdf" in str(err.value.path)
        assert ex._idle == []  # the stuck worker is gone
        assert "fine" in ex.extract(one(tmp_path / "ok")).text  # a fresh one takes over


def test_cpu_limit_stops_a_runaway_parser(tmp_path: Path) -> None:
    write(tmp_path / "cls" / "slow.pdf", heavy_pdf(1500, 80))
    limits = Limits(worker_cpu_s=1, worker_wall_s=120, max_chars=10**9, pdf_max_pages=10_000)
    with Extractor(limits=limits, workers=1) as ex, pytest.raises(SubmissionError) as err:
        ex.extract(one(tmp_path / "cls"))
    assert err.value.reason == "timeout" and "CPU" in err.value.message


def test_memory_limit_flags_oversized(tmp_path: Path) -> None:
    # 12 MB of JSON that needs far more than 200 MB once parsed
    cells = ",".join(["[]"] * 4_000_000)
    write(tmp_path / "cls" / "big.ipynb", '{"nbformat": 4, "cells": [' + cells + "]}")
    with Extractor(limits=Limits(worker_memory_mb=200), workers=1) as ex, \
            pytest.raises(SubmissionError) as err:
        ex.extract(one(tmp_path / "cls"))
    assert err.value.reason == "oversized" and "memory" in err.value.message


def test_worker_sees_no_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "sk-very-secret")
    write(tmp_path / "cls" / "a.pdf", make_pdf(["x"]))
    with Extractor(workers=1) as ex:
        ex.extract(one(tmp_path / "cls"))
        pid = ex._idle[0].proc.pid
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    assert b"sk-very-secret" not in environ and b"GEMINI" not in environ


def test_library_warnings_are_logged_not_printed(tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                                 caplog: pytest.LogCaptureFixture) -> None:
    # a wrong xref offset makes pypdf warn while it recovers
    data = make_pdf(["recovered text"]).replace(b"startxref\n", b"startxref\n9")
    write(tmp_path / "cls" / "w.pdf", data)
    caplog.set_level(logging.INFO, logger="grader.extract")
    with Extractor(workers=1) as ex:
        assert "recovered text" in ex.extract(one(tmp_path / "cls")).text
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert any("pypdf" in r.getMessage() for r in caplog.records), caplog.records


def test_results_cross_the_process_boundary_intact(tmp_path: Path) -> None:
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
        {"cell_type": "markdown", "metadata": {}, "source": "héllo \ud83d\ude00 \u202e"}]}
    write(tmp_path / "cls" / "u.ipynb", json.dumps(nb))
    with Extractor(workers=1) as ex:
        got = ex.extract(one(tmp_path / "cls"))
    assert got == extract(one(tmp_path / "cls"))
    assert "\U0001f600" in got.text and "\u202e" in got.text


def test_async_extraction_from_many_tasks_matches_and_closes_its_workers() -> None:
    subs = list(discover(SAMPLES, SAMPLES / "roster.csv"))

    async def all_of(ex: Extractor) -> list[object]:
        async def one_of(sub: Submission) -> object:
            try:
                return await ex.aextract(sub)
            except SubmissionError as e:
                return (e.reason, e.message, e.fix)
        return list(await asyncio.gather(*(one_of(s) for s in subs * 3)))

    with Extractor(workers=2) as ex:
        got = asyncio.run(all_of(ex))
        procs = [w.proc for w in ex._idle]
    assert got == [outcome(extract, s) for s in subs * 3]
    assert 1 <= len(procs) <= 2 and all(p.poll() is not None for p in procs)
