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

import functools
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


DelaySource = Literal["retry_after", "x_ratelimit_reset", "ratelimit_reset", "backoff"]


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


@functools.lru_cache(maxsize=8)  # every response's Date: the same text for a whole second
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


@dataclass(frozen=True, slots=True)
class ServerClock:
    """Bounds on the server's clock minus ours, narrowed by every response's ``Date``.

    A ``Date`` is stamped some time between our send and our receipt, and
    truncated to the second, so one response bounds the offset within a second
    plus the round trip; the bounds of many responses intersect to a few
    milliseconds. ``earliest`` reads the server's clock at its lower bound, so
    a time it announces is never taken as nearer than it is.
    """

    low: float = -math.inf
    high: float = math.inf

    def observe(self, date: str | None, sent_wall: float, received_wall: float) -> ServerClock:
        stamped = parse_http_date(date) if date else None
        if stamped is None or received_wall < sent_wall:
            return self
        low, high = stamped - received_wall, stamped + 1.0 - sent_wall
        if max(low, self.low) > min(high, self.high):
            return ServerClock(low, high)  # a clock was set: start again from here
        if low <= self.low and high >= self.high:
            return self  # nothing narrower: most responses, once the bounds have settled
        return ServerClock(max(low, self.low), min(high, self.high))

    @property
    def spread(self) -> float:
        """How far apart the bounds are: how much ``earliest`` may lag the server's clock."""
        return self.high - self.low

    def earliest(self, client_wall: float) -> float | None:
        """The earliest the server's clock can read now; None before any ``Date``."""
        return client_wall + self.low if math.isfinite(self.low) else None


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
    named = _reset_epoch(text)
    return float(text) if named is None else max(0.0, named - now)


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    text = value.strip()
    return int(text) if text.isdigit() and text.isascii() else None


# The same wait in milliseconds, as some gateways (and Azure's) send beside Retry-After.
_RETRY_AFTER_MS = ("retry-after-ms", "x-ms-retry-after-ms")


def wait_hint(
    headers: Mapping[str, str], client_wall: float, server_time: float | None = None
) -> WaitHint | None:
    """The server's wait hint on a throttled or unavailable response, if it gave one.

    ``Retry-After`` wins (in milliseconds when ``Retry-After-Ms`` says it);
    otherwise ``X-RateLimit-Reset`` counts when the quota is spent
    (``X-RateLimit-Remaining: 0``, or no remaining count at all).
    The IETF ``RateLimit`` reset counts the same way. ``headers`` must look
    names up case-insensitively (``httpx.Headers`` does).

    Dates are read against ``server_time`` (``ServerClock.earliest``) when
    given: it is never ahead of the server's clock, and unlike this response's
    ``Date`` (truncated to the second) it does not overstate a wait by up to
    a second.
    """
    date_now = server_now(headers, client_wall)
    now = date_now if server_time is None else max(server_time, date_now)
    for name in _RETRY_AFTER_MS:
        millis = headers.get(name)
        if millis is not None and _DELAY_SECONDS.fullmatch(millis.strip()):
            return WaitHint(float(millis) / 1000.0, "retry_after", millis)
    retry_after = headers.get("retry-after")
    if retry_after is not None:
        delay = parse_retry_after(retry_after, now)
        if delay is not None:
            return WaitHint(delay, "retry_after", retry_after)
    fields = _x_ratelimit(headers)
    if fields is not None:
        _, remaining, reset, _ = fields
        if reset is not None and remaining in (0, None):
            delay = parse_ratelimit_reset(reset, now)
            if delay is not None:
                return WaitHint(delay, "x_ratelimit_reset", reset)
    quota = _ietf_quota(headers, now)
    if quota is not None and quota.reset is not None and quota.remaining in (0, None):
        raw = headers.get("ratelimit") or headers.get("ratelimit-reset") or ""
        return WaitHint(quota.reset, "ratelimit_reset", raw)
    return None


