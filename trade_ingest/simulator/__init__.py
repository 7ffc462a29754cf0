"""The simulated exchange gateway used by the demo, the tests and the benchmarks."""

from trade_ingest.simulator.limits import (
    Admission,
    FixedWindowLimiter,
    RateLimiter,
    SlidingLogLimiter,
    TokenBucketLimiter,
    make_limiter,
)
from trade_ingest.simulator.server import GatewayConfig, GatewayStats, SimulatedGateway, run_forever
from trade_ingest.simulator.trades import is_unknown, make_trade, render_trade_body

__all__ = [
    "Admission",
    "FixedWindowLimiter",
    "GatewayConfig",
    "GatewayStats",
    "RateLimiter",
    "SimulatedGateway",
    "SlidingLogLimiter",
    "TokenBucketLimiter",
    "is_unknown",
    "make_limiter",
    "make_trade",
    "render_trade_body",
    "run_forever",
]
