"""The batch-wide rate gate: one 429 holds every worker, not just the one that got it.

``RateGate`` keeps the time (monotonic) until which nobody may send. A worker
asks ``wait_needed`` before each request and waits at the gate; the decision
functions take ``now`` and an ``rng`` so they are tested without sleeping.
"""

from __future__ import annotations

import bisect
import math
import random
import re
from collections import deque
from dataclasses import dataclass

from trade_ingest.clock import Clock
from trade_ingest.policy import Quota


def release_delay(now: float, paused_until: float, jitter: float, rng: random.Random) -> float:
    """How long a worker waits at the gate: to the end of the pause, plus a little spread.

    The spread (``uniform(0, jitter)``) only applies to a worker that actually
    had to wait, so that workers released together do not stampede back.
    """
    if now >= paused_until:
        return 0.0
    return paused_until - now + rng.uniform(0.0, jitter)


class RateGate:
    """Shared by all workers of a batch; the only place a pause is kept."""

    def __init__(self, clock: Clock, rng: random.Random, release_jitter: float) -> None:
        self._clock = clock
        self._rng = rng
        self._jitter = release_jitter
        self.paused_until = float("-inf")
        # Whether workers come back spread out (after a throttle) or together
        # (when the quota is known to be back in full, as a fixed window's is).
        self.spread = True
        self.paused_seconds = 0.0
        self.pauses = 0
        self._pause_started: float | None = None

    def wait_needed(self, now: float) -> float:
        return max(0.0, self.paused_until - now)

    def pause(self, now: float, delay: float, *, spread: bool = True) -> bool:
        """Hold every worker until ``now + delay``; True when that extends the pause.

        ``spread=False``: release everyone at once (unless another pause in
        force asks for a spread).
        """
        until = now + delay
        if until <= self.paused_until:
            self.spread = self.spread or (spread and now < self.paused_until)
            return False
        if now >= self.paused_until:
            self.pauses += 1
            self._pause_started = now
            self.spread = spread
        else:
            self.spread = self.spread or spread
        self.paused_seconds += until - max(now, self.paused_until)
        self.paused_until = until
        return True

    def take_resume(self, now: float) -> float | None:
        """Once per pause, to the first worker through: how long the batch stood still."""
        if self._pause_started is None or now < self.paused_until:
            return None
        started, self._pause_started = self._pause_started, None
        return self.paused_until - started

    async def wait_turn(self) -> float:
        """Wait until no pause is in force; returns the seconds waited."""
        waited = 0.0
        while True:
            jitter = self._jitter if self.spread else 0.0
            delay = release_delay(self._clock.monotonic(), self.paused_until, jitter, self._rng)
            if delay <= 0.0:
                return waited
            await self._clock.sleep(delay)
            waited += delay


# Pace at this share of what the gateway allows, so arrival-time noise on the
# network never pushes one window over its quota.
HEADER_MARGIN = 0.97
# A configured limit is the user's word: keep only a hair under it.
CONFIGURED_MARGIN = 0.98
# Header pacing is corrected by feedback: when a whole window passes with the
# quota never near exhaustion, the headers understate the rate (a token bucket
# whose reset is rounded up to a second, say): probe upwards by PROBE_STEP;
# when it runs out, or a 429 comes anyway, step back.
PROBE_STEP = 2.0
PROBE_BACK = 0.95
HEADROOM_SHARE = 0.25
# Learning without headers (AIMD, as TCP and AWS's adaptive retry mode): a
# 429 cuts the rate to DECREASE of the rate that was throttled; it wins back
# RECOVERY_SHARE of it within RECOVERY_SECONDS, holds there until PROBE_HOLD
# seconds have passed since the 429 (twice as long after each cut, up to
# PROBE_HOLD_MAX: each probe past the limit costs a 429), then probes upwards,
# slowly at first (PROBE_START per second) and twice as fast after each quiet
# PROBE_DOUBLING seconds without a 429.
DECREASE = 0.85
# The first rate measured is only a bound (a token bucket's burst hides its
# refill; a window's quota may straddle its turn): until the first 429 under
# it, the rate grows by SLOW_START of itself a second, as TCP's slow start
# does, and that 429 cuts it to DECREASE of what the gateway delivered
# meanwhile (or of the rate, if that is lower). What was delivered is read as
# a token bucket would have served it (``bucket_rate``), its capacity the burst
# that got through before the run's first 429, so that the time slow start
# spent under the limit does not drag it down; and never as less than what got
# through per second (a window's quota is no bucket's burst).
SLOW_START = 1.0
SLOW_START_SENDS_KEPT = 2_000
RECOVERY_SHARE = 0.97
RECOVERY_SECONDS = 3.0
PROBE_START = 0.02
PROBE_DOUBLING = 2.0
PROBE_HOLD = 2.0
PROBE_HOLD_MAX = 120.0
PROBE_MAX = 0.5
MIN_RATE = 1e-4  # one request in about three hours
# After a 429 without a hint, paced by a learned rate, the batch waits a slot
# for each request in flight and this many more: the gateway gains back a few
# requests' room before the cut rate's slower pace is met (see ``throttle_pause``).
SLOT_PAUSE_CUSHION = 3
# Refused with nothing through since a burst, no hint: the quota comes back in a
# lump, and the next request finds when. While no window is known, it goes
# REFUSAL_STEP of the time since the burst began later (a doubled backoff could
# make the window learned twice too long); a burst a learned window predicted,
# refused at its first request, SEEK_STEP later (a 429 once learned costs more).
# The step doubles after each REFUSAL_DOUBLING refusals in a row, up to the
# whole time (as a doubled backoff), so a long window or a ban is not knocked
# on ever more often; never longer than the backoff. While no window is known, a
# gap between knocks is at most KNOCK_GROWTH times the refused gap before it: at
# a penalty box the knocking ends with the first gap a window long, and a gap
# twice the one before could be twice the window, which the next bursts would
# then wait (see PENALTY_TRY_SHARE).
REFUSAL_STEP = 0.125
SEEK_STEP = 0.25
REFUSAL_DOUBLING = 8
KNOCK_GROWTH = 1.5
# A penalty box (a request that comes while refused restarts the refusal, a window
# long) makes the same refusals tell another story: each refused request that followed
# another came less than a window after it, and each burst that followed a refusal came
# a window or more after it. Those gaps bound the window from both sides; where the
# bounds agree and the ceiling is at most PENALTY_TRY_SHARE of the window learned from
# start to start (a burst that knocked its way through a penalty spent several gaps
# before the one that was a window long), the first burst after learning opens at that
# ceiling. Through, the window is no longer, and the gaps' floor is what it is bisected
# down to; a try refused from then on waits the window that held, whole, from its
# refusal (knocking sooner would restart the penalty). Refused, the test cost one 429
# and the plain reading stands.
# Before that, once a burst that knocked its way through went out within BURST_SHARE of
# the ceiling (a lump, let through long after its refusal), the next burst's first
# refusal waits until the ceiling has passed since that burst began: at a penalty box,
# the quota is back by then (a window after the burst's first request at most), and any
# knock sooner would restart the penalty, so the second window would be found as late
# as the first. Through, that refusal pins the start. At a plain window it is through,
# or refused, and the knocking goes on in steps. A burst that went out slower waits its
# backoff, and its second knock the ceiling. A burst paced by a rate learned from 429s
# (no lump) knocks in steps until it has been refused for as long as the ceiling: a plain
# window no longer than that would have given its quota back by then, and at a penalty
# box each knock sooner restarts the penalty; it then waits the ceiling once.
PENALTY_TRY_SHARE = 0.6
# A burst on a window learned without hints opens with one request: the other
# workers wait for its answer (up to SCOUT_PATIENCE of the window), so a window
# that has not turned yet costs one 429, not one for each worker.
SCOUT_PATIENCE = 0.25
# Such a window is known to lie between a floor (from a burst's start to its
# last refusal) and a ceiling (see ``_settle_unhinted``, ``_burst_opening``):
# bursts try the middle, the first request telling whether it held, until the
# window kept to is within BISECT_PRECISION of the floor. The first try waits
# until a burst's first request got through at the window kept to: measured from
# one start to the next, it may be short itself (a fixed window's first burst
# opened later after its turn), and a try refused would go back to a window
# refused too, two 429s where one tells as much. A try that fails costs
# a 429: a try comes only while that would leave at most one failed, and one more
# for each 1 / BISECT_COST_SHARE requests through since the window was learned.
BISECT_PRECISION = 0.03
BISECT_COST_SHARE = 0.01
# Until the first response tells us something, only one request is in flight.
FIRST_RESPONSE_POLL = 0.005
# A worker asleep towards a paced slot looks this often for a sooner one (``Pacer.sooner``).
SLOT_RECHECK = 0.1
# Slots are handed out at most this far ahead (the send log's: one span); a worker
# that would get a later one asks again within SLOT_RECHECK. Reserved further ahead,
# each worker's slot would keep the spacing of the rate it was given: a rate raised or
# a window tried shorter would only be met a slot per worker later, while the answers
# in between, at the old spacing, seemed to bear it out.
SLOT_HORIZON = 0.1
# Asked again at the time it was told, a worker's slot may be a hair over the horizon.
HORIZON_TOLERANCE = 1e-6
# Changes smaller than this are not worth an audit event.
REPORTABLE_CHANGE = 0.10
# When the quota policy is known (q requests per w seconds), sends are kept
# to at most q in any window of w * (1 + WINDOW_SLACK) + WINDOW_GUARD seconds:
# a window's quota is spent as soon as it is free, not spread thin. The slack
# and guard absorb the difference between our send time and the gateway's
# arrival time.
WINDOW_SLACK = 0.01
WINDOW_GUARD = 0.01
# Learning a window without headers: when 429s come with a wait hint, what got
# through from the end of one throttle to the end of the next is the window's
# quota, and the time between those ends its length, provided it got through
# in a burst: within BURST_SHARE of that time, and within that time less the
# hint's resolution (the pause may end up to HINT_RESOLUTION after the window
# turned). Sent slower, it may have straddled two fixed windows: only its rate
# is learned, and kept to as a window of one request. The quota is then spent
# by the send log as a stated one is. A 429 anyway turns a burst into the
# window's rate at an even pace, or that pace LEARNED_CUT slower. While the log holds the
# batch back and no 429 comes for LEARNED_PROBE_SPANS windows, the window is
# tried LEARNED_PROBE_STEP shorter (a token bucket refills faster than its
# rounded-up Retry-After says); each try that holds is followed by one twice
# as far after half the wait; a 429 steps back to what held, makes the next
# first try go half as far as the one refused (the window lies between them: a
# fixed window refuses a try a little too short only once its turn has drifted
# past, so the same step again would fail again), down to LEARNED_PROBE_MIN_STEP,
# and makes it wait twice as long, or NEAR_LIMIT_WAIT times as long when the
# try itself shows what held is within NEAR_LIMIT of the gateway's rate: it got
# a window's quota plus what the gateway added meanwhile, and that addition
# over the try's length is the gateway's rate (a bucket that was full; less for
# one that was not, and for a window, which gives a quota a turn). A try that got
# no more than a window's quota shows nothing of that rate. Where what held is
# further below the rate shown, the pace steps back to NEAR_LIMIT of it instead
# (of what was tried at most), and is then within it.
LEARNED_CUT = 0.05
NEAR_LIMIT = 0.9
NEAR_LIMIT_WAIT = 8.0
HINT_RESOLUTION = 1.0  # Retry-After: whole seconds, or an HTTP-date
# The turns named by epoch resets kept, with when a success first named each (see
# ``_named_turn``).
NAMED_TURNS_KEPT = 4
# A window measured from the ends of two hinted pauses shorter than this many
# resolutions is tried shorter at once (see ``on_resume``).
SHORT_WINDOW_READINGS = 2.5
BURST_SHARE = 0.125
LEARNED_PROBE_SPANS = 4
LEARNED_PROBE_STEP = 1.1
LEARNED_PROBE_MIN_STEP = 1.02
# A try that fails costs the pause its 429 brings (a whole second, say, for a
# bucket that refills in a twentieth of one): tries come only while failed
# ones, this one included, would have cost at most TRY_COST_SHARE of the batch's
# time with the window learned, however often the windows turn. That time is the
# time since it was learned and the time the trades known to be left (``backlog``)
# will take at the pace in force: what a try that holds gains, it gains over them
# (a bucket refilling 60 a second, read as 20 a second from its whole-second
# Retry-Afters and tried at once at 41, was then held there for ten seconds,
# 400 trades, before the next try).
TRY_COST_SHARE = 0.1
# Successes remembered to measure a window from 429s (kept while no window is
# known, so for a whole run against a gateway that never says no).
RECENT_SENDS_KEPT = 10_000
# A spent quota whose reset is told to the whole second (an integer delta, an epoch
# second) and at most one, on a quota of EARLY_LIMIT or fewer: the quota may be back in
# any part of that second. A token bucket refilling twenty a second reads "1" as surely
# as a window turning in 0.9 s does, and waited out, that reset holds the batch to the
# bucket's burst a second. The batch tries resuming sooner, pacing as fast: at
# EARLY_FIRST_TRY of the reset after the spending request's send; a try stands once
# EARLY_PASSES requests, each sent after its own resume and before the whole reset would
# have ended (EARLY_TELLING_KEPT resumes are followed at once), got through, and is
# followed by one at half of it, down to EARLY_MIN_SHARE; once one failed, halfway
# between, until the two are within EARLY_PRECISION. A try fails with a 429, whose
# Retry-After is then waited out: cheap on a window (the try goes early, so the
# Retry-After it brings ends about when the reset would have), a second on a fast
# bucket. A try is sent before any Retry-After, so no penalty box counts it. The next
# try after a failure waits EARLY_RETRY_AFTER seconds, twice as long after each; failed
# from the whole reset, it goes EARLY_LADDER times further up at once, up to
# EARLY_LAST_TRY (a window pays its two 429s at the start of the run). A 429 at a share
# that held (a window that turned early once) takes it EARLY_BACK times longer. Larger
# quotas are not tried: on windows of 3-8 the tries cost more 429s than they won buckets
# of 3-5, whose spent pace is stepped back and whose level shows headroom anyway.
# Between a share that held and one refused, a bucket of one is tried again as soon as
# the try would save EARLY_PAYBACK times what its 429 would cost (the last pause one
# brought): the time the trades left take at the share that held, less at the share
# tried; never otherwise. A bucket of two is not: its second token may let a try too
# fast through EARLY_PASSES times, and the share that held fail later (EARLY_BACK).
EARLY_LIMIT = 2
EARLY_FIRST_TRY = 0.125
EARLY_PASSES = 5
EARLY_TELLING_KEPT = 4
EARLY_MIN_SHARE = 1 / 32
EARLY_PRECISION = 0.2
EARLY_RETRY_AFTER = 8.0
EARLY_LADDER = 4.0
EARLY_LAST_TRY = 0.5
EARLY_BACK = 4.0
EARLY_PAYBACK = 2.0
# A one-second window read from whole-second resets, kept to by the send log, may be a
# bucket refilling many times a second (its few milliseconds to the next token read "1",
# and a full bucket after a pause looks like a window's lump): kept to, the batch
# would get the bucket's burst a second, and never see more. Once such a window is
# reported spent, with the log's next slot most of a second off, one request, a refill
# scout, goes REFILL_SCOUT_SHARE of a second after the last send (the spent quota pauses
# the batch until then, not until the reset). Through, quota came back sooner than such a
# window gives it (the next scout may go as soon as the quota is spent again);
# REFILL_SCOUT_PASSES in a row, and the gateway is a bucket (``_pace_as_a_bucket``): paced
# by rate from then on, no slower than the most the scouts saw come back a second. Refused,
# it cost one 429 and about that share of a second (its Retry-After ends when the window
# turns, rounded up from later), and nothing else: the pace stands; the next scout waits
# REFILL_SCOUT_WAIT, twice as long after each. Scouts go only once the window has read a
# second for REFILL_SCOUT_READ seconds: a longer window whose turn is under a second off
# reads so too, until the report after its turn. More through without a 429 than any
# window of the quota read allows (``_watch_headroom``) makes a bucket too.
REFILL_SCOUT_SHARE = 0.125
REFILL_SCOUT_READ = 2.0
REFILL_SCOUT_PASSES = 5
REFILL_SCOUT_WAIT = 8.0
# Such a second may also be a shorter window (4 per half second reads "1" after every
# spent quota, as 4 a second does): kept to, the batch gets half its quota or less. The
# first refill scout refused (or none able to go, the log's next slot too near), one
# request, a half-second scout, goes HALF_SCOUT_SHARE of a second after the last send
# instead (a guard past half a second). Through with the whole quota back (the gateway
# counted it alone), a window turned (a sliding one forgot the lot, a bucket refilled its
# burst) since that send: the quota the answer reports is spent at once, and the next
# half-second scout follows it. Each pass ``i`` puts a turn between the send before it,
# ``b_i``, and its answer, ``c_i``; turns are a window apart at least, so the window is no longer
# than ``(c_k - b_j) / (k - j)`` for any passes j < k in a row (a sliding window gave its
# quota back within each ``c_i - b_i``, a bucket refilled as fast). Below a second by
# CHAIN_MARGIN, the least of those bounds is the window the log keeps to, though the
# resets still read a second (``pacing.window_learned``, kind ``shorter``), and the scouts
# go on while they pass. A half-second scout refused (one 429, half a second: its
# Retry-After ends half a second after the log's next slot), or through with less than
# the whole quota back (a bucket's refill, counted as a refill scout's pass), ends them
# for the run; the refill scouts go on, unless a window was bound (the quota is then known
# to come back within it, and the log's next slot is never most of a second off). Each
# pass's ``c_i`` is its answer, not its send: the turn came before the scout reached the
# gateway, which a slow request may do well after it was sent. Not for epoch resets,
# whose turns named on the second read a longer window as a second as well. A scout goes
# only SCOUT_LEAD or more before the log's next slot: sooner than that it tells nothing the
# log's slot would not.
HALF_SCOUT_SHARE = 0.5 * (1.0 + WINDOW_SLACK) + WINDOW_GUARD
CHAIN_MARGIN = 0.1
CHAIN_KEPT = 16
SCOUT_LEAD = 0.05
# Paced as a bucket, the pace doubles each period it does not run the quota dry, then is
# bisected between what held and what ran dry, to within this share.
BUCKET_PRECISION = 0.05
# The gateway forgetting this share of the quota (or 2 requests) sooner than
# a sliding window would: its windows are fixed, and their quota comes back in
# one lump at the reset.
LUMP_SHARE = 0.25


