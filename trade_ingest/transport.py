"""An httpx transport over aiohttp: httpx stays the client API, aiohttp moves the bytes.

Measured on loopback (``tests/bench/bench_throughput.py``), httpx's own
transport (httpcore over anyio) costs about three times the CPU a request of
aiohttp's, and it was most of what a trade cost us. It is the default
(``http_transport = "aiohttp"``); ``http_transport = "httpcore"`` goes back to
httpx's own transport (which respx mocks).

Every aiohttp failure is raised as the httpx exception of the same meaning,
so ``fetch`` classifies causes the same way whichever transport runs: a server
closing early is a protocol error (``connection_closed``), not a timeout.
Bodies are passed on still encoded, so httpx decodes them while we count
decoded bytes against ``max_body_bytes`` (a gzip bomb is still cut off).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import aiohttp
import httpx
import yarl

_CHUNK = 64 * 1024
# Headers aiohttp would add to a request that lacks them; httpx's client sets both.
_HTTPX_SETS = ("user-agent", "accept-encoding")


def _as_httpx_error(exc: Exception, request: httpx.Request) -> Exception:
    """An aiohttp exception as httpx's of the same meaning, most specific first."""
    if isinstance(exc, httpx.HTTPError):
        return exc
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(str(exc) or "connect timeout", request=request)
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return httpx.ReadTimeout(str(exc) or "read timeout", request=request)
    if isinstance(exc, aiohttp.ClientConnectorError):  # refused, DNS, TLS certificate
        return httpx.ConnectError(str(exc), request=request)
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return httpx.RemoteProtocolError(str(exc) or type(exc).__name__, request=request)
    if isinstance(exc, aiohttp.ClientResponseError):  # a response aiohttp could not parse
        return httpx.RemoteProtocolError(str(exc), request=request)
    if isinstance(exc, aiohttp.ClientOSError | ConnectionError):
        return httpx.ReadError(str(exc) or type(exc).__name__, request=request)
    if isinstance(exc, aiohttp.ClientError):
        return httpx.TransportError(str(exc) or type(exc).__name__, request=request)
    return exc


# What ``_as_httpx_error`` translates (anything else passes through untouched). A try
# statement, not a context manager: this runs on every request and every body.
_TRANSLATED = (httpx.HTTPError, TimeoutError, ConnectionError, aiohttp.ClientError)


class _Body(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        content = self._response.content
        try:
            if content.is_eof():  # all of it arrived already (a small body): no waiting
                while chunk := content.read_nowait(_CHUNK):
                    yield chunk
                return
            async for chunk in content.iter_chunked(_CHUNK):
                yield chunk
        except _TRANSLATED as exc:
            translated = _as_httpx_error(exc, self._request)
            if translated is exc:
                raise
            raise translated from exc

    async def aclose(self) -> None:
        self._response.release()


def environment_proxy(url: str) -> str | None:
    """The proxy the environment names for ``url`` (HTTP(S)_PROXY, ALL_PROXY, NO_PROXY)."""
    parts = urlsplit(url)
    if proxy_bypass(parts.hostname or ""):
        return None
    proxies = getproxies()
    return proxies.get(parts.scheme) or proxies.get("all")


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One aiohttp session, its pool sized like httpx's would be."""

    def __init__(
        self, *, verify: ssl.SSLContext | bool, limits: httpx.Limits, proxy: str | None
    ) -> None:
        self._verify = verify
        self._limits = limits
        # Chosen once for the run: aiohttp's trust_env would look the environment up
        # again on a thread for every request (two thread hops a request).
        self._proxy = proxy
        self._session: aiohttp.ClientSession | None = None
        # Every request of a run carries the same timeouts: one ClientTimeout for each.
        self._timeouts: dict[tuple[float | None, ...], aiohttp.ClientTimeout] = {}

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._limits.max_connections or 0,
                keepalive_timeout=self._limits.keepalive_expiry or 5.0,
                ssl=self._verify,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                proxy=self._proxy,
                auto_decompress=False,
            )
            if hasattr(self._session, "_retry_connection"):
                # aiohttp sends an idempotent request again, unseen, when a kept-alive
                # connection drops; httpcore does not. The retry is ours to decide and
                # record (cause ``connection_closed``), as on httpcore. (aiohttp's own
                # test client turns it off the same way.)
                self._session._retry_connection = False
        return self._session

    def _timeout(self, request: httpx.Request) -> aiohttp.ClientTimeout:
        timeouts = request.extensions.get("timeout", {})
        key = (timeouts.get("connect"), timeouts.get("read"), timeouts.get("pool"))
        timeout = self._timeouts.get(key)
        if timeout is None:
            connect, read, pool = key
            timeout = aiohttp.ClientTimeout(
                sock_connect=connect,
                sock_read=read,
                # aiohttp counts waiting for a pooled connection in ``connect``.
                connect=(pool or 0) + (connect or 0) or None,
            )
            if len(self._timeouts) < 64:
                self._timeouts[key] = timeout
        return timeout

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._open()
        headers = request.headers.multi_items()  # names in lower case
        # httpx sends these itself; aiohttp adds its own only where httpx's request has none.
        names = {name for name, _ in headers}
        skip = [name for name in _HTTPX_SETS if name not in names] or None
        try:
            response = await session.request(
                request.method,
                # httpx's URL is percent-encoded already: yarl need not quote it again.
                yarl.URL(str(request.url), encoded=True),
                headers=headers,
                skip_auto_headers=skip,
                data=request.content or None,
                allow_redirects=False,
                timeout=self._timeout(request),
                compress=None,
            )
        except _TRANSLATED as exc:
            translated = _as_httpx_error(exc, request)
            if translated is exc:
                raise
            raise translated from exc
        return httpx.Response(
            status_code=response.status,
            headers=list(response.raw_headers),
            stream=_Body(response, request),
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": (response.reason or "").encode(),
            },
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
