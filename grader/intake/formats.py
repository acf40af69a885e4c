"""Readers for each file format a student may hand in; each turns bytes into text and/or media.

Every reader raises `SubmissionError` with a reason code the pipeline stores with the flag, so a
teacher sees *why* a student was not graded and what the student should resubmit. Readers take
the run's `Limits` and check sizes and counts before the expensive work (a .docx's unpacked size
before python-docx opens it, a PDF's page count before its text is extracted), and they never
trust a file's structure: a field of the wrong type is treated as absent. `parse` is the one
entry point; it turns any other exception a parser raises into a `corrupt` flag.
"""

from __future__ import annotations

import io
import json
import re
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

from grader.errors import SubmissionError
from grader.escape import printable
from grader.intake import visibility as vis
from grader.intake.injection import Aside, Hidden
from grader.intake.limits import MB, Limits
from grader.prompting.request import Part

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif"})
UNSUPPORTED_SUFFIXES = {
    ".doc": "legacy Word .doc", ".odt": "OpenDocument text", ".pages": "Apple Pages",
    ".rtf": "RTF", ".xlsx": "Excel workbook", ".pptx": "PowerPoint", ".zip": "zip archive",
    ".rar": "RAR archive", ".7z": "7z archive", ".tar": "tar archive", ".gz": "gzip archive",
    ".heic": "HEIC photo", ".bmp": "BMP image", ".tif": "TIFF image", ".tiff": "TIFF image",
}
OUTPUT_LINES = 8  # notebook output lines kept per output
OUTPUT_CHARS = 1200

_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_W_P = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}p"
_FIX_RESUBMIT = "ask the student to resubmit as .py, .txt, .md, .pdf, .docx, .ipynb or an image"


@dataclass
class Read:
    """What one file contributed: text (None for media-only) plus media parts and remarks."""

    text: str | None
    parts: list[Part] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    hidden: list[Hidden] = field(default_factory=list)  # removed: a reader would not see it
    aside: list[Aside] = field(default_factory=list)  # never shown to the model; scanned


