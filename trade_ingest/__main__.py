"""``python -m trade_ingest``: the same as the ``trade-ingest`` command."""

from trade_ingest.cli import main

main()
