"""The earliest a batch can finish against a scenario's gateway: the yardstick both clients
are held to (``best`` in the benchmark's table).

A client that knew the gateway's limiter exactly would send each request the
moment a worker is free and the limiter would admit it. Against the simulator
that schedule is computed here, without a socket: the same limiter, and the
same seeded latencies, drawn in the order requests are admitted (as the gateway
draws them). Its busy time (first request to last answer) is what no client
can beat by much. Faults (drops, 5xx) are left out. Against 5xx the benchmark
asks instead for ``trades`` plus the 5xx answers a client met: the gateway
counts each against its limit, so no client could finish those sooner.
"""

from __future__ import annotations

import copy
import heapq
import math
import random

from trade_ingest.simulator import GatewayConfig
from trade_ingest.simulator.limits import RateLimiter, make_limiter


def _earliest_admission(limiter: RateLimiter, at: float) -> float:
    """The first time from ``at`` on that ``limiter`` admits a request (it is not changed)."""
    for _ in range(10_000):
        admission = copy.deepcopy(limiter).admit(at)
        if admission.allowed:
            return at
        # A refusal says when one more request would pass; a hair later for rounding.
        at += max(admission.reset_after, 1e-9) + 1e-9
    raise RuntimeError("the limiter never admits a request")


def earliest_busy(gateway: GatewayConfig, trades: int, concurrency: int, seed: int) -> float:
    """Seconds from the first request to the last answer, for a client that sends each of
    ``trades`` requests as soon as one of ``concurrency`` workers is free and the gateway
    would admit it; ``seed``: the gateway's (its latencies)."""
    if not gateway.rate_limit:
        raise ValueError("the scenario's gateway has no rate limit")
    limiter = make_limiter(
        gateway.limiter, gateway.rate_limit, gateway.window, gateway.burst, gateway.window_phase
    )
    rng = random.Random(seed)
    free = [0.0] * concurrency
    last_answer = sent = 0.0
    for _ in range(trades):
        # In the order the gateway sees them (its limiter's clock only goes forward).
        sent = _earliest_admission(limiter, max(sent, heapq.heappop(free)))
        limiter.admit(sent)
        latency = gateway.latency_ms / 1000
        if latency > 0 and gateway.latency_sigma > 0:
            latency *= math.exp(rng.gauss(0.0, gateway.latency_sigma))
        answered = sent + min(latency, 30.0)
        heapq.heappush(free, answered)
        last_answer = max(last_answer, answered)
    return last_answer
