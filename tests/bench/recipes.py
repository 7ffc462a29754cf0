"""The common recipes, as baselines: one task per ID, a semaphore, ``asyncio.gather``.

Usage: python -m tests.bench.recipes RECIPE BASE_URL IDS_FILE OUT_JSONL CONCURRENCY [uvloop]
       python -m tests.bench.recipes fetch-only TRADE-INGEST-RUN-ARGS...

Recipes: ``aiohttp``, ``httpx`` (httpx's own transport, httpcore) and ``httpx/aiohttp``
(``httpx.AsyncClient`` over trade-ingest's aiohttp transport: the floor of httpx's API on
that transport). ``uvloop`` as the last argument runs the recipe on uvloop, as trade-ingest
does by default; otherwise on asyncio's own loop.

Every ID, task and result is held in memory at once, and the results are
written at the end: that is the recipe as it is usually copied. No retries
(the benchmark's gateway has no limit and no faults).

``fetch-only`` runs ``trade-ingest run`` unchanged except that audit events are dropped
unbuilt (``AuditLog.emit`` does nothing) and each result line is an empty line: the
pipeline, pacing, retries and httpx are all there, the audit log and results are not.
It is the "fetching alone" that the audit log and results are measured against.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import quote


async def with_aiohttp(base_url: str, ids: list[str], concurrency: int) -> list[dict[str, Any]]:
    import aiohttp

    semaphore = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base_url=base_url, connector=connector) as session:

        async def fetch(trade_id: str) -> dict[str, Any]:
            async with semaphore, session.get("/trades/" + quote(trade_id, safe="")) as response:
                response.raise_for_status()
                return {"trade_id": trade_id, "trade": await response.json()}

        return await asyncio.gather(*(fetch(trade_id) for trade_id in ids))


async def _with_httpx_client(
    base_url: str, ids: list[str], concurrency: int, *, over_aiohttp: bool
) -> list[dict[str, Any]]:
    import httpx

    semaphore = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    transport: httpx.AsyncBaseTransport | None = None
    if over_aiohttp:
        from trade_ingest.transport import AiohttpTransport

        transport = AiohttpTransport(verify=True, limits=limits, proxy=None)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, transport=transport) as client:

        async def fetch(trade_id: str) -> dict[str, Any]:
            async with semaphore:
                response = await client.get("/trades/" + quote(trade_id, safe=""))
                response.raise_for_status()
                return {"trade_id": trade_id, "trade": response.json()}

        return await asyncio.gather(*(fetch(trade_id) for trade_id in ids))


async def with_httpx(base_url: str, ids: list[str], concurrency: int) -> list[dict[str, Any]]:
    return await _with_httpx_client(base_url, ids, concurrency, over_aiohttp=False)


async def with_httpx_over_aiohttp(
    base_url: str, ids: list[str], concurrency: int
) -> list[dict[str, Any]]:
    return await _with_httpx_client(base_url, ids, concurrency, over_aiohttp=True)


RECIPES: dict[str, Callable[[str, list[str], int], Coroutine[Any, Any, list[dict[str, Any]]]]] = {
    "aiohttp": with_aiohttp,
    "httpx": with_httpx,
    "httpx/aiohttp": with_httpx_over_aiohttp,
}


def fetch_only(argv: list[str]) -> None:
    """``trade-ingest run`` with the audit log and the results made free (see above)."""
    from trade_ingest import cli, pipeline
    from trade_ingest.audit import AuditLog

    def emit(self: AuditLog, event: str, **fields: Any) -> None:
        return None

    def empty_line(*args: object) -> bytes:
        return b"\n"

    AuditLog.emit = emit  # type: ignore[method-assign]
    pipeline.result_line = empty_line  # type: ignore[assignment]
    sys.argv = ["trade-ingest", *argv]
    cli.main()


def main() -> None:
    if sys.argv[1] == "fetch-only":
        fetch_only(sys.argv[2:])
        return
    recipe, base_url, ids_file, out_file, concurrency = sys.argv[1:6]
    ids = [line.strip() for line in Path(ids_file).read_text().splitlines() if line.strip()]
    run = RECIPES[recipe](base_url, ids, int(concurrency))
    if sys.argv[6:] == ["uvloop"]:
        import uvloop

        results = uvloop.run(run)
    else:
        results = asyncio.run(run)
    with Path(out_file).open("w") as out:
        for record in results:
            out.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
