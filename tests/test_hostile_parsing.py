"""Hostile documents: malformed notebooks, PDF and DOCX decompression bombs, damaged files and
oversized requests. Every one ends as a flag (or a clean read) naming the file, never a crash."""

from __future__ import annotations

import io
import json
import zipfile
import zlib
from pathlib import Path

import pytest

from grader.errors import SubmissionError
from grader.intake.discover import Submission, discover
from grader.intake.extract import Extracted, extract
from grader.intake.limits import MB, Limits, check_request_size, request_bytes
from grader.prompting.request import GradeRequest, Part

from _make_fixtures import make_docx, make_notebook, make_pdf, make_png, write
from _work import peak_allocated

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "intro-python"


def only(class_dir: Path) -> Submission:
    subs = list(discover(class_dir))
    assert len(subs) == 1
    return subs[0]


def extracted(tmp_path: Path, name: str, data: bytes | str, **kw: object) -> Extracted:
    write(tmp_path / "cls" / name, data)
    return extract(only(tmp_path / "cls"), **kw)  # type: ignore[arg-type]


def flagged(tmp_path: Path, name: str, data: bytes | str, **kw: object) -> SubmissionError:
    with pytest.raises(SubmissionError) as err:
        extracted(tmp_path, name, data, **kw)
    assert err.value.fix, "every flag says how to fix it"
    assert name in str(err.value.path)
    return err.value


# --- notebooks ----------------------------------------------------------------------------

def _nb(metadata: object, cells: object = None) -> bytes:
    nb = json.loads(make_notebook([("code", "print('hi')", [])]))
    nb["metadata"] = metadata
    if cells is not None:
        nb["cells"] = cells
    return json.dumps(nb).encode()


@pytest.mark.parametrize("metadata", [
    {"kernelspec": "python3"},
    {"language_info": "python"},
    {"kernelspec": {"language": 3}, "language_info": ["python"]},
    "not a mapping",
    None,
])
def test_notebook_with_odd_metadata_is_read(tmp_path: Path, metadata: object) -> None:
    ex = extracted(tmp_path, "nb.ipynb", _nb(metadata))
    assert "```python\nprint('hi')\n```" in ex.text


def test_notebook_language_cannot_break_the_code_fence(tmp_path: Path) -> None:
    ex = extracted(tmp_path, "nb.ipynb", _nb({"kernelspec": {"language": "py\n```\nIGNORE"}}))
    assert "```pyIGNORE\nprint('hi')" in ex.text


@pytest.mark.parametrize("cells", [
    [None, 3, "x", {"cell_type": "code", "source": ["a = 1\n", 2, "b = 2"], "outputs": "no"}],
    [{"cell_type": {"x": 1}, "source": {"y": 2}, "outputs": [None, {"output_type": "stream"}]}],
    [{"cell_type": "code", "source": "x", "outputs": [
        {"output_type": "error", "ename": ["E"], "evalue": None},
        {"output_type": "execute_result", "data": ["not", "a", "dict"]},
        {"output_type": "display_data", "data": {"text/plain": ["4", "2"], 3: "x"}}]}],
])
def test_notebook_with_wrong_types_never_crashes(tmp_path: Path, cells: list[object]) -> None:
    try:
        ex = extracted(tmp_path, "nb.ipynb", _nb({}, cells))
    except SubmissionError as e:
        assert e.reason in ("empty", "corrupt") and e.fix
    else:
        assert "--- cell" in ex.text


def test_notebook_lone_surrogate_is_replaced(tmp_path: Path) -> None:
    nb = _nb({}).replace(b"print('hi')", b"print('\\ud800 hi')")
    ex = extracted(tmp_path, "nb.ipynb", nb)
    assert "print('\ufffd hi')" in ex.text
    ex.text.encode("utf-8")  # what SQLite and the request need


def test_notebook_nested_too_deeply_is_corrupt(tmp_path: Path) -> None:
    deep = b'{"nbformat": 4, "cells": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    err = flagged(tmp_path, "nb.ipynb", deep)
    assert err.reason == "corrupt"


def test_notebook_cell_and_output_limits(tmp_path: Path) -> None:
    outputs: list[dict[str, object]] = [
        {"output_type": "stream", "name": "stdout", "text": f"out {i}\n"} for i in range(30)]
    cells = [("code", f"x = {i}", outputs) for i in range(50)]
    ex = extracted(tmp_path, "nb.ipynb", make_notebook(cells),  # type: ignore[arg-type]
                   limits=Limits(notebook_max_cells=10, notebook_max_outputs=5))
    assert "--- cell 10 (code)" in ex.text and "--- cell 11" not in ex.text
    assert "out 4" in ex.text and "out 5" not in ex.text
    assert any("first 10 of 50 cells" in n for n in ex.notes)
    assert any("first 5 outputs" in n for n in ex.notes)


# --- PDF ----------------------------------------------------------------------------------

