"""Readers for each file format a student may hand in; each turns bytes into text and/or media.

Every reader raises `SubmissionError` with a reason code the pipeline stores with the flag, so a
teacher sees *why* a student was not graded and what the student should resubmit.
"""

from __future__ import annotations

import io
import re
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

from .errors import SubmissionError
from .request import Part

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
_FIX_RESUBMIT = "ask the student to resubmit as .py, .txt, .md, .pdf, .docx, .ipynb or an image"


@dataclass
class Read:
    """What one file contributed: text (None for media-only) plus media parts and remarks."""

    text: str | None
    parts: list[Part] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


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


def _control_ratio(data: bytes) -> float:
    """Share of bytes that never occur in text (NUL and other C0 controls, DEL)."""
    if not data:
        return 0.0
    return sum(1 for b in data if b in _CONTROL_BYTES) / len(data)


def read_text(data: bytes, name: str) -> Read:
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
            high = sum(1 for b in data if b >= 0x80)
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
    """Text of an LMS online-text entry: tags dropped, block elements become line breaks."""

    BLOCKS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre",
                        "blockquote", "table", "ul", "ol"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in self.BLOCKS:
            self.out.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip = max(0, self._skip - 1)
        elif tag in self.BLOCKS:
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.out.append(data)


def read_html(data: bytes, name: str) -> Read:
    r = read_text(data, name)
    parser = _HTMLText()
    parser.feed(r.text or "")
    parser.close()
    text = re.sub(r"\n[ \t]*\n(\s*\n)+", "\n\n", "".join(parser.out)).strip()
    return Read(text, notes=r.notes)


def _trim(text: str) -> tuple[str, bool]:
    lines = text.rstrip("\n").split("\n")
    cut = len(lines) > OUTPUT_LINES or len(text) > OUTPUT_CHARS
    kept = "\n".join(lines[:OUTPUT_LINES])[:OUTPUT_CHARS]
    if cut:
        kept += f"\n... [output trimmed, {len(lines)} lines in total]"
    return kept, cut


def _output_text(out: Any) -> tuple[str | None, bool]:
    """(text, had_image) for one notebook output; images are dropped."""
    otype = out.get("output_type")
    if otype == "stream":
        return str(out.get("text", "")), False
    if otype == "error":
        return f"{out.get('ename', 'Error')}: {out.get('evalue', '')}", False
    data = out.get("data", {}) or {}
    had_image = any(k.startswith("image/") for k in data)
    plain = data.get("text/plain")
    if isinstance(plain, list):
        plain = "".join(plain)
    return (str(plain) if plain is not None else None), had_image


def read_notebook(data: bytes, name: str) -> Read:
    import nbformat

    text = read_text(data, name).text or ""
    try:
        with warnings.catch_warnings():  # old notebooks warn about missing cell ids; harmless
            warnings.simplefilter("ignore")
            nb = nbformat.reads(text, as_version=4)
    except Exception as e:  # nbformat raises many types for broken JSON / schema
        raise SubmissionError("corrupt", f"not a valid Jupyter notebook ({type(e).__name__})",
                              path=name, fix="re-save the notebook from Jupyter and resubmit") \
            from None
    lang = str(nb.get("metadata", {}).get("kernelspec", {}).get("language", "") or
               nb.get("metadata", {}).get("language_info", {}).get("name", "python"))
    chunks: list[str] = []
    trimmed = dropped = False
    for i, cell in enumerate(nb.get("cells", []), start=1):
        src = normalise(str(cell.get("source", ""))).strip("\n")
        ctype = cell.get("cell_type", "code")
        if not src and ctype != "code":
            continue
        chunks.append(f"--- cell {i} ({ctype}) ---")
        chunks.append(f"```{lang}\n{src}\n```" if ctype == "code" else src)
        for out in cell.get("outputs", []) if ctype == "code" else []:
            body, had_image = _output_text(out)
            dropped = dropped or had_image
            if body and body.strip():
                kept, cut = _trim(normalise(body))
                trimmed = trimmed or cut
                chunks.append(f"[output]\n{kept}")
    notes = []
    if trimmed:
        notes.append(f"{name}: notebook outputs trimmed to {OUTPUT_LINES} lines each")
    if dropped:
        notes.append(f"{name}: images in notebook outputs dropped")
    body = "\n".join(chunks)
    if not re.sub(r"--- cell \d+ \(\w+\) ---|```\w*", "", body).strip():
        raise SubmissionError("empty", "notebook has no content in its cells", path=name,
                              fix="ask the student to save the notebook with their work in it")
    return Read(body, notes=notes)