@dataclass(frozen=True, slots=True)
class PacingEvent:
    """A pacing decision for the audit log: ``pacing.rate_learned``, ``pacing.rate_changed``
    or ``pacing.window_learned`` (the quota's window is fixed: it comes back in one lump)."""

    name: str
    fields: dict[str, object]


def parse_rate(text: str) -> float:
    """Requests per second for ``30/min``, ``5/s``, ``1/5s``, ``400/1m``, ``100/hour``."""
    count_text, sep, per = text.strip().lower().partition("/")
    try:
        count = float(count_text)
        seconds = parse_duration(per if per[:1].isdigit() else "1" + per) if sep else 0.0
    except ValueError:
        seconds = 0.0
        count = 0.0
    if not (count > 0 and seconds > 0 and math.isfinite(count)):
        raise ValueError(f"not a rate like 30/min or 5/s: {text!r}")
    return count / seconds


_UNITS = {
    "ms": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]+)")


def parse_duration(text: str) -> float:
    """Seconds in ``45m``, ``90s``, ``1h30m``, ``2 hours`` or a plain number of seconds."""
    cleaned = text.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", cleaned):
        return float(cleaned)
    parts = _DURATION_PART.findall(cleaned)
    if not parts or _DURATION_PART.sub("", cleaned).strip():
        raise ValueError(f"not a duration like 45m, 90s or 1h30m: {text!r}")
    total = 0.0
    for number, unit in parts:
        if unit not in _UNITS:
            raise ValueError(f"unknown unit {unit!r} in {text!r}")
        total += float(number) * _UNITS[unit]
    return total


def window_from_reset(reset: float) -> float | None:
    """The window a reset suggests: resets run up to a second long (rounded up, or an
    epoch second read against a finer clock), so a whole number is taken as it is and
    a fraction is rounded down; None below a second."""
    whole = round(reset)
    if abs(reset - whole) < 1e-6:
        return float(whole) if whole >= 1 else None
    return float(math.floor(reset)) if reset >= 1 else None


def bucket_rate(sends: list[float], capacity: int) -> float:
    """The lowest refill rate (per second) at which a token bucket of ``capacity``,
    full at the first send, lets every one of ``sends`` (sorted) through; inf if none.

    A gateway whose bursts are at most ``capacity`` and which let all of them
    through refills at least this fast: a lower bound on its rate.
    """
    if capacity < 1 or len(sends) <= capacity:
        return 0.0

    def serves(rate: float) -> bool:
        level, last = float(capacity), sends[0]
        for sent in sends:
            level = min(float(capacity), level + rate * (sent - last))
            last = sent
            if level < 1.0 - 1e-9:
                return False
            level -= 1.0
        return True

    low, high = 0.0, 1.0
    while not serves(high):
        low, high = high, high * 2.0
        if high > 1e9:
            return math.inf
    for _ in range(40):
        middle = (low + high) / 2.0
        low, high = (low, middle) if serves(middle) else (middle, high)
    return high