@dataclass(frozen=True, slots=True)
class Quota:
    """What the quota headers of one response say (each part may be missing).

    ``reset`` is seconds from now until the quota comes back, read against
    the server's ``Date``; ``window`` is the policy window when the gateway
    states it (IETF ``RateLimit-Policy: q=..;w=..``). ``reset_error``: how
    much an epoch reset may overstate the wait, as the server's clock is only
    known within that (0 for a delta). ``reset_at``: the epoch (seconds) an epoch
    reset names, as the gateway wrote it: the same turn named again reads the same,
    whatever the clocks.
    """

    limit: int | None = None
    remaining: int | None = None
    reset: float | None = None
    window: float | None = None
    reset_error: float = 0.0
    reset_at: float | None = None


_SF_PARAM = re.compile(r"\b([a-z][a-z0-9_-]*)\s*=\s*(\d{1,15}(?:\.\d{1,9})?)\b", re.IGNORECASE)


# An item's name: a quoted string or a token before its first parameter.
_SF_NAME = re.compile(
    r'\s*(?:"((?:[^"\\]|\\.)*)"|([A-Za-z*][A-Za-z0-9_.:/%*!#$&\'+^`|~-]*))\s*(?:;|$)'
)


def _params(value: str, bare: str = "") -> list[tuple[str | None, dict[str, float]]]:
    """Each comma-separated item of a structured field: its name (None when it has
    none, as draft 07's ``limit=100`` members) and its ``key=number`` parameters;
    an item that is a number (drafts 03-07's ``10;w=1``) gives it as ``bare``."""
    items = []
    for item in value.split(","):
        found = {k.lower(): float(v) for k, v in _SF_PARAM.findall(item)}
        number = item.partition(";")[0].strip()
        if bare and number.isdigit() and number.isascii():
            found.setdefault(bare, float(number))
        if found:
            named = _SF_NAME.match(item)
            name = None if named is None else named.group(1) or named.group(2)
            items.append((name, found))
    return items


def _leading_int(headers: Mapping[str, str], name: str) -> tuple[int | None, float | None]:
    """An early draft's ``RateLimit-Limit: 10, 10;w=1, 50;w=60``: the limit in force,
    and the window of the policy with that quota, if one is listed."""
    value = headers.get(name)
    items = _params(value, bare="q") if value is not None else []
    if not items or items[0][1].keys() != {"q"}:
        return None, None
    limit = items[0][1]["q"]
    window = next((p["w"] for _, p in items[1:] if p.get("q") == limit and p.get("w")), None)
    return int(limit), window


def _nearest_to_running_out(state: tuple[str | None, dict[str, float]]) -> tuple[float, float]:
    """A ``RateLimit`` item's order: the least remaining first; of equals, the later reset."""
    params = state[1]
    remaining = params.get("r", params.get("remaining", math.inf))
    return remaining, -params.get("t", params.get("reset", 0.0))


