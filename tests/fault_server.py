"""A raw-socket gateway on loopback that fails in every way a network allows.

The trade ID's prefix picks the fault, so one server serves a whole matrix::

    ok-*        a valid trade
    close-*     reads the request, closes without a byte
    reset-*     headers and part of the body, then a TCP reset
    short-*     a body shorter than its Content-Length, then a clean close
    garbage-*   a status line that is not HTTP
    drip-*      a valid response, one byte every 0.2 s
    hang-*      reads the request, never answers
    bomb-*      a small gzip body that inflates past any sane cap
    huge-*      a body of 8 MB
    mismatch-*  a valid JSON trade whose trade_id is another trade's
    nan-*       a trade with a NaN price
    flaky-N-*   503 to its first N requests, then a valid trade
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import struct
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

DRIP_INTERVAL = 0.2


def _response(body: bytes, status: str = "200 OK", extra: str = "") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode() + body


def _trade(trade_id: str, price: str = '"84.35"') -> bytes:
    return f'{{"trade_id": {json.dumps(trade_id)}, "price": {price}}}'.encode()


async def _serve(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: Counter[str]
) -> None:
    try:
        while True:
            request = await reader.readuntil(b"\r\n\r\n")
            path = request.split(b" ", 2)[1].decode()
            trade_id = path.rsplit("/", 1)[-1]
            kind = trade_id.split("-", 1)[0]
            seen[trade_id] += 1
            if kind == "close":
                break
            if kind == "hang":
                await asyncio.sleep(3600)
            if kind == "reset":
                writer.write(_response(b"x" * 1000)[:150])
                await writer.drain()
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                return
            if kind == "short":
                writer.write(_response(_trade(trade_id))[:-10])
                await writer.drain()
                break
            if kind == "garbage":
                writer.write(b"HTTP/1.1 banana\r\nnot a header\r\n\r\n")
                await writer.drain()
                break
            if kind == "drip":
                for byte in _response(_trade(trade_id)):
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(DRIP_INTERVAL)
                continue
            if kind == "bomb":
                body = gzip.compress(b"{" + b" " * (20 * 1024 * 1024) + b"}")
                writer.write(_response(body, extra="Content-Encoding: gzip\r\n"))
            elif kind == "huge":
                writer.write(_response(b"[" + b"0," * (4 * 1024 * 1024) + b"0]"))
            elif kind == "mismatch":
                writer.write(_response(_trade("someone-else")))
            elif kind == "nan":
                writer.write(_response(_trade(trade_id, price="NaN")))
            elif kind == "flaky" and seen[trade_id] <= int(trade_id.split("-")[1]):
                writer.write(_response(b'{"error": "upstream"}', "503 Service Unavailable"))
            else:
                writer.write(_response(_trade(trade_id)))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    except asyncio.CancelledError:  # the server is stopping: end quietly
        pass
    finally:
        writer.close()


@contextmanager
def fault_server() -> Iterator[str]:
    """The server's base URL, served from a thread with its own loop, stopped on exit."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, asyncio.Server] = {}

    async def start() -> None:
        seen: Counter[str] = Counter()
        holder["server"] = await asyncio.start_server(
            lambda reader, writer: _serve(reader, writer, seen), "127.0.0.1", 0
        )
        ready.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=10)
    ready.wait(10)
    port = holder["server"].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:

        async def stop() -> None:
            holder["server"].close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def refused_url() -> str:
    """A loopback URL with nothing listening: connection refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"
