"""The retry policy every network backend shares: each call goes through `_with_retries`.

The SDKs' own retries are off: this module owns retry (exponential backoff with full jitter,
honouring the server's requested delay: Gemini's RetryInfo, a Retry-After header), so every
attempt is counted, spaced and reported in `GradeResponse.retries`. A streak of connection
failures across all concurrent calls means the service is unreachable: the run stops with one
message (`_unreachable`) instead of retrying every student. A backend supplies `_classify` (its
SDK's exceptions as `BackendError`) and `_unreachable` (that one message, naming its endpoint).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from grader.config.settings import Settings
from grader.errors import BackendError
from grader.online.ratelimit import Quota

T = TypeVar("T")

# A streak of connection failures must also last this long before the run stops: a burst of
# resets on every open connection at once (a proxy restarting) is retried, not fatal.
UNREACHABLE_AFTER_S = 10.0
CONNECT_BACKOFF_CAP_S = 2.0
# Statuses a slot hands back to the quota (`Slot.refused`): the server says it is full. A model
# server with all its parallel slots busy answers 503 where a cloud API answers 429.
REFUSED_STATUS = frozenset({429, 503})


class Retries:
    """Mixed into a backend, which sets these attributes when it is made."""

    settings: Settings
    on_retry: Callable[[BackendError], None] | None
    quota: Quota
    backoff_base_s: float
    backoff_cap_s: float
    _conn_failures: int
    _conn_down_since: float

    def _classify(self, e: Exception, what: str) -> BackendError | None:
        """`e` as a BackendError; None when it is not the service's doing (a bug)."""
        raise NotImplementedError

    def _unreachable(self, cause: Exception) -> BackendError:
        """The one run-wide message when the service cannot be reached."""
        raise NotImplementedError

    async def _with_retries(self, call: Callable[[], Awaitable[T]], *, what: str,
                            retry: bool = True) -> tuple[T, int]:
        retries = 0
        while True:
            try:
                result = await call()
            except Exception as e:
                err = self._classify(e, what)
                if err is None:
                    raise
                err.retries = retries
                if err.status is None and err.transient:  # the service was not reached at all
                    if not self._conn_failures:
                        self._conn_down_since = time.monotonic()
                    self._conn_failures += 1
                    if (self._conn_failures >= self.settings.max_connection_failures
                            and time.monotonic() - self._conn_down_since
                            >= UNREACHABLE_AFTER_S):
                        raise self._unreachable(e) from e
                if not err.transient or not retry or retries >= self.settings.max_retries:
                    if err.transient:
                        err = self._give_up(err, retries)
                    raise err from e
                if self.on_retry is not None:
                    self.on_retry(err)
                # no server load to spare when it was not reached: retry soon, so an outage is
                # recognised within seconds rather than behind one long backoff
                cap = CONNECT_BACKOFF_CAP_S if err.status is None else self.backoff_cap_s
                await asyncio.sleep(self._backoff(retries, err.retry_after, cap))
                retries += 1
            else:
                self._conn_failures = 0
                return result, retries

    async def _within_quota(self, tokens: int, what: str, call: Callable[[], Awaitable[T]],
                            refused: frozenset[int] = frozenset({429})) -> T:
        """One attempt, sent when the quota lets it leave (`Quota.acquire`); a refusal (a status
        in `refused`) is told to the quota (which window, how long to hold) before it is
        retried."""
        async with self.quota.acquire(tokens) as slot:
            try:
                return await call()
            except Exception as e:
                err = self._classify(e, what)
                if err is not None and err.status in refused:
                    slot.refused(err.quota, err.retry_after)
                raise

    def _backoff(self, attempt: int, retry_after: float | None, cap: float) -> float:
        """Full jitter: uniform(0, min(cap, base * 2^attempt)); the server's delay is a floor."""
        jitter = random.uniform(0, min(cap, self.backoff_base_s * 2 ** attempt))
        if retry_after is not None:
            return retry_after + min(jitter, 0.1 * retry_after + 0.05)
        return jitter

    def _give_up(self, err: BackendError, retries: int) -> BackendError:
        return BackendError(f"{err.message} (gave up after {retries} retries)", fix=err.fix,
                            transient=True, status=err.status, retry_after=err.retry_after,
                            retries=retries)
