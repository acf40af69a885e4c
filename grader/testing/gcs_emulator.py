"""A Google Cloud Storage emulator for tests and benchmarks: `gcp-storage-emulator` (PyPI,
in memory) on 127.0.0.1, reached by google-cloud-storage through `STORAGE_EMULATOR_HOST`.

Enterprise/Vertex stages files in a `gs://` bucket (grader's `staging_bucket`; batch input and
output too). Tests start one emulator, point the client and the fake Gemini server at it, and read
back what was written:

    with GcsEmulator(buckets=("grader-staging",)) as gcs:
        os.environ.update(gcs.env())               # STORAGE_EMULATOR_HOST for the client
        fake.configure(storage_host=gcs.url)       # the fake checks gs:// URIs there
        ...
        gcs.objects("grader-staging")              # names written so far

pytest: the `gcs_emulator` fixture (grader.testing.pytest_plugin). Command line:
`python -m grader.testing.gcs_emulator --port 9023 --bucket grader-staging` prints its URL.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from grader.testing._serving import LocalServer

ENV = "STORAGE_EMULATOR_HOST"


class GcsEmulator(LocalServer):
    """The emulator in a background thread (context manager)."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0,
                 buckets: tuple[str, ...] = ("grader-staging",)):
        self.host, self._port = host, port
        self.buckets = buckets
        self._server: Any = None

    def start(self) -> GcsEmulator:
        from gcp_storage_emulator.server import create_server

        self._server = create_server(self.host, self._port, in_memory=True)
        self._server.start()
        for b in self.buckets:
            self.create_bucket(b)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def _bound_port(self) -> int | None:
        return (int(self._server._api._httpd.server_address[1]) if self._server is not None
                else None)

    def env(self) -> dict[str, str]:
        """Environment that points google-cloud-storage at the emulator."""
        return {ENV: self.url}

    # --- what tests read and set up (the emulator's JSON API, stdlib only) ---------------------
    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:  # the local emulator
            raw = r.read()
        return json.loads(raw) if raw else None

    def create_bucket(self, name: str) -> None:
        try:
            self._call("POST", "/storage/v1/b?project=test", {"name": name})
        except urllib.error.HTTPError as e:
            if e.code != 409:  # already there
                raise

    def objects(self, bucket: str, prefix: str = "") -> list[str]:
        """Names of the objects in `bucket` (under `prefix`)."""
        query = f"?prefix={urllib.parse.quote(prefix, safe='')}" if prefix else ""
        listed = self._call("GET", f"/storage/v1/b/{urllib.parse.quote(bucket)}/o{query}")
        return sorted(o["name"] for o in (listed or {}).get("items", []))

    def read(self, bucket: str, name: str) -> bytes:
        url = (f"{self.url}/storage/v1/b/{urllib.parse.quote(bucket)}/o/"
               f"{urllib.parse.quote(name, safe='')}?alt=media")
        with urllib.request.urlopen(url, timeout=30) as r:
            return bytes(r.read())

    def write(self, bucket: str, name: str, data: bytes,
              content_type: str = "application/octet-stream") -> None:
        """Put an object (as a batch prediction job writes its results)."""
        url = (f"{self.url}/upload/storage/v1/b/{urllib.parse.quote(bucket)}/o?uploadType=media"
               f"&name={urllib.parse.quote(name, safe='')}")
        req = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": content_type})
        with urllib.request.urlopen(req, timeout=30):
            pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m grader.testing.gcs_emulator",
                                description="In-memory Google Cloud Storage emulator.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    p.add_argument("--bucket", action="append", default=None,
                   help="bucket to create (repeat; default grader-staging)")
    a = p.parse_args(argv)
    gcs = GcsEmulator(host=a.host, port=a.port, buckets=tuple(a.bucket or ["grader-staging"]))
    return gcs.serve_until_interrupted(f"{ENV}={{url}}")


if __name__ == "__main__":
    sys.exit(main())
