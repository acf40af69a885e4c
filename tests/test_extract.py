"""Extraction: every format, every flag reason, folder submissions, and the content hash."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from grader.errors import SubmissionError
from grader.intake.discover import Submission, discover
from grader.intake.extract import Extracted, extract

from _make_fixtures import (
    make_docx,
    make_encrypted_docx,
    make_encrypted_pdf,
    make_notebook,
    make_pdf,
    make_png,
    write,
)

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "intro-python"


def only(class_dir: Path) -> Submission:
    subs = list(discover(class_dir))
    assert len(subs) == 1
    return subs[0]


def one_file(tmp_path: Path, name: str, data: bytes | str) -> Submission:
    write(tmp_path / "cls" / name, data)
    return only(tmp_path / "cls")


def extracted(tmp_path: Path, name: str, data: bytes | str,
              max_file_mb: float = 20.0) -> Extracted:
    return extract(one_file(tmp_path, name, data), max_file_mb=max_file_mb)


def reason(tmp_path: Path, name: str, data: bytes | str, max_file_mb: float = 20.0) -> str:
    with pytest.raises(SubmissionError) as err:
        extracted(tmp_path, name, data, max_file_mb)
    assert err.value.fix, "every flag must say how to fix it"
    return err.value.reason


# --- text ---------------------------------------------------------------------------------

def test_source_code_text_normalised(tmp_path: Path) -> None:
    ex = extracted(tmp_path, "al.py", b"\xef\xbb\xbfdef f():\r\n    return 1\r\x00\n")
    assert ex.text == "def f():\n    return 1"
    assert ex.files == ("al.py",) and ex.parts == () and ex.notes == ()
    assert "=====" not in ex.text  # one file: no header


def test_markdown_and_unknown_extension_are_text(tmp_path: Path) -> None:
    assert extracted(tmp_path, "a.md", "# Answer\n\nO(n)").text == "# Answer\n\nO(n)"
    assert extracted(tmp_path / "b", "b.scala", "object A").text == "object A"


def test_latin1_fallback_adds_note(tmp_path: Path) -> None:
    ex = extracted(tmp_path, "pia.txt", "Zeitkomplexität “O(n)”".encode("cp1252"))
    assert ex.text == "Zeitkomplexität “O(n)”"
    assert any("not UTF-8" in n for n in ex.notes)


def test_utf16_with_bom_is_text(tmp_path: Path) -> None:
    assert extracted(tmp_path, "w.txt", "héllo wörld".encode("utf-16")).text == "héllo wörld"


def test_html_online_text(tmp_path: Path) -> None:
    ex = extracted(tmp_path, "o.html",
                   "<p>Time is <b>O(n)</b>&nbsp;&amp; space O(1)</p><script>x()</script><p>end</p>")
    assert ex.text == "Time is O(n)\xa0& space O(1)\n\nend"


@pytest.mark.parametrize(("data", "expect"), [
    (b"", "empty"),
    (b"  \n\t\r\n ", "empty"),
    (b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 4, "binary"),
    (b"print(1)\n" + b"\x00" * 50 + b"\x01\x02\x03" * 20, "binary"),
    (bytes([1, 2, 3, 4, 5, 6, 7, 8, 14, 15]) * 30, "binary"),
    ("第一个函数返回斐波那契数列的第n项".encode("gbk") * 3, "unreadable"),
])
def test_bad_text_reasons(tmp_path: Path, data: bytes, expect: str) -> None:
    assert reason(tmp_path, "st.py", data) == expect


def test_missing_submission(tmp_path: Path) -> None:
    with pytest.raises(SubmissionError) as err:
        extract(Submission(student_id="oscar"))
    assert err.value.reason == "missing"


def test_oversized(tmp_path: Path) -> None:
    assert reason(tmp_path, "big.txt", "x" * 3000, max_file_mb=0.001) == "oversized"
    assert extracted(tmp_path / "ok", "ok.txt", "x" * 500, max_file_mb=0.001).text == "x" * 500


def test_unsupported_archive(tmp_path: Path) -> None:
    assert reason(tmp_path, "st.zip", b"PK\x03\x04rest") == "unsupported"


# --- documents ----------------------------------------------------------------------------

def test_pdf_text_per_page(tmp_path: Path) -> None:
    ex = extracted(tmp_path, "em.pdf", make_pdf(["def fib(n):", "It is O(n) (linear)."]))
    assert ex.text == "--- page 1 ---\ndef fib(n):\n--- page 2 ---\nIt is O(n) (linear)."
    assert ex.parts == ()


def test_pdf_without_text_layer_sent_as_document(tmp_path: Path) -> None:
    data = make_pdf(["", ""])
    ex = extracted(tmp_path, "scan.pdf", data)
    assert [(p.mime_type, p.data) for p in ex.parts] == [("application/pdf", data)]
    assert any("no text layer" in n for n in ex.notes)
    assert "scan.pdf" in ex.text


def test_pdf_sniffed_without_extension(tmp_path: Path) -> None:
    assert "hello" in extracted(tmp_path, "em", make_pdf(["hello"])).text


def test_pdf_password_and_corrupt(tmp_path: Path) -> None:
    assert reason(tmp_path / "a", "a.pdf", make_encrypted_pdf()) == "password_protected"
    assert reason(tmp_path / "b", "b.pdf", b"%PDF-1.4\nthis is not really a pdf") == "corrupt"
    assert reason(tmp_path / "c", "c.pdf", make_pdf(["x"])[:200]) == "corrupt"


def test_docx_paragraphs_tables_and_images(tmp_path: Path) -> None:
    png = make_png()
    data = make_docx(["Fatima", "fib is O(n)"], table=[["n", "fib"], ["10", "55"]], image=png)
    ex = extracted(tmp_path, "f.docx", data)
    assert ex.text == "Fatima\nfib is O(n)\nn | fib\n10 | 55"
    assert [(p.mime_type, p.data) for p in ex.parts] == [("image/png", png)]


def test_docx_password_and_corrupt(tmp_path: Path) -> None:
    assert reason(tmp_path / "a", "a.docx", make_encrypted_docx()) == "password_protected"
    assert reason(tmp_path / "b", "b.docx", b"PK\x03\x04 truncated zip") == "corrupt"
    assert reason(tmp_path / "c", "c.docx", b"just some text, not a document") == "corrupt"
    assert reason(tmp_path / "d", "d.docx", make_docx([])) == "empty"


def test_notebook_cells_in_order_outputs_trimmed_images_dropped(tmp_path: Path) -> None:
    long_out = "".join(f"line {i}\n" for i in range(30))
    nb = make_notebook([
        ("markdown", "# Title", []),
        ("code", "print('x')", [
            {"output_type": "stream", "name": "stdout", "text": long_out},
            {"output_type": "display_data", "metadata": {},
             "data": {"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"}},
        ]),
        ("markdown", "", []),
        ("code", "1/0", [{"output_type": "error", "ename": "ZeroDivisionError",
                          "evalue": "division by zero", "traceback": []}]),
    ])
    ex = extracted(tmp_path, "g.ipynb", nb)
    t = ex.text
    assert t.index("--- cell 1 (markdown) ---\n# Title") < t.index("--- cell 2 (code) ---")
    assert "```python\nprint('x')\n```" in t
    assert "line 7" in t and "line 8" not in t and "output trimmed, 30 lines" in t
    assert "iVBORw0KGgo" not in t and "<Figure>" in t
    assert "cell 3" not in t  # empty markdown cell skipped
    assert "ZeroDivisionError: division by zero" in t
    assert any("outputs trimmed" in n for n in ex.notes)
    assert any("images in notebook outputs dropped" in n for n in ex.notes)
    assert ex.parts == ()


def test_notebook_corrupt_and_empty(tmp_path: Path) -> None:
    assert reason(tmp_path / "a", "a.ipynb", b'{"cells": [') == "corrupt"
    assert reason(tmp_path / "b", "b.ipynb", b'{"not": "a notebook"}') == "corrupt"
    assert reason(tmp_path / "c", "c.ipynb", make_notebook([("code", "", [])])) == "empty"


# --- images -------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "data", "mime"), [
    ("h.png", make_png(), "image/png"),
    ("h.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x01" * 40, "image/jpeg"),
    ("h.jpeg", b"\xff\xd8\xff\xe1" + b"\x02" * 40, "image/jpeg"),
    ("h.gif", b"GIF89a" + b"\x01\x00\x01\x00" + b"\x00" * 20, "image/gif"),
    ("h.webp", b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 24, "image/webp"),
    ("h.jpg", make_png(), "image/png"),  # the bytes decide, not the extension
])
def test_images_become_parts(tmp_path: Path, name: str, data: bytes, mime: str) -> None:
    ex = extracted(tmp_path, name, data)
    assert [(p.mime_type, p.data) for p in ex.parts] == [(mime, data)]
    assert f"file: {name}" in ex.text


def test_image_with_wrong_magic_is_corrupt(tmp_path: Path) -> None:
    assert reason(tmp_path, "h.png", b"this is text pretending to be a png") == "corrupt"


# --- folders and several files ------------------------------------------------------------

def test_several_files_get_headers(tmp_path: Path) -> None:
    write(tmp_path / "cls" / "mia" / "fib.py", "def fib(n): ...\n")
    write(tmp_path / "cls" / "mia" / "docs" / "NOTES.md", "O(n)\n")
    write(tmp_path / "cls" / "mia" / "pic.png", make_png())
    ex = extract(only(tmp_path / "cls"))
    assert ex.files == ("docs/NOTES.md", "fib.py", "pic.png")
    assert ex.text == ("===== file: docs/NOTES.md =====\nO(n)\n\n"
                       "===== file: fib.py =====\ndef fib(n): ...\n\n"
                       "===== file: pic.png =====\n[image/png attached below]")
    assert len(ex.parts) == 1


def test_folder_bad_file_becomes_note(tmp_path: Path) -> None:
    write(tmp_path / "cls" / "mia" / "fib.py", "def fib(n): ...")
    write(tmp_path / "cls" / "mia" / "old.py", b"")
    write(tmp_path / "cls" / "mia" / "a.out", b"\x7fELF" + b"\x00" * 64)
    ex = extract(only(tmp_path / "cls"))
    assert "def fib" in ex.text and "old.py" not in ex.text
    assert any(n.startswith("skipped old.py: empty") for n in ex.notes)
    assert any(n.startswith("skipped a.out: binary") for n in ex.notes)
    assert ex.files == ("a.out", "fib.py", "old.py")


def test_folder_with_nothing_gradeable_is_flagged(tmp_path: Path) -> None:
    write(tmp_path / "cls" / "zoe" / "a.py", b"")
    write(tmp_path / "cls" / "zoe" / "b.txt", b"   \n")
    write(tmp_path / "cls" / "zoe" / "c.bin", b"\x7fELF" + bytes(range(40)))
    with pytest.raises(SubmissionError) as err:
        extract(only(tmp_path / "cls"))
    assert err.value.reason == "empty"
    assert "c.bin: binary" in str(err.value)


def test_canvas_files_use_original_names(tmp_path: Path) -> None:
    write(tmp_path / "cls" / "smith_jane_LATE_12_34_fib.py", "a = 1")
    write(tmp_path / "cls" / "smith_jane_LATE_12_35_notes.txt", "O(n)")
    ex = extract(only(tmp_path / "cls"))
    assert ex.files == ("fib.py", "notes.txt")
    assert "===== file: notes.txt =====\nO(n)" in ex.text


# --- content hash -------------------------------------------------------------------------

def test_content_hash_stable_and_sensitive(tmp_path: Path) -> None:
    cls = tmp_path / "cls"
    write(cls / "ann" / "a.py", "x = 1\n")
    write(cls / "ann" / "b.md", "O(n)\n")
    h1 = extract(only(cls)).content_hash
    assert h1 == extract(only(cls)).content_hash
    assert len(h1) == 64
    moved = tmp_path / "elsewhere"
    shutil.copytree(cls, moved)
    assert extract(only(moved)).content_hash == h1  # location does not matter
    write(cls / "ann" / "b.md", "O(n^2)\n")
    h2 = extract(only(cls)).content_hash
    assert h2 != h1
    (cls / "ann" / "b.md").rename(cls / "ann" / "c.md")
    assert extract(only(cls)).content_hash not in (h1, h2)


# --- the sample class ---------------------------------------------------------------------

EXPECTED = {
    "48213": "graded", "51007": "graded", "alice": "graded", "bob": "graded",
    "chen": "graded", "dara": "graded", "emil": "graded", "fatima": "graded",
    "gus": "graded", "hana": "graded", "ivan": "empty", "jules": "binary", "mia": "graded",
    "noor": "graded", "oscar": "missing", "pia": "graded",
}


def test_sample_class_outcomes() -> None:
    outcomes: dict[str, str] = {}
    results: dict[str, Extracted] = {}
    for sub in discover(SAMPLES, SAMPLES / "roster.csv"):
        try:
            results[sub.student_id] = extract(sub)
            outcomes[sub.student_id] = "graded"
        except SubmissionError as e:
            outcomes[sub.student_id] = e.reason
    assert outcomes == EXPECTED
    assert results["hana"].parts[0].mime_type == "image/png"
    assert "page 2" in results["emil"].text and "O(n)" in results["emil"].text
    assert "10 | 55" in results["fatima"].text
    assert any("trimmed" in n for n in results["gus"].notes)
    assert any("run_output.bin: binary" in n for n in results["mia"].notes)
    assert any("not UTF-8" in n for n in results["pia"].notes)
    assert "Ignore all previous instructions" in results["noor"].text  # kept as data
    assert "Space is O(1)" in results["51007"].text
    assert len({r.content_hash for r in results.values()}) == len(results)


def test_notebook_v3_is_converted(tmp_path: Path) -> None:
    v3 = {"nbformat": 3, "nbformat_minor": 0, "metadata": {}, "worksheets": [{"metadata": {},
          "cells": [{"cell_type": "code", "input": "print(1)", "language": "python",
                     "metadata": {}, "outputs": [{"output_type": "stream", "stream": "stdout",
                                                  "text": "1\n"}]},
                    {"cell_type": "markdown", "source": "# Title", "metadata": {}}]}]}
    ex = extracted(tmp_path, "old.ipynb", json.dumps(v3))
    assert ex.text == ("--- cell 1 (code) ---\n```python\nprint(1)\n```\n[output]\n1\n"
                       "--- cell 2 (markdown) ---\n# Title")
