"""The common recipes, as baselines: one task per ID, a semaphore, ``asyncio.gather``.

Usage: python -m tests.bench.recipes aiohttp|httpx BASE_URL IDS_FILE OUT_JSONL CONCURRENCY

Every ID, task and result is held in memory at once, and the results are
written at the end: that is the recipe as it is usually copied. No retries
(the benchmark's gateway has no limit and no faults).
"""

from __future__ import annotations

import asyncio
import json
import sys
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


async def with_httpx(base_url: str, ids: list[str], concurrency: int) -> list[dict[str, Any]]:
    import httpx

    semaphore = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits) as client:

        async def fetch(trade_id: str) -> dict[str, Any]:
            async with semaphore:
                response = await client.get("/trades/" + quote(trade_id, safe=""))
                response.raise_for_status()
                return {"trade_id": trade_id, "trade": response.json()}

        return await asyncio.gather(*(fetch(trade_id) for trade_id in ids))


def main() -> None:
    recipe, base_url, ids_file, out_file, concurrency = sys.argv[1:6]
    ids = [line.strip() for line in Path(ids_file).read_text().splitlines() if line.strip()]
    run = with_aiohttp if recipe == "aiohttp" else with_httpx
    results = asyncio.run(run(base_url, ids, int(concurrency)))
    with Path(out_file).open("w") as out:
        for record in results:
            out.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
