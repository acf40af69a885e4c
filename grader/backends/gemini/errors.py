"""What a failed Gemini call means: SDK and transport exceptions mapped to `BackendError`
(`GeminiErrors._classify`, `_api_error`): transient or not, run-wide or this request only,
the server's requested delay (`retry_delay_from`), the spend-based 429 (`is_spend_limit`), and a
4xx that says the request's cache or file is gone (`_gone`).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import aiohttp
import httpx2
from google.auth import exceptions as auth_errors
from google.genai import errors as genai_errors

from grader.config.models import packaged
from grader.config.settings import DEFAULT_GEMINI_MODEL, Settings
from grader.errors import BackendError
from grader.online.ratelimit import QuotaHint
from grader.prompting.request import GradeRequest

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")
# How a 4xx names what a request referred to and the service no longer has: an explicit cache
# ("CachedContent not found (or permission denied)") or an uploaded file ("You do not have
# permission to access the File abc or it may not exist"). Google's exact texts for these are
# reported by users, not documented: matched loosely.
_CACHE_GONE = re.compile(r"cached[ _]?content", re.IGNORECASE)
_FILE_GONE = re.compile(r"\bfile\b.*(not exist|not found|permission)", re.IGNORECASE | re.DOTALL)


def _details(err: genai_errors.APIError) -> list[dict[str, Any]]:
    """The google.rpc detail objects of an error (RetryInfo, QuotaFailure, ...)."""
    details = err.details
    if isinstance(details, dict):
        details = details.get("error", details).get("details", [])
    return [d for d in details if isinstance(d, dict)] if isinstance(details, list) else []


def is_spend_limit(err: genai_errors.APIError) -> bool:
    """A 429 from the spend-based rate limit (USD per rolling 10 minutes), told apart from a
    requests/tokens-per-minute 429 by its QuotaFailure violation or its message."""
    for d in _details(err):
        if str(d.get("@type", "")).endswith("google.rpc.QuotaFailure"):
            for v in d.get("violations") or []:
                if isinstance(v, dict) and "spend" in (
                        f"{v.get('quotaId', '')} {v.get('quotaMetric', '')}").lower():
                    return True
    return "spend" in (err.message or "").lower()


_PERIODS = (("perminute", 60.0), ("perhour", 3600.0), ("perday", 86400.0))


def quota_hint(err: genai_errors.APIError) -> QuotaHint:
    """What a 429's QuotaFailure says about the limit it hit: requests, (input) tokens or
    spend, its value (`quotaValue`) and period (from the quota id, `...PerMinute`), for the
    client-side quota to learn (`Quota`). Google's ids look like
    `GenerateRequestsPerMinutePerProjectPerModel` and
    `GenerateContentPaidTierInputTokensPerModelPerMinute`."""
    for d in _details(err):
        if not str(d.get("@type", "")).endswith("google.rpc.QuotaFailure"):
            continue
        for v in d.get("violations") or []:
            if not isinstance(v, dict):
                continue
            name = f"{v.get('quotaId', '')} {v.get('quotaMetric', '')}".lower()
            kind: Literal["requests", "tokens", "spend", "other"] = (
                "spend" if "spend" in name else "tokens" if "token" in name
                else "requests" if "request" in name else "other")
            try:
                limit: float | None = float(v.get("quotaValue") or 0) or None
            except (TypeError, ValueError):
                limit = None
            period = next((secs for key, secs in _PERIODS if key in name), None)
            return QuotaHint(kind, limit, period)
    return QuotaHint("spend" if is_spend_limit(err) else "other")


def retry_delay_from(err: genai_errors.APIError) -> float | None:
    """Seconds the server asked us to wait: google.rpc.RetryInfo, else a Retry-After header."""
    for d in _details(err):
        if str(d.get("@type", "")).endswith("google.rpc.RetryInfo"):
            m = _DURATION.match(str(d.get("retryDelay", "")))
            if m:
                return float(m.group(1))
    headers = getattr(err.response, "headers", None)
    value = headers.get("retry-after") if headers is not None else None
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            return None
    return None


def _gone(err: BackendError, request: GradeRequest) -> BackendError:
    """`err` marked `gone` when a 4xx says the request's cache or one of its files is no longer
    there: the caller recreates it and sends the same request again."""
    if err.status not in (400, 403, 404):
        return err
    has_files = any(p.file_uri for p in (*request.reference_parts, *request.student_parts))
    kind = ("cache" if request.cached_content and _CACHE_GONE.search(err.message) else
            "file" if has_files and _FILE_GONE.search(err.message) else None)
    if kind is None:
        return err
    return BackendError(err.message, fix=f"the {kind} is recreated and the request sent again",
                        status=err.status, retries=err.retries, gone=kind)


class GeminiErrors:
    """Mixed into `GeminiBackend` (which provides the names, settings and endpoint read here)."""

    name: ClassVar[str]
    vertexai: ClassVar[bool]
    settings: Settings
    model: str
    base_url: str | None
    timeout_s: float
    _auth_fix: Callable[[], str]  # the backend's: how to fix its credentials

    def _endpoint_hint(self) -> str:
        return (f" and GOOGLE_GEMINI_BASE_URL (now {self.base_url})" if self.base_url else "")

    def _classify(self, e: Exception, what: str) -> BackendError | None:
        """Map an SDK/transport exception to a BackendError; None = not ours (a bug)."""
        if isinstance(e, genai_errors.APIError):
            return self._api_error(e, what)
        if isinstance(e, httpx2.TimeoutException | asyncio.TimeoutError
                      | aiohttp.ServerTimeoutError):
            return BackendError(
                f"{self.name} {what} timed out after {self.timeout_s:g} s",
                fix=("raise flex_timeout_s in grader.toml (Flex requests may queue for up to 15 "
                     "minutes)" if self.settings.tier == "flex" else
                     "raise --timeout, or lower --concurrency if the service is overloaded"),
                transient=True, status=408)
        if isinstance(e, httpx2.TransportError | aiohttp.ClientError):
            # aiohttp's connect error text repeats the SSL context object; the OS error is it
            detail = e.os_error if isinstance(e, aiohttp.ClientConnectorError) else e
            return BackendError(
                f"cannot reach the {self.name} API at {self.base_url or 'the default endpoint'}: "
                f"{type(e).__name__}: {detail}",
                fix=f"check your network connection{self._endpoint_hint()}", transient=True)
        if isinstance(e, auth_errors.TransportError):
            return BackendError(f"{self.name}: cannot refresh Google credentials: {e}",
                                fix="check your network connection", transient=True)
        if isinstance(e, auth_errors.GoogleAuthError):
            return BackendError(f"{self.name}: no usable Google credentials: {e}",
                                fix=self._auth_fix(), transient=False, status=401,
                                run_wide=True)
        if isinstance(e, json.JSONDecodeError | genai_errors.UnknownApiResponseError):
            return BackendError(f"{self.name} {what} returned a malformed response body",
                                fix="usually a proxy or service glitch; it is retried",
                                transient=True, status=200)
        return None

    def _api_error(self, e: genai_errors.APIError, what: str) -> BackendError:
        code = int(e.code or 0)
        head = f"{self.name} {what} failed: {code} {e.status or ''}: {e.message or ''}".rstrip()
        if code == 429 and is_spend_limit(e):
            return BackendError(
                f"{self.name} {what}: spend-based rate limit reached (429: your tier's USD "
                f"per rolling 10 minutes, not requests per minute): {e.message or ''}".rstrip(),
                fix="set usage_tier (or spend_per_10min below your tier's limit: "
                f"{packaged().spend_limits.line()}) in grader.toml so grader paces itself, or use "
                "--tier flex (half price); it is retried after the server's delay",
                transient=True, status=code, retry_after=retry_delay_from(e),
                quota=quota_hint(e))
        if code in RETRYABLE_STATUS:
            fix = ("requests or tokens per minute quota: grader waits as the server asks and "
                   "learns the limit; set --rpm / --tpm to your quota to avoid the 429s, or raise "
                   "your quota" if code == 429
                   else "the service is busy; retry later or lower --concurrency")
            return BackendError(head, fix=fix, transient=True, status=code,
                                retry_after=retry_delay_from(e),
                                quota=quota_hint(e) if code == 429 else None)
        text = json.dumps(e.details) if e.details else ""
        if code in {401, 403} or "API_KEY_INVALID" in text or "API key not valid" in text:
            return BackendError(head, fix=self._auth_fix(), status=code, run_wide=True)
        if code == 404:
            fix = (f"check --model (now {self.model!r}; e.g. {DEFAULT_GEMINI_MODEL})"
                   + (" and --location" if self.vertexai else ""))
            return BackendError(head, fix=fix, status=code, run_wide=True)
        # Any other 4xx refuses this one request (too large, unreadable media, ...): the student
        # is flagged request_rejected and the class goes on.
        return BackendError(
            head, status=code, rejected=400 <= code < 500,
            fix="look at this student's files; after a fix, rerun with --retry-flagged "
            "request_rejected (a changed --max-output-tokens or --thinking is retried "
            "on its own)")
