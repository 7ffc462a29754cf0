"""The common recipe, as a baseline: a semaphore, one task per ID, per-request backoff.

Usage: python -m tests.bench.naive_client BASE_URL IDS_FILE OUT_JSONL FAILED_JSONL [CONCURRENCY]

Each request retries 429, 5xx and connection errors up to 8 times, sleeping
``min(30, 0.5 * 2**attempt) + uniform(0, 0.5)`` seconds, or ``Retry-After``
when it is a number of seconds; the semaphore is held while sleeping, as in
most copies of this recipe. It knows nothing of other requests.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from pathlib import Path
from urllib.parse import quote

import httpx

MAX_ATTEMPTS = 8


async def main(base_url: str, ids_path: Path, out: Path, failed: Path, concurrency: int) -> None:
    ids = [line.strip() for line in ids_path.read_text().splitlines() if line.strip()]  # noqa: ASYNC240
    semaphore = asyncio.Semaphore(concurrency)
    with out.open("a") as results, failed.open("a") as failures:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:

            async def one(trade_id: str) -> None:
                async with semaphore:
                    status: int | None = None
                    for attempt in range(MAX_ATTEMPTS):
                        try:
                            response = await client.get("/trades/" + quote(trade_id, safe=""))
                            status = response.status_code
                        except httpx.TransportError:
                            response, status = None, None
                        if response is not None and status == 200:
                            results.write(
                                json.dumps({"trade_id": trade_id, "trade": response.json()}) + "\n"
                            )
                            results.flush()
                            return
                        if status is not None and 400 <= status < 500 and status != 429:
                            break
                        delay = min(30.0, 0.5 * 2**attempt) + random.uniform(0, 0.5)
                        hint = response.headers.get("retry-after", "") if response else ""
                        if hint.isdigit():
                            delay = float(hint)
                        await asyncio.sleep(delay)
                    failures.write(json.dumps({"trade_id": trade_id, "status": status}) + "\n")
                    failures.flush()

            await asyncio.gather(*(one(t) for t in ids))


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(
        main(
            args[0],
            Path(args[1]),
            Path(args[2]),
            Path(args[3]),
            int(args[4]) if len(args) > 4 else 8,
        )
    )