def _ole_encrypted(data: bytes) -> bool:
    """Encrypted Office files are OLE containers holding an `EncryptedPackage` stream."""
    return data.startswith(_OLE_MAGIC) and "EncryptedPackage".encode("utf-16-le") in data


def read_pdf(data: bytes, name: str) -> Read:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError, PdfReadError

    fix = "ask the student to export the PDF again (File > Save as PDF) and resubmit"
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
        pages = [normalise(p.extract_text() or "").strip() for p in reader.pages]
    except SubmissionError:
        raise
    except FileNotDecryptedError:
        raise locked from None
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, IndexError,
            OSError, RecursionError, AssertionError) as e:
        raise SubmissionError("corrupt", f"PDF cannot be read ({type(e).__name__}: {e})",
                              path=name, fix=fix) from None
    if not pages:
        raise SubmissionError("empty", "PDF has no pages", path=name, fix=fix)
    if not any(pages):
        return Read(None, [Part(mime_type="application/pdf", data=data)],
                    [f"{name}: PDF has no text layer (scanned?); sent as a document"])
    text = "\n".join(f"--- page {i} ---\n{t}" for i, t in enumerate(pages, start=1))
    return Read(text)


def read_docx(data: bytes, name: str) -> Read:
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    if _ole_encrypted(data):
        raise SubmissionError("password_protected", "Word document is password-protected",
                              path=name, fix="ask the student to resubmit it without a password")
    fix = "ask the student to re-save the document as .docx (or PDF) and resubmit"
    try:
        doc = docx.Document(io.BytesIO(data))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, TypeError) as e:
        raise SubmissionError("corrupt", f"Word document cannot be read ({type(e).__name__})",
                              path=name, fix=fix) from None
    except Exception as e:  # lxml / python-docx raise their own types for broken XML
        raise SubmissionError("corrupt", f"Word document cannot be read ({type(e).__name__})",
                              path=name, fix=fix) from None
    lines: list[str] = []
    body = doc.element.body
    for child in body.iterchildren():
        tag = child.tag.rsplit("}", 1)[-1]
        if tag == "p":
            lines.append(Paragraph(child, doc).text)
        elif tag == "tbl":
            for row in Table(child, doc).rows:
                lines.append(" | ".join(c.text.strip() for c in row.cells))
    parts: list[Part] = []
    for rel in doc.part.rels.values():
        if "image" in rel.reltype and not rel.is_external:
            blob: bytes = rel.target_part.blob
            mime = sniff_image(blob)
            if mime:
                parts.append(Part(mime_type=mime, data=blob))
    notes = [f"{name}: {len(parts)} embedded image(s) attached"] if parts else []
    return Read(normalise("\n".join(lines)).strip(), parts, notes)


def read_image(data: bytes, name: str) -> Read:
    mime = sniff_image(data)
    if mime is None:
        raise SubmissionError("corrupt", "file has an image extension but is not a valid "
                              "PNG/JPEG/GIF/WebP image", path=name,
                              fix="ask the student to export the image again as PNG or JPEG")
    return Read(None, [Part(mime_type=mime, data=data)])


def reader_for(suffix: str, data: bytes) -> Callable[[bytes, str], Read]:
    """Pick a reader by extension, falling back to content sniffing for unknown extensions."""
    table: dict[str, Callable[[bytes, str], Read]] = {
        ".pdf": read_pdf, ".docx": read_docx, ".ipynb": read_notebook,
        ".html": read_html, ".htm": read_html,
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

