"""Garbage collection during a run (`pipeline.collector_for_a_run`): tuned while the class is
graded, through the real pipeline against the fake server, and put back as it was after the run,
including when the run fails; a heap the process froze itself is left frozen."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from grader.config.settings import resolve
from grader.online.pipeline import RUN_GC_THRESHOLDS, collector_for_a_run, run_class
from grader.online.runner import Outcome
from grader.testing.fake_gemini import FakeGemini

from _classgen import make_class


@pytest.fixture
def collector() -> Iterator[tuple[tuple[int, int, int], int]]:
    """The collector's settings before the test, restored whatever the test did."""
    before = gc.get_threshold(), gc.get_freeze_count()
    yield before
    gc.set_threshold(*before[0])
    if gc.get_freeze_count() and not before[1]:
        gc.unfreeze()


def test_a_run_tunes_the_collector_while_it_grades_and_puts_it_back(
        fake_gemini: FakeGemini, tmp_path: Path,
        collector: tuple[tuple[int, int, int], int]) -> None:
    thresholds, frozen = collector
    assert thresholds != RUN_GC_THRESHOLDS and frozen == 0
    seen: list[tuple[tuple[int, int, int], int]] = []

    def on_outcome(o: Outcome) -> None:
        seen.append((gc.get_threshold(), gc.get_freeze_count()))

    settings = resolve({"backend": "gemini", "api_key": "k", "base_url": fake_gemini.url,
                        "db": str(tmp_path / "g.sqlite")}, env={})
    summary = run_class(make_class(tmp_path, 6), settings, on_outcome=on_outcome)
    assert summary.graded == 6 and len(seen) == 6
    assert all(t == RUN_GC_THRESHOLDS and n > 0 for t, n in seen), seen  # during the run
    assert gc.get_threshold() == thresholds and gc.get_freeze_count() == 0  # after it

    with pytest.raises(RuntimeError), collector_for_a_run():  # a run that fails
        raise RuntimeError("stopped")
    assert gc.get_threshold() == thresholds and gc.get_freeze_count() == 0


def test_a_heap_the_process_froze_itself_stays_frozen(
        collector: tuple[tuple[int, int, int], int]) -> None:
    gc.freeze()  # as a server does before it forks its workers
    frozen = gc.get_freeze_count()
    with collector_for_a_run():
        assert gc.get_threshold() == RUN_GC_THRESHOLDS
    assert gc.get_freeze_count() >= frozen > 0
    assert gc.get_threshold() == collector[0]
