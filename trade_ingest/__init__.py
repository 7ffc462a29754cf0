"""trade-ingest: pull trade records out of rate-limited gateways, exactly once."""

__version__ = "0.1.0"
