"""Pure retry decisions: classify an attempt, read the server's hints, choose a wait.

Nothing here reads a clock or sleeps: callers pass ``server_now``/``client_wall``
(epoch seconds) and a ``random.Random``. That keeps every branch testable with
tables and Hypothesis.

Backoff is *full jitter*: the n-th retry waits ``uniform(0, min(backoff_max,
backoff_base * 2 ** (n - 1)))``. Of the jitter schemes AWS compared
("Exponential Backoff And Jitter", 2015), full jitter spreads competing
workers the most and makes the fewest calls in total; its one drawback, a wait
near zero, is harmless because rate-limit waits never come from backoff alone
when the server gave a hint, and they are batch-wide (see ``pacing``).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Literal


class Cause(StrEnum):
    """Why an attempt did not produce a trade."""

    RATE_LIMITED = "rate_limited"  # 429
    SERVER_ERROR = "server_error"  # 5xx
    REQUEST_TIMEOUT = "request_timeout"  # 408 from the server
    TIMEOUT = "timeout"  # our connect/read/write timeout or the per-attempt deadline
    CONNECT_ERROR = "connect_error"  # refused, DNS, TLS handshake
    CONNECTION_CLOSED = "connection_closed"  # closed before or while answering, bad framing
    # No free connection in *our* pool: local capacity, not the gateway throttling.
    POOL_TIMEOUT = "pool_timeout"
    INVALID_BODY = "invalid_body"  # a 2xx whose body is not a trade
    BODY_TOO_LARGE = "body_too_large"
    CLIENT_ERROR = "client_error"  # other 4xx: permanent
    REDIRECT = "redirect"  # 3xx: not followed, so a token never travels to another host


RETRYABLE: frozenset[Cause] = frozenset(
    {
        Cause.RATE_LIMITED,
        Cause.SERVER_ERROR,
        Cause.REQUEST_TIMEOUT,
        Cause.TIMEOUT,
        Cause.CONNECT_ERROR,
        Cause.CONNECTION_CLOSED,
        Cause.POOL_TIMEOUT,
        Cause.INVALID_BODY,
    }
)


def classify_status(status: int) -> Cause | None:
    """The cause for an HTTP status; ``None`` means the status itself is a success."""
    if 200 <= status < 300:
        return None
    if status == 429:
        return Cause.RATE_LIMITED
    if status == 408:
        return Cause.REQUEST_TIMEOUT
    if status >= 500:
        return Cause.SERVER_ERROR
    if 300 <= status < 400:
        return Cause.REDIRECT
    return Cause.CLIENT_ERROR


DelaySource = Literal["retry_after", "x_ratelimit_reset", "backoff"]


@dataclass(frozen=True, slots=True)
class WaitHint:
    """A wait the server asked for, already turned into seconds from now."""

    delay: float
    source: DelaySource
    raw: str


_DELAY_SECONDS = re.compile(r"\d{1,15}(?:\.\d{1,9})?")
# X-RateLimit-Reset is either a delta or an epoch timestamp; no gateway sends a
# delta of 30 years, so anything past 2001-09-09 is read as an epoch.
_EPOCH_SECONDS_FLOOR = 1e9
_EPOCH_MILLIS_FLOOR = 1e12


def parse_http_date(value: str) -> float | None:
    """Epoch seconds for an RFC 9110 HTTP-date (IMF-fixdate, RFC 850 or asctime), else None."""
    try:
        moment = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:
        # asctime carries no zone; HTTP-dates are always GMT.
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.timestamp()
    except (OverflowError, OSError, ValueError):
        return None


def server_now(headers: Mapping[str, str], client_wall: float) -> float:
    """The server's clock as its ``Date`` header tells it, else ours.

    HTTP-date hints and epoch resets are read against this, so a client clock
    that is off does not make us hammer early or sleep needlessly.
    """
    date = headers.get("date")
    parsed = parse_http_date(date) if date else None
    return client_wall if parsed is None else parsed


def parse_retry_after(value: str, now: float) -> float | None:
    """Seconds to wait for a ``Retry-After`` value, or None when it is not one.

    ``now`` is the server's clock (``server_now``). A date in the past means no
    wait. Garbage means "no hint": the caller falls back to backoff and logs it.
    """
    text = value.strip()
    if _DELAY_SECONDS.fullmatch(text):
        return float(text)
    when = parse_http_date(text)
    if when is None:
        return None
    return max(0.0, when - now)


def parse_ratelimit_reset(value: str, now: float) -> float | None:
    """Seconds until an ``X-RateLimit-Reset`` (delta, epoch seconds or epoch millis)."""
    text = value.strip()
    if not _DELAY_SECONDS.fullmatch(text):
        return None
    number = float(text)
    if number >= _EPOCH_MILLIS_FLOOR:
        return max(0.0, number / 1000.0 - now)
    if number >= _EPOCH_SECONDS_FLOOR:
        return max(0.0, number - now)
    return number


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    text = value.strip()
    return int(text) if text.isdigit() and text.isascii() else None


def wait_hint(headers: Mapping[str, str], client_wall: float) -> WaitHint | None:
    """The server's wait hint on a throttled or unavailable response, if it gave one.

    ``Retry-After`` wins; otherwise ``X-RateLimit-Reset`` counts when the quota
    is spent (``X-RateLimit-Remaining: 0``, or no remaining count at all).
    ``headers`` must look names up case-insensitively (``httpx.Headers`` does).
    """
    now = server_now(headers, client_wall)
    retry_after = headers.get("retry-after")
    if retry_after is not None:
        delay = parse_retry_after(retry_after, now)
        if delay is not None:
            return WaitHint(delay, "retry_after", retry_after)
    reset = headers.get("x-ratelimit-reset")
    if reset is not None and _int_header(headers, "x-ratelimit-remaining") in (0, None):
        delay = parse_ratelimit_reset(reset, now)
        if delay is not None:
            return WaitHint(delay, "x_ratelimit_reset", reset)
    return None


def unreadable_hint(headers: Mapping[str, str]) -> str | None:
    """A ``Retry-After`` that was sent but could not be read (for the audit log)."""
    value = headers.get("retry-after")
    if value is None:
        return None
    return value if parse_retry_after(value, 0.0) is None else None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try one trade. Defaults live here and nowhere else."""

    max_attempts: int = 5
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    # The longest single wait we accept, server hints included. A longer hint
    # is not shortened (that only earns another 429): the trade is deferred.
    max_wait: float = 300.0
    # Spread of the batch's release after a pause, so workers do not stampede.
    release_jitter: float = 0.25

    def backoff(self, retry_number: int, rng: random.Random) -> float:
        """Full-jitter wait before retry ``retry_number`` (1 = the first retry)."""
        exponent = min(max(retry_number - 1, 0), 62)
        ceiling = min(self.backoff_max, self.backoff_base * math.ldexp(1.0, exponent))
        return rng.uniform(0.0, ceiling)


