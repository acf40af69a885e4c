"""The fake's Files API (Developer API) and its checks of file parts.

- Resumable upload, as `client.files.upload` speaks it (read in google-genai's `files.py` and
  `_api_client.py`): `POST /upload/v1beta/files` with `X-Goog-Upload-Protocol: resumable`,
  `X-Goog-Upload-Command: start` and the size and type in `X-Goog-Upload-Header-Content-*`,
  answered with an `X-Goog-Upload-URL`; then chunks POSTed to that URL with
  `X-Goog-Upload-Command: upload` (`upload, finalize` for the last) and `X-Goog-Upload-Offset`,
  answered `X-Goog-Upload-Status: active`, and `final` with the File. `query` reports the bytes
  received.
- `files/{id}` get / delete, `files` list, `files/{id}:download?alt=media` (for generated files:
  a batch job's results, made with `FakeGemini.put_file`; uploaded files cannot be downloaded,
  as on the real API).
- Files expire 48 h (the model table's `retention_hours`) after upload on the fake's clock.
- A request or a cache naming a file that is gone is refused with 403 (Google's reported text);
  on Vertex, `gs://` URIs are looked up in the GCS emulator when `storage_host` is set.
"""

from __future__ import annotations

import base64
import hashlib
import re
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from grader.config.models import packaged
from grader.testing._fake_gcs import gcs_exists

if TYPE_CHECKING:
    from grader.testing._fake_app import Call, FakeApp, Reply

_UPLOAD = re.compile(r"^/upload/(?:v1beta|v1alpha)/files$")
_FILES = re.compile(r"^/(?:v1beta|v1alpha)/files$")
_FILE = re.compile(r"^/(?:v1beta|v1alpha)/files/(?P<id>[a-z0-9-]+)$")
_DOWNLOAD = re.compile(r"^/(?:v1beta|v1alpha)/files/(?P<id>[a-z0-9-]+):download$")
_FILE_ID = re.compile(r"files/([a-z0-9-]+)")


@dataclass
class FakeFile:
    name: str  # files/<id>
    display_name: str
    mime_type: str
    data: bytes
    created: float  # the fake's clock
    expires: float
    uri: str
    source: str = "UPLOADED"  # or GENERATED (downloadable)

    def to_json(self) -> dict[str, Any]:
        from grader.testing._fake_caches import rfc3339

        out = {"name": self.name, "displayName": self.display_name, "mimeType": self.mime_type,
               "sizeBytes": str(len(self.data)), "createTime": rfc3339(self.created),
               "updateTime": rfc3339(self.created), "expirationTime": rfc3339(self.expires),
               "sha256Hash": base64.b64encode(hashlib.sha256(self.data).digest()).decode(),
               "uri": self.uri, "state": "ACTIVE", "source": self.source}
        if self.source == "GENERATED":
            out["downloadUri"] = self.uri + ":download?alt=media"
        return out


@dataclass
class UploadSession:
    size: int
    mime_type: str
    display_name: str
    received: bytearray = field(default_factory=bytearray)


def retention_s() -> float:
    return packaged().files.retention_hours * 3600


