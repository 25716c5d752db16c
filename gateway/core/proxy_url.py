"""An egress proxy's URL: ``http://[user:pass@]host[:port]``, parsed once, named without its
credentials. A value parser with no I/O, so the settings can validate ``upstream.proxy_url``
with the same reading the transport uses."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit


@dataclass(frozen=True, slots=True)
class Proxy:
    host: str
    port: int
    authorization: str | None  # the Proxy-Authorization value, from the environment only

    @property
    def name(self) -> str:
        """How the proxy is named in errors and logs: no credentials."""
        return f"http://{self.host}:{self.port}"


def parse_proxy(url: str) -> Proxy:
    """An ``http://[user:pass@]host[:port]`` proxy; ValueError naming what is wrong."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"must be an http://host:port proxy URL, got {masked(url)!r}")
    try:
        port = parts.port or 80
    except ValueError as exc:
        raise ValueError(f"has a bad port: {masked(url)!r}") from exc
    authorization = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(pair.encode()).decode()
    return Proxy(parts.hostname, port, authorization)


def masked(url: str) -> str:
    """A proxy URL with any credentials masked, for messages."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.username is None:
        return url
    return url.replace(parts.netloc, parts.netloc.rsplit("@", 1)[-1])
