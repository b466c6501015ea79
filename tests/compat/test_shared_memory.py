"""The system shared-memory extension with tritonclient's own tools (`tritonclient.utils.shared_memory`), over
HTTP and gRPC: inputs read from the client's regions, outputs written into them, mixed with tensors in the
request, and every bad region, offset or size refused with a clear error while the server keeps serving."""

from __future__ import annotations

import os
from collections.abc import Iterator
from multiprocessing import resource_tracker
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException, serialize_byte_tensor

from pybind_serve import Serve

# tritonclient's regions are multiprocessing SharedMemory objects, which start Python's resource tracker (a child of
# this process for the rest of the session): start it now, before the leak checks take their snapshots.
resource_tracker.ensure_running()

A = np.arange(16, dtype=np.float32).reshape(1, 16)
B = np.full((1, 16), 2.0, dtype=np.float32)
NBYTES = A.nbytes  # 64


@pytest.fixture(params=["http", "grpc"])
def client(request: pytest.FixtureRequest, serve: Serve) -> Iterator[Any]:
    """A tritonclient of either protocol; every region it registered is unregistered afterwards."""
    if request.param == "http":
        client: Any = httpclient.InferenceServerClient(f"127.0.0.1:{serve.http_port}", network_timeout=30)
    else:
        assert serve.grpc_url is not None
        client = grpcclient.InferenceServerClient(serve.grpc_url)
    client.unregister_system_shared_memory()
    try:
        yield client
    finally:
        client.unregister_system_shared_memory()
        client.close()


@pytest.fixture
def regions() -> Iterator[dict[str, Any]]:
    """Two client regions: ``in`` holds A then B (128 bytes), ``out`` has room for two outputs (128 bytes)."""
    tag = f"pbs_test_{os.getpid()}"
    handles = {
        "in": shm.create_shared_memory_region(f"{tag}_in", f"/{tag}_in", 2 * NBYTES),
        "out": shm.create_shared_memory_region(f"{tag}_out", f"/{tag}_out", 2 * NBYTES),
    }
    shm.set_shared_memory_region(handles["in"], [A, B])
    handles["keys"] = {name: f"/{tag}_{name}" for name in ("in", "out")}
    try:
        yield handles
    finally:
        for name in ("in", "out"):
            shm.destroy_shared_memory_region(handles[name])


def module(client: Any) -> Any:
    return httpclient if isinstance(client, httpclient.InferenceServerClient) else grpcclient


def register(client: Any, regions: dict[str, Any]) -> None:
    for name, key in regions["keys"].items():
        client.register_system_shared_memory(name, key, 2 * NBYTES)


def shm_input(client: Any, name: str, offset: int, nbytes: int = NBYTES) -> Any:
    tensor = module(client).InferInput(name, [1, 16], "FP32")
    tensor.set_shared_memory("in", nbytes, offset=offset)
    return tensor


def shm_output(client: Any, name: str, offset: int, nbytes: int = NBYTES) -> Any:
    output = module(client).InferRequestedOutput(name)
    output.set_shared_memory("out", nbytes, offset=offset)
    return output


def test_the_extension_is_listed(client: Any) -> None:
    metadata = client.get_server_metadata()
    extensions = metadata["extensions"] if isinstance(metadata, dict) else list(metadata.extensions)
    assert "system_shared_memory" in extensions


def test_inputs_and_outputs_in_shared_memory(client: Any, regions: dict[str, Any]) -> None:
    register(client, regions)
    inputs = [shm_input(client, "a", 0), shm_input(client, "b", NBYTES)]
    outputs = [shm_output(client, "add", 0), shm_output(client, "sub", NBYTES)]
    result = client.infer("add_sub", inputs, outputs=outputs)
    for name in ("add", "sub"):
        assert result.get_output(name) is not None  # listed, with its data in the region
    out = shm.get_contents_as_numpy(regions["out"], np.float32, [2, 16])
    np.testing.assert_array_equal(out[0], (A + B)[0])
    np.testing.assert_array_equal(out[1], (A - B)[0])


def test_shared_memory_mixed_with_tensors_in_the_request(client: Any, regions: dict[str, Any]) -> None:
    """One input and one output in shared memory, the others in the request and the response: the output in
    the response pairs with its raw contents (gRPC) or binary data (HTTP) correctly."""
    register(client, regions)
    b = module(client).InferInput("b", [1, 16], "FP32")
    b.set_data_from_numpy(B * 3)
    outputs = [shm_output(client, "add", 0), module(client).InferRequestedOutput("sub")]
    result = client.infer("add_sub", [shm_input(client, "a", 0), b], outputs=outputs)
    np.testing.assert_array_equal(result.as_numpy("sub"), A - B * 3)
    np.testing.assert_array_equal(shm.get_contents_as_numpy(regions["out"], np.float32, [1, 16]), A + B * 3)