def sniff_image(data: bytes) -> str | None:
    """The image mime type from magic bytes, or None when the bytes are not a supported image."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def normalise(text: str) -> str:
    """One newline convention, no NULs, no BOM: the prompt and the content hash stay stable."""
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "").lstrip("\ufeff")


_CONTROL_BYTES = frozenset(range(0x20)) - {0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x1B} | {0x7F}


_CONTROL_TABLE = bytes(sorted(_CONTROL_BYTES))
_HIGH_BYTES = bytes(range(0x80, 0x100))


def _control_ratio(data: bytes) -> float:
    """Share of bytes that never occur in text (NUL and other C0 controls, DEL)."""
    if not data:
        return 0.0
    return (len(data) - len(data.translate(None, _CONTROL_TABLE))) / len(data)


def read_text(data: bytes, name: str, limits: Limits) -> Read:
    """Decide text vs binary by content: UTF-8 (or a UTF-16 BOM), else a Latin-1 fallback."""
    notes: list[str] = []
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError:
            raise SubmissionError("unreadable", "file has a UTF-16 mark but does not decode",
                                  path=name, fix="save the file as UTF-8 text") from None
    else:
        if data.count(0) > max(2, len(data) // 100) or _control_ratio(data) > 0.05:
            raise SubmissionError("binary", "file contains binary data, not text", path=name,
                                  fix=_FIX_RESUBMIT)
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            high = len(data) - len(data.translate(None, _HIGH_BYTES))
            if high > 0.3 * len(data):
                # Too many non-ASCII bytes for Western text: Latin-1 would only produce mojibake.
                raise SubmissionError("unreadable", "file is not UTF-8 and its encoding cannot "
                                      "be recognised", path=name,
                                      fix="save the file as UTF-8 text and resubmit") from None
            try:
                text = data.decode("cp1252")
            except UnicodeDecodeError:
                text = data.decode("latin-1")
            notes.append(f"{name}: not UTF-8; decoded as Latin-1/Windows-1252, "
                         "accented characters may be wrong")
    return Read(normalise(text), notes=notes)


class _HTMLText(HTMLParser):
    """Text of an LMS online-text entry: tags dropped, block elements become line breaks.
    Text a browser would not show (comments, `hidden` or `display:none`-styled elements, white
    text) is kept apart; alt text and scripts are collected to be scanned."""

    BLOCKS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre",
                        "blockquote", "table", "ul", "ol"})
    VOID = frozenset({"br", "img", "input", "meta", "link", "hr", "col", "area", "base",
                      "embed", "source", "track", "wbr"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._skip = 0
        self._hiding: list[tuple[str, str]] = []  # (tag, why) of open hiding elements
        self.hidden: dict[str, list[str]] = {}
        self.comments: list[str] = []
        self.aside: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in self.BLOCKS:
            self.out.append("\n")
        self.aside += [v for k, v in attrs if k in ("alt", "title") and v]
        if tag == "input" and ("type", "hidden") in attrs:
            self.aside += [v for k, v in attrs if k == "value" and v]
        why = vis.hiding_attrs(attrs)
        if why and tag not in self.VOID:
            self._hiding.append((tag, why))

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip = max(0, self._skip - 1)
        elif tag in self.BLOCKS:
            self.out.append("\n")
        if self._hiding and self._hiding[-1][0] == tag:
            self._hiding.pop()

    def handle_data(self, data: str) -> None:
        if self._skip:
            self.aside.append(data)
        elif self._hiding:
            self.hidden.setdefault(self._hiding[0][1], []).append(data)
        else:
            self.out.append(data)

    def handle_comment(self, data: str) -> None:
        if data.strip():
            self.comments.append(data.strip())


def read_html(data: bytes, name: str, limits: Limits) -> Read:
    r = read_text(data, name, limits)
    parser = _HTMLText()
    parser.feed(r.text or "")
    parser.close()
    text = re.sub(r"\n[ \t]*\n(?:[ \t]*\n)+", "\n\n", "".join(parser.out)).strip()
    hidden = [Hidden("", why, " ".join(" ".join(parts).split()))
              for why, parts in parser.hidden.items() if "".join(parts).strip()]
    hidden += [Hidden("", "HTML comment", c, deliberate=False) for c in parser.comments]
    aside = [Aside("alt text, titles and scripts", vis.bounded(" ".join(parser.aside)))] \
        if "".join(parser.aside).strip() else []
    return Read(text, notes=r.notes, hidden=hidden, aside=aside)


def read_markdown(data: bytes, name: str, limits: Limits) -> Read:
    """Markdown as text, less what its rendering hides (comments, hidden HTML)."""
    r = read_text(data, name, limits)
    text, hidden = vis.markdown_visible(r.text or "", "")
    return Read(text, notes=r.notes, hidden=hidden)


def _joined(value: object) -> str:
    """A notebook string field: a string, or a list of strings (one per line); else empty."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(v for v in value if isinstance(v, str))
    return ""


def _field(obj: object, key: str) -> object:
    """`obj[key]` when `obj` is a JSON object, else None: notebooks are never trusted."""
    return obj.get(key) if isinstance(obj, dict) else None


def _trim(text: str) -> tuple[str, bool]:
    lines = text.rstrip("\n").split("\n")
    cut = len(lines) > OUTPUT_LINES or len(text) > OUTPUT_CHARS
    kept = "\n".join(lines[:OUTPUT_LINES])[:OUTPUT_CHARS]
    if cut:
        kept += f"\n... [output trimmed, {len(lines)} lines in total]"
    return kept, cut


def _output_text(out: object) -> tuple[str | None, bool]:
    """(text, had_image) for one notebook output; images are dropped."""
    otype = _field(out, "output_type")
    if otype == "stream":
        return _joined(_field(out, "text")), False
    if otype == "error":
        ename, evalue = _field(out, "ename"), _field(out, "evalue")
        return f"{ename if isinstance(ename, str) else 'Error'}: {_joined(evalue)}", False
    data = _field(out, "data")
    if not isinstance(data, dict):
        return None, False
    had_image = any(isinstance(k, str) and k.startswith("image/") for k in data)
    plain = data.get("text/plain")
    return (_joined(plain) if plain is not None else None), had_image


def _notebook_json(text: str, name: str) -> dict[str, Any]:
    """The notebook as nbformat 4 JSON (older versions converted by nbformat)."""
    fix = "re-save the notebook from Jupyter and resubmit"
    try:
        nb = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise SubmissionError("corrupt", f"not a valid Jupyter notebook ({type(e).__name__})",
                              path=name, fix=fix) from None
    if isinstance(nb, dict) and nb.get("nbformat") == 4 and isinstance(nb.get("cells"), list):
        return nb
    if isinstance(nb, dict) and nb.get("nbformat") in (1, 2, 3):
        import nbformat

        with warnings.catch_warnings():  # old notebooks warn about missing cell ids; harmless
            warnings.simplefilter("ignore")
            converted = nbformat.reads(text, as_version=4)
        if isinstance(converted, dict) and isinstance(converted.get("cells"), list):
            return dict(converted)
    raise SubmissionError("corrupt", "not a valid Jupyter notebook (no nbformat 1-4 cell list)",
                          path=name, fix=fix)