class Pacer:
    """The batch's send rate: from a configured limit, the quota headers, or learned from 429s.

    Workers ``reserve`` a send slot; slots are ``1 / rate`` apart, so the
    batch sends evenly instead of bursting into the limit. Every method takes
    ``now`` (monotonic seconds); nothing here reads a clock or sleeps.
    """

    def __init__(self, configured_rate: float | None = None) -> None:
        self.configured = configured_rate * CONFIGURED_MARGIN if configured_rate else None
        self.header_rate: float | None = None
        self.probe_factor = 1.0
        # The probe factor before the last doubling (see ``_watch_headroom``), while it stands.
        self._doubled_from: float | None = None
        self.learned_rate: float | None = None
        self.ceiling: float | None = None
        self.headers_seen = False
        self.responded = False
        self._first_sent = False
        self.window_estimate: float | None = None
        self._window_estimate_sure = False
        # The least the window may be, from epoch resets read while the clock was unsure.
        self._window_least = 0.0
        # Epoch resets (see ``_named_turn``): for each of the last turns named, when the
        # first success that named it was answered; when the quota was last reported spent
        # and when the turn it named comes, as read (None: not spent, or back since), with
        # what it had left (sends logged after ``_spent_since`` take it: the quota is
        # counted spent too once the sends it has to serve before that turn outnumber it);
        # whether a 429 just lengthened the window.
        self._turn_named: dict[float, float] = {}
        self._spent: tuple[float, float] | None = None
        self._spent_left = 0
        self._spent_since = -math.inf
        self._named_longer = False
        # The last report of the whole quota back (but the request reported) naming a turn:
        # its request's send time, and the turn named.
        self._whole_named: tuple[float, float] | None = None
        # Whether a request got through before such a turn (then no more scouts for it).
        self._turns_early = False
        # When a spent quota's pause cut to the window estimate ends (see ``on_quota``).
        self._cut_resume: float | None = None
        # A whole-second reset resumed sooner (see EARLY_FIRST_TRY): the share of it that
        # held, the largest that failed since (0: none), the try in force (its share), and
        # when the next may begin; for each of the last resumes so shortened, the sends
        # that tell of it: from it up to where the whole reset would have ended (later
        # ones would have gone anyway), oldest first.
        self._early_held = 1.0
        self._early_failed = 0.0
        self._early_try: float | None = None
        self._early_passes = 0
        self._early_telling: deque[tuple[float, float]] = deque(maxlen=EARLY_TELLING_KEPT)
        self._early_next = -math.inf
        self._early_wait = EARLY_RETRY_AFTER
        self.in_flight = 0
        # When each request in flight was sent (``sending``, ``answered``): those sent
        # before a request reported were counted before it, as the gateway met them first.
        self._in_flight_sent: list[float] = []
        # Trades read from the input and not yet done, as the batch last counted them
        # (a stream not yet read to its end has more): see TRY_COST_SHARE.
        self.backlog = 0
        self.throttle_streak = 0
        # Whether the run of 429s now going began with a pause ``throttle_pause`` cut.
        self._slot_paused = False
        # The last send slot the rate handed out (or a send it let go at once).
        self._last_slot = -math.inf
        # Of a window's lump paced by rate: the requests the last report leaves to send
        # (beyond those in flight sent since it and the slots held), and when it is back
        # (None: no such count, or a bucket's).
        self._lump_left: int | None = None
        self._lump_back_at = -math.inf
        self._pacer_bound = False
        # When a worker told "not yet" because its slot is beyond SLOT_HORIZON asks again,
        # and that slot: the wait a deadline or max_wait is held to.
        self._recheck_at: float | None = None
        self.pending_slot: float | None = None
        # Requests the last quota report still allowed beyond those in flight:
        # spent at once, since a window's unused quota is lost when it turns.
        self.credit = 0
        # Whether quota comes back in lumps (a window turning) rather than a
        # token at a time: then a spent quota means waiting for the reset.
        self.lumpy = False
        # Whether the lumps come at a fixed window's turn, which forgets every request
        # counted before it: the gateway forgot requests younger than half its window
        # (``_reconcile``). A sliding log gives its whole quota back too, once a window has
        # passed since the newest request it counted, and its reset names when the oldest
        # goes: a spent quota's log is forgotten at the reset only on a fixed window.
        self.turns_fixed = False
        # Whether the gateway was seen to give quota back faster than the window its
        # resets read allows (a bucket): then no window is read from them again.
        self.refills_faster = False
        # A refill scout (see REFILL_SCOUT_SHARE): when it went, the send before it, and
        # when the log would have sent the next (a request sent from then on tells
        # nothing of the window); scouts through in a row, the most a second they (or
        # more through than a window allows) saw come back, when the next may go and
        # how long the one after waits; whether the last reset was told to the second.
        self._refill_scout: tuple[float, float, float] | None = None
        self._refill_passes = 0
        self._refill_rate = 0.0
        self._refill_next = -math.inf
        self._refill_wait = REFILL_SCOUT_WAIT
        # The share of a second the next scout goes after the last send (REFILL_SCOUT_SHARE
        # or HALF_SCOUT_SHARE), and whether half-second scouts are over for the run; the
        # half-second scouts through in a row (the send before each, and its own), the
        # window they bound, and the bound last reported.
        self._scout_share = REFILL_SCOUT_SHARE
        self._half_scouts_over = False
        self._half_passes: deque[tuple[float, float]] = deque(maxlen=CHAIN_KEPT)
        self._window_bound: float | None = None
        self._bound_reported: float | None = None
        self._resets_whole = False
        # A refused scout's time, until its 429 is told (``on_quota`` comes first).
        self._refill_refused_sent: float | None = None
        # Since when the window read from resets has been a sure second: a longer window
        # whose turn is under a second away reads so too, until the report after its turn.
        self._one_second_since: float | None = None
        # The freshest report's remaining quota, and what it was when the scout went.
        self._fresh_remaining = 0
        self._remaining_at_scout = 0
        # Paced as a bucket: the probe factor that last kept it from running dry, and
        # the least one that did not since (None: none yet), bisected between.
        self._bucket_held = 1.0
        self._bucket_failed: float | None = None
        self._last_remaining: int | None = None
        self._last_429: float | None = None
        self._last_pause_end: float | None = None
        self._successes_since_429 = 0
        self._slow_start_since: float | None = None
        self._delivered = 0
        self._slow_start_sends: deque[float] = deque(maxlen=SLOW_START_SENDS_KEPT)
        # Successes sent before the run's first 429 was sent: the gateway's burst.
        self._first_throttled_sent: float | None = None
        self._first_burst = 0
        # While nothing is known, the most requests in flight at once: one at the start,
        # one more for each answer that is not a 429, as TCP's slow start grows (twice
        # as many a round trip), so a small quota is not met by every worker's 429.
        self._release_cap = 1
        # After a 429 without a hint while nothing is known, one request goes until
        # one gets through.
        self._alone = False
        self._last_increase: float | None = None
        self._probe_speed = PROBE_START
        self._probe_hold = PROBE_HOLD
        self._quiet_since: float | None = None
        self._period_start: float | None = None
        self._low_water = math.inf
        self._sent_in_period = 0
        self._through_in_period = 0
        self._spent_in_period = False
        # Periods in a row without a 429: since when, and the requests through in them.
        self._unrefused_since: float | None = None
        self._through_unrefused = 0
        self._period_level = 0
        self._reported: float | None = None
        # The window model: quota per window as the gateway states it, and
        # the send times (ours, and others' the gateway reported) in it.
        self.limit: int | None = None
        self.window: float | None = None
        self.window_stated = False
        self.logging = False
        self._log: list[float] = []
        # Slots the rate handed out for later and not yet sent nor given back (kept while
        # the log is not in use): due, a worker may not have woken to send it yet.
        self._paced_slots: deque[float] = deque()
        self._freshest = -math.inf
        self._forget_at: float | None = None
        self._probe_at: float | None = None
        # Only the answer to the last promised request (or a later one) promises another.
        self._probe_taken = -math.inf
        # Sends up to this one were counted by the answer that promised the request, and
        # so were the sends it logged as made at its arrival (more counted than logged).
        self._probe_counted = -math.inf
        self._probe_logged_late = 0
        self._forget_upto = -math.inf
        # Learned without headers (see LEARNED_CUT and ``_settle_unhinted``):
        # the send times of the successes since the last burst began, while no
        # window is known, and when to try a shorter window.
        self.window_learned = False
        # The learned window is an even pace's spacing (see ``_even_pace``), its margin
        # in; a window learned from a burst of one gets the usual margin.
        self._evenly_paced = False
        self._recent_sends: list[float] = []
        self._last_hinted = False
        # Quiet windows before the next try, its step, and the last step taken.
        self._probe_spans: float = LEARNED_PROBE_SPANS
        self._probe_failures_spans: float = LEARNED_PROBE_SPANS
        self._probe_step = 1.0
        self._first_step = LEARNED_PROBE_STEP
        self._probe_held = 1.0  # the probe factor that held for a whole wait
        self._probe_period = 0.0  # the window measured: the unit of that wait
        self._learned_quiet_since: float | None = None
        # When the window was learned, the pauses failed tries brought since, and
        # the pause of the last 429 that began a row: what a failed try costs.
        self._learned_at: float | None = None
        self._tries_cost = 0.0
        # Whether the try in force is the one a window measured from late ends begins
        # with (``on_resume``): part of measuring it, its failure is not charged.
        self._measuring_try = False
        self._last_pause = 0.0
        # When the current try began, and how many sent since then got through.
        self._probe_started: float | None = None
        self._probe_delivered = 0
        # A failed try read as near the gateway's rate: its start and its 429's send.
        # Its trades sent before that 429's request still count when they come back
        # after it (a 429 comes back sooner than a trade, and a burst is in flight).
        self._near_limit_try: tuple[float, float] | None = None
        # Two hinted throttles' measure, settled at the resume: (previous
        # throttle's end, this throttle's request sent, this throttle's end).
        self._measuring: tuple[float, float, float] | None = None
        # Two unhinted throttles' measure of the rate, settled by the next success
        # (``_settle_unhinted``): (the previous 429's answer, this one's request
        # sent, this one's answer).
        self._rate_measuring: tuple[float, float, float] | None = None
        # Unhinted throttles (see ``_settle_unhinted``): when the run of successes
        # now going began, the last pause's end, the burst a 429 without a
        # hint ended (its start, the throttled request's send), and whether a
        # request was refused with nothing through since that burst.
        self._burst_start: float | None = None
        self._resumed_at: float | None = None
        self._unhinted_burst: tuple[float, float] | None = None
        self._refused_empty = False
        # The refused request's send time right before the burst now going began, if
        # it began so (its start is pinned to the quota's return, see
        # ``_settle_unhinted``).
        self._start_pin: float | None = None
        # A window learned that way (with a floor, below) opens each burst with
        # one request (see SCOUT_PATIENCE): its slot while unanswered, the send
        # time of the latest success, and when the last burst opened.
        self._scout_at: float | None = None
        self._last_through = -math.inf
        self._burst_opened: float | None = None
        # The last refused request's send time before that opening, if any since the
        # one before (its turn came later: see ``_burst_opening``); while a turn is
        # sought (refused even at the ceiling), when the burst before opened.
        self._opening_pin: float | None = None
        self._seek_from: float | None = None
        # Whether the last 429 was such a window's burst refused at its first request
        # with a window that held to go back to: then the batch makes no pause of
        # its own (the log holds it to that window).
        self._try_refused = False
        # The floor under such a window and its ceiling (see BISECT_PRECISION), the
        # last refused request's send time, and the tries that failed.
        self._window_floor: float | None = None
        self._window_ceiling: float | None = None
        self._last_refused = -math.inf
        self._bisect_failures = 0
        self._through_since_learned = 0
        # Whether the window held to has let a burst's opening through, or bounds the
        # gateway's from above (see BISECT_PRECISION): learned from start to start, it
        # has not, and may be short.
        self._held_opened = False
        # The penalty box's reading of the refusals (see PENALTY_TRY_SHARE): the longest gap
        # between two refusals with nothing through, and the shortest from a refusal to
        # a burst start after it; whether the window learned is being tried at the
        # latter, and whether such a try held (refused requests then restart it).
        self._penalty_floor = 0.0
        self._penalty_ceiling = math.inf
        self._penalty_test = False
        self._penalty_read = False
        # The burst that window was learned at, when it counted its quota (see
        # ``_relearn_window``): from its opening to the refused send, and the limit before.
        # Successes sent in it before the refusal, answered after, count in that quota too,
        # and the try waits out the penalty its refusals restarted.
        self._counted_late: tuple[float, float, int] | None = None
        self._burst_knocks = 0
        self._knock_at_ceiling = False
        self._ceiling_knock_pays = False
        # Whether the batch's pause after a burst's first refusal ran to the ceiling; the
        # gap before the last refused knock (see KNOCK_GROWTH).
        self._ceiling_wait = False
        self._refused_gap = 0.0
        # The last refused request's send time, news or not: at a penalty box each one
        # restarted the penalty, and the gaps that bound it run from the last of them.
        self._last_knocked = -math.inf
        # Whether a burst paced by AIMD has waited the ceiling since its first refusal.
        self._ceiling_tried = False

    def sending(self, sent_at: float, slot: float | None = None) -> None:
        """A request goes at ``sent_at`` (its answer is reported with that time), at
        ``slot``, the one ``reserve`` handed out for it: no longer held."""
        self.in_flight += 1
        bisect.insort(self._in_flight_sent, sent_at)
        if slot is not None and slot in self._paced_slots:
            self._paced_slots.remove(slot)

    def answered(self, sent_at: float) -> None:
        """The request sent at ``sent_at`` is back: answered, or failed on the way."""
        self.in_flight -= 1
        sent = self._in_flight_sent
        index = bisect.bisect_left(sent, sent_at)
        if index < len(sent) and sent[index] == sent_at:
            del sent[index]

    def _in_flight_since(self, sent_at: float) -> int:
        """Requests in flight sent at ``sent_at`` or later: those a report for a request
        sent then has not counted (sent at the same time, in an order not known)."""
        sent = self._in_flight_sent
        return len(sent) - bisect.bisect_left(sent, sent_at)

    @property
    def rate(self) -> float | None:
        """Requests per second the batch may send now; None = no limit known."""
        told = self.header_rate * self.probe_factor if self.header_rate is not None else None
        share = self._early_share
        if told is not None and share < 1.0 and not self.logging:
            # One request for each whole-second reset as shortened: it rounded the pace up.
            told = max(told, HEADER_MARGIN / (share * HINT_RESOLUTION))
        own = told if self.headers_seen else self.learned_rate
        candidates = [r for r in (self.configured, own) if r is not None]
        return max(MIN_RATE, min(candidates)) if candidates else None

    def reserve(self, now: float) -> float | None:
        """The time at which the caller may send; slots are handed out 1/rate apart.

        None means "not yet": nothing is known of the limit, and as many
        requests are in flight as the answers so far allow (one before the
        first, see ``_release_cap``); or the slot would be beyond the horizon
        (SLOT_HORIZON; ``pending_slot`` says when it would be). Ask again after
        ``poll_delay``.
        """
        self._recheck_at = self.pending_slot = None
        if self.configured is None and self.logging:
            span = self.window_span()
            if span is not None and self.limit:
                return self._reserve_in_window(now, self.limit, span)
        if self.credit > 0 and self.configured is None:
            self.credit -= 1
            self._sent_in_period += 1
            self._last_slot = now
            if self._lump_left is not None:
                self._lump_left -= 1
            return now
        rate = self.rate
        if rate is None:
            if not self.responded:
                if self._first_sent:
                    return None
                self._first_sent = True
            elif self.in_flight >= (1 if self._alone else self._release_cap):
                return None
            self._last_slot = now
            return now
        # Spaced by the rate now in force from the last slot, wherever that came from.
        step = 1.0 / rate
        slot = max(now, self._last_slot + step)
        if self._lump_left is not None and self._lump_left <= 0:
            slot = max(slot, self._lump_back_at)
        self._pacer_bound = slot > now
        if self._beyond_horizon(now, slot, SLOT_HORIZON):
            return None
        self._last_slot = slot
        if self._lump_left is not None:
            self._lump_left -= 1  # (past its reset, the lump is back: no slot waits for it)
        if slot > now and self.configured is None:  # a configured rate never starts the log
            self._paced_slots.append(slot)
        self._sent_in_period += 1
        return slot

    @property
    def _ahead(self) -> float:
        """Seconds the trades known to be left will take at the pace in force (0: none
        known, or no pace)."""
        rate = self.rate
        return max(0, self.backlog) / rate if rate else 0.0

    def window_span(self) -> float | None:
        """The window the quota is kept to: the gateway's, a little longer (None: unknown)."""
        if self.window is None or self.limit is None:
            return None
        if self._evenly_paced:
            return self.window / self.probe_factor  # its margin already in
        return self.window / self.probe_factor * (1.0 + WINDOW_SLACK) + WINDOW_GUARD

    def next_window_slot(
        self, now: float, limit: int, span: float, *, take_probe: bool = True
    ) -> float:
        """The earliest time at or after ``now`` with fewer than ``limit`` sends in ``span``
        (or the one request the gateway promised sooner, taken unless ``take_probe`` is False)."""
        log = self._log
        if self._forget_at is not None and now >= self._forget_at:
            # The fixed window has turned: what was sent in it no longer counts.
            del log[: bisect.bisect_right(log, self._forget_upto)]
            self._forget_at = None
        # Sends a span old hold no slot, but are kept a span longer: a late answer
        # is matched against the window its request met (``_reconcile``).
        del log[: bisect.bisect_right(log, now - 2.0 * span)]
        if len(log) - bisect.bisect_right(log, now - span) < limit:
            return now
        slot = max(now, log[-limit] + span)
        promised = self._take_promise(now, slot, limit, span) if take_probe else None
        return slot if promised is None else promised

    def _take_promise(self, now: float, before: float, limit: int, span: float) -> float | None:
        """The send time of the request a reset promised, when it comes ``before`` and
        fits, or None; asked once, the promise is spent either way.

        It fits when it leaves the window the reset opens within its quota:
        counting the sends logged up to a span after it (slots held already in
        it), and from a hint's resolution before it (the reset may be rounded
        up) but not from over a span ago, nor any the answer that promised it
        had counted (a fixed window's turn forgets them all). Unless the window
        is known to be fixed (``turns_fixed``), it may be a sliding log, whose
        reset names when its oldest request goes: one slot, which may have gone
        up to the reset's rounding sooner. A send of ours made since the answer's
        request, and before the promised time, may take it first: the request
        is promised only where there is none (but those the answer counted,
        logged at its arrival).
        """
        if self._probe_at is None or self._probe_at >= before:
            return None
        at, self._probe_at = max(now, self._probe_at), None
        log = self._log
        since = max(at - HINT_RESOLUTION, now - span, self._probe_counted)
        if bisect.bisect_left(log, at + span) - bisect.bisect_right(log, since) >= limit:
            return None
        if not self.turns_fixed:
            since_answered = bisect.bisect_right(log, at) - bisect.bisect_right(
                log, self._probe_counted
            )
            if since_answered > self._probe_logged_late:
                return None
        self._probe_taken = at
        return at

    def _beyond_horizon(self, now: float, slot: float, ahead: float) -> bool:
        """Whether ``slot`` is more than ``ahead`` away; if so, it is not handed out: the
        caller is told to ask again (``poll_delay``), and when it would be (``pending_slot``)."""
        if slot - now <= ahead + HORIZON_TOLERANCE:
            return False
        self._recheck_at, self.pending_slot = slot - ahead, slot
        return True

    def poll_delay(self, now: float) -> float:
        """How long a worker told "not yet" by ``reserve`` waits before asking again."""
        if self._recheck_at is not None:
            return max(FIRST_RESPONSE_POLL, min(self._recheck_at - now, SLOT_RECHECK))
        scout = self._scout_at
        return max(FIRST_RESPONSE_POLL, scout - now) if scout is not None else FIRST_RESPONSE_POLL

    def sooner(self, now: float, held: float) -> float | None:
        """A slot sooner than ``held`` (the worker's logged one, given back for it), or None.

        Workers reserve slots ahead and sleep towards them; meanwhile an answer
        may open an earlier one: the request the gateway promised at its reset,
        or a send freed from the log. A worker asleep until its far slot would
        leave it unused, and with every worker asleep nobody would take it.
        """
        span = self.window_span() if self.logging and self.configured is None else None
        if span is None or not self.limit:
            return None
        scout = self._scout_at
        if scout is not None and held != scout:
            return None  # the burst it belongs to waits for its first request
        self.cancel(held)
        slot = self.next_window_slot(now, self.limit, span, take_probe=False)
        if scout is None and self._take_refill_scout(now, min(slot, held)):
            return now
        promised = self._take_promise(now, min(slot, held), self.limit, span)
        if promised is not None:
            slot = promised
        if slot >= held:
            bisect.insort(self._log, held)
            self._scout_at = scout
            return None
        bisect.insort(self._log, slot)
        self._scout_at = scout if scout is None else slot
        return slot

    def still_holds(self, slot: float) -> bool:
        """Whether ``slot``, handed out earlier, still keeps to the window the log now keeps
        to: one found longer since (a later reset read longer, a try taken back) leaves a
        slot held from before too soon, into a 429. The worker then asks again."""
        span = self.window_span() if self.logging and self.configured is None else None
        if span is None or not self.limit:
            return True  # no log in use
        if slot == self._probe_taken:
            return True  # a promised request goes at the reset, whatever the log says
        log = self._log
        at = bisect.bisect_left(log, slot)
        if at == len(log) or log[at] != slot:
            return False  # given back (a scout got through): sent, it would go unlogged
        turn = self._turn_ahead(self.limit)
        if (
            turn is not None
            and slot < turn
            and slot != self._scout_at
            and not self._left_for(slot, 1)
        ):
            # Held since before the quota was told spent, for a window the log opens before
            # the turn named: one request opens it, the first held to ask; the rest wait for
            # its answer. Held by others too (the same time), it is not told apart: all ask
            # again, and the first to gets a slot of its own.
            if self._scout_at is not None or log[at + 1 : at + 2] == [slot]:
                return False
            self._scout_at = slot
        # A hair's tolerance: a slot a span after a send is computed as that sum.
        before = at - bisect.bisect_right(log, slot - span + 1e-9)
        return before < self.limit

    def _take_paced_slots(self) -> list[float]:
        """The slots the rate handed out that workers still hold (they send then, without
        asking again), for the send log that starts now; the rate keeps none after."""
        held = list(self._paced_slots)
        self._paced_slots.clear()
        return held

    def cancel(self, slot: float) -> None:
        """A reserved slot that was not used (a pause came first, or the trade gave up)."""
        if slot == self._scout_at:
            self._scout_at = None
        if self._refill_scout is not None and slot == self._refill_scout[0]:
            self._refill_scout = None  # never sent: it tells nothing
        log = self._log
        index = bisect.bisect_left(log, slot)
        if index < len(log) and log[index] == slot:
            del log[index]
        elif slot in self._paced_slots:
            self._paced_slots.remove(slot)

    def _reserve_in_window(self, now: float, limit: int, span: float) -> float | None:
        # A window learned with a floor under it, or one being tried shorter, opens
        # each burst with one request: a try that fails costs one 429, not a burst's.
        trying = self.probe_factor > self._probe_held
        scouting = self.window_learned and (self._window_floor is not None or trying) and limit > 1
        turn = self._turn_ahead(limit)
        if (scouting or turn is not None) and self._scout_at is not None:
            if now < self._scout_at + SCOUT_PATIENCE * span:
                return None  # the burst waits for its first request's answer
            self._scout_at = None
        slot = self.next_window_slot(now, limit, span)
        if self._take_refill_scout(now, slot):
            self._sent_in_period += 1
            return now
        if slot != self._probe_taken and self._beyond_horizon(now, slot, max(span, SLOT_HORIZON)):
            # The quota's whole span is taken by slots reserved already (more workers
            # than the quota): this one is given out once the first of those is due.
            self._pacer_bound = True
            return None
        if (scouting and slot - self._last_through >= span / 2) or (
            turn is not None and slot < turn and not self._left_for(slot, 0)
        ):
            # Opens a burst. Slots are told apart by their time: others held at the same
            # time (the log's slot for each of a burst sent at once) would pass for it.
            promised, at = slot == self._probe_taken, bisect.bisect_left(self._log, slot)
            while at < len(self._log) and self._log[at] == slot:
                slot, at = math.nextafter(slot, math.inf), at + 1
            if promised:
                self._probe_taken = slot
            self._scout_at = slot
        if self._probe_at is not None and slot >= self._probe_at:
            self._probe_at = None  # the request the gateway promised has gone
        bisect.insort(self._log, slot)
        self._pacer_bound = slot > now
        self._sent_in_period += 1
        return slot

    def _left_for(self, slot: float, logged: int) -> bool:
        """Whether the quota a spent quota's report left serves ``slot`` (``logged``: 1 if
        the slot is in the log already): fewer sends than it left are logged after that
        report's request up to it. Slots at the same time all count as before it."""
        log, left = self._log, self._spent_left
        taken = (
            bisect.bisect_right(log, slot) - logged - bisect.bisect_right(log, self._spent_since)
        )
        return taken < left

    def _turn_ahead(self, limit: int) -> float | None:
        """The turn a spent quota's epoch reset named, at the earliest, while the window read
        from such resets may be a second short (see ``_named_turn``): the window the log
        opens before it opens with one request. None: no such turn."""
        if self._spent is None or limit <= 1 or self.window_stated or self._turns_early:
            return None
        return self._spent[1]

    def _reconcile(
        self, now: float, sent_at: float, quota: Quota, span: float, throttled: bool
    ) -> float | None:
        """Match the send log to what the gateway says it counted; a pause when the quota
        is spent and comes back in one lump (a fixed window), else None.

        The gateway counted ``limit - remaining`` requests up to this one (with this
        one, unless it was ``throttled``: a refused request is not counted). More
        than the log holds: others share the quota, and their sends are logged
        as if made now (the safe guess). Fewer: the gateway forgot some sooner
        than a sliding window would; the oldest are dropped, and a large lump
        marks the window as fixed.
        """
        assert self.limit is not None  # noqa: S101
        assert self.window is not None  # noqa: S101
        assert quota.remaining is not None  # noqa: S101
        log = self._log
        # Sends within one round trip of this one may have reached the
        # gateway before or after it: they count on neither side.
        settled = sent_at - max(0.0, now - sent_at)
        low = bisect.bisect_right(log, sent_at - span)
        middle = bisect.bisect_left(log, settled)
        used = max(0, self.limit - quota.remaining)
        sent_by_now = bisect.bisect_right(log, now) - low
        logged_late = max(0, used - sent_by_now)
        if logged_late:
            # More than we have sent in the window: others share the quota (or
            # a send of ours went unlogged). Logged as if made now: they may
            # have reached the gateway as late as that.
            at = bisect.bisect_right(log, now)
            log[at:at] = [now] * logged_late
        elif (before := used - (not throttled)) < middle - low:
            # The settled sends do not include this request.
            # Forgotten while younger than half a window: not a sliding window.
            young = middle - min(middle, bisect.bisect_right(log, sent_at - self.window / 2))
            if before < young - max(2, LUMP_SHARE * self.limit):
                self.lumpy = self.turns_fixed = True
            del log[low : low + middle - low - before]
        if quota.remaining == 0 and quota.reset:
            wait = self.next_window_slot(now, self.limit, span, take_probe=False) - now
            if quota.reset <= wait and self.lumpy:
                # Back in one lump at the reset (unless the log frees a slot
                # sooner: a bucket's reset may say when it is full again), if the
                # window is known to be fixed: a sliding log's reset frees one slot.
                if self.turns_fixed:
                    self._forget_at, self._forget_upto = now + quota.reset, sent_at
                last = self._last_logged(now)
                if self._refill_scout_due(now) and last is not None:
                    # Up in time for a refill scout: the log holds the rest back.
                    return max(0.0, last + self._scout_share * HINT_RESOLUTION - now)
                return quota.reset
            scout = self._scout_pause(now, now + wait)
            if scout is not None:
                return scout  # the log holds the rest back
            # A send of ours due by the reset, give or take the log's slack, a
            # guard and a round trip, takes what comes back: its answer tells the rest.
            slack = span - self.window + WINDOW_GUARD
            back = now + quota.reset + slack + max(0.0, now - sent_at)
            due = bisect.bisect_right(log, back) > bisect.bisect_right(log, now)
            promised = quota.reset + WINDOW_GUARD
            if promised < wait and sent_at >= self._probe_taken and not due:
                # The gateway says quota is back sooner than the log frees a
                # slot: one request then, whose answer tells how much (a guard
                # after it: a request landing on the reset may count as inside;
                # the guard may put it past the log's slot, which then takes it).
                # Only the answer to that request, or a later one, asks again.
                self._probe_at, self._probe_counted = now + promised, sent_at
                self._probe_logged_late = logged_late
        return None

    def _refill_scout_due(self, now: float) -> bool:
        """Whether a refill scout may go now, but for the log (see ``_take_refill_scout``)."""
        since = self._one_second_since
        # Kept to a shorter window the half-second scouts bound, while they still pass.
        read = self.window if self._window_bound is None else self.window_estimate
        one_second = (
            read is not None
            and abs(read - HINT_RESOLUTION) < 1e-6
            and (self._window_bound is None or bool(self._half_passes))
        )
        return (
            one_second
            and (self.limit or 0) > EARLY_LIMIT
            and since is not None
            and now - since >= REFILL_SCOUT_READ
            and self._resets_whole
            and not self.window_stated
            and not self.refills_faster
            and self._refill_scout is None
            and now >= self._refill_next
        )

    def _scout_pause(self, now: float, slot: float) -> float | None:
        """The pause until a scout when one is due on this spent quota, whose log's next
        ``slot`` is sooner than its reset; else None. A refill scout if it can go (see
        ``_take_refill_scout``), else a half-second one (HALF_SCOUT_SHARE), but not while
        refill scouts are getting through (a bucket, or its burst a second)."""
        last = self._last_logged(now)
        if not self.lumpy or last is None or not self._refill_scout_due(now):
            return None
        share = self._scout_share
        at = last + share * HINT_RESOLUTION
        lead = SCOUT_LEAD if self._refill_passes else HINT_RESOLUTION * (1.0 - share)
        if share == REFILL_SCOUT_SHARE and slot - at >= lead:
            return max(0.0, at - now)
        if self._half_scouts_over or self._refill_passes:
            return None
        at = last + HALF_SCOUT_SHARE * HINT_RESOLUTION
        if slot - at < SCOUT_LEAD:
            return None
        self._scout_share = HALF_SCOUT_SHARE
        return max(0.0, at - now)

    def _take_refill_scout(self, now: float, slot: float) -> bool:
        """Whether a request may go ``now`` as a refill scout (see REFILL_SCOUT_SHARE) or a
        half-second one (HALF_SCOUT_SHARE): the freshest report says the quota is spent, the
        log's next ``slot`` is most of a second away (unless the last scout got through; a
        half-second scout's, SCOUT_LEAD), the last send that share of a second ago, on a
        one-second window read from whole-second resets, and not before the wait after a
        refused one. If so, it is logged."""
        # Refused, its Retry-After (a second at least) ends at most a share of a second
        # after the log's next slot; once one got through, the next goes as soon.
        share = self._scout_share
        soon = slot - now < HINT_RESOLUTION * (1.0 - share)
        if soon and not self._refill_passes and share == REFILL_SCOUT_SHARE:
            return False
        if slot - now < SCOUT_LEAD:
            return False  # its answer would come after the log's own request
        if not self._refill_scout_due(now) or self._fresh_remaining:
            return False  # not spent: the slots held later need not be the next window's
        last = self._last_logged(now)
        if last is None or now - last < share * HINT_RESOLUTION - HORIZON_TOLERANCE:
            return False
        self._refill_scout = (now, last, slot)
        self._remaining_at_scout = self._fresh_remaining
        bisect.insort(self._log, now)
        return True

    def _last_logged(self, now: float) -> float | None:
        """The latest send logged by ``now`` (None: none)."""
        log = self._log
        return log[bisect.bisect_right(log, now) - 1] if log and log[0] <= now else None

    def _scouted(self, sent_at: float) -> bool:
        """Whether a request sent at ``sent_at`` tells of the refill scout in force: sent at
        or after it, and before the log's next send."""
        scout = self._refill_scout
        return scout is not None and scout[0] <= sent_at < scout[2]

    def _refill_scout_through(self, now: float, sent_at: float, quota: Quota) -> bool:
        """The refill scout (or a request sent with it) got through: what came back since
        the send before it, a second. Whether that makes REFILL_SCOUT_PASSES in a row.
        The slots workers hold for later are given back (asked for again, they go as the
        log now allows: what it dropped as forgotten)."""
        assert self._refill_scout is not None  # noqa: S101
        before = self._refill_scout[1]
        self._refill_scout = None
        del self._log[bisect.bisect_right(self._log, now) :]
        # ``remaining`` and this one, but for what was left when it went, came back since.
        back = (quota.remaining or 0) + 1 - self._remaining_at_scout
        if self._scout_share == HALF_SCOUT_SHARE:
            if self.limit is not None and (quota.remaining or 0) + 1 >= self.limit:
                self._half_scout_through(before, now)
                return False
            self._end_half_scouts()  # a bucket's refill: a refill scout's pass
        self._refill_rate = max(self._refill_rate, back / max(sent_at - before, 1e-3))
        self._refill_passes += 1
        return self._refill_passes >= REFILL_SCOUT_PASSES

    def _refill_scout_refused(self, now: float) -> None:
        """The refill scout was refused: the window read holds (see REFILL_SCOUT_WAIT)."""
        assert self._refill_scout is not None  # noqa: S101
        self._refill_refused_sent = self._refill_scout[0]
        self._refill_scout = None
        self._refill_passes = 0
        if self._scout_share == REFILL_SCOUT_SHARE and not self._half_scouts_over:
            self._scout_share = HALF_SCOUT_SHARE  # at the next spent quota, no wait
            return
        if self._scout_share == HALF_SCOUT_SHARE:
            self._end_half_scouts()
        self._refill_next = now + self._refill_wait
        self._refill_wait *= 2.0

    def _half_scout_through(self, before: float, answered: float) -> None:
        """A half-second scout answered at ``answered`` (the send before it at ``before``)
        found the whole quota back: the window it bounds with the passes before it in a row,
        if below a second, is kept to (see HALF_SCOUT_SHARE). The turn came before the
        scout reached the gateway, which may be well after it was sent (a slow request):
        only its answer is surely later."""
        passes = self._half_passes
        passes.append((before, answered))
        bound = (
            min(
                (passes[k][1] - passes[j][0]) / (k - j)
                for k in range(1, len(passes))
                for j in range(k)
            )
            if len(passes) > 1
            else math.inf
        )
        if bound < HINT_RESOLUTION * (1.0 - CHAIN_MARGIN):
            if self._window_bound is None or bound < self._window_bound:
                self._window_bound = bound
            self.window = min(self.window or math.inf, self._window_bound)

    def _end_half_scouts(self) -> None:
        """No more half-second scouts this run; a window they bounded stays kept to."""
        self._half_scouts_over = True
        self._half_passes.clear()
        self._scout_share = REFILL_SCOUT_SHARE

    def _shorter_event(self, quota: Quota) -> PacingEvent | None:
        """``pacing.window_learned``, kind ``shorter``, when the half-second scouts bound
        the window a tenth or more below what was last reported (or the resets' second)."""
        bound, reported = self._window_bound, self._bound_reported or HINT_RESOLUTION
        if bound is None or bound > reported * (1.0 - REPORTABLE_CHANGE):
            return None
        self._bound_reported = bound
        return self._window_kind_event("shorter", quota.limit, window_s=round(bound, 4))

    def _pace_as_a_bucket(self) -> None:
        """The gateway gave back more than the window its resets read allows (at least
        ``_refill_rate`` a second): a bucket refilling faster than its rounded-up resets
        say. Paced by rate from now on, never stepped back below that one but by a 429
        (see ``on_throttled``); no window is read from its resets, nor lumps from its
        levels, again."""
        self.refills_faster = True
        self.lumpy = self.turns_fixed = False
        self._refill_scout = None
        self._doubled_from = None
        self._period_start = None
        if self.logging and not self.window_stated:
            self.logging = False
            self._log = []
            self._forget_at = self._probe_at = None
        self.probe_factor = self._bucket_held = max(self.probe_factor, self._probe_floor)

    def _bucket_event(self, quota: Quota) -> PacingEvent:
        """``pacing.window_learned``, kind ``bucket``: the window read from resets was none."""
        refill = round(self._refill_rate, 3)
        return self._window_kind_event("bucket", quota.limit, refill_per_s=refill)

    def _window_kind_event(self, kind: str, limit: int | None, **fields: float) -> PacingEvent:
        """``pacing.window_learned`` of ``kind``, with the rate it brings (reported so)."""
        rate = self.rate or 0.0
        self._reported = rate
        return PacingEvent(
            "pacing.window_learned",
            {"kind": kind, "limit": limit, **fields, "rate_per_s": round(rate, 4)},
        )

    @property
    def _probe_floor(self) -> float:
        """The least the probe factor is stepped back to: half the pace the headers give,
        or the refill rate a bucket was seen to keep, less what 429s took off it since
        (see ``_pace_as_a_bucket``)."""
        proven = 0.0
        if self.refills_faster and self.header_rate:
            proven = self._refill_rate * HEADER_MARGIN / self.header_rate
        return max(0.5, proven)

    def _report(self, reason: str, **fields: object) -> PacingEvent | None:
        rate = self.rate
        if rate is None:
            return None
        if self._reported is None:
            self._reported = rate
            return PacingEvent(
                "pacing.rate_learned", {"rate_per_s": round(rate, 4), "source": reason, **fields}
            )
        if abs(rate - self._reported) < REPORTABLE_CHANGE * self._reported:
            return None
        event = PacingEvent(
            "pacing.rate_changed",
            {
                "from_per_s": round(self._reported, 4),
                "rate_per_s": round(rate, 4),
                "reason": reason,
                **fields,
            },
        )
        self._reported = rate
        return event

    def on_response(self) -> None:
        """An answer that is neither a success nor a 429 (or no answer at all)."""
        self.responded = True
        self._release_cap += 1
        self._alone = False
        self._scout_at = None  # maybe the first request's: the burst need not wait on

    def _watch_headroom(self, now: float, quota: Quota, window: float | None) -> str | None:
        """Probe upwards after a period in which the quota stayed high and did not fall.

        Only when the window is guessed from resets (a stated policy window is
        trusted). Both conditions matter: in the first window of a sliding log
        the quota is high too, but it falls as the log fills; under-pacing a
        token bucket leaves it high and flat.
        """
        if quota.remaining is None or not quota.limit or quota.window is not None:
            return None
        level = quota.remaining - self.in_flight
        if self._period_start is None:
            self._period_start, self._period_level = now, level
            self._low_water, self._sent_in_period = math.inf, 0
            self._through_in_period, self._spent_in_period = 0, False
            return None
        self._low_water = min(self._low_water, level)
        elapsed = now - self._period_start
        if elapsed < max(window or 1.0, 1.0):
            return None
        flat = level >= self._period_level - 1
        roomy = self._low_water > HEADROOM_SHARE * quota.limit and flat and self._pacer_bound
        sent, unused, through = self._sent_in_period, self._low_water, self._through_in_period
        unrefused = self._last_429 is None or self._last_429 < self._period_start
        spent = self._spent_in_period or quota.remaining == 0
        paced = self.rate
        self._period_start, self._period_level = now, level
        self._low_water, self._sent_in_period = math.inf, 0
        self._through_in_period, self._spent_in_period = 0, False
        if self.refills_faster and unrefused and not spent and paced is not None:
            # A bucket the pace never ran dry, drawn on at half that pace at least: twice
            # as fast, until a pace runs it dry (``_undo_doubling`` takes it back); then
            # halfway between that and what held, to within BUCKET_PRECISION.
            held, failed = self.probe_factor, self._bucket_failed
            if 2 * through >= paced * elapsed and (
                failed is None or failed - held > BUCKET_PRECISION * held
            ):
                self._bucket_held = held
                self.probe_factor = held * PROBE_STEP if failed is None else (held + failed) / 2
                return "quota_unused"
            return None
        if not unrefused or self._unrefused_since is None:
            self._unrefused_since, self._through_unrefused = now - elapsed, 0
        self._through_unrefused += through if unrefused else 0
        # No window of ``limit`` lets more through than that in each window the periods
        # touch (a fixed one's turn inside makes one more). A bucket of ``limit`` that
        # did refilled what went beyond its burst. A window read from epoch resets on a
        # server clock not yet known to the second may be a second long: counted as the
        # least it may be (a fixed 10 per second read as 2 s, its spent quota waited out
        # each second, was taken for a bucket after 8.6-10.6 s, then tried into 429s).
        lasted = now - self._unrefused_since
        counted = window
        if window and quota.window is None and not self._window_estimate_sure:
            counted = max(self._window_least, HINT_RESOLUTION)
        touched = math.floor(lasted / (counted or 1.0)) + 2
        handful = quota.limit <= EARLY_LIMIT  # whose resets are tried sooner instead
        more = self._through_unrefused > quota.limit * touched
        if more and not handful and not self.refills_faster:
            self._refill_rate = max(
                self._refill_rate, (self._through_unrefused - quota.limit) / lasted
            )
            self._pace_as_a_bucket()
            return "refills_faster"
        if roomy and sent:
            # The gateway would have taken at least ``unused`` more in this period; and
            # with the quota never below all but one, the pace never drew on it at all
            # (a bucket refilling faster than its rounded-up reset says): twice as fast.
            # Should the doubled pace run the quota out, it goes back to what held.
            full = unused >= quota.limit - 1
            self._doubled_from = self.probe_factor if full else None
            self.probe_factor *= PROBE_STEP if full else min(PROBE_STEP, (sent + unused) / sent)
            return "quota_unused"
        return None

    def on_quota(
        self, now: float, quota: Quota, sent_at: float | None = None, *, throttled: bool = False
    ) -> tuple[PacingEvent | None, float | None]:
        """Pace from a response's quota headers; returns an event and a pause (seconds).

        The rate is the policy's (limit / window, the window stated or the
        longest reset seen); without a limit, the remaining quota spread over
        the time to reset. A quota already spent pauses the batch until it
        comes back: its reset, or one paced slot per request in flight when
        the rate is known (a rounded-up reset would waste most of a second).

        When the policy (limit and window) is known, the send log does the
        pacing instead (``window_span``); a report about a request sent before
        the freshest one reported is stale and only feeds the estimates.
        ``throttled``: the report came with a 429, whose Retry-After governs the wait.
        """
        self.responded = True
        self.headers_seen = True
        sent = now if sent_at is None else sent_at
        fresh, tied = sent >= self._freshest, sent == self._freshest
        self._freshest = max(self._freshest, sent)
        if fresh and quota.remaining is not None:
            # Of requests sent together, the one the gateway counted last reports least.
            lowest = min(self._fresh_remaining, quota.remaining)
            self._fresh_remaining = lowest if tied else quota.remaining
        scout = self._refill_scout
        if scout is not None and fresh and sent >= scout[2]:
            # Sent at or after the log's next slot, it told nothing (or its answer was
            # lost, or came without quota headers): scouting goes on without it.
            self._refill_scout = None
        if self._scouted(sent) and throttled:
            self._refill_scout_refused(now)
        elif self._scouted(sent) and self._refill_scout_through(now, sent, quota):
            self._pace_as_a_bucket()
            return self._bucket_event(quota), None
        if quota.reset is not None:
            self._resets_whole = _told_to_the_second(quota.reset, quota.reset_error)
            if quota.reset_at is not None and not self._half_scouts_over:
                self._end_half_scouts()  # epoch resets (see HALF_SCOUT_SHARE)
        if quota.reset is not None and quota.window is None:
            seen = window_from_reset(quota.reset)
            # Read on a server clock not yet known to the second, an epoch reset
            # may be a second long: its window stands only until a sure one comes,
            # but the least it may be stands: a sure reading of a sliding window's
            # quota partly back may come in far below it (a reset is never longer).
            least = window_from_reset(max(0.0, quota.reset - quota.reset_error))
            sure = not quota.reset_error or least == seen
            if not sure and least is not None:
                self._window_least = max(self._window_least, least)
            if seen is not None and sure and not self._window_estimate_sure:
                self.window_estimate = max(seen, self._window_least)
                self._window_estimate_sure = True
            elif seen is not None and sure >= self._window_estimate_sure:
                self.window_estimate = max(self.window_estimate or seen, seen)
        if quota.reset_at is not None and quota.window is None:
            self._named_turn(now, sent, quota, fresh=fresh, throttled=throttled)
            if not throttled and self._names_a_bucket(sent, quota):
                self._pace_as_a_bucket()
                return self._window_kind_event("bucket", quota.limit), None
        if self._window_estimate_sure and self.window_estimate == HINT_RESOLUTION:
            if self._one_second_since is None:
                self._one_second_since = now
        else:
            self._one_second_since = None
        if quota.limit:
            self.window = quota.window or self.window_estimate
            if self._window_bound is not None and not quota.window and self.window:
                self.window = min(self.window, self._window_bound)
            self.limit = quota.limit
            self.window_stated = self.window_stated or quota.window is not None
        span = self.window_span()
        modelled = span is not None and self.configured is None and quota.remaining is not None
        # A window read from resets is trusted as one when it is sure and longer
        # than a second: a sub-second refill, rounded up, also reads as a second.
        # A second is trusted once the quota came back in a lump (a bucket's
        # refill over a pause looks so too, but the log then learns from the
        # counts reported that it forgets sooner); not for a quota of one or two,
        # whose whole-second resets are tried sooner instead (EARLY_LIMIT).
        estimate = self.window_estimate or 0.0
        lump_of_a_second = self.lumpy and estimate >= HINT_RESOLUTION
        read = (
            self._window_estimate_sure
            and not self.refills_faster
            and (
                estimate > HINT_RESOLUTION or (lump_of_a_second and (self.limit or 0) > EARLY_LIMIT)
            )
        )
        if modelled and not self.logging and (self.window_stated or read):
            # Pace by the send log from now on. The requests in flight were sent
            # unlogged, and this report (for a request sent by ``now``) does not
            # count them. Margins cut while pacing by a guessed rate were for
            # that guess, not for the policy now known.
            self.logging = True
            self.probe_factor = 1.0
            in_flight = [math.nextafter(now, math.inf)] * self.in_flight
            self._log = sorted([*in_flight, *self._take_paced_slots()])
        if modelled and self.logging and span is not None:
            assert self.window is not None  # noqa: S101
            assert self.limit is not None  # noqa: S101
            self.header_rate = max(self.limit / self.window * HEADER_MARGIN, MIN_RATE)
            reason = self._watch_headroom(now, quota, self.window) or "headers"
            if reason == "refills_faster":
                return self._bucket_event(quota), None  # paced by rate from the next
            was_lumpy = self.lumpy
            pause = self._reconcile(now, sent, quota, span, throttled) if fresh else None
            if pause is not None:
                reason = "quota_exhausted"
            event = self._report(reason, limit=quota.limit, window_s=self.window)
            event = self._shorter_event(quota) or event
            if self.lumpy and not was_lumpy and event is None:
                event = PacingEvent(
                    "pacing.window_learned",
                    {"kind": "fixed", "limit": quota.limit, "window_s": self.window},
                )
            return event, pause
        spent_in_flight = False  # see the lump's count below
        if quota.remaining is not None and fresh:
            if self._cut_resume is not None and sent >= self._cut_resume and quota.remaining:
                self._cut_resume = None  # quota was back by then: the estimate held
            previous = self._last_remaining
            # Back between two reports, beyond the requests in flight and one more: with
            # the quota known, most of it (a window's lump, not a bucket's trickle, whose
            # pace this path cannot know: a sub-second refill's reset reads as a second).
            # A bucket refilled to full over a pause looks the same: taken for a window,
            # its spent quota waits out the reset.
            # Of a handful (2-8 a window), most is all but the request reported: the lot.
            limit = quota.limit or 0
            lump = (1.0 - LUMP_SHARE) * limit + 1
            if limit >= 2:
                lump = min(lump, limit - 2)
            back = previous is not None and quota.remaining > previous + self.in_flight + lump
            if back and not self.refills_faster:
                self.lumpy = True
            self._last_remaining = quota.remaining
            # A window's lump goes whole (what is left at its turn is lost); a bucket
            # keeps one back, so its level shows the headroom a faster pace would use.
            # A bucket known to refill faster is paced only: spent, the pace is too fast.
            # A slot the pace handed out is sent when due, without asking again: the
            # quota it will take is not spare either, until it is sent (due, its worker
            # may not have woken yet).
            held = len(self._paced_slots)
            spare = quota.remaining - self.in_flight - held - (not self.lumpy)
            self.credit = 0 if self.refills_faster else max(0, spare)
            # What a window's lump leaves beyond the requests in flight sent since this one
            # and the slots held goes, at once or at the pace, and no more until the reset:
            # a slot at the pace past it is refused. Taken whole by the requests in flight
            # sent since, it is spent once they land: a slot held at the pace, due before
            # the answer that says so, would be refused too (with a Retry-After rounded up
            # to the second: a window of a second lost); the batch waits as on a report of
            # none. Those sent before it were counted in this report already (taken as
            # still to count, a fixed window of 27 paused two slots short). Of a quota of
            # one or two, the whole-second reset is tried sooner instead (EARLY_LIMIT).
            self._lump_left = None
            if self.lumpy and limit > EARLY_LIMIT and quota.reset:
                since = self._in_flight_since(sent)
                left = quota.remaining - since - held
                self._lump_left, self._lump_back_at = max(0, left), now + quota.reset
                spent_in_flight = 0 < quota.remaining <= since
        window = quota.window or self.window_estimate
        rate: float | None = None
        if quota.limit and window:
            rate = quota.limit / window * HEADER_MARGIN
        elif quota.remaining is not None and quota.reset:
            rate = max(quota.remaining - self.in_flight, 1) / quota.reset * HEADER_MARGIN
        if rate is not None:
            self.header_rate = max(rate, MIN_RATE)
        if quota.remaining == 0:
            self._spent_in_period = True
        reason = self._watch_headroom(now, quota, window) or "headers"
        if reason == "refills_faster":
            return self._bucket_event(quota), None
        pause = None
        if quota.remaining == 0:
            self._undo_doubling()
        if quota.remaining == 0 and quota.reset is not None and quota.reset > 0 and throttled:
            pause = quota.reset  # the 429's Retry-After governs; ``on_throttled`` the pace
        elif (
            (quota.remaining == 0 or spent_in_flight)
            and quota.reset is not None
            and quota.reset > 0
        ):
            pause = self._reset_share(now, sent, quota)
            paced = self.rate
            # A reset longer than one request's share of the window, by more than
            # its resolution, is a window's end, not a token's refill: wait it out.
            if (
                paced is not None
                and quota.limit
                and window
                and not self.lumpy
                and quota.reset - quota.reset_error <= window / quota.limit + HINT_RESOLUTION
            ):
                slot = (self.in_flight + 1) / paced
                if slot < pause:
                    # Paced sooner than the reset, the quota ran out: step back.
                    # A slot no sooner than it says nothing of the pace (a
                    # bucket of one reads spent after every request).
                    pause = slot
                    self.probe_factor = max(self.probe_factor * PROBE_BACK, self._probe_floor)
                    reason = "quota_exhausted"
            elif self.lumpy and self._window_estimate_sure and quota.window is None and window:
                # A window's lump is back within a window of the request that spent
                # it; a reset read longer than that was rounded up, or read on a
                # server clock known only to the second. Should the estimate be a
                # second short, the first request refused after this pause lengthens
                # it (``on_throttled``). A trickle's long reset is a window's end: waited out.
                cut = window + WINDOW_GUARD
                if cut < pause:
                    pause, self._cut_resume = cut, now + cut
        if pause is not None and pause <= 0.0:
            pause = None  # resumed from the send: already due
        return self._report(reason, limit=quota.limit, window_s=window), pause

    def _named_turn(
        self, now: float, sent: float, quota: Quota, *, fresh: bool, throttled: bool
    ) -> None:
        """Learn from the turn an epoch reset names, whatever the clocks: the same epoch
        named twice is the same turn.

        A reset read as 4.97 s is 3.97-4.97 s off (rounded up to the epoch second), so
        the window is read as 4: right for one turning at a fraction of a second, a
        second short for one turning on the second, as most do. Which it is, only a
        request sent between the two tells: until then a spent quota's next window
        opens with one request (``_reserve_in_window``; slots held for it since before
        the quota was told spent too, ``still_holds``; and a quota told to have fewer
        left than the sends logged to go before that turn, past those few, ``_left_for``),
        so a wrong guess costs one 429, not a burst's. A 429 naming the turn a success
        named, for a request sent longer after that success was answered than the window
        read, says the window is at least that long: both were counted within one fixed
        window (a sliding log's oldest request may have changed within the named second:
        a second more at most).
        """
        assert quota.reset_at is not None  # noqa: S101
        named, spent, left = quota.reset_at, self._spent, quota.remaining
        back = left is None or left >= self._spent_left  # not the last of what was left
        if spent is not None and not throttled and sent >= spent[0] and back:
            # Sent once the quota was known spent, and through: it is back. Before the turn
            # that spent quota named, it comes back sooner than that second says (a window
            # turning at a fraction of a second, a sliding log): the window read is not a
            # second short for that reason. (Those sent before may have been counted first;
            # of a few sends the quota had left, one may reach the gateway after the turn,
            # so it is early only if answered before it.)
            early = (now if self._spent_left else sent) < spent[1]
            self._turns_early = self._turns_early or early
            self._spent = None
        turns = self._turn_named
        # Of a burst answered out of the order counted, the report that spent the quota may
        # not be the freshest: spent all the same, if it names the latest turn named.
        unspent = self._spent is None or self._spent_left > 0
        tells = fresh or (unspent and named >= max(turns, default=-math.inf))
        if tells and left is not None and quota.reset:
            turn = now + quota.reset - quota.reset_error  # at the earliest
            # Left to fewer than the sends logged after this one before that turn (slots
            # held for a window the log opens sooner): as good as spent, once those are.
            log = self._log
            due = bisect.bisect_left(log, turn) - bisect.bisect_right(log, sent)
            fewer = self._spent is None or left < self._spent_left  # the least of a tie
            if left == 0 or (due > left and fewer and not throttled):
                self._spent, self._spent_left, self._spent_since = (now, turn), left, sent
        if not throttled:
            turns.setdefault(named, now)  # answers are told in the order they came
            if len(turns) > NAMED_TURNS_KEPT:
                del turns[min(turns)]
            return
        answered, estimate = turns.get(named), self.window_estimate
        if answered is None or estimate is None or sent - answered <= estimate:
            return
        self.window_estimate = math.floor(sent - answered) + HINT_RESOLUTION
        self._named_longer = True

    def _names_a_bucket(self, sent: float, quota: Quota) -> bool:
        """Whether this report's epoch reset shows a bucket's time to full, not a window's turn;
        a report of the whole quota back is kept as the one later reports are read against.

        Once the whole quota is back (all but the request reported), a window names one
        turn for a window at least: a fixed one until it turns, and its turns are a window
        apart; a sliding log its oldest request's exit, which stays for a window. A bucket
        names when it is full again, later as it drains: a later turn named within the
        window read less a second, and less than the window read further on (a fixed one
        may turn meanwhile, if the whole quota was back late in it), is a bucket's (one of
        41 refilling 30 a second reads as a window of 2 s, and its bursts never run it dry:
        kept to as a window, it got 20 a second).
        """
        named, limit, left = quota.reset_at, quota.limit, quota.remaining
        if named is None or limit is None or left is None or limit <= EARLY_LIMIT:
            return False
        if left >= limit - 1:
            self._whole_named = (sent, named)
            return False
        whole, estimate = self._whole_named, self.window_estimate
        if self.refills_faster or whole is None or estimate is None:
            return False
        since, turn = whole
        return (
            self._window_estimate_sure
            and since <= sent <= since + estimate - HINT_RESOLUTION
            and turn < named < turn + estimate
        )

    def _undo_doubling(self) -> None:
        """The quota ran out: a pace doubled since it was last seen unused was too fast;
        on a bucket, a pace tried faster than the one that held."""
        if self.refills_faster:
            if self.probe_factor > self._bucket_held:
                failed = self._bucket_failed
                self._bucket_failed = min(failed or math.inf, self.probe_factor)
                self.probe_factor = self._bucket_held
            return
        if self._doubled_from is not None:
            self.probe_factor, self._doubled_from = self._doubled_from, None

    @property
    def _early_share(self) -> float:
        """The share of a whole-second reset the batch waits now: a try's, or what held."""
        return self._early_held if self._early_try is None else self._early_try

    def _reset_share(self, now: float, sent_at: float, quota: Quota) -> float:
        """The wait for ``quota`` (spent, answered ``now`` to a request sent at ``sent_at``):
        its reset, or a share of it, a try begun if one is due (see EARLY_FIRST_TRY); the
        whole reset when told finer than the second, longer than one, or of a quota
        larger than EARLY_LIMIT."""
        assert quota.reset is not None  # noqa: S101
        whole = _told_to_the_second(quota.reset, quota.reset_error)
        small = quota.limit is not None and quota.limit <= EARLY_LIMIT
        if not whole or not small or quota.reset > HINT_RESOLUTION + 1e-6:
            return quota.reset
        if self._early_try is None:
            held, failed = self._early_held, self._early_failed
            if held >= 1.0:
                # Failed at once: a window's turn, or a slower bucket; tried further up.
                share = EARLY_LADDER * failed if failed else EARLY_FIRST_TRY
            else:
                share = (held + failed) / 2 if failed else held / 2
            # Between a share that held and one refused, a bucket of one is tried when
            # what the try would save pays for its 429 (see EARLY_PAYBACK).
            bisecting = held < 1.0 and failed > 0 and quota.limit == 1
            due = self._early_try_pays(share) if bisecting else now >= self._early_next
            apart = held - failed > EARLY_PRECISION * held
            if due and EARLY_MIN_SHARE <= share <= EARLY_LAST_TRY and apart:
                self._early_try, self._early_passes = share, 0
        share = self._early_share
        if share >= 1.0:
            return quota.reset
        # Counted from the send, not the answer: the gateway counted the request in
        # between, and a share that holds so holds the pace closer to the bucket's.
        resume = max(now, sent_at + share * quota.reset)
        # The answer now coming in tells of the resume before: kept beside this one.
        self._early_telling.append((resume, now + quota.reset))
        return resume - now

    def _early_try_pays(self, share: float) -> bool:
        """Whether a try at ``share``, below the share that held, would gain at least
        EARLY_PAYBACK times what it costs should it fail: the time the trades left would
        save at its pace, against the pause a 429 brings (the last one's, or a second)."""
        cost = self._last_pause or HINT_RESOLUTION
        return self._ahead * (1.0 - share / self._early_held) >= EARLY_PAYBACK * cost

    def _early_verdict(self, now: float, sent_at: float, *, held: bool) -> bool:
        """Whether a success or a 429 (``held`` False) of a request sent at ``sent_at`` decides
        a whole-second reset resumed sooner: the try in force, or the share that held."""
        telling = self._early_telling
        while telling and telling[0][1] <= sent_at:
            telling.popleft()  # sent after the whole reset would have ended: no verdict
        if not telling or sent_at < telling[0][0]:
            if self._early_try is not None and not telling:
                self._early_try = None  # nothing was spent since
            return False
        telling.popleft()
        trying = self._early_try
        if held:
            if trying is None:
                return False
            # A request through may have found a token left by chance: a try stands once
            # EARLY_PASSES have, each sent after its own resume.
            self._early_passes += 1
            if self._early_passes < EARLY_PASSES:
                return False
            self._early_held, self._early_try = trying, None
            return True
        self._early_try = None
        if trying is not None:
            self._early_failed = trying
            if self._early_held >= 1.0 and EARLY_LADDER * trying <= EARLY_LAST_TRY:
                return True  # up the ladder at once: two 429s in all on a window
        else:
            # The share that held failed: a window that turned early once, say.
            self._early_held = min(1.0, self._early_held * EARLY_BACK)
            self._early_failed = 0.0
        self._early_next, self._early_wait = now + self._early_wait, 2.0 * self._early_wait
        return True

    def streak_with(self, sent_at: float) -> int:
        """The batch's 429s in a row, counting one for a request sent at ``sent_at``
        (unless it was in flight when the last came back: the same throttle). A run
        begun by a pause cut to a slot (``throttle_pause``) counts one less: that
        pause was no backoff, and the next is the first."""
        streak = self.throttle_streak + self._after_last_429(sent_at)
        return streak - 1 if self._slot_paused and streak > 1 else streak

    def _after_last_429(self, sent_at: float) -> bool:
        # Sent when the last 429 came back, or later: not in flight then (a retry
        # sent at once, as after ``Retry-After: 0``, is at the same instant).
        return self._last_429 is None or sent_at >= self._last_429

    def on_success(self, now: float, sent_at: float) -> PacingEvent | None:
        """A request went through: the throttle streak ends; a learned rate creeps up."""
        self.responded = True
        self._last_through = max(self._last_through, sent_at)
        if self._first_throttled_sent is None or sent_at < self._first_throttled_sent:
            self._first_burst += 1
        self._release_cap += 1
        learning = not self.headers_seen and not self.window_learned
        if learning:
            recent = self._recent_sends
            recent.append(sent_at)
            if len(recent) > 2 * RECENT_SENDS_KEPT:
                del recent[:-RECENT_SENDS_KEPT]
        if self._after_last_429(sent_at):
            # Only a success sent after the last 429 ends the streak: one sent
            # before it came back says nothing of the gateway now.
            self._alone = False
            self.throttle_streak = 0
            self._slot_paused = False
            first = self._successes_since_429 == 0
            self._successes_since_429 += 1
            if first and learning:
                learned = self._settle_unhinted(now, sent_at)
                if learned is not None:
                    return learned
        scout = self._scout_at
        if scout is not None and sent_at >= scout:
            self._scout_at = None
            found = self._burst_opening(now, sent_at)
            if found is not None:
                return found
        if self.window_learned and not self.headers_seen:
            self._through_since_learned += 1
            counted = self._count_late_quota(sent_at)
            if self._probe_started is not None and sent_at >= self._probe_started:
                self._probe_delivered += 1
            elif self._near_limit_try is not None:
                self._count_late_success(sent_at, *self._near_limit_try)
            if self._window_floor is not None:
                return self._bisect_window(now) or counted
            return self._probe_learned_window(now) or counted
        if self.headers_seen:
            if self._period_start is not None and sent_at >= self._period_start:
                self._through_in_period += 1
            if self._early_verdict(now, sent_at, held=True):
                return self._report("reset_rounded_up", reset_share=round(self._early_held, 4))
            return None
        if self.learned_rate is None or self.ceiling is None:
            return None
        last = self._last_increase if self._last_increase is not None else now
        elapsed = max(0.0, now - last)
        self._last_increase = now
        if self._slow_start_since is not None:
            if sent_at >= self._slow_start_since:
                self._delivered += 1
                self._slow_start_sends.append(sent_at)
            if not self._pacer_bound:
                return None
            # Paced, answers come a slot apart; a longer gap (a pause) is no growth.
            self.learned_rate *= 1.0 + SLOW_START * min(elapsed, 2.0 / self.learned_rate)
            return self._report("slow_start")
        target = self.ceiling * RECOVERY_SHARE
        if self.learned_rate < target:
            step = (target - self.ceiling * DECREASE) * elapsed / RECOVERY_SECONDS
            self.learned_rate = min(target, self.learned_rate + step)
            self._quiet_since = now
            return self._report("recovering")
        if not self._pacer_bound or (
            self._last_429 is not None and now - self._last_429 < self._probe_hold
        ):
            # Holding just under the ceiling before trying above it; and a rate
            # the batch does not reach (concurrency or latency bind first) is
            # not raised: it would say nothing of the gateway.
            self._quiet_since = now
            return None
        quiet_since = self._quiet_since if self._quiet_since is not None else now
        if now - quiet_since >= PROBE_DOUBLING:
            self._probe_speed = min(PROBE_MAX, self._probe_speed * 2)
            self._quiet_since = now
        self.learned_rate *= 1.0 + self._probe_speed * elapsed
        return self._report("probing")

    def on_throttled(
        self, now: float, sent_at: float, pause: float = 0.0, *, hinted: bool = False
    ) -> PacingEvent | None:
        """A 429: learn the window or the rate (from the second one on), or cut it.

        ``hinted``: the pause is the gateway's own (Retry-After or a reset),
        so its end is when quota came back. Two hinted 429s in a row give a
        window (see LEARNED_CUT); otherwise the rate is learned and cut by AIMD.
        A 429 for a request sent before the previous 429 came back is the same
        throttling seen again, not news: only the first of them counts, in the
        streak that lengthens a backoff too.
        """
        self.responded = True
        if self._scouted(sent_at):
            self._refill_scout_refused(now)
        refused = self._refill_refused_sent
        refill_scout_refused = refused is not None and sent_at >= refused
        if refill_scout_refused:
            self._refill_refused_sent = None
        scout = self._scout_at
        scout_refused = scout is not None and sent_at >= scout
        if scout is not None and scout_refused:
            # Not counted, as the refusals before the window was learned were not:
            # the next scout is held back by the burst before, not by this one.
            self.cancel(scout)
        knocked, self._last_knocked = self._last_knocked, max(self._last_knocked, sent_at)
        if not self._after_last_429(sent_at):
            return None
        self.throttle_streak += 1
        # Nothing known and no hint: whether quota is back, one request finds out.
        self._alone = self.rate is None and not hinted
        self._try_refused = False
        if self._first_throttled_sent is None:
            self._first_throttled_sent = sent_at
        if hinted:
            self._unhinted_burst = None
        elif self._burst_start is not None:
            if self._successes_since_429 == 0 and self._unhinted_burst is not None:
                self._refused_empty = True
                waited, self._ceiling_wait = self._ceiling_wait, False
                if not self.window_learned:
                    gap = sent_at - knocked
                    self._penalty_floor = max(self._penalty_floor, gap)
                    self._refused_gap = gap
                    self._burst_knocks += 1
                    self._knock_at_ceiling = (
                        self._burst_knocks == 1
                        and not waited
                        and self.learned_rate is None
                        and self._ceiling_knock_pays
                    )
            else:
                self._refused_empty = False
                self._ceiling_tried = False
                self._unhinted_burst = (self._burst_start, sent_at)
                self._recent_sends = [t for t in self._recent_sends if t >= self._burst_start]
        previous, successes = self._last_pause_end, self._successes_since_429
        previous_429 = self._last_429
        previous_hinted, self._last_hinted = self._last_hinted, hinted
        self._last_429, self._last_refused = now, sent_at
        self._last_pause_end = now + pause
        if self.throttle_streak == 1:
            self._last_pause = pause  # what one more 429, a failed try's, would cost
        self._successes_since_429 = 0
        if self.headers_seen:
            longer, self._named_longer = self._named_longer, False
            if refill_scout_refused:
                return None  # the window read holds, and so does the pace
            if self._early_verdict(now, sent_at, held=False):
                return self._report("reset_try_throttled", reset_share=round(self._early_held, 4))
            if longer:
                # Refused within the turn a success named, later than the window read
                # allowed (``_named_turn``): the window is longer, not the pace too fast.
                return self._window_event_longer()
            cut = self._cut_resume
            if cut is not None and sent_at >= cut and self.window_estimate is not None:
                # Refused after a pause cut to the window estimate: a second short.
                self._cut_resume = None
                self.window_estimate += HINT_RESOLUTION
                return self._window_event_longer()
            # Paced from headers and still throttled: the margin was too thin. A bucket's
            # refill seen once is no promise (others may share it now): it steps back too.
            self._undo_doubling()
            self._refill_rate *= PROBE_BACK
            self.probe_factor = max(self.probe_factor * PROBE_BACK, self._probe_floor)
            return self._report("throttled_despite_headers")
        measured: float | None = None
        if hinted and previous_hinted and previous is not None and now + pause > previous:
            # Those still in flight may yet get through: they count at the resume.
            pending = self.learned_rate is None and self.in_flight > 0
            measured = now + pause - previous if successes > 0 or pending else None
        if self.window_learned:
            return self._relearn_window(
                now, sent_at, scout_refused=scout_refused, through=successes
            )
        if measured is not None and previous is not None:
            # Requests sent before this one may still be on their way back
            # (a 429 is answered sooner than a trade): count them at the resume.
            self._measuring = (previous, sent_at, now + pause)
            self._recent_sends = [t for t in self._recent_sends if t >= previous]
            return None
        if self.learned_rate is None:
            if previous is None or successes == 0 or now + pause <= previous:
                return None
            if self._start_pin is not None and not hinted:
                return None  # a lump of quota, as a window's: learned at the next start
            # What the gateway let through from the end of one throttle to the
            # end of the next is its rate. Ends, not starts: a window's quota
            # runs out at any moment, but it comes back when the window turns.
            # Without a hint this pause's end is our own guess: the time from the
            # last 429 to this one is what it took to give those back.
            if not hinted and previous_429 is not None:
                # Settled by the first request through after the pause, unless it
                # is refused first (the quota comes back in lumps: a window).
                self._rate_measuring = (previous_429, sent_at, now)
                return None
            self._first_rate(now, successes / max(now + pause - previous, 1e-9), now + pause)
        elif self._slow_start_since is not None:
            if not self._delivered:
                # Nothing got through since the last pause: it was too short
                # (a window had not turned yet), which says nothing of the rate.
                self._start_slow(now + pause)
                return None
            delivered = self._delivered / max(now - self._slow_start_since, 1e-9)
            # Read as the first burst's bucket would serve them, the time spent
            # under the limit does not drag the figure down. Never lower than
            # what got through: a window's quota is no bucket's burst.
            served = bucket_rate(sorted(self._slow_start_sends), self._first_burst)
            self.ceiling = max(MIN_RATE, min(self.learned_rate, max(delivered, served)))
            self._slow_start_sends.clear()
            self.learned_rate = self.ceiling * DECREASE
            self._slow_start_since = None
        elif successes == 0 and self._slot_paused:
            # Refused right after a pause cut to a slot, with nothing through:
            # the pause was too short (in-flight requests took what came back),
            # which says nothing new of the rate. The backoff answers it.
            return None
        else:
            # Throttled again before regaining the last ceiling: the limit is
            # lower than that, so the ceiling drops too (CUBIC's fast convergence).
            regained = self.ceiling is None or self.learned_rate >= self.ceiling * RECOVERY_SHARE
            factor = 1.0 if regained else (1.0 + DECREASE) / 2
            self.ceiling = self.learned_rate * factor
            self.learned_rate = max(MIN_RATE, self.learned_rate * DECREASE)
            self._probe_hold = min(PROBE_HOLD_MAX, 2.0 * self._probe_hold)
        self._last_increase = self._quiet_since = now
        self._probe_speed = PROBE_START
        return self._report("429", ceiling_per_s=round(self.ceiling or 0.0, 4))

    def throttle_pause(self, backoff: float) -> float:
        """The batch's pause after a 429 without a hint, told to ``on_throttled`` first:
        ``backoff`` (our own guess), or less when the pacer knows better.

        Refused with nothing through since a burst while no window is known: a
        step of the burst's age (REFUSAL_STEP), to find when the quota comes
        back, or a penalty box's ceiling (see PENALTY_TRY_SHARE). On a window
        learned from refusals, a burst refused at its first request: no pause
        when the log holds the batch to a window that held (read as a penalty
        box's, that window whole), else a step of the time since the last burst
        opened (SEEK_STEP). Paced by a rate learned from 429s (AIMD), the cut
        rate is the answer, as it is to a lost packet in TCP: the batch only
        waits a slot at that rate for each request in flight and
        SLOT_PAUSE_CUSHION more; not in a run of 429s (the backoff then starts
        from its first step, see ``streak_with``).
        """
        learning = not self.headers_seen and not self.window_learned
        last_429, burst = self._last_429, self._unhinted_burst
        doubled = 2.0 ** (self.throttle_streak // REFUSAL_DOUBLING)
        # The penalty box's ceiling, with the window's margins.
        ceiling = self._penalty_ceiling * (1.0 + WINDOW_SLACK) + WINDOW_GUARD
        if last_429 is not None:
            if self._counted_late is not None and self._penalty_test:
                # At a penalty box each refusal (those in flight too) restarted it: the
                # ceiling to be tried, whole, from the last.
                return max(0.0, self._last_knocked + (self.window_span() or 0.0) - last_429)
            if self._try_refused:
                # Read as a penalty box's, the refusal restarted the penalty: the window
                # that held (in use again), whole.
                return (self.window_span() or 0.0) if self._penalty_read else 0.0
            if self._seek_from is not None and not self.headers_seen:
                step = min(1.0, SEEK_STEP * doubled)
                return min(backoff, step * (last_429 - self._seek_from))
            if learning and self._refused_empty and burst:
                paced = self.learned_rate is not None  # by AIMD: no lump, no wait above
                refused_long = self._last_refused - burst[1] >= ceiling
                if self._knock_at_ceiling or (paced and refused_long and not self._ceiling_tried):
                    self._knock_at_ceiling, self._ceiling_tried = False, True
                    return ceiling
                step = min(1.0, REFUSAL_STEP * doubled) * (last_429 - burst[0])
                return min(backoff, step, KNOCK_GROWTH * self._refused_gap)
            if (
                learning
                and burst
                and self.learned_rate is None
                and self._ceiling_knock_pays
                and burst[1] - burst[0] <= BURST_SHARE * self._penalty_ceiling
            ):
                # The burst's first refusal, after one that knocked its way through: at
                # a penalty box, the quota is back a ceiling after the burst began.
                self._ceiling_wait = True
                return max(0.0, burst[0] + ceiling - last_429)
        if not learning or self.learned_rate is None or self.throttle_streak > 1:
            return backoff
        pause = min(backoff, (self.in_flight + SLOT_PAUSE_CUSHION) / self.learned_rate)
        self._slot_paused = pause < backoff
        return pause

    def _first_rate(self, now: float, measured: float, slow_since: float) -> None:
        """AIMD's first estimate (``measured`` per second, a 429 ``now``): a bound that
        slow start grows from ``slow_since``."""
        self.ceiling = max(MIN_RATE, measured)
        self.learned_rate = self.ceiling * RECOVERY_SHARE
        self._start_slow(slow_since)
        self._last_increase = self._quiet_since = now
        self._probe_speed = PROBE_START

    def _start_slow(self, since: float) -> None:
        self._slow_start_since, self._delivered = since, 0
        self._slow_start_sends.clear()

    def on_resume(self, now: float) -> PacingEvent | None:
        """The batch goes again after a pause: settle what the last two throttles measured.

        What got through was sent from the end of the previous throttle up to
        the request throttled; the window runs from that end to this one's.
        """
        self._resumed_at = now
        measuring, self._measuring = self._measuring, None
        if measuring is None or self.window_learned or self.headers_seen:
            return None
        start, throttled, end = measuring
        sends = sorted(t for t in self._recent_sends if start <= t < throttled)
        if not sends:
            return None
        window = end - start
        self._learn_from(now, sends, window, HINT_RESOLUTION)
        if window < SHORT_WINDOW_READINGS * HINT_RESOLUTION:
            # Both ends may be up to a hint's resolution late: a window about
            # as short as that only bounds the rate from below (a token bucket's
            # sub-second wait reads as a whole second), and one of two may be
            # half as long (a one-second window whose second end was a second
            # late). The first try is at once, as short as it may be (at most
            # twice as fast); the next, after two windows (a fixed window's turn
            # may let a try too far pass the first); if one fails, the usual wait.
            shortest = window - HINT_RESOLUTION
            step = PROBE_STEP if shortest <= 0.5 * window else window / shortest
            self._start_try(now, step)
            self._measuring_try = True
            self._probe_spans, self._probe_step = 2, step
            self._probe_failures_spans = LEARNED_PROBE_SPANS / 2
        return self._window_event("429_window")

    def _settle_unhinted(self, now: float, sent_at: float) -> PacingEvent | None:
        """The first success after a 429: a new burst starts (at the pause's end).

        It settles AIMD's first estimate when it went through at once after the
        pause (``_rate_measuring``). When the last burst was ended by a 429
        without any hint, the pauses are our own guesses; but a request refused
        with nothing through since that burst (a token bucket would have given
        something back during a pause) says the limit comes back in lumps, as a
        window's quota does, and this burst starts within a refusal step of its
        return (pinned). Between two pinned starts, the first burst's successes
        are the quota and the time between the starts the window: kept to as a
        learned window is, each burst opened by one request (``_burst_opening``),
        and tried shorter from there (``_bisect_window``).
        """
        resumed = self._resumed_at
        last_429 = self._last_429 if self._last_429 is not None else -math.inf
        start = resumed if resumed is not None and last_429 < resumed <= sent_at else sent_at
        burst, self._unhinted_burst = self._unhinted_burst, None
        self._burst_start = start
        refused_empty, self._refused_empty = self._refused_empty, False
        self._burst_knocks, self._knock_at_ceiling = 0, False
        # Begun right after a refusal, a burst starts when the quota came back
        # (within a step of the refusals, see REFUSAL_STEP); the run's first
        # burst, say, may start anywhere in a fixed window, and the time from
        # it to the next is less than the window.
        waited, self._ceiling_wait = self._ceiling_wait, False
        pin = self._last_refused if refused_empty or waited else None
        pinned, self._start_pin = self._start_pin, pin
        sends = sorted(t for t in self._recent_sends if burst and burst[0] <= t < burst[1])
        if pin is not None and not self._last_hinted:
            if not waited:
                # Waited from the burst's start, not from the refusal: no gap a knock made.
                knocked = max(pin, self._last_knocked)
                self._penalty_ceiling = min(self._penalty_ceiling, sent_at - knocked)
            self._ceiling_knock_pays = bool(sends) and (
                sends[-1] - sends[0] <= BURST_SHARE * self._penalty_ceiling
            )
        rate_measuring, self._rate_measuring = self._rate_measuring, None
        if rate_measuring is not None and not refused_empty and self.learned_rate is None:
            # Through at once after the pause: no lump. The successes this 429's
            # request was sent after (some answered later than it) are all in.
            since, throttled, until = rate_measuring
            through = sum(1 for sent in self._recent_sends if since <= sent < throttled)
            if through:
                self._first_rate(until, through / max(until - since, 1e-9), start)
                self._delivered = 1  # this one, the first of slow start
                self._slow_start_sends.append(sent_at)
                return self._report("429", ceiling_per_s=round(self.ceiling or 0.0, 4))
        if burst is None or pin is None or pinned is None or self._last_hinted:
            return None
        begun = burst[0]
        window = start - begun
        if not sends or window <= 0:
            return None
        # Between two refusals, all of them met one window: its quota, however
        # slowly they went (``_learn_from`` takes a slow burst for a rate).
        self._probe_period = window
        self._learn_window(now, len(sends), window, sends)
        self._burst_opened, self._opening_pin = start, pin
        if self.limit and self.limit > 1:
            # Each start is pinned between a refusal and itself: the window is no
            # shorter than from the first start to the last refusal, and no longer
            # than from the refusal before the first start to the second (a fixed
            # window's first burst may have started later after its turn than this
            # one: kept to from start to start, a refusal then costs one 429).
            self._window_floor = max(0.0, pin - begun, self._penalty_floor)
            self._window_ceiling = start - pinned
            if self._penalty_floor < self._penalty_ceiling <= PENALTY_TRY_SHARE * window:
                # The refusals read both ways: the window is first tried at the
                # penalty box's ceiling (see PENALTY_TRY_SHARE).
                self._penalty_test = True
                self._probe_held = 1.0
                self.probe_factor = window / self._penalty_ceiling
        # The burst under way went out before the log: it counts as sent now.
        self._log = sorted([*self._log, sent_at, *[now] * self.in_flight])
        return self._window_event("429_window")

    def _learn_from(self, now: float, sends: list[float], window: float, resolution: float) -> None:
        """Learn ``window`` with the (sorted) ``sends`` that used it; ``resolution``: how
        late its ends may be."""
        self._probe_period = window
        if sends[-1] - sends[0] <= min(window * BURST_SHARE, window - resolution):
            self._learn_window(now, len(sends), window, sends)
        else:
            # Sent slower than a burst: only the rate is known. A log of one send
            # per slot is an even pace.
            self._learn_window(now, 1, _even_pace(window, len(sends)), sends)
            self._evenly_paced = True

    def _learn_window(self, now: float, limit: int, window: float, sends: list[float]) -> None:
        """From now on spend ``limit`` requests per ``window``, as the send log does for a
        stated policy; the log starts with the (sorted) sends that used the last window."""
        self.window_learned = True
        self._evenly_paced = False
        self._near_limit_try = None
        self._held_opened = self._penalty_test = self._penalty_read = False
        self._counted_late = None
        self._recent_sends = []
        self.limit, self.window = limit, window
        self.probe_factor = 1.0
        self._log = sorted([*sends[-limit:], *self._take_paced_slots()])
        self.logging = True
        self._learned_quiet_since = self._learned_at = now

    def _relearn_window(
        self, now: float, sent_at: float, *, scout_refused: bool, through: int
    ) -> PacingEvent | None:
        """A 429 while the learned window paced the batch: the last probe went too far;
        or a burst was refused at its first request (``scout_refused``: the window
        has not turned yet): back to the ceiling when a shorter window was kept to,
        else its turn is sought (``_found_turn``); or a burst was not taken again
        (a fixed window turned inside it): its rate is kept, at an even pace; or
        even pacing was too fast: LEARNED_CUT slower. The burst learned on, refused after
        ``through`` (fewer than the quota the burst before counted), on a penalty box's
        ceiling still to be tried: the quota is ``through``."""
        assert self.limit is not None  # noqa: S101
        assert self.window is not None  # noqa: S101
        self._learned_quiet_since = now
        ceiling = self._window_ceiling
        knocked_to_ceiling = self._penalty_ceiling <= KNOCK_GROWTH * self._penalty_floor
        if (
            self._penalty_test
            and knocked_to_ceiling
            and not scout_refused
            and self.limit / 2 < through < self.limit
        ):
            # The burst the window was learned at, refused before the quota the burst
            # before counted: a fixed window turned inside that one, which took some of
            # two windows' quota (less than twice one). This one's is the quota, and the
            # penalty box's ceiling is still to be tried: when knocks found it (the gap
            # through at most KNOCK_GROWTH times one refused), not a pause that may have
            # ended anywhere after the quota came back.
            began = self._burst_opened if self._burst_opened is not None else sent_at
            self._counted_late = (began, sent_at, self.limit)
            self.limit = through
            return self._window_event("quota_counted")
        if self._seek_from is None and scout_refused and self.limit > 1:
            tested, self._penalty_test = self._penalty_test, False
            opened, floor = self._burst_opened, self._window_floor
            if floor is not None and opened is not None:
                # Not turned yet, so long after the last burst opened: longer.
                self._window_floor = max(floor, sent_at - opened)
            if self.probe_factor > self._probe_held:
                self._try_refused = True
                self._bisect_failures += 0 if tested else 1
            elif ceiling is not None and self.window / self.probe_factor < ceiling * (1 - 1e-9):
                # Kept to, but never bounded: back to what is.
                self._try_refused, self._held_opened = True, True
                self._bisect_failures += 1
                self.probe_factor = self._probe_held = self.window / ceiling
                return self._window_event("probe_throttled")
            else:
                self._seek_from = opened
        if self._seek_from is not None:
            return None
        if self.probe_factor > self._probe_held:
            started, self._near_limit_try = self._probe_started, None
            if started is not None:
                # What the try got shows the gateway's rate from below: what held
                # goes up to NEAR_LIMIT of it, and is then near it (a fixed window of
                # 19 per 0.5 s, tried at 42 a second, held for 4 s before its turn
                # caught up with the bursts, and the batch went back to 21 for good).
                shown = self._rate_shown(started, sent_at) * self.window / self.limit
                raised = NEAR_LIMIT * min(shown, self.probe_factor)
                if raised > self._probe_held or self._held_near_limit(started, sent_at):
                    self._near_limit_try = (started, sent_at)
                self._probe_held = max(self._probe_held, raised)
            longer = 2.0 if self._near_limit_try is None else NEAR_LIMIT_WAIT
            if not self._measuring_try:
                self._tries_cost += self._last_pause
                failed_step = self.probe_factor / self._probe_held
                self._first_step = max(LEARNED_PROBE_MIN_STEP, 1.0 + (failed_step - 1.0) / 2)
            self.probe_factor = self._probe_held
            self._probe_failures_spans *= longer
            self._probe_spans = self._probe_failures_spans
            self._probe_step = 1.0
            self._probe_started = None
            reason = "probe_throttled"
        elif self.limit > 1:
            self.window = _even_pace(self.window / self.probe_factor, self.limit)
            self.limit, self._evenly_paced = 1, True
            self.probe_factor = self._probe_held = 1.0
            # The bounds were a burst's window's: an even pace has no bursts to bisect
            # it by, and is tried shorter by spans instead (``_probe_learned_window``).
            self._window_floor = self._window_ceiling = None
            reason = "429_even_pace"
        else:
            self.window /= 1.0 - LEARNED_CUT
            reason = "429_slower"
        return self._window_event(reason)

    def _burst_opening(self, now: float, sent_at: float) -> PacingEvent | None:
        """A burst's first request (see SCOUT_PATIENCE) got through: what that says of
        the window. The rest of the burst keeps to it, whatever was tried.

        It is no longer than the time since the last refusal before the last burst
        opened (the turn came after it). The time since that opening would bound a
        sliding window only: on a fixed one, that burst may have opened late after
        its turn, and this one just after the next (a request sent before a turn
        may arrive after it); kept to as a bound, a refusal there would find no
        ceiling to go back to.
        """
        opened, self._burst_opened = self._burst_opened, sent_at
        self._counted_late = None  # the burst counted is all answered by now
        pinned = self._last_refused if opened is None or self._last_refused > opened else None
        pin, self._opening_pin = self._opening_pin, pinned
        if self._seek_from is not None:
            return self._found_turn(now, sent_at, pin)
        floor = self._window_floor
        if floor is None or self._window_ceiling is None or not self.window:
            return None
        held, tried = self.window / self._probe_held, self.window / self.probe_factor
        if self._penalty_test and opened is not None:
            self._penalty_test = False
            if sent_at - opened < self.window:
                # Through at the penalty box's ceiling: the refusals before may have
                # restarted a penalty, and what bounds the window is their gaps.
                self._penalty_read = True
                self._window_floor = floor = min(floor, self._penalty_floor)
                self._window_ceiling = min(self._window_ceiling, tried)
        if pin is not None:
            # The span that would have let it go then: the window, margins taken off.
            bound = (sent_at - pin - WINDOW_GUARD) / (1.0 + WINDOW_SLACK)
            if floor <= bound:
                self._window_ceiling = min(self._window_ceiling, bound)
                held = min(held, bound)
        # Through, what was tried is kept to; it bounds nothing (see above).
        held = min(held, tried)
        self.probe_factor = self._probe_held = self.window / held
        self._held_opened = True
        return None

    def _found_turn(self, now: float, opened: float, pin: float | None) -> PacingEvent:
        """The first request through after a burst's refusals even at the ceiling
        (``_relearn_window``): the window turns (a fixed one), later than that; it
        is the time since the last burst opened, or since the refusal before that
        opening (``pin``), if any."""
        assert self._seek_from is not None  # noqa: S101
        self.window = self._probe_period = opened - (self._seek_from if pin is None else pin)
        self._window_ceiling = self.window
        self._window_floor = max(0.0, self._last_refused - self._seek_from)
        self._seek_from = None
        self._held_opened = True
        self.probe_factor = self._probe_held = 1.0
        self._learned_quiet_since = now
        return self._window_event("window_longer")

    def _bisect_window(self, now: float) -> PacingEvent | None:
        """On a window learned from refusals, once a burst is all sent and answered, the
        next burst tries the middle between the floor and the window now in use (its
        first request tells: ``_burst_opening``, or ``_relearn_window`` for a 429)."""
        assert self.window is not None  # noqa: S101
        assert self.limit is not None  # noqa: S101
        assert self._window_floor is not None  # noqa: S101
        span = self.window_span()
        if self.in_flight or self._seek_from is not None or span is None:
            return None
        if self.probe_factor > self._probe_held:
            return None  # a try in force: its burst's first request tells
        if not self._held_opened:
            # Refused, a try would go back to a window that may be short too: two 429s.
            return None
        opened = self._burst_opened
        following = self.next_window_slot(now, self.limit, span, take_probe=False)
        if opened is None or following - opened < span / 2:
            return None  # the burst is not all sent
        in_use = self.window / self.probe_factor
        budget = 1 + BISECT_COST_SHARE * self._through_since_learned  # this one's failure too
        if (
            in_use <= self._window_floor * (1 + BISECT_PRECISION)
            or self._bisect_failures + 1 > budget
            # Sent slower than a burst, its first request only tells of the first
            # send before it: the rest may meet the window before they would.
            or self._last_through - opened > BURST_SHARE * in_use
        ):
            return None
        self.probe_factor *= in_use / ((self._window_floor + in_use) / 2)
        self._probe_started = now
        return self._window_event("probing")

    def _probe_learned_window(self, now: float) -> PacingEvent | None:
        """A learned window that held the batch back for a while without a 429: try it shorter."""
        span = self.window_span()
        quiet = self._learned_quiet_since
        if span is None or quiet is None or not self._pacer_bound:
            return None
        if now - quiet < self._probe_spans * self._probe_period:
            return None
        learned = self._learned_at if self._learned_at is not None else now
        if self._tries_cost + self._last_pause > TRY_COST_SHARE * (now - learned + self._ahead):
            return None
        if self._probe_step > 1.0:
            # The last try held: the next one sooner, and twice as far.
            self._probe_spans = min(self._probe_spans, LEARNED_PROBE_SPANS / 2)
        step = min(PROBE_STEP, self._probe_step if self._probe_step > 1.0 else self._first_step)
        self._start_try(now, step)
        self._probe_step = 1.0 + 2.0 * (step - 1.0)
        return self._window_event("probing")

    def _count_late_quota(self, sent_at: float) -> PacingEvent | None:
        """A success answered after the refusal that counted a burst's quota (see
        ``_relearn_window``), sent in that burst before it: one more in the quota."""
        counted = self._counted_late
        if counted is None or self.limit is None or not counted[0] <= sent_at < counted[1]:
            return None
        if self.limit + 1 >= counted[2]:
            return None  # as many as the burst before counted: no such reading
        self.limit += 1
        return self._window_event("quota_counted")

    def _count_late_success(self, sent_at: float, started: float, throttled: float) -> None:
        """A success answered after the 429 that failed a try read as near the gateway's rate
        (see ``_near_limit_try``): sent within the try, it counts in what the try got;
        should the held rate then no longer read near the gateway's, the next try waits
        twice as long as the last, not NEAR_LIMIT_WAIT times (a token bucket of 22.5/s,
        burst 16, held at 15.7/s for the rest of a 17-s run)."""
        if not started <= sent_at < throttled:
            return
        self._probe_delivered += 1
        if not self._held_near_limit(started, throttled):
            self._near_limit_try = None
            self._probe_failures_spans *= 2.0 / NEAR_LIMIT_WAIT
            self._probe_spans = self._probe_failures_spans

    def _start_try(self, now: float, step: float) -> None:
        self._near_limit_try = None
        self._measuring_try = False
        self._probe_held = self.probe_factor
        self.probe_factor *= step
        self._learned_quiet_since = self._probe_started = now
        self._probe_delivered = 0

    def _rate_shown(self, started: float, throttled_sent_at: float) -> float:
        """The gateway's rate a failed try (begun at ``started``) shows, per second (0:
        none): what it got beyond one window's quota, over its length. No more than the
        rate: a full bucket gives a quota and its refill, a window a quota a turn."""
        assert self.limit is not None  # noqa: S101
        if throttled_sent_at <= started:
            return 0.0
        if self._probe_delivered <= self.limit:
            return 0.0  # no more than one window's quota: nothing of the gateway's rate
        return (self._probe_delivered - self.limit) / (throttled_sent_at - started)

    def _held_near_limit(self, started: float, throttled_sent_at: float) -> bool:
        """Whether the failed try (begun at ``started``) shows the rate that held to be within
        NEAR_LIMIT of the gateway's (``_rate_shown``)."""
        assert self.limit is not None  # noqa: S101
        assert self.window is not None  # noqa: S101
        gateway_rate = self._rate_shown(started, throttled_sent_at)
        if not gateway_rate:
            return False
        return self.limit * self._probe_held / self.window >= NEAR_LIMIT * gateway_rate

    def _window_event_longer(self) -> PacingEvent:
        """``pacing.window_learned``, kind ``longer``: the window read from resets was short."""
        return PacingEvent(
            "pacing.window_learned",
            {"kind": "longer", "limit": self.limit, "window_s": self.window_estimate},
        )

    def _window_event(self, reason: str) -> PacingEvent:
        assert self.limit is not None  # noqa: S101
        assert self.window is not None  # noqa: S101
        window = self.window / self.probe_factor
        self.learned_rate = max(MIN_RATE, self.limit / window)
        fields: dict[str, object] = {"limit": self.limit, "window_s": round(window, 3)}
        if self._reported is None:
            self._reported = self.learned_rate
            return PacingEvent(
                "pacing.rate_learned",
                {"rate_per_s": round(self.learned_rate, 4), "source": reason, **fields},
            )
        event = PacingEvent(
            "pacing.rate_changed",
            {
                "from_per_s": round(self._reported, 4),
                "rate_per_s": round(self.learned_rate, 4),
                "reason": reason,
                **fields,
            },
        )
        self._reported = self.learned_rate
        return event


def _told_to_the_second(reset: float, error: float) -> bool:
    """Whether a reset is told to the whole second: an integer, or an epoch second read
    on a server clock known only within ``error``."""
    return error > 0 or abs(reset - round(reset)) < 1e-6


def _even_pace(window: float, quota: int) -> float:
    """The spacing of an even pace that never puts more than ``quota`` sends in a fixed
    ``window``, wherever it turns (``quota`` slots a window apart hold ``quota + 1``)."""
    return window / max(1, quota - 1) / RECOVERY_SHARE


class RetryBudget:
    """Retries stay a bounded share of the batch's requests (as gRPC and Finagle do).

    ``minimum + ratio * first_attempts`` retries in all; 429s are not counted,
    since the rate gate and the pacer already govern them.
    """

    def __init__(self, ratio: float, minimum: int) -> None:
        self.ratio = ratio
        self.minimum = minimum
        self.first_attempts = 0
        self.retries = 0

    def allows(self) -> bool:
        return self.retries < self.minimum + self.ratio * self.first_attempts
