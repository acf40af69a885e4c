"""Mutable state of the fake Gemini server: settings, quota windows, fault dice and counters.

One lock guards everything, so handler threads can share it; nothing here blocks (sleeps happen in
the handler thread, outside the lock).

Quotas are sliding windows on the fake's clock (`monotonic`, moved by `advance`), checked together
when a generateContent call arrives (`admit`): requests per minute (`rpm`), input tokens per minute
(`tpm`, the prompt tokens the reply reports as `promptTokenCount`, counted before the call is
admitted), and USD per 10 minutes (`spend_limit_usd`). A refused call counts in no window, so a
client that waits as told is admitted; `stats()` tells how many calls each window refused and the
most requests and tokens any window held, so a test can assert a client never went over.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field, fields
from typing import Any

TRANSIENT_FAULTS = ("500", "503", "hang", "429")
CONTENT_FAULTS = ("malformed", "empty", "safety")
# Only by `inject()`: final errors a test may want on one call; "expire_cache" expires the cache
# the next generateContent names (as the clock would), so that call is refused as a real one is.
SCRIPTED_ONLY = ("400", "401", "403", "404", "504", "expire_cache")
# What `inject_for(endpoint, ...)` may script for the cache and file endpoints.
ENDPOINT_FAULTS = ("400", "403", "404", "429", "500", "503")
# Only by `inject()` or an explicit `fault_kinds`: the spend-based 429 (USD per 10 minutes).
QUOTA_FAULTS = ("429_spend",)
ALL_FAULTS = TRANSIENT_FAULTS + CONTENT_FAULTS + SCRIPTED_ONLY + QUOTA_FAULTS
# Never drawn by fail_rate: "expire_cache" acts on the cache the next call names, which only a
# test that scripts it (`inject`) can expect; `fault_kinds` refuses it, and the fake's CLI
# offers only RANDOM_FAULTS.
NOT_RANDOM = ("expire_cache",)
RANDOM_FAULTS = tuple(k for k in ALL_FAULTS if k not in NOT_RANDOM)


@dataclass
class FakeConfig:
    """Runtime knobs; `FakeGemini.configure()` and `POST /_fake/config` change them."""

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    rpm: int | None = None
    rpm_window_s: float = 60.0  # the window of `rpm` and of `tpm`
    tpm: int | None = None  # input tokens per window: 429 once a call would go over
    fail_rate: float = 0.0
    fault_kinds: tuple[str, ...] = TRANSIENT_FAULTS + CONTENT_FAULTS
    hang_s: float = 30.0
    fault_retry_delay_s: float = 1.0
    seed: int = 0
    api_key: str | None = None
    model_version: str | None = None
    spend_limit_usd: float | None = None  # 429 once calls in the window cost this much
    spend_window_s: float = 600.0
    # A GCS emulator (http://host:port) holding the objects gs:// URIs name: Vertex requests
    # and caches naming a missing object are refused. None: gs:// URIs are not checked.
    storage_host: str | None = None
    # Batch jobs created from now on: seconds PENDING, then seconds RUNNING (on the fake's
    # clock, see `advance`), then this end state: SUCCEEDED, FAILED or EXPIRED.
    batch_pending_s: float = 0.0
    batch_running_s: float = 0.0
    batch_end_state: str = "SUCCEEDED"
    # models.list / models.get (`_fake_models`): ids listed beyond the model table's current
    # rows (a model the table lacks, or one it has shut down), and ids hidden from the listing
    listed_extra: tuple[str, ...] = ()
    listed_hidden: tuple[str, ...] = ()

    @classmethod
    def names(cls) -> set[str]:
        return {f.name for f in fields(cls)}


def check_changes(changes: dict[str, Any]) -> dict[str, Any]:
    """Validate config changes; raises ValueError naming the bad key."""
    unknown = set(changes) - FakeConfig.names()
    if unknown:
        raise ValueError(f"unknown fake config keys {sorted(unknown)}; "
                         f"known: {sorted(FakeConfig.names())}")
    out = dict(changes)
    if "fault_kinds" in out:
        kinds = tuple(str(k) for k in out["fault_kinds"])
        bad = [k for k in kinds if k not in RANDOM_FAULTS]
        if bad or not kinds:
            scripted = [k for k in bad if k in NOT_RANDOM]
            raise ValueError(
                f"fault_kinds {bad or '[]'} invalid; use some of {list(RANDOM_FAULTS)}"
                + (f" ({', '.join(scripted)} is never drawn at random: script it with "
                   "inject())" if scripted else ""))
        out["fault_kinds"] = kinds
    if "fail_rate" in out and not 0.0 <= float(out["fail_rate"]) <= 1.0:
        raise ValueError("fail_rate must be between 0 and 1")
    if out.get("rpm") is not None and int(out["rpm"]) < 1:
        raise ValueError("rpm must be >= 1 or null")
    if out.get("tpm") is not None and int(out["tpm"]) < 1:
        raise ValueError("tpm must be >= 1 or null")
    if out.get("spend_limit_usd") is not None and float(out["spend_limit_usd"]) <= 0:
        raise ValueError("spend_limit_usd must be > 0 or null")
    for key in ("listed_extra", "listed_hidden"):
        if key in out:
            if isinstance(out[key], str):
                raise ValueError(f"{key} must be a list of model ids, not one string")
            out[key] = tuple(str(m).removeprefix("models/") for m in out[key] or ())
    if "batch_end_state" in out and out["batch_end_state"] not in ("SUCCEEDED", "FAILED",
                                                                      "EXPIRED"):
        raise ValueError("batch_end_state must be SUCCEEDED, FAILED or EXPIRED")
    return out


@dataclass
class Stats:
    requests: int = 0
    by_endpoint: Counter[str] = field(default_factory=Counter)
    by_status: Counter[str] = field(default_factory=Counter)
    by_endpoint_status: dict[str, Counter[str]] = field(default_factory=dict)
    faults: Counter[str] = field(default_factory=Counter)
    billed: Counter[str] = field(default_factory=Counter)
    billed_requests: Counter[str] = field(default_factory=Counter)
    tokens: Counter[str] = field(default_factory=Counter)
    spend_usd: float = 0.0
    caches: Counter[str] = field(default_factory=Counter)  # created, deleted, expired, patched
    cache_usd: dict[str, float] = field(  # creating and keeping caches
        default_factory=lambda: {"create": 0.0, "storage": 0.0})
    files: Counter[str] = field(default_factory=Counter)  # uploaded, bytes, deleted, expired
    in_flight: int = 0
    max_in_flight: int = 0
    rejected: Counter[str] = field(default_factory=Counter)  # 429s by window: rpm, tpm, spend
    rpm_peak: int = 0  # the most requests any RPM window held
    tpm_peak: int = 0  # the most input tokens any TPM window held
    implicit_cache_hits: int = 0  # replies that reported an implicit-cache hit
    implicit_cached_tokens: int = 0  # the tokens those hits reported as cached
    continuations_offered: int = 0  # replies ending with finishReason CONTINUATION
    continuations_requested: int = 0  # requests carrying a continuation token (billed hops)

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "by_endpoint": dict(self.by_endpoint),
            "by_status": dict(self.by_status),
            "by_endpoint_status": {k: dict(v) for k, v in self.by_endpoint_status.items()},
            "faults": dict(self.faults),
            "billed_by_submission": dict(self.billed),
            "billed_by_request": dict(self.billed_requests),
            "tokens": {k: self.tokens.get(k, 0)
                       for k in ("prompt", "candidates", "thoughts", "cached", "total")},
            "spend_usd": self.spend_usd,
            "caches": {k: self.caches.get(k, 0)
                       for k in ("created", "deleted", "expired", "patched")},
            "cache_usd": dict(self.cache_usd),
            "files": {k: self.files.get(k, 0)
                      for k in ("uploaded", "bytes", "deleted", "expired")},
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "rejected": {k: self.rejected.get(k, 0) for k in ("rpm", "tpm", "spend")},
            "rpm_peak": self.rpm_peak,
            "tpm_peak": self.tpm_peak,
            "implicit_cache_hits": self.implicit_cache_hits,
            "implicit_cached_tokens": self.implicit_cached_tokens,
            "continuations_offered": self.continuations_offered,
            "continuations_requested": self.continuations_requested,
        }


class Window:
    """One sliding window of (when, weight) entries and their running total (requests, tokens
    or USD); entries leave `span` seconds after they came."""

    def __init__(self) -> None:
        self.entries: deque[tuple[float, float]] = deque()
        self.total = 0.0

    def clear(self) -> None:
        self.entries.clear()
        self.total = 0.0

    def add(self, now: float, weight: float) -> None:
        self.entries.append((now, weight))
        self.total += weight

    def _drop(self, now: float, span: float) -> None:
        while self.entries and self.entries[0][0] <= now - span:
            self.total -= self.entries.popleft()[1]
        if not self.entries:
            self.total = 0.0  # no float drift left behind

    def wait(self, now: float, span: float, limit: float | None, need: float) -> float | None:
        """None when a call weighing `need` fits now (the window is not full and would not go
        over `limit` with it), else the seconds until enough entries have left. A call that can
        never fit (`need` alone is over the limit) is told to wait the whole window."""
        self._drop(now, span)
        if limit is None or self._fits(self.total, limit, need):
            return None
        left = self.total
        for when, weight in self.entries:
            left -= weight
            if self._fits(left, limit, need):
                return max(0.001, when + span - now)
        return span

    @staticmethod
    def _fits(total: float, limit: float, need: float) -> bool:
        # `total < limit`: a spend window (need 0: the cost is known only afterwards) is full
        # once it reached its limit
        return total < limit and total + need <= limit


class FakeState:
    """Shared by all handler threads of one server."""

    def __init__(self, config: FakeConfig):
        self.config = config
        self.lock = threading.Lock()
        # notified (under `lock`) whenever a request starts or ends: `FakeGemini.wait_until`
        self.changed = threading.Condition(self.lock)
        self.stop = threading.Event()
        self.rng = random.Random(config.seed)
        self.stats = Stats()
        # sliding windows: admitted calls, their input tokens, and billed USD
        self.calls = Window()
        self.input_tokens = Window()
        self.spend = Window()
        self.scripted: deque[str] = deque()
        self.scripted_for: dict[str, deque[str]] = {}
        self.recent: deque[dict[str, Any]] = deque(maxlen=500)
        self.repeats: Counter[str] = Counter()
        self.clock_offset = 0.0  # seconds the fake's clock is ahead (`advance`)
        # cachedContents and Files API objects by name (see _fake_caches, _fake_files)
        self.caches: dict[str, Any] = {}
        self.files: dict[str, Any] = {}
        self.uploads: dict[str, Any] = {}  # resumable upload sessions by upload id
        # implicit caching (`_fake_implicit`): prompt-prefix hashes seen, oldest first, bounded
        self.prefixes: OrderedDict[str, None] = OrderedDict()
        # continuation tokens issued -> (model, the rest of the answer), oldest first, bounded
        self.continuations: OrderedDict[str, tuple[str, str]] = OrderedDict()

    # --- settings -------------------------------------------------------------------------
    def configure(self, changes: dict[str, Any]) -> None:
        checked = check_changes(changes)
        with self.lock:
            for k, v in checked.items():
                setattr(self.config, k, v)
            if "seed" in checked:
                self.rng = random.Random(self.config.seed)
            if "rpm" in checked or "rpm_window_s" in checked:
                self.calls.clear()
            if "tpm" in checked or "rpm_window_s" in checked:
                self.input_tokens.clear()

    def inject(self, kinds: list[str]) -> None:
        bad = [k for k in kinds if k not in ALL_FAULTS]
        if bad:
            raise ValueError(f"unknown fault kinds {bad}; use some of {list(ALL_FAULTS)}")
        with self.lock:
            self.scripted.extend(kinds)

    def inject_for(self, endpoint: str, kinds: list[str]) -> None:
        """Script the next calls of a cache or file endpoint ("cachedContents.create", ...)."""
        bad = [k for k in kinds if k not in ENDPOINT_FAULTS]
        if bad:
            raise ValueError(f"unknown fault kinds {bad}; use some of {list(ENDPOINT_FAULTS)}")
        with self.lock:
            self.scripted_for.setdefault(endpoint, deque()).extend(kinds)

    def fault_for(self, endpoint: str) -> str | None:
        with self.lock:
            queue = self.scripted_for.get(endpoint)
            if not queue:
                return None
            kind = queue.popleft()
            self.stats.faults[f"{endpoint}:{kind}"] += 1
            return kind

    def take_scripted(self, kind: str) -> bool:
        """Pop the next scripted generateContent fault if it is `kind`."""
        with self.lock:
            if self.scripted and self.scripted[0] == kind:
                self.scripted.popleft()
                self.stats.faults[kind] += 1
                return True
            return False

    # --- the clock (cache TTLs, file retention) ---------------------------------------------
    def now(self) -> float:
        """The fake's wall clock: real time plus whatever `advance` added."""
        return time.time() + self.clock_offset

    def monotonic(self) -> float:
        """The clock of the quota windows: monotonic time plus whatever `advance` added."""
        return time.monotonic() + self.clock_offset

    def advance(self, seconds: float) -> float:
        with self.lock:
            self.clock_offset += seconds
            return self.clock_offset

    def reset(self) -> None:
        with self.lock:
            in_flight = self.stats.in_flight
            self.stats = Stats(in_flight=in_flight, max_in_flight=in_flight)
            self.calls.clear()
            self.input_tokens.clear()
            self.spend.clear()
            self.scripted.clear()
            self.scripted_for.clear()
            self.recent.clear()
            self.repeats.clear()
            self.prefixes.clear()
            self.continuations.clear()
            self.rng = random.Random(self.config.seed)

    # --- per request ----------------------------------------------------------------------
    def begin(self, endpoint: str, record: dict[str, Any]) -> None:
        with self.lock:
            self.stats.requests += 1
            self.stats.by_endpoint[endpoint] += 1
            self.stats.in_flight += 1
            self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
            self.recent.append(record)
            self.changed.notify_all()

    def end(self, endpoint: str, status: int) -> None:
        with self.lock:
            self.stats.in_flight -= 1
            self.stats.by_status[str(status)] += 1
            self.stats.by_endpoint_status.setdefault(endpoint, Counter())[str(status)] += 1
            self.changed.notify_all()

    def admit(self, tokens: int) -> tuple[str, float] | None:
        """Quota check for one generateContent call with `tokens` input tokens: None when
        admitted (and counted in the RPM and TPM windows), else which window refused it ("rpm",
        "tpm" or "spend") and the seconds until it would fit. The windows are checked and booked
        under one lock, so a refused call is counted in none of them and concurrent calls
        cannot together go over a limit."""
        with self.lock:
            cfg, now = self.config, self.monotonic()
            checks = (("rpm", self.calls, cfg.rpm_window_s, cfg.rpm, 1),
                      ("tpm", self.input_tokens, cfg.rpm_window_s, cfg.tpm, tokens),
                      ("spend", self.spend, cfg.spend_window_s, cfg.spend_limit_usd, 0))
            for kind, window, span, limit, need in checks:
                wait = window.wait(now, span, limit, need)
                if wait is not None:
                    self.stats.rejected[kind] += 1
                    return kind, wait
            self.calls.add(now, 1)
            self.input_tokens.add(now, tokens)
            self.stats.rpm_peak = max(self.stats.rpm_peak, round(self.calls.total))
            self.stats.tpm_peak = max(self.stats.tpm_peak, round(self.input_tokens.total))
            return None

    def book_spend(self, usd: float) -> None:
        with self.lock:
            self.stats.spend_usd += usd
            self.spend.add(self.monotonic(), usd)

    def pick_fault(self) -> str | None:
        with self.lock:
            if self.scripted:
                kind = self.scripted.popleft()
            elif self.config.fail_rate > 0 and self.rng.random() < self.config.fail_rate:
                kind = self.rng.choice(self.config.fault_kinds)
            else:
                return None
            self.stats.faults[kind] += 1
            return kind

    def draw_fault(self) -> str | None:
        """A random fault (`fail_rate`, `fault_kinds`) for one line of a batch job: the
        scripted faults (`inject`) stay for the generateContent calls they were meant for."""
        with self.lock:
            if self.config.fail_rate <= 0 or self.rng.random() >= self.config.fail_rate:
                return None
            kind = self.rng.choice(self.config.fault_kinds)
            self.stats.faults[f"batch:{kind}"] += 1
            return kind

    def delay_s(self) -> float:
        with self.lock:
            base, jitter = self.config.latency_ms, self.config.jitter_ms
            extra = self.rng.uniform(-jitter, jitter) if jitter > 0 else 0.0
        return max(0.0, base + extra) / 1000

    def asked(self, body_hash: str) -> int:
        """How many times this exact request body was asked before (and count this one)."""
        with self.lock:
            n = self.repeats[body_hash]
            self.repeats[body_hash] += 1
            return n

    def bill(self, key: str, request: str, usage: dict[str, int]) -> None:
        """Count a delivered reply: per submission text, and per request body (sha256)."""
        with self.lock:
            self.stats.billed[key] += 1
            self.stats.billed_requests[request] += 1
            self.stats.tokens["prompt"] += usage.get("promptTokenCount", 0)
            self.stats.tokens["candidates"] += usage.get("candidatesTokenCount", 0)
            self.stats.tokens["thoughts"] += usage.get("thoughtsTokenCount", 0)
            self.stats.tokens["cached"] += usage.get("cachedContentTokenCount", 0)
            self.stats.tokens["total"] += usage.get("totalTokenCount", 0)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return self.stats.to_json()