def _language(meta: object) -> str:
    """The code fence's language from the kernel metadata; only a safe word is kept."""
    for value in (_field(_field(meta, "kernelspec"), "language"),
                  _field(_field(meta, "language_info"), "name")):
        if isinstance(value, str):
            word = re.sub(r"[^A-Za-z0-9+#_.-]", "", value)[:20]
            if word:
                return word
    return "python"


def read_notebook(data: bytes, name: str, limits: Limits) -> Read:
    nb = _notebook_json(read_text(data, name, limits).text or "", name)
    lang = _language(nb.get("metadata"))
    cells: list[Any] = nb["cells"]
    notes = []
    if len(cells) > limits.notebook_max_cells:
        notes.append(f"{name}: only the first {limits.notebook_max_cells:,} of {len(cells):,} "
                     "cells read")
        cells = cells[:limits.notebook_max_cells]
    chunks: list[str] = []
    hidden: list[Hidden] = []
    size = 0
    trimmed = dropped = skipped = False
    for i, cell in enumerate(cells, start=1):
        if size > limits.max_chars:
            notes.append(f"{name}: cells after cell {i - 1} not read (text limit reached)")
            break
        src = normalise(_joined(_field(cell, "source"))).strip("\n")
        ctype = _field(cell, "cell_type")
        ctype = ctype if ctype in ("code", "markdown", "raw") else "code"
        if ctype == "markdown":
            src, gone = vis.markdown_visible(src, f"cell {i}")
            src = src.strip("\n")
            hidden += gone
        if not src and ctype != "code":
            continue
        chunks.append(f"--- cell {i} ({ctype}) ---")
        chunks.append(f"```{lang}\n{src}\n```" if ctype == "code" else src)
        size += len(src)
        outputs = _field(cell, "outputs") if ctype == "code" else None
        outputs = outputs if isinstance(outputs, list) else []
        if len(outputs) > limits.notebook_max_outputs:
            skipped = True
            outputs = outputs[:limits.notebook_max_outputs]
        for out in outputs:
            body, had_image = _output_text(out)
            dropped = dropped or had_image
            if body and body.strip():
                kept, cut = _trim(normalise(body))
                trimmed = trimmed or cut
                chunks.append(f"[output]\n{kept}")
                size += len(kept)
    if trimmed:
        notes.append(f"{name}: notebook outputs trimmed to {OUTPUT_LINES} lines each")
    if skipped:
        notes.append(f"{name}: only the first {limits.notebook_max_outputs} outputs of a cell "
                     "read")
    if dropped:
        notes.append(f"{name}: images in notebook outputs dropped")
    body = "\n".join(chunks)
    if not re.sub(r"--- cell \d+ \(\w+\) ---|```[\w+#.-]*", "", body).strip():
        raise SubmissionError("empty", "notebook has no content in its cells", path=name,
                              fix="ask the student to save the notebook with their work in it")
    return Read(body, notes=notes, hidden=hidden, aside=vis.notebook_asides(nb, cells))


def _ole_encrypted(data: bytes) -> bool:
    """Encrypted Office files are OLE containers holding an `EncryptedPackage` stream."""
    return data.startswith(_OLE_MAGIC) and "EncryptedPackage".encode("utf-16-le") in data


_FIX_PDF = "ask the student to export the PDF again (File > Save as PDF) and resubmit"


