"""Shared fixtures: a fake clock, seeded randomness, and the anyio backend."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, settings

from trade_ingest.clock import FakeClock

# No per-example deadline and no "too slow" health check: on a shared 2-core machine
# a slow example is the machine, not a bug, and a test must not fail for it. Examples
# are drawn from a fixed seed, so a failure in CI is the same failure on every machine
# (property bounds such as "80% of the rate" can sit near an unlucky draw); explore
# further (random draws, more of them) with ``--hypothesis-profile=explore``.
settings.register_profile(
    "trade-ingest",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
settings.register_profile(
    "explore", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=500
)
settings.load_profile("trade-ingest")


class FixedRandom(random.Random):
    """``random()`` always returns ``value``: ``uniform(a, b)`` is ``a + (b - a) * value``."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def rng() -> random.Random:
    return random.Random(1234)
