"""Bounds on what one student's files can make grader list, read, parse and send.

Students control their files and a class folder is often an unpacked archive, so every size,
count and depth that comes from a submission is checked against a limit here before the work is
done, and the student is flagged when one is exceeded. docs/intake.md lists every figure.
`max_file_mb` (a setting) bounds each file as it is read; everything else is a `Limits` field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from grader.errors import SubmissionError
from grader.prompting.request import GradeRequest

MB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Intake limits. The defaults suit a class of coursework; all are per student."""

    # discovery: a student's folder
    max_depth: int = 32  # folder levels below the student's folder; deeper folders are skipped
    max_entries: int = 10_000  # files and folders listed in one student's folder

    # reading
    max_submission_bytes: int = 100 * MB  # all of one student's files together
    hash_prefix_bytes: int = 64 * 1024  # what is hashed of a file that is too large to read

    # parsing
    zip_max_members: int = 2_000  # parts in a .docx (a zip)
    zip_max_member_bytes: int = 25 * MB  # one part, unpacked
    zip_max_total_bytes: int = 100 * MB  # all parts, unpacked
    pdf_max_pages: int = 500  # (pypdf bounds each decompressed stream itself, to 75 MB)
    notebook_max_cells: int = 5_000
    notebook_max_outputs: int = 100  # outputs per notebook cell
    max_chars: int = 400_000  # text per student sent to the model; more is truncated

    # the extraction worker (PDF, Word, notebooks and large files)
    worker_memory_mb: int = 1_024  # address space of the worker process
    worker_cpu_s: int = 60  # CPU seconds per submission
    worker_wall_s: float = 120.0  # wall-clock seconds per submission
    light_max_bytes: int = 64 * 1024  # smaller text and images are read in-process

    # the request
    max_request_bytes: int = 20 * MB  # everything sent for one student, media base64-encoded


DEFAULT_LIMITS = Limits()


def request_bytes(req: GradeRequest) -> int:
    """Bytes on the wire for `req`'s content: text as UTF-8, media base64-encoded (4/3)."""
    texts = [req.system, req.static_prefix, *(t.text for t in req.history)]
    texts += [p.text for p in req.student_parts if p.text is not None]
    size = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
    for p in req.student_parts:
        if p.data is not None:
            size += 4 * math.ceil(len(p.data) / 3)
    return size


def check_request_size(req: GradeRequest, *, max_bytes: int = DEFAULT_LIMITS.max_request_bytes,
                       student: str | None = None) -> int:
    """Raise SubmissionError(`oversized`) when `req` is over `max_bytes`; else return its size.

    Call it after rendering and before sending, so an oversized request is never paid for."""
    size = request_bytes(req)
    if size <= max_bytes:
        return size
    media = sum(4 * math.ceil(len(p.data) / 3) for p in req.student_parts if p.data is not None)
    raise SubmissionError(
        "oversized",
        f"the request for this student would be {size / MB:.1f} MB (attached images and PDFs "
        f"{media / MB:.1f} MB), over the {max_bytes / MB:g} MB limit per request",
        path=student,
        fix="ask the student for smaller images or a text PDF, or grade this student by hand",
    )
