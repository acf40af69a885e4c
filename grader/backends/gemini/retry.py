"""The retry policy of the Gemini backends: the shared one (`grader.backends.retry`: backoff
with full jitter honouring RetryInfo / Retry-After, a streak of connection failures stopping the
run), with Gemini's error mapping (`errors`) and its one message when the API is unreachable.
"""

from __future__ import annotations

import time

from grader.backends.gemini.errors import GeminiErrors
from grader.backends.retry import CONNECT_BACKOFF_CAP_S, UNREACHABLE_AFTER_S, Retries
from grader.errors import BackendError

__all__ = ["CONNECT_BACKOFF_CAP_S", "UNREACHABLE_AFTER_S", "GeminiRetries"]


class GeminiRetries(GeminiErrors, Retries):
    """Mixed into `GeminiBackend` (which sets the backoff and the connection-failure streak
    when it is made)."""

    def _unreachable(self, cause: Exception) -> BackendError:
        n, secs = self._conn_failures, time.monotonic() - self._conn_down_since
        return BackendError(
            f"cannot reach the {self.name} API at {self.base_url or 'the default endpoint'}: "
            f"{n} connection attempts in a row failed over {secs:.0f} s (last: "
            f"{type(cause).__name__}: {cause})",
            fix=f"check the network connection{self._endpoint_hint()}, then run the same "
            "command again: finished grades are kept and nothing is paid twice",
            transient=False, run_wide=True)
