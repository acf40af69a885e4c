"""Explicit context caching of the marking scheme: one cache per run holds what every request
repeats (system instruction, rendered rubric, exemplars, reference files), and each request
names it instead of sending it again.

`CacheKeeper` is the cache's whole life, on a backend with the `SupportsCaching` capability:

- **When.** `--cache auto` (the default) caches when the static prefix reaches the model table's
  `cache_min_tokens`, counted with countTokens (skipped when the prefix's bytes already bound it
  below: a token covers at least one byte); `on` makes a prefix below the minimum an error;
  `off` never caches. Without a cache the prefix still comes first and byte-identical, so
  Gemini's implicit caching applies.
- **Store first.** The cache is recorded (state `creating`, with its display name) before it is
  asked for, and its name, size and expiry once it exists. At the start of a run, caches that a
  killed run left are reused when their content matches and they have not expired, and deleted
  otherwise (a cache whose creation was cut short is found by its display name).
- **TTL.** Sized from the expected run time (`cache_ttl_s` overrides it), and extended (PATCH)
  once half of it is left, so a run that outlives its estimate keeps its cache.
- **Gone.** A request refused because the cache expired or vanished makes the keeper create it
  again (once, however many requests noticed) and the request is sent again: the cache name is
  not part of the request's hash, so nothing paid for is lost. If creating fails, the run goes
  on without a cache and says so once. At most `MAX_RECREATES` times: a cache that keeps
  vanishing costs a creation each time (more than the grading, with a small class), so past
  that the run sends the marking scheme inline for the rest of the run, says so once, and the
  refused request goes out without a cache: no student fails because the cache vanished.
- **Budget.** With `--budget`, creating the cache (and each recreation or extension) is paid
  from the same budget: its creation and storage for one TTL count as spent. It is bought only
  when the budget left pays for it and for the least one student's call may hold beside it
  (the call's worst case at its smallest output cap, without the student's parts); otherwise
  the marking scheme is sent inline and the run says why.
- **Cost.** Creating a cache is booked once at the input price, and storage per hour for the
  time it lived, at the model table's `cache_storage_hour`; both are stored with the cache and
  added to the run's cost. `close()` deletes the cache (at the end, and on Ctrl-C/SIGTERM).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from grader.backends import CacheInfo, SupportsCaching
from grader.config import models
from grader.config.models import EstimateAssumptions, Media, Pricing
from grader.config.settings import Settings
from grader.errors import BackendError, ConfigError
from grader.grading.records import CacheRow
from grader.online.budget import TURN_OVERHEAD_TOKENS, Spending
from grader.online.files import now, parse, stamp
from grader.online.ratelimit import MAX_IN_FLIGHT, quota_bound
from grader.online.strays import Strays
from grader.prompting.request import GradeRequest
from grader.store import Store

MIN_TTL_S, MAX_TTL_S = 300.0, 3600.0
# Times a run creates its cache again after it expired or vanished: each costs the whole
# prefix at the input price, so a cache that keeps vanishing (a red team saw eleven) soon costs
# more than the grading. Two covers an ordinary expiry or a clean-up elsewhere; past that the
# marking scheme is sent inline (Gemini's implicit cache may still serve it).
MAX_RECREATES = 2


def content_hash(req: GradeRequest, key: str) -> str:
    """What a cache holds: model, system instruction, static prefix, reference files."""
    h = hashlib.sha256()
    for piece in (key, req.model, req.system, req.static_prefix,
                  *(hashlib.sha256(p.data or b"").hexdigest() for p in req.reference_parts)):
        h.update(piece.encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")
    return h.hexdigest()


def token_bound(req: GradeRequest, media: Media, pdf_pages: int) -> int:
    """Tokens the static prefix cannot exceed: a token covers at least one byte of UTF-8."""
    n = len(req.system.encode("utf-8", "surrogatepass"))
    n += len(req.static_prefix.encode("utf-8", "surrogatepass")) + 2 * TURN_OVERHEAD_TOKENS
    for p in req.reference_parts:
        n += (media.pdf_page_tokens * pdf_pages if p.mime_type == "application/pdf"
              else media.image_tokens)
    return n


def expected_seconds(calls: int, settings: Settings, a: EstimateAssumptions) -> float:
    """How long `calls` requests take at the configured concurrency and quota (as estimated by
    `grade estimate`)."""
    return quota_bound(calls, a.seconds_per_call, rpm=settings.rpm,
                       in_flight=settings.concurrency or MAX_IN_FLIGHT)


def ttl_for(expected_s: float, settings: Settings) -> float:
    """The cache's TTL: `cache_ttl_s`, else the expected run time with a quarter and two minutes
    to spare, within 5..60 minutes (it is extended while the run lasts, and a killed run's
    cache then lives at most an hour)."""
    if settings.cache_ttl_s is not None:
        return settings.cache_ttl_s
    return min(MAX_TTL_S, max(MIN_TTL_S, expected_s * 1.25 + 120.0))


@dataclass
class CacheReport:
    """What the run's summary says about caching."""

    used: bool
    reason: str  # why not
    noticed: bool = False  # the reason was already said as a notice during the run
    tokens: int = 0
    created: int = 0
    reused: int = 0
    recreated: int = 0
    extended: int = 0


