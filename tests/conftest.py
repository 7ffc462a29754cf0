"""Shared fixtures: a fake clock, seeded randomness, and the anyio backend."""

from __future__ import annotations

import random

import pytest

from trade_ingest.clock import FakeClock


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
