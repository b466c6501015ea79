"""The one URL form the clients take: ``http://host:port``, ``grpc://host:port``, or a bare ``host:port``
(HTTP). Without a port, Triton's: 8000 for HTTP, 8001 for gRPC.

>>> parse_url("grpc://[::1]:9001")
Endpoint(scheme='grpc', host='::1', port=9001)
>>> str(parse_url("localhost"))
'http://localhost:8000'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from ..errors import ConfigurationError

__all__ = ["Endpoint", "parse_url"]

Scheme = Literal["http", "grpc"]
DEFAULT_PORTS: dict[Scheme, int] = {"http": 8000, "grpc": 8001}


@dataclass(frozen=True)
class Endpoint:
    """Where a server listens, and which protocol it speaks there."""

    scheme: Scheme
    host: str
    port: int

    @property
    def address(self) -> str:
        """``host:port``, the host in brackets when it is an IPv6 address (as gRPC targets take it)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.address}"


def parse_url(url: str) -> Endpoint:
    """The `Endpoint` of a URL; `ConfigurationError` saying what is wrong with one it cannot take."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError(f"the server URL must be a non-empty string such as http://host:8000, got {url!r}")
    text = url.strip()
    parts = urlsplit(text if "://" in text else f"http://{text}")
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ConfigurationError(
            f"the server URL {url!r} must start with http:// or grpc:// (or be a bare host:port, for HTTP); "
            f"{scheme}:// is not supported"
        )
    try:
        port = parts.port
    except ValueError:
        raise ConfigurationError(f"the server URL {url!r} has an invalid port") from None
    if not parts.hostname or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigurationError(f"the server URL must look like {scheme}://host:port, got {url!r}")
    key: Scheme = "grpc" if scheme == "grpc" else "http"
    return Endpoint(key, parts.hostname, DEFAULT_PORTS[key] if port is None else port)