class Files:
    """The routes and the semantics; state lives in `FakeState.files` / `.uploads`."""

    def __init__(self, app: FakeApp):
        self.app, self.state = app, app.state
        app.route("POST", _UPLOAD, self._wrap("upload", self.upload))
        app.route("GET", _FILES, self._wrap("list", self.list))
        app.route("GET", _FILE, self._wrap("get", self.get))
        app.route("DELETE", _FILE, self._wrap("delete", self.delete))
        app.route("GET", _DOWNLOAD, self._wrap("download", self.download))

    def _wrap(self, op: str, handler: Any) -> Any:
        endpoint = f"files.{op}"

        def handle(call: Call) -> Reply:
            # the upload URL is the credential of an upload's chunks (they carry no key)
            starts = op != "upload" or "upload_id" not in call.query
            return self.app.guarded(endpoint, call, lambda: handler(call), vertex=False,
                                    keep_body=starts and call.method == "POST", checked=starts)

        return handle

    # --- state --------------------------------------------------------------------------------
    def sweep(self) -> None:
        """Drop files past their 48 h. Holds the lock."""
        now = self.state.now()
        for name, f in list(self.state.files.items()):
            if f.expires <= now:
                del self.state.files[name]
                self.state.stats.files["expired"] += 1

    def live(self, name: str) -> FakeFile | None:
        with self.state.lock:
            self.sweep()
            return self.state.files.get(name)

    def add(self, data: bytes, mime_type: str, display_name: str, host: str,
            source: str = "UPLOADED") -> FakeFile:
        fid = uuid.uuid4().hex[:12]
        now = self.state.now()
        f = FakeFile(name=f"files/{fid}", display_name=display_name, mime_type=mime_type,
                     data=data, created=now, expires=now + retention_s(),
                     uri=f"http://{host}/v1beta/files/{fid}", source=source)
        with self.state.lock:
            self.state.files[f.name] = f
            if source == "UPLOADED":
                self.state.stats.files["uploaded"] += 1
                self.state.stats.files["bytes"] += len(data)
        return f

    @staticmethod
    def _missing(fid: str) -> Reply:
        from grader.testing._fake_app import error_reply

        return error_reply(403, f"You do not have permission to access the File {fid} or it may "
                                "not exist.")

    # --- routes -------------------------------------------------------------------------------
    def upload(self, call: Call) -> Reply:
        from grader.testing._fake_app import error_reply, json_reply

        h = call.headers
        command = h.get("x-goog-upload-command", "")
        upload_id = (call.query.get("upload_id") or [""])[0]
        if not upload_id:
            if h.get("x-goog-upload-protocol") != "resumable" or command != "start":
                return error_reply(400, "Only the resumable upload protocol is supported: start "
                                        "with X-Goog-Upload-Protocol: resumable and "
                                        "X-Goog-Upload-Command: start.")
            # proto JSON takes both spellings; the SDK sends the File's own field names
            meta = (call.body() or {}).get("file") or {}
            try:
                size = int(h.get("x-goog-upload-header-content-length", ""))
            except ValueError:
                return error_reply(400, "X-Goog-Upload-Header-Content-Length is required.")
            mime = h.get("x-goog-upload-header-content-type") or meta.get("mimeType") or ""
            if not mime:
                return error_reply(400, "A MIME type is required.")
            if size > packaged().files.max_file_mb * 1024 * 1024:
                return error_reply(400, "File too large.")
            uid = uuid.uuid4().hex
            with self.state.lock:
                self.state.uploads[uid] = UploadSession(size, mime,
                                                        str(meta.get("displayName") or ""))
            url = (f"http://{h.get('host', '127.0.0.1')}/upload/v1beta/files?upload_id={uid}"
                   "&upload_protocol=resumable")
            return json_reply(200, {}, {"X-Goog-Upload-URL": url,
                                        "X-Goog-Upload-Status": "active",
                                        "X-Goog-Upload-Chunk-Granularity": str(8 * 1024 * 1024)})
        with self.state.lock:
            session = self.state.uploads.get(upload_id)
        if session is None:
            return error_reply(404, "Upload session not found (or it expired).")
        if command == "query":
            return json_reply(200, {}, {"X-Goog-Upload-Status": "active",
                                        "X-Goog-Upload-Size-Received": str(len(session.received))})
        if "upload" in command:
            try:
                offset = int(h.get("x-goog-upload-offset", ""))
            except ValueError:
                return error_reply(400, "X-Goog-Upload-Offset is required.")
            if offset != len(session.received):
                return error_reply(400, f"Invalid upload offset {offset}; "
                                        f"{len(session.received)} bytes received so far.")
            session.received += call.raw
        if "finalize" not in command:
            return json_reply(200, {}, {"X-Goog-Upload-Status": "active",
                                        "X-Goog-Upload-Size-Received": str(len(session.received))})
        with self.state.lock:
            self.state.uploads.pop(upload_id, None)
        if len(session.received) != session.size:
            return error_reply(400, f"The upload is {len(session.received)} bytes, but "
                                    f"{session.size} were announced.")
        f = self.add(bytes(session.received), session.mime_type, session.display_name,
                     h.get("host", "127.0.0.1"))
        return json_reply(200, {"file": f.to_json()}, {"X-Goog-Upload-Status": "final"})

    def list(self, call: Call) -> Reply:
        from grader.testing._fake_app import json_reply

        size = int((call.query.get("pageSize") or ["10"])[0])
        start = int((call.query.get("pageToken") or ["0"])[0])
        with self.state.lock:
            self.sweep()
            everything = list(self.state.files.values())
        out: dict[str, Any] = {"files": [f.to_json() for f in everything[start:start + size]]}
        if start + size < len(everything):
            out["nextPageToken"] = str(start + size)
        return json_reply(200, out)

    def get(self, call: Call) -> Reply:
        from grader.testing._fake_app import json_reply

        assert call.match is not None
        fid = call.match.group("id")
        f = self.live(f"files/{fid}")
        return json_reply(200, f.to_json()) if f is not None else self._missing(fid)

    def delete(self, call: Call) -> Reply:
        from grader.testing._fake_app import json_reply

        assert call.match is not None
        fid = call.match.group("id")
        with self.state.lock:
            self.sweep()
            f = self.state.files.pop(f"files/{fid}", None)
            if f is not None:
                self.state.stats.files["deleted"] += 1
        return json_reply(200, {}) if f is not None else self._missing(fid)

    def download(self, call: Call) -> Reply:
        from grader.testing._fake_app import Reply, error_reply

        assert call.match is not None
        fid = call.match.group("id")
        f = self.live(f"files/{fid}")
        if f is None:
            return self._missing(fid)
        if f.source != "GENERATED":
            return error_reply(400, "Only generated files can be downloaded; uploaded files "
                                    "cannot be downloaded.")
        return Reply(200, f.data, {"Content-Type": f.mime_type})


def check_file_parts(app: FakeApp, contents: list[dict[str, Any]], vertex: bool
                     ) -> Reply | None:
    """A 403/400 when a content part names a file the service does not have (any more)."""
    from grader.testing._fake_app import error_reply

    for content in contents:
        for part in content.get("parts", []) if isinstance(content, dict) else []:
            data = part.get("fileData") or {}
            uri = str(data.get("fileUri") or "")
            if not uri:
                continue
            if uri.startswith("gs://"):
                if vertex and not gcs_exists(app.state.config.storage_host, uri):
                    return error_reply(400, f"File {uri} not found: Cannot fetch content from "
                                            "the provided URL.")
                continue
            m = _FILE_ID.search(uri)
            if m is None or app.files.live(f"files/{m.group(1)}") is None:
                fid = m.group(1) if m else uri
                return error_reply(403, f"You do not have permission to access the File {fid} "
                                        "or it may not exist.")
    return None
