"""The clients' one URL form: ``http://``, ``grpc://`` (``https://``, ``grpcs://`` over TLS) or a bare
``host:port`` (HTTP), Triton's default ports."""

from __future__ import annotations

import pytest

from pybind_serve.client.url import ClientTls, Endpoint, parse_url
from pybind_serve.errors import ConfigurationError


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        ("http://localhost:8000", Endpoint("http", "localhost", 8000)),
        ("grpc://10.0.0.5:9001", Endpoint("grpc", "10.0.0.5", 9001)),
        ("127.0.0.1:8500", Endpoint("http", "127.0.0.1", 8500)),
        ("  HTTP://Example.com/  ", Endpoint("http", "example.com", 8000)),
        ("grpc://localhost", Endpoint("grpc", "localhost", 8001)),
        ("localhost", Endpoint("http", "localhost", 8000)),
        ("grpc://[::1]:8001", Endpoint("grpc", "::1", 8001)),
        ("https://example.com", Endpoint("http", "example.com", 8000, ClientTls())),
        ("GRPCS://example.com:443", Endpoint("grpc", "example.com", 443, ClientTls())),
    ],
)
def test_urls_the_clients_take(url: str, endpoint: Endpoint) -> None:
    assert parse_url(url) == endpoint


def test_an_ipv6_address_is_bracketed_where_a_target_is_written() -> None:
    endpoint = parse_url("grpc://[::1]:8001")
    assert endpoint.address == "[::1]:8001" and str(endpoint) == "grpc://[::1]:8001"
    assert str(parse_url("grpcs://[::1]:8001")) == "grpcs://[::1]:8001"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://host:8000", "ftp:// is not supported"),
        ("unix:///tmp/socket", "unix:// is not supported"),
        ("http://host:8000/v2/models", "must look like http://host:port"),
        ("http://host:99999", "invalid port"),
        ("http://:8000", "must look like http://host:port"),
        ("", "non-empty string"),
    ],
)
def test_urls_the_clients_refuse_say_why(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_url(url)