def read_pdf(data: bytes, name: str, limits: Limits) -> Read:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError, LimitReachedError

    locked = SubmissionError("password_protected", "PDF is password-protected", path=name,
                             fix="ask the student to resubmit the PDF without a password")
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            try:
                if not reader.decrypt(""):
                    raise locked
            except (FileNotDecryptedError, DependencyError, NotImplementedError):
                raise locked from None
        n = len(reader.pages)
        if n > limits.pdf_max_pages:
            raise SubmissionError(
                "oversized", f"PDF has {n:,} pages, over the limit of {limits.pdf_max_pages:,}",
                path=name, fix="ask the student for the pages that answer the assignment")
        pages: list[str] = []
        hidden: list[Hidden] = []
        aside = vis.pdf_properties(reader)
        size = 0
        for number, page in enumerate(reader.pages, start=1):
            if size > limits.max_chars:
                break  # the rest would be truncated anyway
            text, gone = _pdf_page(page, reader, number)
            pages.append(normalise(text).strip())
            hidden += gone
            aside += vis.pdf_annotations(page, number)
            size += len(pages[-1])
    except FileNotDecryptedError:
        raise locked from None
    except LimitReachedError as e:
        raise SubmissionError(
            "corrupt", f"PDF cannot be read: part of it expands past pypdf's safety limits "
            f"(damaged, or a decompression bomb: {e})", path=name, fix=_FIX_PDF) from None
    if not pages:
        raise SubmissionError("empty", "PDF has no pages", path=name, fix=_FIX_PDF)
    notes = [] if len(pages) == n else [f"{name}: pages after page {len(pages)} not read "
                                        "(text limit reached)"]
    if not any(pages):
        return Read(None, [Part(mime_type="application/pdf", data=data)],
                    [f"{name}: PDF has no text layer (scanned?); sent as a document"])
    text = "\n".join(f"--- page {i} ---\n{t}" for i, t in enumerate(pages, start=1))
    return Read(text, notes=notes, hidden=hidden, aside=aside)


def _pdf_page(page: Any, reader: Any, number: int) -> tuple[str, list[Hidden]]:
    """A page's visible text, and its hidden text (extracted from a copy of the page's content
    stream that keeps only the hidden text operations)."""
    from pypdf.generic import ContentStream, NameObject

    contents = page.get_contents()
    if contents is None:
        return page.extract_text() or "", []
    try:
        ops = ContentStream(contents, reader).operations
        box = page.cropbox
        why = vis.hidden_ops(ops, (float(box.left), float(box.bottom), float(box.right),
                                   float(box.top)), vis.pdf_images(page))
    except Exception:  # a content stream we cannot walk: read it as pypdf does, unchecked
        why = {}
    if not why:
        return page.extract_text() or "", []
    texts = []
    for keep in (set(why), {i for i, (_, op) in enumerate(ops) if op in vis.SHOW} - set(why)):
        stream = ContentStream(None, reader)
        stream.operations = vis.without(ops, keep)
        page[NameObject("/Contents")] = stream
        texts.append(page.extract_text() or "")
    hows = ", ".join(sorted(set(why.values())))
    hidden = normalise(texts[1]).strip()
    return texts[0], [Hidden(f"page {number}", hows, hidden)] if hidden else []


def check_zip(data: bytes, name: str, limits: Limits, kind: str) -> None:
    """Refuse a zip-based document whose parts are too many or unpack too large, before any
    parser opens it (`zipfile` never unpacks a part past the size its directory declares)."""
    fix = f"ask the student to re-save the {kind} (or export it as PDF) and resubmit"
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError) as e:
        raise SubmissionError("corrupt", f"{kind} cannot be read ({type(e).__name__})",
                              path=name, fix=fix) from None
    if len(infos) > limits.zip_max_members:
        raise SubmissionError(
            "oversized", f"{kind} has {len(infos):,} parts, over the limit of "
            f"{limits.zip_max_members:,}", path=name, fix=fix)
    for info in infos:
        if info.file_size > limits.zip_max_member_bytes:
            raise SubmissionError(
                "oversized", f"{kind} part {info.filename[:100]!r} unpacks to "
                f"{info.file_size / MB:,.0f} MB, over the limit of "
                f"{limits.zip_max_member_bytes / MB:g} MB",
                path=name, fix="ask the student to compress the images in the document, or to "
                               "export it as PDF, and resubmit")
    total = sum(i.file_size for i in infos)
    if total > limits.zip_max_total_bytes:
        raise SubmissionError(
            "oversized", f"{kind} unpacks to {total / MB:,.0f} MB, over the limit of "
            f"{limits.zip_max_total_bytes / MB:g} MB", path=name, fix=fix)