def test_status_lists_registered_regions_and_unregister_removes_them(client: Any, regions: dict[str, Any]) -> None:
    register(client, regions)
    status = client.get_system_shared_memory_status()
    listed = {r["name"]: r for r in status} if isinstance(status, list) else dict(status.regions)
    assert set(listed) == {"in", "out"}
    entry = listed["in"]
    key = entry["key"] if isinstance(entry, dict) else entry.key
    size = entry["byte_size"] if isinstance(entry, dict) else entry.byte_size
    assert (key, int(size)) == (regions["keys"]["in"], 2 * NBYTES)
    client.unregister_system_shared_memory("in")
    status = client.get_system_shared_memory_status()
    names = [r["name"] for r in status] if isinstance(status, list) else list(status.regions)
    assert names == ["out"]
    with pytest.raises(InferenceServerException, match="unable to find system shared memory region 'in'"):
        client.infer("add_sub", [shm_input(client, "a", 0), shm_input(client, "b", 0)])


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("outside", r"offset 128 \+ byte size 64 exceeds shared memory region 'in' of 128 bytes"),
        ("wrong-size", r"shared_memory_byte_size 32 does not match FP32 \[1, 16\], which needs 64 bytes"),
        ("unknown", r"unable to find system shared memory region 'nope'"),
        ("output-too-small", r"output 'add': shared memory size specified with the request \(32 bytes\)"),
    ],
)
def test_bad_windows_are_refused_and_the_server_keeps_serving(
    serve: Serve, client: Any, regions: dict[str, Any], case: str, message: str
) -> None:
    register(client, regions)
    inputs = [shm_input(client, "a", 0), shm_input(client, "b", NBYTES)]
    outputs = None
    if case == "outside":
        inputs[1] = shm_input(client, "b", 2 * NBYTES)
    elif case == "wrong-size":
        inputs[1] = shm_input(client, "b", NBYTES, nbytes=NBYTES // 2)
    elif case == "unknown":
        inputs[1] = module(client).InferInput("b", [1, 16], "FP32")
        inputs[1].set_shared_memory("nope", NBYTES)
    else:
        outputs = [shm_output(client, "add", 0, nbytes=NBYTES // 2)]
    with pytest.raises(InferenceServerException, match=message) as caught:
        client.infer("add_sub", inputs, outputs=outputs)
    assert caught.value.status() in ("400", "StatusCode.INVALID_ARGUMENT")
    result = client.infer("add_sub", [shm_input(client, "a", 0), shm_input(client, "b", NBYTES)])
    np.testing.assert_array_equal(result.as_numpy("add"), A + B)
    assert serve.is_ready()


@pytest.mark.parametrize(
    ("key", "offset", "size", "message"),
    [
        ("/pbs_no_such_segment", 0, 16, r"Unable to open shared memory region 'r'"),
        (None, 64, 128, r"offset 64 \+ byte_size 128 exceeds the 128 bytes"),
        ("/pybind_serve_1_x_front_0", 0, 16, r"belongs to pybind_serve itself"),
    ],
    ids=["missing-key", "beyond-the-segment", "server-segment"],
)
def test_bad_registrations_are_refused(
    client: Any, regions: dict[str, Any], key: str | None, offset: int, size: int, message: str
) -> None:
    with pytest.raises(InferenceServerException, match=message):
        client.register_system_shared_memory("r", key or regions["keys"]["in"], size, offset=offset)
    client.register_system_shared_memory("r", regions["keys"]["in"], 16)
    with pytest.raises(InferenceServerException, match="already in manager"):
        client.register_system_shared_memory("r", regions["keys"]["in"], 16)


def test_bytes_tensors_in_shared_memory(client: Any, regions: dict[str, Any]) -> None:
    """BYTES travel serialized (4-byte lengths), as tritonclient writes them."""
    text = np.array([[b"hello shm"]], dtype=object)
    serialized = serialize_byte_tensor(text)
    size = len(serialized.item())  # one object element: the whole serialized tensor
    shm.set_shared_memory_region(regions["in"], [serialized])
    register(client, regions)
    m = module(client)
    x = np.ones((1, 2), np.float32)
    inputs = [m.InferInput("text", [1, 1], "BYTES")]
    inputs[0].set_shared_memory("in", size)
    for name, array in (("fp32", x), ("fp16", x.astype(np.float16)), ("int8", x.astype(np.int8))):
        inputs.append(m.InferInput(name, list(array.shape), m.np_to_triton_dtype(array.dtype)))
        inputs[-1].set_data_from_numpy(array)
    out = m.InferRequestedOutput("text_out")
    out.set_shared_memory("out", 64)
    client.infer("identity", inputs, outputs=[out])
    raw = shm.get_contents_as_numpy(regions["out"], np.object_, [1, 1])
    assert raw.tolist() == [[b"hello shm"]]
