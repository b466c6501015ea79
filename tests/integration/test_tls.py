"""TLS on both protocols, with a throwaway CA made at test time (trustme): tritonclient and our clients over
https:// and grpcs://, mutual TLS refusing a client without a certificate, and a plain-text request to the TLS
port failing cleanly while the server keeps serving."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import trustme

from pybind_serve import ConfigurationError, ModelConfig, Serve, Tensor, batch
from pybind_serve.client import AsyncModelClient, ClientTls, ModelClient
from pybind_serve.errors import ServerUnreachableError
from tests.conftest import module_server
from tests.integration.conftest import WAIT_S

X = [Tensor("x", np.float32, (-1,))]


@batch
def double(x: np.ndarray) -> dict[str, np.ndarray]:
    return {"y": x * 2}


def _setup(serve: Serve) -> None:
    serve.bind("double", double, X, [Tensor("y", np.float32, (-1,))], config=ModelConfig(max_batch_size=4))


class Pki:
    def __init__(self, directory: Path) -> None:
        self.ca = trustme.CA()
        server = self.ca.issue_cert("127.0.0.1", "localhost")
        client = self.ca.issue_cert("client@example.com")
        self.ca_pem, self.cert, self.key = directory / "ca.pem", directory / "server.pem", directory / "server.key"
        self.client_cert, self.client_key = directory / "client.pem", directory / "client.key"
        self.ca.cert_pem.write_to_path(str(self.ca_pem))
        server.cert_chain_pems[0].write_to_path(str(self.cert))
        for pem in server.cert_chain_pems[1:]:
            pem.write_to_path(str(self.cert), append=True)
        server.private_key_pem.write_to_path(str(self.key))
        client.cert_chain_pems[0].write_to_path(str(self.client_cert))
        client.private_key_pem.write_to_path(str(self.client_key))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def _warm_up(ca: Path) -> object:
    def warm(serve: Serve) -> None:
        verify = ssl.create_default_context(cafile=str(ca))
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [1.0]}]}
        assert httpx.post(f"{serve.http_url}/v2/models/double/infer", json=body, verify=verify).status_code == 200

    return warm


@pytest.fixture(scope="module")
def server(pki: Pki) -> Iterator[Serve]:
    tls = {"tls_certfile": str(pki.cert), "tls_keyfile": str(pki.key)}
    with module_server(_setup, _warm_up(pki.ca_pem), **tls) as serve:  # type: ignore[arg-type]
        yield serve


def test_the_urls_say_https(server: Serve) -> None:
    assert server.http_url.startswith("https://127.0.0.1:")


def test_tritonclient_over_https_and_grpc_with_ssl(server: Serve, pki: Pki) -> None:
    def context() -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(pki.ca_pem))

    http = httpclient.InferenceServerClient(
        f"127.0.0.1:{server.http_port}", ssl=True, ssl_context_factory=context, insecure=False
    )
    grpc_ = grpcclient.InferenceServerClient(server.grpc_url, ssl=True, root_certificates=str(pki.ca_pem))
    try:
        for module, client in ((httpclient, http), (grpcclient, grpc_)):
            assert client.is_model_ready("double")
            x = module.InferInput("x", [1, 2], "FP32")
            x.set_data_from_numpy(np.array([[1.0, 2.0]], np.float32))
            assert client.infer("double", [x]).as_numpy("y").tolist() == [[2.0, 4.0]]
    finally:
        http.close()
        grpc_.close()


@pytest.mark.parametrize("scheme", ["https", "grpcs"])
def test_our_clients_over_tls(server: Serve, pki: Pki, scheme: str) -> None:
    port = server.http_port if scheme == "https" else server.grpc_port
    url, tls = f"{scheme}://127.0.0.1:{port}", ClientTls(ca=str(pki.ca_pem))
    with ModelClient(url, "double", tls=tls) as client:
        assert client.infer_sample(x=np.array([3.0], np.float32))["y"].tolist() == [6.0]

    async def call() -> list[float]:
        async with AsyncModelClient(url, "double", tls=tls) as client:
            return (await client.infer_sample(x=np.array([4.0], np.float32)))["y"].tolist()  # type: ignore[no-any-return]

    assert asyncio.run(call()) == [8.0]
    with ModelClient(url, "double", timeout_s=5) as untrusting, pytest.raises(ServerUnreachableError):
        untrusting.infer_sample(x=np.array([1.0], np.float32))  # the system's CAs do not know ours


def test_a_plain_text_request_to_the_tls_port_fails_cleanly_and_the_server_keeps_serving(
    server: Serve, pki: Pki
) -> None:
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=WAIT_S) as plain:
        plain.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            answer = plain.recv(4096)
        except ConnectionResetError:
            answer = b""
        assert b"200 OK" not in answer  # the TLS layer refuses it; nothing is served in clear
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{server.http_port}/v2/health/ready", timeout=WAIT_S)
    verify = ssl.create_default_context(cafile=str(pki.ca_pem))
    assert httpx.get(f"{server.http_url}/v2/health/ready", verify=verify, timeout=WAIT_S).status_code == 200


def test_mutual_tls_refuses_a_client_without_a_certificate(pki: Pki, make_serve: object) -> None:
    serve = make_serve(  # type: ignore[operator]
        tls_certfile=str(pki.cert), tls_keyfile=str(pki.key), tls_client_ca=str(pki.ca_pem)
    )
    _setup(serve)
    serve.run()
    with_cert = ClientTls(ca=str(pki.ca_pem), cert=str(pki.client_cert), key=str(pki.client_key))
    without = ClientTls(ca=str(pki.ca_pem))
    for scheme, port in (("https", serve.http_port), ("grpcs", serve.grpc_port)):
        url = f"{scheme}://127.0.0.1:{port}"
        with ModelClient(url, "double", tls=with_cert) as client:
            assert client.infer_sample(x=np.array([1.0], np.float32))["y"].tolist() == [2.0]
        with ModelClient(url, "double", tls=without, timeout_s=5) as client, pytest.raises(ServerUnreachableError):
            client.infer_sample(x=np.array([1.0], np.float32))


def test_tls_options_are_checked_when_the_server_is_built(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="TLS needs both tls_certfile and tls_keyfile"):
        Serve(tls_certfile=str(tmp_path / "cert.pem"))
    with pytest.raises(ConfigurationError, match="tls_keyfile must be a readable PEM file"):
        Serve(tls_certfile=__file__, tls_keyfile=str(tmp_path / "missing.key"))
    with pytest.raises(ConfigurationError, match="use https:// or grpcs://"):
        ModelClient("http://127.0.0.1:1", "m", tls=ClientTls())
