"""How a run's requests reach the service: the marking scheme in an explicit cache, reference
files and large student media uploaded, and all of it cleaned up when the run ends.

`open_sending()` prepares it once per run (after the run is recorded, holding the run lock):
uploads and caches left by a killed run are reused or deleted, the rubric's reference files are
uploaded, and the cache is reused or created (`caching`, `files`). Per request, `prepare()` runs
inside `CallLedger.call` right before a request is really sent (never for a reply reused from the
store), naming the cache and uploading media over the inline limits. A request refused because
its cache or a file is gone is recovered with `recover()` and sent again. `close()` deletes the
cache and the uploads (end of run, Ctrl-C, SIGTERM), within `CLOSE_S`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field

from grader.backends import Backend, SupportsCaching, SupportsFiles, media_types
from grader.config.models import Inline, ModelInfo, ModelTable, Pricing
from grader.config.settings import Settings
from grader.errors import BackendError, ConfigError
from grader.intake.limits import DEFAULT_LIMITS
from grader.online.budget import Spending
from grader.online.caching import CacheKeeper, CacheReport, expected_seconds, token_bound, ttl_for
from grader.online.files import Uploads, to_upload, unavailable, uploader
from grader.prompting.request import GradeRequest, Part
from grader.store import Store

CLOSE_S = 30.0  # deleting the cache and uploads at the end may take this long, then it is left
# A request whose file vanished is sent again at most this often; a vanished cache is bounded
# by `caching.MAX_RECREATES` instead (then the request goes out without a cache).
GONE_RETRIES = 3


@dataclass
class Sending:
    """One run's way of sending (see the module docstring)."""

    inline: Inline
    cache: CacheKeeper | None = None
    uploads: Uploads | None = None
    references: tuple[Part, ...] = ()
    files_fix: str | None = None  # media over the inline limits cannot be uploaded: why
    notices: list[str] = field(default_factory=list)

    def check(self, req: GradeRequest, student: str) -> None:
        """Raise SubmissionError (`oversized`) for a request that can be neither sent inline nor
        uploaded (Enterprise without a staging bucket)."""
        if self.files_fix is not None and to_upload(req, self.inline):
            raise unavailable(student, self.files_fix)

    async def prepare(self, req: GradeRequest, holder: str, sent: dict[str, GradeRequest]
                      ) -> GradeRequest:
        """The request as it goes out: uploads attached, the cache named. `sent["request"]`
        keeps it (for `recover`)."""
        if self.uploads is not None:
            if self.references and not all(self.uploads.holds(p.file_uri)
                                            for p in self.references):
                self.references = await self.uploads.attach_references(self.references)
            if req.reference_parts:
                req = req.model_copy(update={"reference_parts": self.references})
            req = await self.uploads.attach(req, holder, self.inline)
        if self.cache is not None:
            req = await self.cache.apply(req)
        sent["request"] = req
        return req

    async def recover(self, err: BackendError, sent: dict[str, GradeRequest]) -> bool:
        """After a request was refused because something it named is gone: make it again.
        False when there is nothing to recover (the error stands)."""
        req = sent.get("request")
        if req is None:
            return False
        if err.gone == "cache" and self.cache is not None and req.cached_content is not None:
            await self.cache.recover(req.cached_content)
            return True
        if err.gone == "file" and self.uploads is not None:
            for p in (*req.reference_parts, *req.student_parts):
                if p.file_uri is not None:
                    self.uploads.forget(p.file_uri)
            return True
        return False

    async def release(self, holder: str) -> None:
        if self.uploads is not None:
            await self.uploads.release(holder)

    @property
    def report(self) -> CacheReport | None:
        return self.cache.report if self.cache is not None else None

    async def close(self) -> None:
        """Delete the cache, then the uploads; whatever is left (no network, out of time) is
        cleaned up by the next run, or expires."""
        async def both() -> None:
            if self.cache is not None:
                with suppress(BackendError):
                    await self.cache.close()
            if self.uploads is not None:
                with suppress(BackendError):
                    await self.uploads.close()

        with suppress(asyncio.TimeoutError):
            await asyncio.wait_for(both(), CLOSE_S)


async def open_sending(store: Store, backend: Backend, run_id: int, *, probe: GradeRequest,
                       row: ModelInfo | None, settings: Settings, tbl: ModelTable,
                       pricing: Pricing | None, calls: int,
                       on_notice: Callable[[str], None] | None = None,
                       spending: Spending | None = None) -> Sending:
    """Prepare the run's cache and uploads (see the module docstring). `probe` is a request
    with the run's static prefix and reference files (bytes) and no student parts; `calls` how
    many students may be sent (for the cache's TTL); `spending`: the run's budget, which pays
    for the cache."""
    s = Sending(inline=tbl.inline)
    try:
        await _open(s, store, backend, run_id, probe=probe, row=row, settings=settings, tbl=tbl,
                    pricing=pricing, calls=calls, on_notice=on_notice, spending=spending)
    except BaseException:
        await s.close()  # what was uploaded or created before the error
        raise
    return s


async def _open(s: Sending, store: Store, backend: Backend, run_id: int, *,
                probe: GradeRequest, row: ModelInfo | None, settings: Settings,
                tbl: ModelTable, pricing: Pricing | None, calls: int,
                on_notice: Callable[[str], None] | None,
                spending: Spending | None = None) -> None:
    files = uploader(backend)
    if isinstance(backend, SupportsFiles) and files is None:
        s.files_fix = backend.files_fix
    if files is not None:
        s.uploads = Uploads(store, files, files=tbl.files, run_id=run_id)
        await s.uploads.adopt()
    refs = probe.reference_parts
    if refs:
        kinds = {p.mime_type for p in refs}
        if not kinds <= media_types(backend):
            refs = ()
            s.notices.append("the rubric's reference files are not sent: this backend reads "
                             "text only")
        elif s.files_fix is not None:
            raise ConfigError("the rubric names reference files, and this backend cannot "
                              "upload them", fix=s.files_fix)
        elif s.uploads is not None:
            refs = await s.uploads.attach_references(refs)
    s.references = refs
    probe = probe.model_copy(update={"reference_parts": refs})
    if not isinstance(backend, SupportsCaching):
        if settings.cache == "on":
            raise ConfigError(f"--cache on: the {backend.name} backend has no "
                              "explicit context cache", fix="use --cache auto or --cache off "
                              "(the local backend keeps the marking scheme in its own KV cache)")
        return
    if pricing is None:
        pricing = Pricing.of(tbl, probe.model)
    ttl = ttl_for(expected_seconds(calls, settings, tbl.estimate), settings)
    s.cache = CacheKeeper(store, backend, run_id, pricing=pricing, ttl_s=ttl,
                          on_notice=on_notice, spending=spending)
    # A model without explicit caching gets none (`caching_notices` said so; Google's implicit
    # cache may serve the byte-identical prefix); caches a killed run left are still cleaned up.
    mode = settings.cache if row is None or row.explicit_cache else "off"
    await s.cache.start(probe, mode=mode,
                        min_tokens=row.cache_min_tokens if row is not None else None,
                        bound=token_bound(probe, tbl.media, DEFAULT_LIMITS.pdf_max_pages),
                        count=backend.count_tokens)
    if mode == "off":  # it only cleaned up after killed runs
        s.cache = None
