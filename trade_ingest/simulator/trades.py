"""Deterministic, realistic energy trades: the same ID always gives the same trade."""

from __future__ import annotations

import hashlib
import json
import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

_MARKETS = [
    ("EEX", "power", "DE Power Baseload", "EUR"),
    ("EEX", "power", "FR Power Peakload", "EUR"),
    ("EPEX SPOT", "power", "DE Intraday Hour", "EUR"),
    ("Nord Pool", "power", "Nordic System Price", "EUR"),
    ("ICE Endex", "gas", "TTF Gas", "EUR"),
    ("ICE Endex", "gas", "NBP Gas", "GBP"),
    ("CME", "gas", "Henry Hub Natural Gas", "USD"),
    ("ERCOT", "power", "ERCOT North Hub On-Peak", "USD"),
    ("PJM", "power", "PJM Western Hub Real-Time", "USD"),
    ("CAISO", "power", "SP15 Hub", "USD"),
]
_TENORS = ["Day-Ahead", "Week", "Month", "Quarter"]
_COUNTERPARTIES = [
    "Uniper",
    "RWE Supply & Trading",
    "Vattenfall",
    "Engie",
    "Shell Energy",
    "EDF Trading",
    "Axpo",
    "Statkraft",
    "NextEra",
    "Constellation",
]
_TRADERS = ["akoch", "mdubois", "jsmith", "lnilsen", "pgarcia", "rchen"]


def _seed(trade_id: str) -> bytes:
    return hashlib.sha256(trade_id.encode("utf-8", "surrogatepass")).digest()


def is_unknown(trade_id: str, unknown_rate: float) -> bool:
    """Whether the gateway answers 404 for ``trade_id``: a fixed share of IDs, and ``UNKNOWN*``."""
    if trade_id.startswith("UNKNOWN"):
        return True
    fraction = int.from_bytes(_seed(trade_id)[-8:], "big") / 2**64
    return fraction < unknown_rate


def make_trade(trade_id: str) -> dict[str, object]:
    """The trade for ``trade_id``; ``price`` and ``quantity`` are ``Decimal``."""
    rng = random.Random(_seed(trade_id))
    market, commodity, product, currency = rng.choice(_MARKETS)
    tenor = rng.choice(_TENORS)
    start = date(2026, 1, 1) + timedelta(days=rng.randrange(0, 365))
    length = {"Day-Ahead": 1, "Week": 7, "Month": 30, "Quarter": 91}[tenor]
    executed = datetime(2026, 11, 28, 7, 0, tzinfo=UTC) + timedelta(
        seconds=rng.randrange(0, 10 * 3600), microseconds=rng.randrange(0, 1000) * 1000
    )
    base = 30 if commodity == "gas" else 80
    price = Decimal(rng.randrange(base * 50, base * 200)) / 100
    quantity = Decimal(rng.randrange(1, 400) * 25) / 10
    return {
        "trade_id": trade_id,
        "market": market,
        "commodity": commodity,
        "product": f"{product} {tenor} {start:%b-%Y}",
        "side": rng.choice(["BUY", "SELL"]),
        "quantity": quantity.quantize(Decimal("0.001")),
        "quantity_unit": "MWh",
        "price": price.quantize(Decimal("0.01")),
        "currency": currency,
        "delivery_start": start.isoformat(),
        "delivery_end": (start + timedelta(days=length)).isoformat(),
        "counterparty": rng.choice(_COUNTERPARTIES),
        "trader": rng.choice(_TRADERS),
        "executed_at": executed.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "status": "CONFIRMED",
    }


def render_trade_body(trade_id: str) -> bytes:
    """Compact JSON with prices and quantities written digit for digit (e.g. ``25.000``)."""
    fields = (
        json.dumps(key) + ":" + (str(value) if isinstance(value, Decimal) else json.dumps(value))
        for key, value in make_trade(trade_id).items()
    )
    return ("{" + ",".join(fields) + "}").encode()
