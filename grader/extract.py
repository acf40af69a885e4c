"""Turn one student's files into the text and media the model will see.

A single bad file flags the student; in a folder submission a bad file among good ones only
becomes a note, because a stray `.DS_Store`-like leftover should not cost a student their grade.
The content hash lets the pipeline skip students whose files have not changed since the last run.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from ._formats import UNSUPPORTED_SUFFIXES, Read, reader_for
from .discover import Submission
from .errors import SubmissionError
from .request import Part

HEADER = "===== file: {name} ====="


class Extracted(BaseModel):
    """Gradeable content of one submission."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str
    parts: tuple[Part, ...] = ()
    content_hash: str
    files: tuple[str, ...]
    notes: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()  # "name (reason)" of files left out of a folder submission
    truncated: bool = False
    has_text: bool = True  # False: only images/scans, nothing a text-only model can read


def content_hash(sub: Submission) -> str:
    """sha256 over (relative name, size, bytes) of every file, in name order: stable across runs
    and machines, changes whenever any file is renamed, added, removed or edited."""
    h = hashlib.sha256()
    for name, path in sorted(zip(sub.names, sub.files, strict=True)):
        h.update(name.encode("utf-8") + b"\0")
        try:
            with path.open("rb") as fh:
                h.update(os.fstat(fh.fileno()).st_size.to_bytes(8, "big"))
                while chunk := fh.read(1 << 20):
                    h.update(chunk)
        except OSError:
            h.update(b"\xff" * 8)  # unreadable: still part of the hash, distinct from empty
    return h.hexdigest()


def _read_one(path: Path, name: str, max_bytes: int, max_file_mb: float) -> Read:
    suffix = path.suffix.lower()
    if suffix in UNSUPPORTED_SUFFIXES:
        raise SubmissionError(
            "unsupported", f"{UNSUPPORTED_SUFFIXES[suffix]} files are not supported", path=name,
            fix="ask the student to resubmit as .pdf, .docx, .txt, .md, source code or an image")
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise SubmissionError(
                "oversized", f"file is {size / 1e6:.1f} MB, over the {max_file_mb:g} MB limit",
                path=name, fix="ask for a smaller file, or raise max_file_mb in grader.toml")
        data = path.read_bytes()
    except OSError as e:
        raise SubmissionError("unreadable", f"cannot read file: {e.strerror or e}", path=name,
                              fix="check the file exists and is readable") from None
    if not data.strip(b" \t\r\n\x00\x0b\x0c"):
        raise SubmissionError("empty", "file is empty", path=name,
                              fix="ask the student to resubmit the file with their work in it")
    read = reader_for(suffix, data)(data, name)
    if read.text is not None and not read.text.strip() and not read.parts:
        raise SubmissionError("empty", "file has no text content", path=name,
                              fix="ask the student to resubmit the file with their work in it")
    return read


def extract(sub: Submission, *, max_file_mb: float = 20.0,
            max_chars: int = 400_000) -> Extracted:
    """Read every file of `sub`; raise SubmissionError when nothing gradeable is left."""
    if not sub.files:
        raise SubmissionError("missing", "no submission found for this student",
                              path=sub.student_id,
                              fix="the student handed nothing in; grade by hand if they did")
    max_bytes = int(max_file_mb * 1024 * 1024)
    pairs = sorted(zip(sub.names, sub.files, strict=True))
    several = len(pairs) > 1
    chunks: list[str] = []
    parts: list[Part] = []
    notes: list[str] = []
    errors: list[SubmissionError] = []
    has_text = False
    for name, path in pairs:
        try:
            read = _read_one(path, name, max_bytes, max_file_mb)
        except SubmissionError as e:
            if not several:
                raise SubmissionError(e.reason, e.message, path=path, fix=e.fix) from None
            errors.append(e)
            notes.append(f"skipped {name}: {e.reason} ({e.message})")
            continue
        notes.extend(read.notes)
        has_text = has_text or bool(read.text and read.text.strip())
        if read.parts and not read.text:
            kinds = ", ".join(sorted({p.mime_type or "?" for p in read.parts}))
            chunks.append(HEADER.format(name=name) + f"\n[{kinds} attached below]")
        elif several:
            chunks.append(HEADER.format(name=name) + "\n" + (read.text or ""))
        else:
            chunks.append(read.text or "")
        parts.extend(read.parts)
    if errors and len(errors) == len(pairs):
        counts = Counter(e.reason for e in errors)
        reason = max(counts, key=lambda r: (counts[r], -[e.reason for e in errors].index(r)))
        first = next(e for e in errors if e.reason == reason)
        detail = "; ".join(f"{e.path}: {e.reason}" for e in errors)
        raise SubmissionError(reason, f"no gradeable file in the submission ({detail})",
                              path=sub.student_id, fix=first.fix)
    text = "\n\n".join(c.rstrip("\n") for c in chunks).strip("\n")
    truncated = len(text) > max_chars
    if truncated:
        text = text[:max_chars] + "\n[... submission truncated ...]"
        notes.append(f"text truncated to {max_chars} characters")
    return Extracted(text=text, parts=tuple(parts), content_hash=content_hash(sub),
                     files=tuple(n for n, _ in pairs), notes=tuple(notes),
                     skipped=tuple(f"{e.path} ({e.reason})" for e in errors),
                     truncated=truncated, has_text=has_text)