@dataclass(frozen=True, slots=True)
class Retry:
    """Try again after ``delay`` seconds; ``batch_wide`` pauses every worker."""

    delay: float
    source: DelaySource
    batch_wide: bool


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Stop trying this trade; ``reason`` is the failure record's reason."""

    reason: str
    detail: str


def decide(
    policy: RetryPolicy,
    *,
    attempt: int,
    cause: Cause,
    status: int | None,
    hint: WaitHint | None,
    rng: random.Random,
) -> Retry | GiveUp:
    """What to do after attempt number ``attempt`` (1-based) failed with ``cause``."""
    if cause is Cause.REDIRECT:
        return GiveUp(f"http_{status}", f"HTTP {status}: redirects are not followed")
    if cause is Cause.CLIENT_ERROR:
        return GiveUp(f"http_{status}", f"HTTP {status}: not retried")
    if cause not in RETRYABLE:
        return GiveUp(cause.value, f"{cause.value}: not retried")
    if hint is not None:
        retry = Retry(hint.delay, hint.source, batch_wide=True)
    else:
        retry = Retry(
            policy.backoff(attempt, rng), "backoff", batch_wide=cause is Cause.RATE_LIMITED
        )
    if retry.delay > policy.max_wait:
        return GiveUp(
            "deferred",
            f"gateway asked to wait {retry.delay:.0f}s ({retry.source}), more than "
            f"max_wait {policy.max_wait:g}s; run again later",
        )
    if attempt >= policy.max_attempts:
        what = f"HTTP {status}" if status is not None else cause.value
        return GiveUp("retries_exhausted", f"{attempt} attempts, last: {what}")
    return retry
