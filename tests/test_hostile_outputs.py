"""Outputs: one page per student even for crafted ids, and cleanup that only ever deletes pages
this tool wrote; the output folder is marked so it is never graded; text printed to a terminal
cannot carry escape sequences."""

from __future__ import annotations

import hashlib
import unicodedata
from pathlib import Path

import pytest

from grader.errors import ConfigError
from grader.escape import printable, terminal_safe
from grader.outputs import OUTPUT_MARKER, check_out_dir, is_output_folder
from grader.reports import write_reports
from grader.reports.html import PAGES_MANIFEST, student_filename

from _synthetic import build


def test_crafted_ids_never_share_a_page() -> None:
    a_b = hashlib.sha256(b"a b").hexdigest()
    ids = ["a b", "a_b", "a?b", "A_B", "Alice", "alice", "ALICE", f"a_b-{a_b[:32]}",
           f"a_b-{a_b[:8]}", "con", "CON", "nul.txt", "..", ".", "../etc/passwd", "x" * 300,
           "x" * 301, "jos\u00e9", unicodedata.normalize("NFD", "jos\u00e9"), "=cmd",
           "_=cmd~12345678", "", " ", "s00001", "s00001.", "a/b", "a\\b", "a\x00b"]
    names = [student_filename(i) for i in ids]
    assert len(set(names)) == len(ids)
    assert len({n.lower() for n in names}) == len(ids)  # case-insensitive file systems too
    for n in names:
        assert n.endswith(".html") and "/" not in n and "\\" not in n
        assert not n.startswith(".") and len(n.encode()) < 120 and n.isascii()
    assert student_filename("s00001") == "s00001.html"
    assert student_filename("con") != "con.html"


def test_cleanup_deletes_only_pages_this_tool_wrote(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = build(tmp_path / "a.sqlite", n=6, k=2)
    write_reports(first.store, first.run_id, out)
    pages = out / "students"
    before = {p.name for p in pages.glob("*.html")}
    assert len(before) == 6
    assert (pages / PAGES_MANIFEST).read_text().split() == sorted(before)
    foreign = [pages / "teacher-notes.html", pages / "index.html", pages / "keep.txt"]
    for f in foreign:
        f.write_text("mine", encoding="utf-8")
    second = build(tmp_path / "b.sqlite", n=3, k=2)
    write_reports(second.store, second.run_id, out)
    after = {p.name for p in pages.glob("*.html")} - {f.name for f in foreign}
    assert after == {student_filename(s) for s in second.student_ids}
    assert all(f.read_text(encoding="utf-8") == "mine" for f in foreign)
    first.store.close()
    second.store.close()


def test_a_tampered_manifest_cannot_delete_outside_students(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = build(tmp_path / "a.sqlite", n=2, k=2)
    write_reports(run.store, run.run_id, out)
    victim = out / "report.html"
    (out / "students" / PAGES_MANIFEST).write_text("../report.html\n/etc/passwd\nx.txt\n")
    write_reports(run.store, run.run_id, out)
    assert victim.is_file()
    run.store.close()


def test_report_writer_marks_the_output_folder(tmp_path: Path) -> None:
    run = build(tmp_path / "a.sqlite", n=2, k=2)
    write_reports(run.store, run.run_id, tmp_path / "out")
    assert (tmp_path / "out" / OUTPUT_MARKER).is_file()
    assert is_output_folder(tmp_path / "out")
    run.store.close()


def test_out_dir_checks(tmp_path: Path) -> None:
    cls = tmp_path / "cls"
    cls.mkdir()
    with pytest.raises(ConfigError, match="is the class folder"):
        check_out_dir(cls, cls / "." / "")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="existing file"):
        check_out_dir(cls, tmp_path / "file")
    check_out_dir(cls, cls / "reports")  # inside is fine: the marker keeps it out of the class
    check_out_dir(cls, tmp_path / "reports")


@pytest.mark.parametrize(("text", "shown"), [
    ("plain text", "plain text"),
    ("a\x1b[2Jb", "a\\x1b[2Jb"),
    ("title\x1b]0;pwned\x07", "title\\x1b]0;pwned\\x07"),
    ("rev\u202eersed", "rev\\u202eersed"),
    ("c1\x9bcontrol", "c1\\x9bcontrol"),
    ("line1\nline2\ttab", "line1\nline2\ttab"),
    ("bad\udcffname", "bad\\udcffname"),
])
def test_terminal_safe(text: str, shown: str) -> None:
    assert terminal_safe(text) == shown


def test_terminal_safe_single_line_and_printable() -> None:
    assert terminal_safe("a\nb", newlines=False) == "a\\x0ab"
    assert printable("jose\u0301\x1b[1m") == "jos\u00e9\ufffd[1m"
