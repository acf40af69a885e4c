"""Hostile class folders: links, special files, deep and huge folders, unlistable folders,
crafted ids and grader's own output folders. Each reproduction is built in the test."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from grader.errors import SubmissionError
from grader.intake.discover import Submission, clean_id, discover
from grader.intake.extract import extract
from grader.intake.limits import MB, Limits
from grader.outputs import MARKER_HEAD, OUTPUT_MARKER, is_output_folder, mark_output_folder

from _make_fixtures import write
from _work import audit_events, bytes_read, peak_allocated


def by_id(class_dir: Path, roster: Path | None = None, **kw: object) -> dict[str, Submission]:
    return {s.student_id: s for s in discover(class_dir, roster, **kw)}  # type: ignore[arg-type]


def flag(sub: Submission) -> SubmissionError:
    with pytest.raises(SubmissionError) as err:
        extract(sub)
    assert err.value.fix, "every flag says how to fix it"
    return err.value


def test_symlinked_files_and_folders_are_flagged_never_read(tmp_path: Path) -> None:
    cls = tmp_path / "cls"
    write(cls / "alice.py", "print('alice')")
    (cls / "eve.txt").symlink_to("/etc/passwd")
    (cls / "gina.txt").symlink_to("/proc/self/environ")
    (cls / "loop").symlink_to("..")
    (cls / "dangling.md").symlink_to(tmp_path / "nowhere")
    subs = by_id(cls)
    assert set(subs) == {"alice", "eve", "gina", "loop", "dangling"}
    assert subs["loop"].files == () and subs["eve"].files == ()
    for sid, target in [("eve", "/etc/passwd"), ("gina", "/proc/self/environ"), ("loop", ".."),
                        ("dangling", str(tmp_path / "nowhere"))]:
        err = flag(subs[sid])
        assert err.reason == "symlink"
        assert repr(target) in err.message  # where it pointed, never what it holds
    assert "root:" not in flag(subs["eve"]).render()
    assert extract(subs["alice"]).text == "print('alice')"


def test_link_inside_a_student_folder_is_a_note(tmp_path: Path) -> None:
    cls = tmp_path / "cls"
    write(cls / "mia" / "fib.py", "def fib(n): ...")
    (cls / "mia" / "passwd.txt").symlink_to("/etc/passwd")
    (cls / "mia" / "up").symlink_to("../..")
    ex = extract(by_id(cls)["mia"])
    assert ex.text.startswith("===== file: fib.py =====")
    assert "root:" not in ex.text
    assert any(n.startswith("skipped passwd.txt: symlink") and "/etc/passwd" in n
               for n in ex.notes)
    assert any(n.startswith("skipped up: symlink") for n in ex.notes)


def test_file_swapped_for_a_link_after_discovery_is_not_followed(tmp_path: Path) -> None:
    cls = tmp_path / "cls"
    write(cls / "eve.txt", "harmless")
    sub = by_id(cls)["eve"]
    (cls / "eve.txt").unlink()
    (cls / "eve.txt").symlink_to("/etc/passwd")
    assert flag(sub).reason == "symlink"


def test_hard_links_are_flagged_never_read(tmp_path: Path) -> None:
    key = write(tmp_path / "teacher" / "id_rsa", "-----BEGIN OPENSSH PRIVATE KEY----- s3cr3t")
    cls = tmp_path / "cls"
    write(cls / "alice.py", "print('alice')")
    os.link(key, cls / "eve.txt")
    write(cls / "mia" / "fib.py", "def fib(n): ...")
    os.link(key, cls / "mia" / "notes.txt")
    subs = by_id(cls)
    err = flag(subs["eve"])
    assert err.reason == "hard_link" and "eve.txt" in err.render()
    assert "copy the file instead of linking it" in (err.fix or "")
    assert "s3cr3t" not in err.render()
    ex = extract(subs["mia"])
    assert "s3cr3t" not in ex.text and ex.skipped == ("notes.txt (hard_link)",)
    assert any(n.startswith("skipped notes.txt: hard_link") for n in ex.notes)
    assert extract(subs["alice"]).text == "print('alice')"


def test_file_swapped_for_a_hard_link_after_discovery_is_not_read(tmp_path: Path) -> None:
    key = write(tmp_path / "key.txt", "s3cr3t")
    cls = tmp_path / "cls"
    write(cls / "eve.txt", "harmless")
    sub = by_id(cls)["eve"]
    (cls / "eve.txt").unlink()
    os.link(key, cls / "eve.txt")
    assert flag(sub).reason == "hard_link"


def test_fifo_is_skipped_without_blocking(tmp_path: Path) -> None:
    cls = tmp_path / "cls"
    write(cls / "bob" / "answer.py", "x = 1")
    os.mkfifo(cls / "pipe.txt")
    os.mkfifo(cls / "bob" / "pipe.py")
    subs = by_id(cls)
    err = flag(subs["pipe"])
    assert err.reason == "special_file" and "named pipe" in err.message
    ex = extract(subs["bob"])
    assert ex.text.endswith("x = 1")
    assert any(n.startswith("skipped pipe.py: special_file") for n in ex.notes)


def test_socket_file_is_skipped(tmp_path: Path) -> None:
    import socket

    cls = tmp_path / "c"  # AF_UNIX paths are short
    cls.mkdir()
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(cls / "sock.py"))
        err = flag(by_id(cls)["sock"])
    assert err.reason == "special_file" and "socket" in err.message


@pytest.fixture
def deep_chain(tmp_path: Path) -> Iterator[Path]:
    """cls/deep/d/d/.../d (1,000 levels) holding answer.py; removed bottom-up afterwards,
    because pathlib and shutil.rmtree would themselves recurse too deep."""
    chain = [tmp_path / "cls" / "deep"]
    chain[0].mkdir(parents=True)
    for _ in range(1000):
        chain.append(chain[-1] / "d")
        chain[-1].mkdir()
    (chain[-1] / "answer.py").write_text("buried")
    yield tmp_path / "cls"
    (chain[-1] / "answer.py").unlink()
    for folder in reversed(chain):
        folder.rmdir()


def test_thousand_deep_folder_neither_recurses_nor_hangs(deep_chain: Path) -> None:
    cls = deep_chain
    write(cls / "ok.py", "fine")
    write(cls / "half" / "top.py", "top")
    half = cls / "half" / "/".join(["d"] * 40)
    write(half / "low.py", "low")
    with audit_events("os.scandir") as listed:
        subs = by_id(cls)
    # the 1,000-level chain is listed to 32 levels, not to the bottom
    deep = [args for args in listed.events if "/deep" in str(args[0])]
    assert len(deep) == Limits().max_depth + 1, len(deep)
    err = flag(subs["deep"])
    assert err.reason == "too_deep" and "32 levels" in err.message
    ex = extract(subs["half"])
    assert "top" in ex.text and "low" not in ex.text
    assert any("too_deep" in n for n in ex.notes)


def test_folder_with_too_many_entries_is_flagged_quickly(tmp_path: Path) -> None:
    cls = tmp_path / "cls"
    write(cls / "ok.py", "fine")
    crowd = cls / "crowd"
    crowd.mkdir()
    for i in range(1_200):
        (crowd / f"f{i:05d}.txt").touch()
    subs = by_id(cls, limits=Limits(max_entries=1_000))
    err = flag(subs["crowd"])
    assert err.reason == "too_many_files" and "1,000" in err.message
    assert extract(subs["ok"]).text == "fine"


@pytest.mark.slow
def test_hundred_thousand_entries_do_not_hang(tmp_path: Path) -> None:
    crowd = tmp_path / "cls" / "crowd"
    crowd.mkdir(parents=True)
    for i in range(100_000):
        os.close(os.open(crowd / f"{i}", os.O_CREAT | os.O_WRONLY, 0o644))
    with peak_allocated() as memory:
        sub = by_id(tmp_path / "cls")["crowd"]
    assert flag(sub).reason == "too_many_files"
    # listing stops at the limit: about 10,000 entries held (a few MB), not 100,000
    assert memory.total < 8 * MB, memory.total


def _outcomes(cls: Path) -> dict[str, object]:
    got: dict[str, object] = {}
    for sub in discover(cls):
        try:
            extract(sub)
            got[sub.student_id] = "graded"
        except SubmissionError as e:
            got[sub.student_id] = [e.reason, e.message, e.fix]
    return got


def _as_nobody(cls: Path) -> dict[str, object]:
    """`_outcomes` in a forked child that dropped root: root can list a chmod 000 folder."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(r)
            os.setgid(65534)
            os.setuid(65534)
            os.write(w, json.dumps(_outcomes(cls)).encode())
        except BaseException as e:
            os.write(w, json.dumps({"error": repr(e)}).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        data = fh.read()
    os.waitpid(pid, 0)
    got: dict[str, object] = json.loads(data)
    return got


def test_unlistable_folder_flags_that_student_only(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        # a folder an unprivileged user can reach: /tmp is world-searchable, pytest's is not
        cls = Path(tempfile.mkdtemp()) / "cls"
        cls.parent.chmod(0o755)
    else:
        cls = tmp_path / "cls"
    write(cls / "alice.py", "print(1)")
    write(cls / "locked" / "answer.py", "secret")
    os.chmod(cls / "locked", 0)
    try:
        if not os.access(cls / "locked", os.R_OK):
            got = _outcomes(cls)
        elif os.geteuid() == 0:
            got = _as_nobody(cls)
        else:
            pytest.skip("this user can list a chmod 000 folder")
    finally:
        os.chmod(cls / "locked", 0o755)
        if os.geteuid() == 0:
            shutil.rmtree(cls.parent)
    assert "error" not in got, got
    assert got["alice"] == "graded"
    reason, message, fix = got["locked"]  # type: ignore[misc]
    assert reason == "unreadable" and "cannot be listed" in message and "chmod" in fix


@pytest.mark.parametrize(("raw", "expect"), [
    ("alice", "alice"),
    ("  alice \t", "alice"),
    ("jose\u0301", "jos\u00e9"),
])
def test_clean_id_normalises_and_trims(raw: str, expect: str) -> None:
    assert clean_id(raw) == expect


@pytest.mark.parametrize("raw", ["=HYPERLINK(1)", "'=1+1", "+1", "-2", "@SUM(A1)", "al\x07ice",
                                 "a\u202eb", "x\x1b[31my", "ok\udcff"])
def test_clean_id_makes_hostile_ids_inert_and_distinct(raw: str) -> None:
    sid = clean_id(raw)
    assert sid.isprintable() and sid == sid.strip()
    assert not sid.startswith(("=", "+", "-", "@", "'"))
    assert "~" in sid and sid != clean_id(raw + "x")
    assert clean_id(raw) == sid  # stable: the roster and the files still match


def test_ids_from_hostile_file_names(tmp_path: Path) -> None:
    cls = tmp_path / "cls"
    for name in [" spaced .txt", "=cmd.txt", "'=1+1.py", "bell\x07.py", "esc\x1b[2J.py",
                 "bell\x08.py", "jose\u0301.py", b"latin\xe9.py".decode("utf-8",
                                                                         "surrogateescape")]:
        write(cls / name, "answer")
    subs = by_id(cls)
    assert len(subs) == 8  # no two hostile names merged into one student
    for sid, sub in subs.items():
        assert sid.isprintable() and sid == sid.strip(), sid
        assert not sid.startswith(("=", "+", "-", "@", "'"))
        assert all(n.isprintable() for n in sub.names)
        assert extract(sub).text == "answer"
    assert "spaced" in subs and "jos\u00e9" in subs


def test_nfd_file_name_matches_nfc_roster(tmp_path: Path) -> None:
    cls = tmp_path / "cls"
    write(cls / "jose\u0301.py", "print('hola')")
    write(cls / "Zoe\u0308" / "a.py", "x")
    roster = write(tmp_path / "roster.csv",
                   "id,name\njos\u00e9,Jos\u00e9 P\u00e9rez\nzo\u00eb,Zo\u00eb\n")
    subs = by_id(cls, roster)
    assert set(subs) == {"jos\u00e9", "zo\u00eb"}
    assert subs["jos\u00e9"].name == "Jos\u00e9 P\u00e9rez" and subs["jos\u00e9"].files
    assert subs["zo\u00eb"].files  # NFC, then case-insensitive


def test_output_folders_and_store_are_never_students(tmp_path: Path) -> None:
    cls = tmp_path / "cls"
    write(cls / "alice.py", "print(1)")
    write(cls / ".grader" / "grader.sqlite", b"SQLite format 3\x00")
    write(cls / "reports" / "cls" / "grades.csv", "student_id,status\nalice,graded\n")
    mark_output_folder(cls / "reports" / "cls")
    write(cls / "out" / "grades.csv", "x")
    mark_output_folder(cls / "out")
    write(cls / "bob" / "answer.py", "y")
    write(cls / "bob" / "my-reports" / "grades.csv", "z")
    mark_output_folder(cls / "bob" / "my-reports")
    (cls / "empty").mkdir()
    subs = by_id(cls)
    assert set(subs) == {"alice", "bob", "empty"}
    assert subs["bob"].names == ("answer.py",)
    assert flag(subs["empty"]).reason == "missing"  # an empty folder is still a student
    assert (cls / "out" / OUTPUT_MARKER).is_file()


LEGACY_MARKER = ("This folder was written by grader (reports, review workbook, exports).\n"
                 "grader never reads a folder holding this file as a student's submission.\n")


@pytest.mark.parametrize("marker", ["", "anything", MARKER_HEAD + "\n", MARKER_HEAD + "\ntoken x\n",
                                    LEGACY_MARKER + " ", "link", "fifo"])
def test_only_graders_own_marker_hides_a_folder(tmp_path: Path, marker: str) -> None:
    cls = tmp_path / "cls"
    write(cls / "bob" / "answer.py", "x = 1")
    real = mark_output_folder(tmp_path / "reports")
    if marker == "link":
        (cls / "bob" / OUTPUT_MARKER).symlink_to(real)
    elif marker == "fifo":
        os.mkfifo(cls / "bob" / OUTPUT_MARKER)
    else:
        write(cls / "bob" / OUTPUT_MARKER, marker)
    write(cls / "old" / "grades.csv", "student_id\nbob\n")
    write(cls / "old" / OUTPUT_MARKER, LEGACY_MARKER)  # what older versions wrote
    write(cls / "new" / "grades.csv", "student_id\nbob\n")
    mark_output_folder(cls / "new")
    subs = by_id(cls)
    assert set(subs) == {"bob"}
    ex = extract(subs["bob"])
    assert ex.text == "x = 1"
    assert any(n.startswith(".grader-output is not the marker grader writes") for n in ex.notes)


def test_marker_is_written_once_and_replaces_a_foreign_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write(out / OUTPUT_MARKER, "")
    marker = mark_output_folder(out)
    text = marker.read_text(encoding="utf-8")
    assert text.startswith(MARKER_HEAD + "\ntoken ") and is_output_folder(out)
    assert mark_output_folder(out).read_text(encoding="utf-8") == text  # the token is kept
    marker.unlink()
    marker.symlink_to(tmp_path / "elsewhere")
    mark_output_folder(out)
    assert not marker.is_symlink() and not (tmp_path / "elsewhere").exists()


def test_oversized_sparse_file_is_never_read_in_full(tmp_path: Path) -> None:
    cls = tmp_path / "cls"
    write(cls / "ann" / "answer.py", "print(1)")
    big = cls / "ann" / "data.bin"
    with big.open("wb") as fh:
        fh.truncate(10 * 1024**3)  # 10 GB, sparse
    sub = by_id(cls)["ann"]
    with bytes_read() as read:
        first = extract(sub)
        second = extract(sub)
    assert read.total < 1 * MB, read.total  # hashed from a bounded prefix, not 10 GB
    assert first.content_hash == second.content_hash
    assert any(n.startswith("skipped data.bin: oversized") for n in first.notes)
    with big.open("r+b") as fh:
        fh.truncate(10 * 1024**3 + 1)  # the size is part of the hash
    assert extract(sub).content_hash != first.content_hash


def test_proc_style_zero_size_file_is_read_with_a_cap(tmp_path: Path) -> None:
    # /proc files report size 0 and are reached only through links (refused above); read()
    # still never trusts st_size: a file that grows past the cap while read is oversized.
    from grader.intake.extract import load

    class Hasher:
        def update(self, _: bytes) -> None: ...

    with pytest.raises(SubmissionError) as err:
        load(Path("/proc/self/status"), "status", max_bytes=10, max_file_mb=0.00001,
             hasher=Hasher())
    assert err.value.reason == "oversized"
    assert load(Path("/proc/self/status"), "status", max_bytes=1 << 20, max_file_mb=1,
                hasher=Hasher()).startswith(b"Name:")