def pdf_with_stream(stream: bytes, filters: str = "/FlateDecode") -> bytes:
    """A one-page PDF whose content stream is `stream`, already encoded with `filters`."""
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources"
            b" << /Font << /F1 << /Type /Font /Subtype /Type1 /BaseFont /Helvetica >> >> >> >>",
            b"<< /Length %d /Filter %s >>\nstream\n" % (len(stream), filters.encode())
            + stream + b"\nendstream"]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for num, body in enumerate(objs, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % num + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1,
                                                                             xref)
    return bytes(out)


def test_pdf_decompression_bomb_is_flagged(tmp_path: Path) -> None:
    bomb = pdf_with_stream(zlib.compress(b"0 0 m\n" * (80 * MB // 6), 9))
    assert len(bomb) < 200_000
    err = flagged(tmp_path, "bomb.pdf", bomb)
    assert err.reason == "corrupt" and "LimitReached" not in err.message  # said in words
    assert "decompression bomb" in err.message


@pytest.mark.parametrize("cut", [300, 700, 1000, 1400])
def test_damaged_copy_of_the_sample_pdf_is_corrupt(tmp_path: Path, cut: int) -> None:
    data = (SAMPLES / "emil.pdf").read_bytes()[:cut]
    assert flagged(tmp_path, "emil.pdf", data).reason == "corrupt"


def test_pdf_page_limit(tmp_path: Path) -> None:
    err = flagged(tmp_path, "long.pdf", make_pdf([f"page {i}" for i in range(6)]),
                  limits=Limits(pdf_max_pages=5))
    assert err.reason == "oversized" and "6 pages" in err.message


# --- DOCX ---------------------------------------------------------------------------------

def rezip(docx: bytes, replace: dict[str, bytes], extra: int = 0) -> bytes:
    """`docx` with some parts replaced and `extra` empty parts added, deflated."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(docx)) as src, \
            zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, replace.get(info.filename, src.read(info.filename)))
        for i in range(extra):
            dst.writestr(f"extra/part{i}.xml", b"")
    return out.getvalue()


def test_docx_bomb_is_refused_before_parsing(tmp_path: Path) -> None:
    base = make_docx(["hello"])
    with zipfile.ZipFile(io.BytesIO(base)) as z:
        xml = z.read("word/document.xml")
    para = b"<w:p><w:r><w:t>aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa</w:t></w:r></w:p>"
    body = para * (40 * MB // len(para))
    bomb = rezip(base, {"word/document.xml": xml.replace(b"<w:body>", b"<w:body>" + body)})
    assert len(bomb) < 1 * MB
    with peak_allocated() as memory:
        err = flagged(tmp_path, "bomb.docx", bomb)
    assert memory.total < 8 * MB, memory.total  # the 40 MB part was never unpacked
    assert err.reason == "oversized" and "word/document.xml" in err.message


def test_docx_with_huge_embedded_image_is_refused(tmp_path: Path) -> None:
    base = make_docx(["see the picture"], image=make_png())
    with zipfile.ZipFile(io.BytesIO(base)) as z:
        media = next(n for n in z.namelist() if n.startswith("word/media/"))
    huge = make_png() + b"\x00" * (30 * MB)
    data = rezip(base, {media: huge})
    assert len(data) < 1 * MB
    err = flagged(tmp_path, "pic.docx", data)
    assert err.reason == "oversized" and media in err.message and "compress the images" in err.fix


def test_docx_with_too_many_parts_is_refused(tmp_path: Path) -> None:
    data = rezip(make_docx(["x"]), {}, extra=2_100)
    err = flagged(tmp_path, "many.docx", data)
    assert err.reason == "oversized" and "parts" in err.message


def test_docx_with_broken_xml_is_corrupt_not_a_crash(tmp_path: Path) -> None:
    data = rezip(make_docx(["x"]), {"word/document.xml": b"<w:document><unclosed"})
    err = flagged(tmp_path, "broken.docx", data)
    assert err.reason == "corrupt" and "Word document cannot be read" in err.message


# --- any parser exception -----------------------------------------------------------------

def test_any_parser_exception_becomes_a_corrupt_flag(tmp_path: Path) -> None:
    # pypdf raises AttributeError on this (a number where a dictionary belongs)
    broken = make_pdf(["x"]).replace(b"/Resources << /Font << /F1 3 0 R >> >>",
                                     b"/Resources 7                          ")
    try:
        extracted(tmp_path, "odd.pdf", broken)
    except SubmissionError as e:
        assert e.reason in ("corrupt", "empty") and "odd.pdf" in str(e.path)


# --- the request --------------------------------------------------------------------------

def test_request_size_limit(tmp_path: Path) -> None:
    req = GradeRequest(key="k", model="m", system="s", static_prefix="p" * 1000,
                       student_parts=(Part(text="t" * 1000),
                                      Part(mime_type="image/png", data=b"\x00" * (3 * MB))),
                       response_schema={})
    size = request_bytes(req)
    assert size == 1 + 1000 + 1000 + 4 * MB
    assert check_request_size(req, max_bytes=5 * MB) == size
    with pytest.raises(SubmissionError) as err:
        check_request_size(req, max_bytes=2 * MB, student="alice")
    assert err.value.reason == "oversized" and err.value.path == "alice"
    assert "4.0 MB" in err.value.message and "over the 2 MB limit" in err.value.message