class CacheKeeper:
    """One run's explicit cache (see the module docstring). Used from one event loop."""

    def __init__(self, store: Store, backend: SupportsCaching, run_id: int, *,
                 pricing: Pricing, ttl_s: float,
                 on_notice: Callable[[str], None] | None = None,
                 spending: Spending | None = None):
        self.store, self.backend, self.run_id = store, backend, run_id
        self.pricing = pricing
        self.spending = spending  # with --budget, the cache is paid from the run's budget
        self._tokens = 0  # the prefix's counted tokens (what a creation is priced at)
        self.ttl_s = ttl_s
        self.on_notice = on_notice
        self.key = backend.service_key
        self.name: str | None = None
        self.report = CacheReport(used=False, reason="")
        self._row: CacheRow | None = None
        self._expires: datetime | None = None
        self._probe: GradeRequest | None = None
        self._hash = ""
        self._lock = asyncio.Lock()
        self._extending: asyncio.Task[None] | None = None

    # --- start ---------------------------------------------------------------------------------

    async def start(self, probe: GradeRequest, *, mode: str, min_tokens: int | None,
                    bound: int, count: Callable[[GradeRequest], Awaitable[int]]) -> None:
        """Clean up what killed runs left, then reuse or create this run's cache (with
        `--cache off`: only the clean-up). `probe` is a request with the run's static prefix
        and no student parts; `bound` bounds its tokens; `count` is countTokens."""
        self._probe, self._hash = probe, content_hash(probe, self.key)
        reused = await self._adopt(reuse=mode != "off")
        if reused or mode == "off":
            return
        if min_tokens is None:
            self._not_used(f"the model table has no cache minimum for {probe.model}", mode)
            return
        tokens = bound if bound < min_tokens else await count(probe)
        if tokens < min_tokens:
            self._not_used(f"the marking scheme is {tokens:,} tokens"
                           f"{' at most' if tokens == bound else ''}, below {probe.model}'s "
                           f"minimum of {min_tokens:,} for an explicit cache; implicit caching "
                           "applies (the prefix is sent first and identical)", mode)
            return
        self._tokens = tokens
        why = self._unaffordable()
        if why is not None:
            self._not_used(why, mode, fix="raise --budget, or use --cache off")
            return
        await self._create(first=True)

    def _not_used(self, why: str, mode: str, *,
                  fix: str = "use --cache auto (cache when the marking scheme is large "
                  "enough) or --cache off") -> None:
        if mode == "on":
            raise ConfigError(f"--cache on: cannot cache: {why}", fix=fix)
        self.report = CacheReport(used=False, reason=why)

    # --- money ---------------------------------------------------------------------------------

    def _cache_usd(self, tokens: int, *, create: bool) -> float:
        """What the budget pays for the cache: storage for one TTL, and its creation."""
        day = models.today()  # the model table's date (GRADER_TODAY), as calls are priced
        usd = (self.pricing.cache_storage_per_hour(tokens, day) or 0.0) * self.ttl_s / 3600
        if create:
            usd += self.pricing.cache_create(tokens, day) or 0.0
        return usd

    def _unaffordable(self, *, create: bool = True) -> str | None:
        """Why the budget cannot buy the cache (creation, or only its extension) beside the
        least one student's call may hold (None: it can, or there is no budget). The call is
        the probe's worst case at its smallest output cap: every student's call costs more."""
        budget = self.spending.budget if self.spending is not None else None
        if budget is None or self._probe is None:
            return None
        cache = self._cache_usd(self._tokens, create=create)
        q = self.spending.quote(self._probe, models.today()) if self.spending else None
        call = q.usd(q.least) if q is not None else 0.0
        left = budget.limit - budget.spent - budget.reserved
        if cache + call <= left:
            return None
        return (f"the budget left (${max(left, 0.0):.4f} of --budget ${budget.limit:g}) cannot "
                f"pay for the context cache (${cache:.4f} for "
                f"{'creating it and ' if create else ''}keeping it {self.ttl_s / 60:.0f} "
                f"minutes) and a student's call beside it (at least ${call:.4f}); the "
                "marking scheme is sent with every request instead")

    def _pay(self, usd: float) -> None:
        if self.spending is not None and self.spending.budget is not None:
            self.spending.budget.pay(usd)

    def _give_up(self, why: str) -> None:
        """Go on without an explicit cache for the rest of the run; say why once."""
        self.name = None
        self.report.used = False
        self.report.reason = why
        if self.on_notice is not None and not self.report.noticed:
            self.on_notice("context cache: " + why)
            self.report.noticed = True

    async def _adopt(self, *, reuse: bool) -> bool:
        """Caches left by runs that died (we hold the run lock, so every open row is an
        orphan): reuse one that matches and is not near its end (when `reuse`), delete the
        others."""
        rows = self.store.open_caches(self.key)
        if not rows:
            return False
        strays = Strays(self.backend.list_caches, self.backend.delete_cache)
        reused = False
        for row in rows:
            try:
                if row.state == "creating" or row.name is None:
                    await strays.delete(row.display_name)
                    self.store.end_cache(row.id, "failed", None)
                    continue
                expires = parse(row.expires_at)
                if (reuse and not reused and row.content_hash == self._hash
                        and expires is not None
                        and expires - now() > timedelta(seconds=30)):
                    info = await self.backend.get_cache(row.name)
                    if info is not None:
                        info = await self.backend.extend_cache(row.name, self.ttl_s)
                    if info is not None:
                        self._row = row
                        self._use(info, adopted=True)
                        reused = True
                    else:
                        self._end(row, "expired", expires)
                    continue
                deleted = await self.backend.delete_cache(row.name)
                self._end(row, "deleted" if deleted else "expired", expires)
            except BackendError as e:
                if e.run_wide:
                    raise
        return reused

    # --- the cache ------------------------------------------------------------------------------

    async def _create(self, *, first: bool) -> None:
        assert self._probe is not None
        display = f"grader-{self._hash[:12]}-{secrets.token_hex(4)}"
        row_id = self.store.begin_cache(run_id=self.run_id, backend=self.key,
                                        model=self._probe.model, content_hash=self._hash,
                                        display_name=display)
        try:
            info = await self.backend.create_cache(self._probe, ttl_s=self.ttl_s,
                                                   display_name=display)
        except BackendError as e:
            self.store.end_cache(row_id, "failed", None)
            if e.run_wide and e.status in (None, 401):
                raise  # the service cannot be reached or the credentials are wrong
            self._give_up(f"creating the context cache failed ({e.message}); the "
                          "marking scheme is sent with every request instead")
            return
        day = models.today()  # the model table's date (GRADER_TODAY), as calls are priced
        create = self.pricing.cache_create(info.tokens, day)
        per_hour = self.pricing.cache_storage_per_hour(info.tokens, day)
        self._tokens = info.tokens or self._tokens
        self._pay(self._cache_usd(self._tokens, create=True))
        self.store.cache_live(row_id, name=info.name, tokens=info.tokens, create_usd=create,
                              usd_per_hour=per_hour, expires_at=stamp(info.expires_at) or "")
        self._row = next(r for r in self.store.caches(self.run_id) if r.id == row_id)
        if first:
            self.report.created += 1
        else:
            self.report.recreated += 1
        self._use(info, adopted=False)

    def _use(self, info: CacheInfo, *, adopted: bool) -> None:
        assert self._row is not None
        self.name = info.name
        self._expires = info.expires_at
        if adopted:
            self.store.cache_expires(self._row.id, stamp(info.expires_at) or "",
                                     run_id=self.run_id)
            self.report.reused += 1
        self.report.used = True
        self.report.tokens = info.tokens or self._row.tokens or 0
        self.report.reason = ""

    def _end(self, row: CacheRow, state: str, expires: datetime | None) -> None:
        """Close `row`'s life, with its storage from creation until now (deleted) or until it
        expired, whichever came first."""
        end = now() if expires is None else min(now(), expires)
        created = parse(row.created_at) or end
        hours = max(0.0, (end - created).total_seconds() / 3600)
        storage = row.usd_per_hour * hours if row.usd_per_hour is not None else None
        self.store.end_cache(row.id, state, storage, stamp(end))

    # --- per request ----------------------------------------------------------------------------

    async def apply(self, req: GradeRequest) -> GradeRequest:
        """`req` naming the cache (when there is one); starts extending it when half of its TTL
        is left. While the cache is being created again (`recover`) this waits for it: a
        request made meanwhile would otherwise go out without one, and pay for the marking
        scheme in full."""
        if self._lock.locked():
            async with self._lock:
                pass
        name = self.name
        if name is None:
            return req if req.cached_content is None else req.model_copy(
                update={"cached_content": None})
        if (self._expires is not None and self._extending is None
                and self._expires - now() < timedelta(seconds=self.ttl_s / 2)):
            self._extending = asyncio.create_task(self._extend(name))
        return req.model_copy(update={"cached_content": name})

    async def _extend(self, name: str) -> None:
        if self._unaffordable(create=False) is not None:
            self._extending = None
            return  # it expires; the request that finds it gone sends the scheme inline
        self._pay(self._cache_usd(self._tokens, create=False))
        try:
            info = await self.backend.extend_cache(name, self.ttl_s)
        except BackendError:
            info = None  # it may still expire: a request then recreates it
        finally:
            self._extending = None
        if info is not None and self.name == name and self._row is not None:
            self._expires = info.expires_at
            self.store.cache_expires(self._row.id, stamp(info.expires_at) or "")
            self.report.extended += 1

    async def recover(self, gone: str | None) -> None:
        """A request was refused because cache `gone` expired or vanished: create it again
        (once, whoever noticed first), or go on without one if that fails, if it was already
        created again `MAX_RECREATES` times, or if the budget cannot pay for it."""
        async with self._lock:
            if gone is None or gone != self.name or self._row is None:
                return  # already recreated (or given up) by another request
            self._end(self._row, "expired", self._expires)
            self.name, self._row = None, None
            if self.report.recreated >= MAX_RECREATES:
                self._give_up(f"the context cache expired or was deleted on the service "
                              f"{self.report.recreated + 1} times; it is not created again, and "
                              "the marking scheme is sent with every request for the rest of "
                              "the run (if the service's clean-up deletes caches, use "
                              "--cache off)")
                return
            why = self._unaffordable()
            if why is not None:
                self._give_up(why)
                return
            if self.on_notice is not None:
                self.on_notice("context cache: the cache expired or was deleted on the "
                               "service; it is created again and the affected requests are "
                               "sent again")
            await self._create(first=False)

    async def close(self) -> None:
        """Delete the cache (end of run, Ctrl-C, SIGTERM) and book its storage."""
        if self._extending is not None:
            self._extending.cancel()
        row, name = self._row, self.name
        self.name, self._row = None, None
        if row is None or name is None:
            return
        try:
            deleted = await self.backend.delete_cache(name)
        except BackendError:
            return  # left for the next run, which deletes it (or it expires)
        self._end(row, "deleted" if deleted else "expired", self._expires)

