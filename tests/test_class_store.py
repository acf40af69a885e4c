"""The commands that read a class's store open it one way (`store.opening`): a missing store, a
file that is not a grader store, and a store of another class folder are refused alike by
`grade status`, `grade report`, `grade eval` and `grade tune export`, with nothing written."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from grader.testing.fake_gemini import FakeGemini

from _classgen import make_class
from _cli import grade

READERS = [("status",), ("report",), ("eval",), ("tune", "export")]


@pytest.mark.parametrize("command", READERS, ids=" ".join)
def test_a_file_that_is_not_a_grader_store_is_refused_and_left_as_it_is(
        tmp_path: Path, command: tuple[str, ...]) -> None:
    class_dir = make_class(tmp_path, 2)
    other = tmp_path / "photos.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE photos (name TEXT)")
    before = other.read_bytes()
    code, out = grade(*command, str(class_dir), "--db", str(other))
    assert code == 2, out
    assert "not a grade store written by grader" in out and "Traceback" not in out
    assert other.read_bytes() == before  # never migrated into a grader store
    code, out = grade(*command, str(class_dir), "--db", str(tmp_path / "none.sqlite"))
    assert code == 2 and "no grade store yet" in out and "grade run" in out, out
    assert not (tmp_path / "none.sqlite").exists()


def test_a_store_of_another_class_folder_is_refused_naming_it(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    graded = make_class(tmp_path / "a", 2)
    db = tmp_path / "a.sqlite"
    code, out = grade("run", str(graded), "--db", str(db), "--out", str(tmp_path / "a_out"))
    assert code == 0, out
    moved = tmp_path / "b" / "class"
    shutil.copytree(graded, moved)  # the same class, copied to another folder
    for command in READERS[:2]:
        code, out = grade(*command, str(moved), "--db", str(db), *(
            ("--out", str(tmp_path / "b_out")) if command == ("report",) else ()))
        assert code == 2, out
        flat = " ".join(out.split())
        assert f"the store holds no run of {moved.resolve()}" in flat
        assert str(graded.resolve()) in flat
        assert ("--run N" in flat) == (command == ("report",))  # status has no --run
    assert not (tmp_path / "b_out").exists()  # nothing written from the other class's run
    code, out = grade("status", str(graded), "--db", str(db))
    assert code == 0 and "graded" in out, out


def test_a_class_folder_moved_with_its_own_store_is_still_read(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    graded = make_class(tmp_path / "before", 2)
    code, out = grade("run", str(graded), "--out", str(tmp_path / "out"))  # the default store
    assert code == 0, out
    moved = tmp_path / "after" / "renamed"
    shutil.move(str(graded), moved)  # .grader/grader.sqlite moves with the folder
    code, out = grade("status", str(moved))
    assert code == 0, out
    assert "graded" in out
