"""What a run keeps on the service: context caches and uploaded files, from creation to
deletion, so a later run can find and end what a killed one left."""

from __future__ import annotations

from typing import Any

from grader.grading.records import CacheRow, UploadRow
from grader.store.core import StoreCore, mapped, now


class Resources(StoreCore):
    # --- what a run keeps on the service: context caches and uploaded files ------------------

    @mapped
    def begin_cache(self, *, run_id: int, backend: str, model: str, content_hash: str,
                    display_name: str) -> int:
        """Record a cache before it is asked for (a kill before the reply leaves it findable by
        its display name)."""
        cur = self.conn.execute(
            "INSERT INTO caches (run_id, backend, model, content_hash, display_name, created_at,"
            " state) VALUES (?,?,?,?,?,?,'creating')",
            (run_id, backend, model, content_hash, display_name, now()))
        return int(cur.lastrowid or 0)

    @mapped
    def cache_live(self, cache_id: int, *, name: str, tokens: int, create_usd: float | None,
                   usd_per_hour: float | None, expires_at: str) -> None:
        self.conn.execute(
            "UPDATE caches SET name=?, tokens=?, create_usd=?, usd_per_hour=?, expires_at=?,"
            " created_at=?, state='live' WHERE id=?",
            (name, tokens, create_usd, usd_per_hour, expires_at, now(), cache_id))

    @mapped
    def cache_expires(self, cache_id: int, expires_at: str, *, run_id: int | None = None
                      ) -> None:
        """A new expiry (the TTL was extended); `run_id`: the run that now holds the cache."""
        self.conn.execute("UPDATE caches SET expires_at=?, run_id=COALESCE(?, run_id)"
                          " WHERE id=?", (expires_at, run_id, cache_id))

    @mapped
    def end_cache(self, cache_id: int, state: str, storage_usd: float | None,
                  ended_at: str | None = None) -> None:
        self.conn.execute("UPDATE caches SET state=?, storage_usd=?, ended_at=? WHERE id=?",
                          (state, storage_usd, ended_at or now(), cache_id))

    @mapped
    def open_caches(self, backend: str) -> list[CacheRow]:
        """Caches on `backend` not known to be gone (being created, or live)."""
        return [CacheRow(**dict(r)) for r in self.conn.execute(
            "SELECT * FROM caches WHERE state IN ('creating', 'live') AND backend=? ORDER BY id",
            (backend,))]

    @mapped
    def caches(self, run_id: int) -> list[CacheRow]:
        return [CacheRow(**dict(r)) for r in self.conn.execute(
            "SELECT * FROM caches WHERE run_id=? ORDER BY id", (run_id,))]

    @mapped
    def begin_upload(self, *, run_id: int | None, backend: str, purpose: str, sha256: str,
                     size: int, mime_type: str, display_name: str, name: str | None = None,
                     job_ref: str | None = None) -> int:
        """Record an upload before it starts (a kill during it leaves it findable)."""
        cur = self.conn.execute(
            "INSERT INTO uploads (run_id, job_ref, backend, purpose, sha256, size, mime_type,"
            " display_name, name, created_at, state) VALUES (?,?,?,?,?,?,?,?,?,?,'uploading')",
            (run_id, job_ref, backend, purpose, sha256, size, mime_type, display_name, name,
             now()))
        return int(cur.lastrowid or 0)

    @mapped
    def upload_active(self, upload_id: int, *, name: str, uri: str,
                      expires_at: str | None) -> None:
        self.conn.execute(
            "UPDATE uploads SET name=?, uri=?, expires_at=?, created_at=?, state='active'"
            " WHERE id=?", (name, uri, expires_at, now(), upload_id))

    @mapped
    def end_upload(self, upload_id: int, state: str) -> None:
        self.conn.execute("UPDATE uploads SET state=?, ended_at=? WHERE id=?",
                          (state, now(), upload_id))

    @mapped
    def open_uploads(self, backend: str, *, job_ref: str | None = None) -> list[UploadRow]:
        """Uploads on `backend` not known to be gone, held by online runs (`job_ref` None) or
        by the batch job `job_ref`."""
        sql = ("SELECT * FROM uploads WHERE state IN ('uploading', 'active') AND backend=?"
               + (" AND job_ref=?" if job_ref is not None else " AND job_ref IS NULL")
               + " ORDER BY id")
        args: tuple[Any, ...] = (backend, job_ref) if job_ref is not None else (backend,)
        return [UploadRow(**dict(r)) for r in self.conn.execute(sql, args)]

    @mapped
    def adopt_upload(self, upload_id: int, run_id: int) -> None:
        self.conn.execute("UPDATE uploads SET run_id=? WHERE id=?", (run_id, upload_id))
