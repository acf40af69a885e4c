"""Turn one student's files into the text and media the model will see.

A single bad file flags the student; in a folder submission a bad file among good ones only
becomes a note, because a stray `.DS_Store`-like leftover should not cost a student their grade.
The content hash lets the pipeline skip students whose files have not changed since the last run.

Files are opened without following links, only when they are regular files with one link, and
read with a byte cap (a file's reported size is never trusted: `/proc`-like files report 0).
Each file is read once; the hash covers the bytes that were read, and for a file too large to
read only its size and first `Limits.hash_prefix_bytes` bytes, so an oversized file costs the
same on every run.
Any exception a parser raises flags the file `corrupt` (see `_formats.parse`). This runs in the
caller's process; `isolation.Extractor` runs it in a worker with a time and memory budget.

A hard link is refused like a symbolic link: a `.tar` unpacked without filters can make a
student's `answer.txt` another name of any file on the same disk (the teacher's `~/.ssh/id_rsa`,
the answer key), and nothing in the class folder shows it. A regular file with more than one
link (`st_nlink > 1`) is flagged `hard_link` and never read. The count is taken from the opened
descriptor (`fstat`), so a file linked between the check and the read cannot slip through.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from grader.errors import SubmissionError
from grader.intake.discover import Skipped, Submission, link_target, special_kind
from grader.intake.formats import HEAVY_READERS, UNSUPPORTED_SUFFIXES, Read, parse, reader_for
from grader.intake.injection import Aside, Finding, Hidden, inspect
from grader.intake.limits import DEFAULT_LIMITS, MB, Limits
from grader.prompting.request import Part

HEADER = "===== file: {name} ====="
_OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
               | getattr(os, "O_BINARY", 0))
_CHUNK = 1 << 20
_SURROGATES = re.compile(r"[\ud800-\udfff]")
_FIX_HARD_LINK = ("copy the file instead of linking it, or unpack the archive with filters "
                  "(Python's tarfile: filter='data'), then rerun")


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
    findings: tuple[Finding, ...] = ()  # injection evidence (grader.intake.injection)


class NeedsWorker(Exception):
    """Raised with `allow_heavy=False` when a file needs a third-party parser (PDF, Word,
    notebook): the caller runs the extraction in the worker process instead."""


def _read_capped(fd: int, size_hint: int, max_bytes: int) -> bytes:
    """At most `max_bytes + 1` bytes from `fd`, whatever size the file claims."""
    chunks: list[bytes] = []
    total = 0
    want = size_hint + 1 if 0 < size_hint < _CHUNK else _CHUNK
    while total <= max_bytes:
        chunk = os.read(fd, min(want, max_bytes + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        want = _CHUNK
    return b"".join(chunks)


def _oversized(size: int, max_file_mb: float, name: str) -> SubmissionError:
    return SubmissionError(
        "oversized", f"file is {size / 1e6:.1f} MB, over the {max_file_mb:g} MB limit",
        path=name, fix="ask for a smaller file, or raise max_file_mb in grader.toml")


def load(path: Path, name: str, *, max_bytes: int, max_file_mb: float, hasher: Any,
         limits: Limits = DEFAULT_LIMITS) -> bytes:
    """The bytes of the regular file `path`, at most `max_bytes`; feeds `hasher` with what the
    file contributes to the content hash (also when it raises). Links (symbolic, or hard: more
    than one link, checked on the opened descriptor), special files, files too large and files
    that cannot be read raise SubmissionError."""
    hasher.update(name.encode("utf-8", "surrogatepass") + b"\0")
    try:
        mode = os.lstat(path).st_mode
        if stat.S_ISLNK(mode):
            hasher.update(b"\xfe" * 8)
            raise SubmissionError("symlink", f"is a symbolic link to {link_target(path)!r}; links"
                                  " are not followed", path=name,
                                  fix="copy the real file in place of the link")
        if not stat.S_ISREG(mode):
            hasher.update(b"\xfd" * 8)
            raise SubmissionError("special_file", f"is {special_kind(mode)}, not a regular file;"
                                  " it was not opened", path=name,
                                  fix="replace it with a regular file holding the work")
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as e:
        hasher.update(b"\xff" * 8)  # unreadable: still part of the hash, distinct from empty
        if e.errno == errno.ELOOP:  # replaced by a link since discovery
            raise SubmissionError("symlink", "is a symbolic link; links are not followed",
                                  path=name, fix="copy the real file in place of the link"
                                  ) from None
        raise SubmissionError("unreadable", f"cannot read file: {e.strerror or e}", path=name,
                              fix="check the file exists and is readable") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            hasher.update(b"\xfd" * 8)
            raise SubmissionError("special_file", f"is {special_kind(st.st_mode)}, not a "
                                  "regular file", path=name,
                                  fix="replace it with a regular file holding the work")
        if st.st_nlink > 1:
            hasher.update(b"\xfc" * 8)
            raise SubmissionError("hard_link", f"is a hard link (the file has {st.st_nlink} "
                                  "names on disk, and another may be outside the class folder);"
                                  " it was not read", path=name, fix=_FIX_HARD_LINK)
        if st.st_size > max_bytes:
            hasher.update(st.st_size.to_bytes(8, "big") + b"prefix\0")
            hasher.update(os.read(fd, limits.hash_prefix_bytes))
            raise _oversized(st.st_size, max_file_mb, name)
        data = _read_capped(fd, st.st_size, max_bytes)
    except OSError as e:
        hasher.update(b"\xff" * 8)
        raise SubmissionError("unreadable", f"cannot read file: {e.strerror or e}", path=name,
                              fix="check the file is readable") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:  # the file grew, or reports a wrong size
        hasher.update(b"\xff" * 8 + b"prefix\0" + data[:limits.hash_prefix_bytes])
        raise _oversized(len(data), max_file_mb, name)
    hasher.update(len(data).to_bytes(8, "big"))
    hasher.update(data)
    return data


def _read_one(data: bytes, name: str, suffix: str, limits: Limits, allow_heavy: bool) -> Read:
    if not data.strip(b" \t\r\n\x00\x0b\x0c"):
        raise SubmissionError("empty", "file is empty", path=name,
                              fix="ask the student to resubmit the file with their work in it")
    reader = reader_for(suffix, data)
    if not allow_heavy and reader in HEAVY_READERS:
        raise NeedsWorker(name)
    read = parse(reader, data, name, limits)
    if read.text is not None and not read.text.strip() and not read.parts:
        raise SubmissionError("empty", "file has no text content", path=name,
                              fix="ask the student to resubmit the file with their work in it")
    return read


def _unsupported(suffix: str, name: str) -> SubmissionError:
    return SubmissionError(
        "unsupported", f"{UNSUPPORTED_SUFFIXES[suffix]} files are not supported", path=name,
        fix="ask the student to resubmit as .pdf, .docx, .txt, .md, source code or an image")


def _whole_submission_error(errors: list[SubmissionError], student: str) -> SubmissionError:
    """The flag for a submission none of whose files could be read: the most common reason."""
    counts = Counter(e.reason for e in errors)
    order = [e.reason for e in errors]
    reason = max(counts, key=lambda r: (counts[r], -order.index(r)))
    first = next(e for e in errors if e.reason == reason)
    detail = "; ".join(f"{e.path}: {e.reason}" for e in errors)
    return SubmissionError(reason, f"no gradeable file in the submission ({detail})",
                           path=student, fix=first.fix)


def extract(sub: Submission, *, max_file_mb: float = 20.0, max_chars: int | None = None,
            limits: Limits = DEFAULT_LIMITS, allow_heavy: bool = True) -> Extracted:
    """Read every file of `sub`; raise SubmissionError when nothing gradeable is left.

    `allow_heavy=False` raises NeedsWorker instead of running a PDF, Word or notebook parser."""
    if max_chars is not None:
        limits = replace(limits, max_chars=max_chars)
    whole = next((s for s in sub.skipped if s.whole), None)
    if whole is not None:
        raise SubmissionError(whole.reason, whole.message, path=whole.path, fix=whole.fix)
    if not sub.files and not sub.skipped:
        raise SubmissionError("missing", "no submission found for this student",
                              path=sub.student_id,
                              fix="the student handed nothing in; grade by hand if they did")
    max_bytes = int(max_file_mb * MB)
    items: list[tuple[str, Path | Skipped]] = [*zip(sub.names, sub.files, strict=True),
                                               *((s.name, s) for s in sub.skipped)]
    items.sort(key=lambda it: (it[0], str(it[1].path if isinstance(it[1], Skipped) else it[1])))
    several = len(items) > 1
    hasher = hashlib.sha256()
    chunks: list[str] = []
    parts: list[Part] = []
    notes: list[str] = list(sub.notes)
    errors: list[SubmissionError] = []
    hidden: list[Hidden] = []
    aside: list[Aside] = []
    has_text = False
    budget = limits.max_submission_bytes
    for name, item in items:
        path = item.path if isinstance(item, Skipped) else item
        try:
            if isinstance(item, Skipped):
                raise SubmissionError(item.reason, item.message, path=name, fix=item.fix)
            if budget <= 0:
                raise SubmissionError(
                    "oversized", f"not read: the submission's files together exceed "
                    f"{limits.max_submission_bytes / MB:g} MB", path=name,
                    fix="ask the student to hand in only the files the assignment asks for")
            suffix = path.suffix.lower()
            try:
                data = load(path, name, max_bytes=max_bytes, max_file_mb=max_file_mb,
                            hasher=hasher, limits=limits)
            except SubmissionError:
                if suffix in UNSUPPORTED_SUFFIXES:
                    raise _unsupported(suffix, name) from None
                raise
            budget -= len(data)
            if suffix in UNSUPPORTED_SUFFIXES:
                raise _unsupported(suffix, name)
            read = _read_one(data, name, suffix, limits, allow_heavy)
        except SubmissionError as e:
            if not several:
                raise SubmissionError(e.reason, e.message, path=path, fix=e.fix) from None
            errors.append(e)
            notes.append(f"skipped {name}: {e.reason} ({e.message})")
            continue
        notes.extend(read.notes)
        hidden += [Hidden(_at(name, h.where), h.how, h.text, h.deliberate) for h in read.hidden]
        aside += [Aside(_at(name, a.where), a.text) for a in read.aside]
        has_text = has_text or bool(read.text and read.text.strip())
        if read.parts and not read.text:
            kinds = ", ".join(sorted({p.mime_type or "?" for p in read.parts}))
            chunks.append(HEADER.format(name=name) + f"\n[{kinds} attached below]")
        elif several:
            chunks.append(HEADER.format(name=name) + "\n" + (read.text or ""))
        else:
            chunks.append(read.text or "")
        parts.extend(read.parts)
    if errors and len(errors) == len(items):
        raise _whole_submission_error(errors, sub.student_id)
    text = "\n\n".join(c.rstrip("\n") for c in chunks).strip("\n")
    seen = inspect(text, single=None if several else items[0][0], hidden=hidden, aside=aside)
    text = seen.text
    notes.extend(seen.notes)
    truncated = len(text) > limits.max_chars
    if truncated:
        text = text[:limits.max_chars] + "\n[... submission truncated ...]"
        notes.append(f"text truncated to {limits.max_chars} characters")
    return Extracted(text=_SURROGATES.sub("\ufffd", text), parts=tuple(parts),
                     content_hash=hasher.hexdigest(), files=tuple(n for n, _ in items),
                     notes=tuple(_SURROGATES.sub("\ufffd", n) for n in notes),
                     skipped=tuple(f"{e.path} ({e.reason})" for e in errors),
                     truncated=truncated, has_text=has_text, findings=seen.findings)


def _at(name: str, where: str) -> str:
    """A place inside a file, named with the file: "essay.docx paragraph 4"."""
    return f"{name} {where}" if where else name
