"""The one URL form the clients take: ``http://host:port``, ``grpc://host:port``, their TLS forms
``https://`` and ``grpcs://``, or a bare ``host:port`` (HTTP). Without a port, Triton's: 8000 for HTTP, 8001
for gRPC.

>>> parse_url("grpc://[::1]:9001")
Endpoint(scheme='grpc', host='::1', port=9001, tls=None)
>>> str(parse_url("localhost")), str(parse_url("grpcs://example.com"))
('http://localhost:8000', 'grpcs://example.com:8001')
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from ..errors import ConfigurationError

__all__ = ["ClientTls", "Endpoint", "parse_url"]

Scheme = Literal["http", "grpc"]
DEFAULT_PORTS: dict[Scheme, int] = {"http": 8000, "grpc": 8001}
_SCHEMES: dict[str, tuple[Scheme, bool]] = {
    "http": ("http", False),
    "https": ("http", True),
    "grpc": ("grpc", False),
    "grpcs": ("grpc", True),
}


@dataclass(frozen=True)
class ClientTls:
    """How a client checks a TLS server (``ca``: a PEM bundle of the CAs to trust; None: the system's) and, for
    mutual TLS, shows its own certificate (``cert`` and ``key``: PEM files)."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca)
        if self.cert is not None:
            context.load_cert_chain(self.cert, self.key)
        return context

    def grpc_credentials(self) -> Any:
        import grpc

        def read(path: str | None) -> bytes | None:
            if path is None:
                return None
            with open(path, "rb") as file:
                return file.read()

        return grpc.ssl_channel_credentials(read(self.ca), read(self.key), read(self.cert))


@dataclass(frozen=True)
class Endpoint:
    """Where a server listens, which protocol it speaks there, and whether over TLS (how to check it)."""

    scheme: Scheme
    host: str
    port: int
    tls: ClientTls | None = None

    @property
    def address(self) -> str:
        """``host:port``, the host in brackets when it is an IPv6 address (as gRPC targets take it)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.scheme}{'s' if self.tls else ''}://{self.address}"


def parse_url(url: str) -> Endpoint:
    """The `Endpoint` of a URL; `ConfigurationError` saying what is wrong with one it cannot take."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError(f"the server URL must be a non-empty string such as http://host:8000, got {url!r}")
    text = url.strip()
    parts = urlsplit(text if "://" in text else f"http://{text}")
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise ConfigurationError(
            f"the server URL {url!r} must start with http://, https://, grpc:// or grpcs:// (or be a bare "
            f"host:port, for HTTP); {scheme}:// is not supported"
        )
    try:
        port = parts.port
    except ValueError:
        raise ConfigurationError(f"the server URL {url!r} has an invalid port") from None
    if not parts.hostname or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigurationError(f"the server URL must look like {scheme}://host:port, got {url!r}")
    key, secure = _SCHEMES[scheme]
    return Endpoint(key, parts.hostname, DEFAULT_PORTS[key] if port is None else port, ClientTls() if secure else None)
