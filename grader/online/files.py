"""Files the service holds for grader: what is too big to send inline, uploaded once and named in
requests by URI (the Gemini Files API; on Enterprise/Vertex a `gs://` staging bucket).

`Uploads` is one holder's set of uploads on one backend: an online run (`run_id`), or a batch job
(`job_ref`, issue 12), through the same calls:

- `ensure(data, mime_type, purpose)` uploads bytes once per content (sha256) and returns the
  service's file; identical content in flight is uploaded once. A row is written to the store
  before the upload starts (state `uploading`, with its display name), so a kill during it is
  found again. Display names are `grader-<sha256 prefix>-<random>`: never a student's file name
  (file names carry names; what leaves the machine names no student).
- `attach(request, holder)` decides which of a request's media must go by URI rather than inline
  (the model table's inline limits: a PDF over `pdf_mb`, and the largest media until the request
  fits `request_mb`), uploads them and returns the request naming them. `release(holder)` deletes
  a holder's uploads once no one else uses them.
- `adopt()` at the start of a run takes over the uploads of runs that died (SIGKILL): one still
  there and younger than the model table's `reupload_after_hours` is reused, anything else is
  deleted or forgotten. `close()` deletes what the holder still has.
- `forget(uri)`: a request was refused because the file is gone (expired after 48 h, deleted):
  the next `ensure` uploads it again.

Callers own what they upload: student media are binary (images, scanned PDFs) and cannot be
redacted; text a caller builds (a batch JSONL) must be built from redacted requests.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from grader.backends import FileInfo, SupportsFiles
from grader.config.models import FilesApi, Inline
from grader.errors import BackendError, SubmissionError
from grader.grading.records import UploadRow
from grader.intake.limits import MB
from grader.online.strays import Strays
from grader.prompting.request import GradeRequest, Part
from grader.store import Store


def now() -> datetime:
    return datetime.now(UTC)


def stamp(when: datetime | None) -> str | None:
    return when.astimezone(UTC).isoformat(timespec="seconds") if when is not None else None


def parse(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def uploader(backend: object) -> SupportsFiles | None:
    """The backend's file capability, when it has one and is set up for it."""
    if isinstance(backend, SupportsFiles) and backend.files_available:
        return backend
    return None


def _b64(n: int) -> int:
    return 4 * math.ceil(n / 3)


def to_upload(req: GradeRequest, inline: Inline) -> list[int]:
    """Indexes of `req.student_parts` to send by URI: every PDF over the inline PDF limit, then
    the largest media until the request's inline size (text as UTF-8, media base64) fits."""
    media = [(i, len(p.data)) for i, p in enumerate(req.student_parts)
             if p.data is not None and p.file_uri is None]
    if not media:
        return []
    pdf_limit = inline.pdf_mb * MB
    chosen = [i for i, n in media if req.student_parts[i].mime_type == "application/pdf"
              and n > pdf_limit]
    texts = [req.system, req.static_prefix, *(t.text for t in req.history),
             *(p.text for p in req.student_parts if p.text is not None)]
    size = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
    size += sum(_b64(n) for i, n in media if i not in chosen)
    for i, n in sorted(media, key=lambda m: -m[1]):
        if size <= inline.request_mb * MB:
            break
        if i not in chosen:
            chosen.append(i)
            size -= _b64(n)
    return sorted(chosen)


@dataclass
class _Held:
    row: UploadRow
    info: FileInfo
    users: set[str] = field(default_factory=set)