def read_docx(data: bytes, name: str, limits: Limits) -> Read:
    if _ole_encrypted(data):
        raise SubmissionError("password_protected", "Word document is password-protected",
                              path=name, fix="ask the student to resubmit it without a password")
    check_zip(data, name, limits, "Word document")
    import docx
    from docx.table import Table

    doc = docx.Document(io.BytesIO(data))
    lines: list[str] = []
    hidden: list[Hidden] = []
    seen = vis.DocxVisibility(doc)
    body = doc.element.body
    paragraphs = tables = 0
    for child in body.iterchildren():
        tag = child.tag.rsplit("}", 1)[-1] if isinstance(child.tag, str) else ""
        if tag == "p":
            paragraphs += 1
            text, gone = vis.docx_paragraph(seen, child, None, f"paragraph {paragraphs}")
            lines.append(text)
            hidden += gone
        elif tag == "tbl":
            tables += 1
            for r, row in enumerate(Table(child, doc).rows, start=1):
                cells = []
                for cell in row.cells:
                    fill = vis.cell_fill(cell._tc)
                    texts = []
                    for p in cell._tc.iterchildren(_W_P):
                        text, gone = vis.docx_paragraph(seen, p, fill,
                                                        f"table {tables} row {r}")
                        texts.append(text)
                        hidden += gone
                    cells.append("\n".join(texts).strip())
                lines.append(" | ".join(cells))
    parts: list[Part] = []
    for rel in doc.part.rels.values():
        if "image" in rel.reltype and not rel.is_external:
            blob: bytes = rel.target_part.blob
            mime = sniff_image(blob)
            if mime:
                parts.append(Part(mime_type=mime, data=blob))
    notes = [f"{name}: {len(parts)} embedded image(s) attached"] if parts else []
    return Read(normalise("\n".join(lines)).strip(), parts, notes, hidden=hidden,
                aside=vis.docx_asides(doc))


def read_image(data: bytes, name: str, limits: Limits) -> Read:
    mime = sniff_image(data)
    if mime is None:
        raise SubmissionError("corrupt", "file has an image extension but is not a valid "
                              "PNG/JPEG/GIF/WebP image", path=name,
                              fix="ask the student to export the image again as PNG or JPEG")
    return Read(None, [Part(mime_type=mime, data=data)])


Reader = Callable[[bytes, str, Limits], Read]
# Readers that run third-party parsers over the student's bytes: the extraction worker runs them.
HEAVY_READERS: frozenset[Reader] = frozenset({read_pdf, read_docx, read_notebook})
_KINDS: dict[Reader, str] = {read_pdf: "PDF", read_docx: "Word document",
                             read_notebook: "Jupyter notebook", read_html: "HTML page",
                             read_markdown: "Markdown file",
                             read_image: "image", read_text: "text file"}
_FIXES: dict[Reader, str] = {
    read_pdf: _FIX_PDF,
    read_docx: "ask the student to re-save the document as .docx (or PDF) and resubmit",
    read_notebook: "re-save the notebook from Jupyter and resubmit",
}


def reader_for(suffix: str, data: bytes) -> Reader:
    """Pick a reader by extension, falling back to content sniffing for unknown extensions."""
    table: dict[str, Reader] = {
        ".pdf": read_pdf, ".docx": read_docx, ".ipynb": read_notebook,
        ".html": read_html, ".htm": read_html, ".md": read_markdown, ".markdown": read_markdown,
    }
    if suffix in table:
        return table[suffix]
    if suffix in IMAGE_SUFFIXES:
        return read_image
    if data.startswith(b"%PDF-"):
        return read_pdf
    if sniff_image(data):
        return read_image
    if data.startswith(b"PK\x03\x04") and b"word/document.xml" in data[:65536]:
        return read_docx
    if data.startswith(_OLE_MAGIC) and _ole_encrypted(data):
        return read_docx
    return read_text


def parse(reader: Reader, data: bytes, name: str, limits: Limits) -> Read:
    """Run `reader`; whatever a parser raises becomes a SubmissionError naming the file."""
    kind = _KINDS[reader]
    fix = _FIXES.get(reader, "ask the student to re-save the file and resubmit, or grade it by "
                             "hand")
    try:
        return reader(data, name, limits)
    except SubmissionError:
        raise
    except MemoryError:
        raise SubmissionError("oversized", f"{kind} needs more memory to read than allowed",
                              path=name, fix=fix) from None
    except RecursionError:
        raise SubmissionError("corrupt", f"{kind} cannot be read: it is nested too deeply",
                              path=name, fix=fix) from None
    except Exception as e:  # any parser bug or malformed input: flag this file, go on
        detail = printable(str(e))[:200]
        why = f"{type(e).__name__}: {detail}" if detail else type(e).__name__
        raise SubmissionError("corrupt", f"{kind} cannot be read ({why})", path=name,
                              fix=fix) from None