def _ietf_quota(headers: Mapping[str, str], now: float) -> Quota | None:
    """IETF draft fields: ``RateLimit``/``RateLimit-Policy`` (draft 08 and later),
    ``RateLimit: limit=, remaining=, reset=`` (draft 07), or the separate
    ``RateLimit-Limit``/``-Remaining``/``-Reset`` fields of the early drafts.

    Several policies (``"burst";q=100;w=60, "daily";q=1000;w=86400``): the one
    nearest to running out governs (the least remaining; of equals, the later
    reset), with its own quota and window, matched by name. Unnamed, the
    policy of the lowest rate is taken.
    """
    limit = remaining = None
    reset = window = None
    listed: list[tuple[str | None, dict[str, float]]] = []
    governing: dict[str, float] | None = None
    policy_value = headers.get("ratelimit-policy")
    if policy_value:
        listed = [(n, p) for n, p in _params(policy_value, bare="q") if p.get("q") and p.get("w")]
        if listed:
            governing = min((p for _, p in listed), key=lambda p: p["q"] / p["w"])
    field = headers.get("ratelimit")
    if field:
        items = _params(field)
        if any({"limit", "remaining", "reset"} & item.keys() for _, item in items):
            # Draft 07 lists one policy's keys as comma-separated members.
            items = [(None, {k: v for _, item in items for k, v in item.items()})]
        if items:
            name, item = min(items, key=_nearest_to_running_out)
            r = item.get("r", item.get("remaining"))
            remaining = None if r is None else int(r)
            reset = item.get("t", item.get("reset"))
            # The policy this state is of: by name, or by its quota (draft 07).
            of_item = [p for n, p in listed if name is not None and n == name]
            if "limit" in item:
                limit = int(item["limit"])
                of_item = [p for _, p in listed if p["q"] == limit]
            if of_item:
                governing = of_item[0]
            elif limit is not None:
                governing = None
    if governing is not None:
        limit, window = int(governing["q"]), governing["w"]
    if limit is None:
        limit, listed_window = _leading_int(headers, "ratelimit-limit")
        window = window or listed_window
    if remaining is None:
        remaining = _int_header(headers, "ratelimit-remaining")
    if reset is None and headers.get("ratelimit-reset"):
        reset = parse_ratelimit_reset(headers["ratelimit-reset"], now)
    if limit is None and remaining is None and reset is None:
        return None
    return Quota(limit, remaining, reset, window)


def parse_quota(
    headers: Mapping[str, str],
    client_wall: float,
    server_time: float | None = None,
    server_time_error: float = 1.0,
) -> Quota | None:
    """The quota a response reports, from X-RateLimit-* or the IETF fields; None if neither.

    Epoch resets are read against ``server_time`` (``ServerClock.earliest``,
    up to ``server_time_error`` behind) when given, else against the ``Date``
    header, which is up to a second behind.
    """
    if server_time is None:
        now, server_time_error = server_now(headers, client_wall), 1.0
    else:
        now = server_time
    ietf = _ietf_quota(headers, now)
    if ietf is not None:
        return ietf
    fields = _x_ratelimit(headers)
    if fields is None:
        return None
    limit, remaining, reset_value, delta = fields
    reset = parse_ratelimit_reset(reset_value, now) if reset_value else None
    if limit is None and remaining is None and reset is None:
        return None
    named = _reset_epoch(reset_value) if not delta and reset is not None else None
    error = min(server_time_error, reset or 0.0) if named is not None else 0.0
    return Quota(limit, remaining, reset, None, error, named)


def _reset_epoch(value: str | None) -> float | None:
    """The epoch (seconds) an ``X-RateLimit-Reset`` names, or None for a delta."""
    number = float(value or 0)
    if number >= _EPOCH_MILLIS_FLOOR:
        return number / 1000.0
    return number if number >= _EPOCH_SECONDS_FLOOR else None


# ``X-RateLimit-*``, and Twitter's ``X-Rate-Limit-*`` spelling of the same fields: the
# names looked up on every response, spelled out once.
_X_FIELDS = tuple(
    (prefix + "limit", prefix + "remaining", prefix + "reset-after", prefix + "reset")
    for prefix in ("x-ratelimit-", "x-rate-limit-")
)


def _x_ratelimit(
    headers: Mapping[str, str],
) -> tuple[int | None, int | None, str | None, bool] | None:
    """``X-RateLimit-Limit``, ``-Remaining`` and the reset's text, and whether that text
    is a delta for sure (Discord's ``X-RateLimit-Reset-After``, which wins: it is not
    truncated to a second); None when there are none."""
    for limit_name, remaining_name, after_name, reset_name in _X_FIELDS:
        limit = _int_header(headers, limit_name)
        remaining = _int_header(headers, remaining_name)
        after = headers.get(after_name)
        reset = after if after is not None else headers.get(reset_name)
        if limit is not None or remaining is not None or reset is not None:
            return limit, remaining, reset, after is not None
    return None


