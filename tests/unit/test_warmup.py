"""`Warmup` and `WarmupInput`: validation when built and at bind, the data they generate (zeros, random values
over each dtype's range, raw and .npy files), Triton's ModelWarmup form for /config, and the wire form."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pybind_serve import ConfigurationError, ModelConfig, Serve, Tensor, Warmup, WarmupInput
from pybind_serve.dtypes import serialize_bytes
from pybind_serve.protocol import documents, grpc_codec
from pybind_serve.spec import ModelSpec
from pybind_serve.warmup import warmup_problems

RNG = np.random.default_rng(17)
ZEROS = WarmupInput(np.float32, (2,), zero_data=True)


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({}, "exactly one data source"),
        ({"zero_data": True, "random_data": True}, "exactly one data source"),
        ({"random_data": True, "input_data_file": "x.raw"}, "exactly one data source"),
        ({"zero_data": 1}, "zero_data must be a bool"),
        ({"zero_data": True, "input_data_file": ""}, "input_data_file must be a path"),
    ],
)
def test_a_warmup_input_has_exactly_one_data_source(arguments: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        WarmupInput(np.float32, (2,), **arguments)


@pytest.mark.parametrize(
    ("dtype", "shape", "problem"),
    [
        (np.complex64, (2,), "no KServe datatype"),
        (np.float32, (-1,), "shape must be a sequence of ints >= 0"),
        (np.float32, "2", "shape must be a sequence of ints >= 0"),
        (np.float32, (2.5,), "shape must be a sequence of ints >= 0"),
    ],
)
def test_a_warmup_input_needs_a_dtype_and_a_concrete_shape(dtype: Any, shape: Any, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        WarmupInput(dtype, shape, zero_data=True)


def test_a_warmup_input_normalises_what_it_is_given(tmp_path: Path) -> None:
    spec = WarmupInput(bytes, 3, input_data_file=Path("relative.raw"))
    assert spec.dtype == np.dtype(object) and spec.shape == (3,) and spec.datatype == "BYTES"
    assert Path(str(spec.input_data_file)).is_absolute()


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({"name": "", "batch_size": 1, "inputs": {"x": ZEROS}}, "name must be a non-empty string"),
        ({"name": "w", "batch_size": -1, "inputs": {"x": ZEROS}}, "batch_size must be an int >= 0"),
        ({"name": "w", "batch_size": True, "inputs": {"x": ZEROS}}, "batch_size must be an int >= 0"),
        ({"name": "w", "batch_size": 1, "inputs": {}}, "inputs must map input names to WarmupInput"),
        ({"name": "w", "batch_size": 1, "inputs": {"x": np.zeros(2)}}, "inputs must map input names to WarmupInput"),
        ({"name": "w", "batch_size": 1, "inputs": {"x": ZEROS}, "count": 0}, "count must be an int >= 1"),
    ],
)
def test_warmup_validation(arguments: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        Warmup(**arguments)


def test_model_config_checks_its_warmups() -> None:
    ok = Warmup("w", 4, {"x": ZEROS})
    assert ModelConfig(max_batch_size=4, warmup=[ok]).warmup == (ok,)
    assert ModelConfig().warmup == ()
    with pytest.raises(ConfigurationError, match=r"batch_size must be in 1..2 \(max_batch_size\), got 4"):
        ModelConfig(max_batch_size=2, warmup=[ok])
    with pytest.raises(ConfigurationError, match=r"batch_size must be in 1..16"):
        ModelConfig(warmup=[Warmup("zero", 0, {"x": ZEROS})])
    with pytest.raises(ConfigurationError, match=r"must be 1 \(or 0\) for a model that does not batch"):
        ModelConfig(batching=False, warmup=[Warmup("w", 2, {"x": ZEROS})])
    for size in (0, 1):
        ModelConfig(batching=False, warmup=[Warmup("w", size, {"x": ZEROS})])
    with pytest.raises(ConfigurationError, match="warmup names must be unique"):
        ModelConfig(warmup=[ok, ok])
    for bad in (ok, "w", [ZEROS]):
        with pytest.raises(ConfigurationError, match="warmup must be a sequence of Warmup"):
            ModelConfig(warmup=bad)  # type: ignore[arg-type]


def test_zero_data_in_every_kind_of_dtype() -> None:
    for dtype in (np.bool_, np.uint8, np.int64, np.float16, np.float64):
        array = WarmupInput(dtype, (2, 3), zero_data=True).array(4, RNG)
        assert array.shape == (4, 2, 3) and array.dtype == np.dtype(dtype) and not array.any()
    text = WarmupInput(bytes, (2,), zero_data=True).array(None, RNG)
    assert text.shape == (2,) and text.dtype == object and text.tolist() == [b"", b""]


def test_random_data_covers_each_dtype_s_range() -> None:
    flags = WarmupInput(np.bool_, (1000,), random_data=True).array(None, RNG)
    assert flags.dtype == np.bool_ and flags.any() and not flags.all()
    for dtype in (np.int8, np.uint8, np.int16, np.uint64, np.int64):
        values = WarmupInput(dtype, (4000,), random_data=True).array(None, RNG)
        info = np.iinfo(dtype)
        assert values.dtype == np.dtype(dtype)
        # over the whole range: values in its lowest and highest tenth (for int8: around both ends)
        assert (values < info.min + (int(info.max) - int(info.min)) // 10).any()
        assert (values > info.max - (int(info.max) - int(info.min)) // 10).any()
    for dtype in (np.float16, np.float32, np.float64):
        values = WarmupInput(dtype, (3, 5), random_data=True).array(2, RNG)
        assert values.shape == (2, 3, 5) and values.dtype == np.dtype(dtype)
        assert ((values >= 0) & (values < 1)).all() and len(np.unique(values)) > 1
    text = WarmupInput(bytes, (50,), random_data=True).array(None, RNG)
    assert all(isinstance(item, bytes) and 1 <= len(item) <= 16 for item in text)
    assert len(set(text.tolist())) > 1


def test_raw_files_hold_one_sample_or_the_batch(tmp_path: Path) -> None:
    one = tmp_path / "one.raw"
    one.write_bytes(np.array([1.5, 2.5], np.float32).tobytes())
    spec = WarmupInput(np.float32, (2,), input_data_file=one)
    assert spec.array(3, RNG).tolist() == [[1.5, 2.5]] * 3  # one sample, repeated over the rows
    assert spec.array(None, RNG).tolist() == [1.5, 2.5]
    whole = tmp_path / "batch.raw"
    whole.write_bytes(np.arange(6, dtype=np.int16).tobytes())
    spec = WarmupInput(np.int16, (2,), input_data_file=whole)
    assert spec.array(3, RNG).tolist() == [[0, 1], [2, 3], [4, 5]]
    with pytest.raises(ConfigurationError, match=r"holds 12 bytes of INT16; shape \[2\] needs 4 \(one sample\) or 8"):
        spec.array(2, RNG)
    with pytest.raises(ConfigurationError, match=r"needs 4 \(one sample\)$"):
        spec.array(None, RNG)  # a model that does not batch: one sample only


def test_bytes_files_are_length_prefixed(tmp_path: Path) -> None:
    path = tmp_path / "text.raw"
    path.write_bytes(serialize_bytes(np.array([b"ab", b"", b"xyz"], dtype=object)))
    assert WarmupInput(bytes, (3,), input_data_file=path).array(2, RNG).tolist() == [[b"ab", b"", b"xyz"]] * 2
    assert WarmupInput(bytes, (1,), input_data_file=path).array(3, RNG).tolist() == [[b"ab"], [b""], [b"xyz"]]
    with pytest.raises(ConfigurationError, match="holds 3 elements of BYTES"):
        WarmupInput(bytes, (2,), input_data_file=path).array(1, RNG)
    path.write_bytes(b"\x05\x00\x00\x00ab")
    with pytest.raises(ConfigurationError, match="cut short"):
        WarmupInput(bytes, (1,), input_data_file=path).array(1, RNG)


def test_npy_files_hold_a_sample_or_the_batch(tmp_path: Path) -> None:
    path = tmp_path / "ids.npy"
    np.save(path, np.array([[1, 2], [3, 4]], dtype=np.int32))
    spec = WarmupInput(np.int64, (2,), input_data_file=path)  # int32 data widens to int64
    array = spec.array(2, RNG)
    assert array.dtype == np.int64 and array.tolist() == [[1, 2], [3, 4]]
    with pytest.raises(ConfigurationError, match=r"has shape \[2, 2\]; expected \[2\] or \[3, 2\]"):
        spec.array(3, RNG)
    np.save(path, np.array([1.5, 2.5]))
    with pytest.raises(ConfigurationError, match="holds float64, which is not INT64"):
        spec.array(1, RNG)
    np.save(path, np.array(["a", "bc"]))
    assert WarmupInput(bytes, (2,), input_data_file=path).array(1, RNG).tolist() == [[b"a", b"bc"]]


def test_a_missing_file_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot be read"):
        WarmupInput(np.float32, (2,), input_data_file=tmp_path / "missing").array(1, RNG)


def test_warmup_arrays_follow_batching() -> None:
    warmup = Warmup("w", 3, {"x": WarmupInput(np.float32, (2,), random_data=True), "y": ZEROS})
    assert {n: a.shape for n, a in warmup.arrays(True, RNG).items()} == {"x": (3, 2), "y": (3, 2)}
    assert {n: a.shape for n, a in warmup.arrays(False, RNG).items()} == {"x": (2,), "y": (2,)}


def test_bind_checks_the_warmups_against_the_inputs(tmp_path: Path) -> None:
    inputs = [Tensor("x", np.float32, (-1,)), Tensor("n", np.int64, (3,))]
    short = tmp_path / "short.raw"
    short.write_bytes(b"\x00" * 3)
    warmups = [
        Warmup("names", 1, {"nope": ZEROS}),
        Warmup("types", 1, {"x": WarmupInput(np.float64, (2,), zero_data=True)}),
        Warmup("shapes", 1, {"n": WarmupInput(np.int64, (4,), zero_data=True)}),
        Warmup("files", 1, {"x": WarmupInput(np.float32, (2,), input_data_file=short)}),
        Warmup("missing", 1, {"x": WarmupInput(np.float32, (2,), input_data_file=tmp_path / "missing")}),
        Warmup("fine", 1, {"x": WarmupInput(np.float32, (5,), zero_data=True)}),
    ]
    problems = warmup_problems(warmups, inputs, batching=True)
    assert len(problems) == 5
    assert "warmup 'names' input 'nope': the model has no such input (inputs: ['n', 'x'])" in problems[0]
    assert "dtype FP64 differs from the input's FP32" in problems[1]
    assert "shape [4] does not fit the input's [3]" in problems[2]
    assert "holds 3 bytes of FP32" in problems[3]
    assert "cannot be read" in problems[4]
    serve = Serve(http_port=0)
    with pytest.raises(ConfigurationError, match=r"bind\('m'\) is invalid:(.|\n)*warmup 'names'"):
        serve.bind("m", lambda r: r, inputs, [Tensor("y", np.float32, (-1,))], ModelConfig(warmup=warmups))
    serve.stop()


def test_triton_model_warmup_document_and_grpc_form(tmp_path: Path) -> None:
    path = tmp_path / "x.raw"
    warmups = (
        Warmup("z", 2, {"x": ZEROS}, count=3),
        Warmup("f", 1, {"x": WarmupInput(np.float32, (2,), input_data_file=path)}),
    )
    spec = ModelSpec(
        "m", 1, (Tensor("x", np.float32, (2,)),), (Tensor("y", np.float32, (2,)),), ModelConfig(warmup=warmups)
    )
    config = documents.model_config(spec)
    assert config["model_warmup"] == [
        {
            "name": "z",
            "batch_size": 2,
            "inputs": {"x": {"data_type": "TYPE_FP32", "dims": [2], "zero_data": True}},
            "count": 3,
        },
        {
            "name": "f",
            "batch_size": 1,
            "inputs": {"x": {"data_type": "TYPE_FP32", "dims": [2], "input_data_file": str(path)}},
            "count": 1,
        },
    ]
    assert config["response_cache"] == {"enable": False}
    message = grpc_codec.model_config_response(spec).config
    assert [w.name for w in message.model_warmup] == ["z", "f"]
    assert message.model_warmup[0].inputs["x"].zero_data and list(message.model_warmup[0].inputs["x"].dims) == [2]
    assert message.model_warmup[1].inputs["x"].input_data_file == str(path)


def test_warmups_survive_the_trip_to_the_front(tmp_path: Path) -> None:
    warmups = (
        Warmup("a", 2, {"x": WarmupInput(bytes, (1,), random_data=True), "y": ZEROS}, count=2),
        Warmup("b", 1, {"x": WarmupInput(bytes, (1,), input_data_file=tmp_path / "x.raw")}),
    )
    config = ModelConfig(response_cache=True, warmup=warmups)
    spec = ModelSpec("m", 1, (Tensor("x", bytes, (1,)),), (Tensor("y", np.float32, (2,)),), config)
    again = ModelSpec.from_wire(spec.to_wire())
    assert again.config.warmup == warmups and again.config.response_cache is True