class Uploads:
    """One holder's uploads on one backend (see the module docstring). Used from one event loop."""

    def __init__(self, store: Store, backend: SupportsFiles, *, files: FilesApi,
                 run_id: int | None = None, job_ref: str | None = None):
        self.store, self.backend = store, backend
        self.files = files
        self.run_id, self.job_ref = run_id, job_ref
        self.key = backend.service_key
        self._held: dict[str, _Held] = {}  # sha256 -> the upload this holder uses
        self._pending: dict[str, asyncio.Future[_Held]] = {}
        self._by_holder: dict[str, set[str]] = {}
        self.uploaded = 0  # uploads this holder made (not reused)
        self.reused = 0  # uploads taken over from a run that died

    # --- life of the holder ------------------------------------------------------------------

    async def adopt(self) -> None:
        """Take over what dead holders left (call while holding the store's run lock): reuse an
        upload still on the service and younger than `reupload_after_hours`, delete the rest.
        Rows still `uploading` were cut short: any file that got that display name is deleted."""
        rows = self.store.open_uploads(self.key, job_ref=self.job_ref)
        strays = Strays(self.backend.list_files, self.backend.delete_file)
        for row in rows:
            try:
                if row.state == "uploading" or row.name is None:
                    await strays.delete(row.display_name)
                    self.store.end_upload(row.id, "failed")
                elif not self._fresh(row):
                    await self.backend.delete_file(row.name)
                    self.store.end_upload(row.id, "expired")
                elif (info := await self.backend.get_file(row.name)) is None:
                    self.store.end_upload(row.id, "expired")
                elif not info.active or row.sha256 in self._held:
                    await self.backend.delete_file(row.name)
                    self.store.end_upload(row.id, "deleted")
                else:
                    if self.run_id is not None:
                        self.store.adopt_upload(row.id, self.run_id)
                    self._held[row.sha256] = _Held(row, info)
                    self.reused += 1
            except BackendError:
                continue  # the service could not be asked now: the next run tries again

    def _fresh(self, row: UploadRow) -> bool:
        """Young enough to use: uploaded less than `reupload_after_hours` ago, and not past the
        expiry the service gave it."""
        created, expires = parse(row.created_at), parse(row.expires_at)
        t = now()
        if created is not None and t - created >= timedelta(hours=self.files.reupload_after_hours):
            return False
        return expires is None or expires - t > timedelta(
            hours=self.files.retention_hours - self.files.reupload_after_hours)

    async def close(self) -> None:
        """Delete every upload this holder still has (the run ended, or was interrupted)."""
        held, self._held = list(self._held.values()), {}
        self._by_holder.clear()
        for h in held:
            await self._delete(h)

    async def _delete(self, h: _Held) -> None:
        try:
            await self.backend.delete_file(h.info.name)
        except BackendError:
            return  # left for the next run's adopt(); the service also expires it
        self.store.end_upload(h.row.id, "deleted")

    # --- per file ------------------------------------------------------------------------------

    async def ensure(self, data: bytes | Path, *, mime_type: str, purpose: str,
                     sha256: str | None = None) -> FileInfo:
        """The service's file holding `data` (uploaded now, or earlier by this holder)."""
        digest = sha256 or _digest(data)
        held = self._held.get(digest)
        if held is not None and self._fresh(held.row):
            return held.info
        if held is not None:  # too old to rely on: upload again, drop the old one
            del self._held[digest]
            await self._delete(held)
        pending = self._pending.get(digest)
        if pending is not None:
            return (await asyncio.shield(pending)).info
        future: asyncio.Future[_Held] = asyncio.get_running_loop().create_future()
        self._pending[digest] = future
        try:
            h = await self._upload(data, digest, mime_type, purpose)
            self._held[digest] = h
            future.set_result(h)
            return h.info
        except BaseException as e:
            future.set_exception(e)
            future.exception()  # retrieved: waiters re-raise it themselves
            raise
        finally:
            del self._pending[digest]

    async def _upload(self, data: bytes | Path, digest: str, mime_type: str,
                      purpose: str) -> _Held:
        size = len(data) if isinstance(data, bytes) else data.stat().st_size
        display = f"grader-{digest[:16]}-{secrets.token_hex(4)}"
        row_id = self.store.begin_upload(
            run_id=self.run_id, backend=self.key, purpose=purpose, sha256=digest, size=size,
            mime_type=mime_type, display_name=display, job_ref=self.job_ref)
        try:
            info = await self.backend.upload_file(data, mime_type=mime_type, display_name=display)
        except BaseException:
            self.store.end_upload(row_id, "failed")
            raise
        self.store.upload_active(row_id, name=info.name, uri=info.uri,
                                 expires_at=stamp(info.expires_at))
        self.uploaded += 1
        row = UploadRow(id=row_id, run_id=self.run_id, job_ref=self.job_ref, backend=self.key,
                        purpose=purpose, sha256=digest, size=size, mime_type=mime_type,
                        display_name=display, name=info.name, uri=info.uri,
                        created_at=stamp(now()) or "", expires_at=stamp(info.expires_at),
                        ended_at=None, state="active")
        return _Held(row, info)

    def holds(self, uri: str | None) -> bool:
        """Whether `uri` is one of this holder's live uploads."""
        return uri is not None and any(h.info.uri == uri for h in self._held.values())

    def forget(self, uri: str) -> None:
        """The service refused a request because the file at `uri` is gone: upload it again
        next time."""
        for digest, h in list(self._held.items()):
            if h.info.uri == uri or h.info.name == uri:
                del self._held[digest]
                self.store.end_upload(h.row.id, "expired")

    # --- requests ------------------------------------------------------------------------------

    async def attach(self, req: GradeRequest, holder: str, inline: Inline) -> GradeRequest:
        """`req` with the student media that are too big to send inline uploaded and named by
        URI (`holder` keeps them until `release`). Files already attached are uploaded again
        when they were forgotten (gone)."""
        parts = list(req.student_parts)
        chosen = to_upload(req, inline) + [i for i, p in enumerate(parts) if p.file_uri]
        if not chosen:
            return req
        for i in sorted(set(chosen)):
            p = parts[i]
            if p.data is None:
                continue
            digest = _digest(p.data)
            info = await self.ensure(p.data, mime_type=p.mime_type or "application/octet-stream",
                                     purpose="media", sha256=digest)
            self._held[digest].users.add(holder)
            self._by_holder.setdefault(holder, set()).add(digest)
            parts[i] = p.model_copy(update={"file_uri": info.uri})
        return req.model_copy(update={"student_parts": tuple(parts)})

    async def release(self, holder: str) -> None:
        """`holder` is done: delete the uploads nobody else uses."""
        for digest in self._by_holder.pop(holder, set()):
            h = self._held.get(digest)
            if h is None:
                continue
            h.users.discard(holder)
            if not h.users:
                del self._held[digest]
                await self._delete(h)

    async def attach_references(self, parts: tuple[Part, ...]) -> tuple[Part, ...]:
        """The rubric's reference files, uploaded (once per run) and named by URI."""
        out = []
        for p in parts:
            info = await self.ensure(p.data or b"", mime_type=p.mime_type or "",
                                     purpose="reference")
            out.append(p.model_copy(update={"file_uri": info.uri}))
        return tuple(out)


def _digest(data: bytes | Path) -> str:
    h = hashlib.sha256()
    if isinstance(data, bytes):
        h.update(data)
    else:
        with data.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def unavailable(student: str, fix: str) -> SubmissionError:
    """A student whose media are too big to send inline, on a backend that cannot upload."""
    return SubmissionError(
        "oversized", "the attached files are over the inline limit of one request, and this "
        "backend has no place to upload them", path=student, fix=fix)