def unreadable_hint(headers: Mapping[str, str]) -> str | None:
    """A ``Retry-After`` that was sent but could not be read (for the audit log)."""
    value = headers.get("retry-after")
    if value is None:
        return None
    return value if parse_retry_after(value, 0.0) is None else None


# Good answers to other requests that end a trade's own backoff early.
HEALTHY_ANSWERS = 4


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
    # First pause after a 429 that carried no Retry-After or reset.
    throttle_base: float = 1.0

    def throttle_backoff(self, streak: int, rng: random.Random) -> float:
        """The batch's pause after a 429 that carried no hint: "equal jitter".

        ``uniform(0.5, 1) * min(backoff_max, throttle_base * 2 ** (streak - 1))``.
        Unlike full jitter it never comes back at once, which a gateway with a
        penalty box would punish by extending the penalty.
        """
        exponent = min(max(streak - 1, 0), 62)
        ceiling = min(self.backoff_max, self.throttle_base * math.ldexp(1.0, exponent))
        return ceiling * rng.uniform(0.5, 1.0)

    def backoff(self, retry_number: int, rng: random.Random) -> float:
        """Full-jitter wait before retry ``retry_number`` (1 = the first retry)."""
        exponent = min(max(retry_number - 1, 0), 62)
        ceiling = min(self.backoff_max, self.backoff_base * math.ldexp(1.0, exponent))
        return rng.uniform(0.0, ceiling)

    def backoff_over(self, elapsed: float, delay: float, answered_well: int) -> bool:
        """Whether a trade's own backoff (after a 5xx or a lost connection) is over.

        Its ``delay`` has passed; or the first retry's base has, and the gateway
        has answered ``HEALTHY_ANSWERS`` other requests well since: the failure
        was passing, not the gateway's health, and a trade left waiting out a
        long backoff would hold the end of the batch while the gateway idles.
        """
        if elapsed >= delay:
            return True
        return elapsed >= self.backoff_base and answered_well >= HEALTHY_ANSWERS


@dataclass(frozen=True, slots=True)
class Retry:
    """Try again after ``delay`` seconds; ``batch_wide`` pauses every worker."""

    delay: float
    source: DelaySource
    batch_wide: bool
    hint: str = ""  # the header value the delay came from, as sent


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
    throttle_streak: int = 1,
) -> Retry | GiveUp:
    """What to do after attempt number ``attempt`` (1-based) failed with ``cause``.

    ``throttle_streak`` counts the batch's 429s since its last success: a 429
    without any hint pauses the whole batch for a wait that grows with it.
    """
    if cause is Cause.REDIRECT:
        return GiveUp(f"http_{status}", f"HTTP {status}: redirects are not followed")
    if cause is Cause.CLIENT_ERROR:
        return GiveUp(f"http_{status}", f"HTTP {status}: not retried")
    if cause not in RETRYABLE:
        return GiveUp(cause.value, f"{cause.value}: not retried")
    if hint is not None:
        retry = Retry(hint.delay, hint.source, batch_wide=True, hint=hint.raw)
        if cause is Cause.RATE_LIMITED and throttle_streak > 1:
            # The gateway's last wait brought nothing through: a wait shorter than our
            # own for the row so far is not taken, so a gateway answering
            # ``Retry-After: 0`` again and again is not knocked on in a tight loop.
            floor = policy.throttle_backoff(throttle_streak - 1, rng)
            if hint.delay < floor:
                retry = Retry(floor, "backoff", batch_wide=True, hint=hint.raw)
    elif cause is Cause.RATE_LIMITED:
        retry = Retry(policy.throttle_backoff(throttle_streak, rng), "backoff", batch_wide=True)
    else:
        retry = Retry(policy.backoff(attempt, rng), "backoff", batch_wide=False)
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
