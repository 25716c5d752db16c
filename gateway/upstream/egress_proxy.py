"""The egress proxy (SPEC §3 ``upstream.proxy_url``, §5): which calls go through it, and how.

Which: ``upstream.proxy_url`` when set, else ``HTTPS_PROXY`` / ``HTTP_PROXY`` (by the target's
scheme; lower-case forms too) unless ``NO_PROXY`` names the host, as curl reads them (the
standard library's reading of those variables). Credentials come only from the variables'
URLs (``http://user:pass@proxy:3128``), never from the config file, and are never logged: a
proxy is named by its scheme, host and port alone.

How: a plain-http upstream is asked through the proxy in absolute form
(``GET http://host/path``); an https upstream through a ``CONNECT host:443`` tunnel, inside
which TLS is negotiated with the upstream itself, its certificate verified end to end. A proxy
that is down, refuses the tunnel or asks for credentials (407) is a ``ConnectFailed`` that
names it: the request never left.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Mapping
from urllib.parse import urlsplit

from gateway.core.proxy_url import Proxy, parse_proxy
from gateway.upstream.http1 import ConnectFailed, Connection, Http1Origin

MAX_CONNECT_ANSWER_BYTES = 16 * 1024


def proxy_for(target_url: str, proxy_url: str, environ: Mapping[str, str]) -> Proxy | None:
    """The proxy a call to ``target_url`` goes through, or None for a direct connection."""
    if proxy_url:
        return parse_proxy(proxy_url)
    proxies = {k.lower().removesuffix("_proxy"): v for k, v in environ.items() if k.lower().endswith("_proxy") and v}
    parts = urlsplit(target_url)
    chosen = proxies.get(parts.scheme)
    if not chosen:
        return None
    host = parts.hostname or ""
    if "no" in proxies and urllib.request.proxy_bypass_environment(host, {"no": proxies["no"]}):  # type: ignore[attr-defined]  # CPython's NO_PROXY reading; not in typeshed
        return None
    return parse_proxy(chosen)


def via(proxy: Proxy, origin: Http1Origin) -> None:
    """Route ``origin``'s connections through ``proxy``."""
    if origin.ssl_context is None:
        origin.absolute_form = f"http://{origin.host_header}"
        if proxy.authorization:
            origin.extra_headers = (("Proxy-Authorization", proxy.authorization),)

        async def plain(origin: Http1Origin) -> Connection:
            try:
                _, connection = await origin.loop.create_connection(lambda: Connection(origin), proxy.host, proxy.port)
            except OSError as exc:
                raise ConnectFailed(f"cannot connect to the egress proxy {proxy.name} ({type(exc).__name__})") from exc
            return connection

        origin.connect = plain
    else:

        async def tunnel(origin: Http1Origin) -> Connection:
            return await _tunnel(proxy, origin)

        origin.connect = tunnel
    origin.via = f" (through the egress proxy {proxy.name})"


class _TunnelAnswer(asyncio.Protocol):
    def __init__(self) -> None:
        self.head: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._buffer = b""

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if b"\r\n\r\n" in self._buffer and not self.head.done():
            self.head.set_result(self._buffer)
        elif len(self._buffer) > MAX_CONNECT_ANSWER_BYTES and not self.head.done():
            self.head.set_exception(ConnectionError("answer too long"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.head.done():
            self.head.set_exception(exc or ConnectionError("closed"))


async def _tunnel(proxy: Proxy, origin: Http1Origin) -> Connection:
    loop = origin.loop
    authority = f"{origin.host}:{origin.port}" if ":" not in origin.host else f"[{origin.host}]:{origin.port}"
    try:
        transport, answer = await loop.create_connection(_TunnelAnswer, proxy.host, proxy.port)
    except OSError as exc:
        raise ConnectFailed(f"cannot connect to the egress proxy {proxy.name} ({type(exc).__name__})") from exc
    try:
        lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
        if proxy.authorization:
            lines.append(f"Proxy-Authorization: {proxy.authorization}")
        transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        try:
            head = await answer.head
        except (OSError, ConnectionError) as exc:
            raise ConnectFailed(f"the egress proxy {proxy.name} closed the CONNECT to {authority} ({type(exc).__name__})") from exc
        status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        fields = status_line.split(" ", 2)
        if len(fields) < 2 or not fields[1].isdigit() or not fields[1].startswith("2"):
            reason = " ".join(fields[1:]) or status_line
            needs = " (it asks for credentials: set them in HTTPS_PROXY, not the config)" if fields[1:2] == ["407"] else ""
            raise ConnectFailed(f"the egress proxy {proxy.name} refused CONNECT to {authority}: {reason}{needs}")
        connection = Connection(origin)
        tls = await loop.start_tls(transport, connection, origin.ssl_context, server_hostname=origin.host)  # type: ignore[arg-type]
        if tls is None:
            raise ConnectFailed(f"TLS through the egress proxy {proxy.name} to {authority} did not start")
        connection.connection_made(tls)
        return connection
    except BaseException:
        transport.abort()
        raise
