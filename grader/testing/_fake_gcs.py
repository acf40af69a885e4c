"""The fake server's view of Google Cloud Storage: the objects Enterprise requests name by
gs:// URI, read and written in the GCS emulator (`gcs_emulator`) over its JSON API. `host` is
the fake's `storage_host` setting (None: no emulator configured)."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request

_NO_HOST = "the fake has no storage_host (a GCS emulator) configured"


def _object(host: str, uri: str, prefix: str = "") -> str:
    """The emulator's URL of the object `uri` (`prefix`: "download/" for its bytes)."""
    bucket, _, obj = uri.removeprefix("gs://").partition("/")
    return (f"{host.rstrip('/')}/{prefix}storage/v1/b/{urllib.parse.quote(bucket, safe='')}/o/"
            f"{urllib.parse.quote(obj, safe='')}")


def gcs_exists(host: str | None, uri: str) -> bool:
    """Whether the emulator holds the object `uri` (True when no emulator is configured: not
    checked)."""
    if not host:
        return True
    try:
        with urllib.request.urlopen(_object(host, uri), timeout=10) as r:  # the local emulator
            return bool(r.status == 200)
    except urllib.error.HTTPError:
        return False


def gcs_read(host: str | None, uri: str) -> bytes | None:
    """The bytes of the object `uri` (None when it is not there)."""
    if not host:
        raise OSError(_NO_HOST)
    try:
        with urllib.request.urlopen(_object(host, uri, "download/") + "?alt=media",
                                    timeout=30) as r:  # the local emulator
            return bytes(r.read())
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise


def gcs_write(host: str | None, uri: str, data: bytes) -> None:
    if not host:
        raise OSError(_NO_HOST)
    bucket, _, obj = uri.removeprefix("gs://").partition("/")
    url = (f"{host.rstrip('/')}/upload/storage/v1/b/{urllib.parse.quote(bucket, safe='')}/o"
           f"?uploadType=media&name={urllib.parse.quote(obj, safe='')}")
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(req, timeout=30):  # the local emulator
        pass
