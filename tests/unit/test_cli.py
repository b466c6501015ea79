"""The ``pybind-serve`` command without a server: its arguments, how TARGET is found, and its error messages."""

from __future__ import annotations

import json
import sys
import textwrap
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from pybind_serve import Serve, Tensor, batch
from pybind_serve.cli import (
    CliError,
    _input,
    _jsonable,
    _request,
    _url,
    build_parser,
    find_serve,
    load_serve,
    main,
    parse_target,
    serve_options,
)
from pybind_serve.errors import ConfigurationError

MODEL = """
import numpy as np
from pybind_serve import Serve, Tensor, batch


@batch
def double(x):
    return {"y": x * 2}


def bind(serve):
    serve.bind("double", double, inputs=[Tensor("x", np.float32, (-1,))], outputs=[Tensor("y", np.float32, (-1,))])
"""


@pytest.fixture(autouse=True)
def clean_imports() -> Iterator[None]:
    """What a test imported (its tmp_path files) and put on sys.path is gone afterwards."""
    path, modules = list(sys.path), set(sys.modules)
    yield
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        del sys.modules[name]


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, str], Path]:
    """``write(name, source)``: a Python file in a directory of this test's own."""

    def write(name: str, source: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
        return path

    return write


def bind_double(serve: Serve) -> None:
    serve.bind(
        "double",
        batch(lambda x: {"y": x * 2}),
        inputs=[Tensor("x", np.float32, (-1,))],
        outputs=[Tensor("y", np.float32, (-1,))],
    )


def module(**attributes: object) -> types.ModuleType:
    made = types.ModuleType("made")
    vars(made).update(attributes)
    return made


def never() -> Serve:
    raise AssertionError("the CLI made a Serve it did not need")


# -- TARGET -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "path", "name", "attr"),
    [
        ("app", None, "app", None),
        ("my_pkg.models:serve", None, "my_pkg.models", "serve"),
        ("app:factories.create", None, "app", "factories.create"),
        ("examples/add_sub/server.py", "examples/add_sub/server.py", None, None),
        ("server.py:bind", "server.py", None, "bind"),
        ("./app", "app", None, None),
    ],
)
def test_targets_name_a_module_or_a_file_and_maybe_an_attribute(
    text: str, path: str | None, name: str | None, attr: str | None
) -> None:
    target = parse_target(text)
    assert (target.path, target.module, target.attr) == (Path(path) if path else None, name, attr)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (":serve", "names no module or file"),
        ("app:", "is not an attribute name"),
        ("app:1st", "is not an attribute name"),
        ("my app", "neither a module name nor a path"),
    ],
)
def test_malformed_targets_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(CliError, match=message):
        parse_target(text)


def test_the_one_serve_object_of_a_module_is_found() -> None:
    serve = Serve()
    assert find_serve(module(server=serve, other=3), parse_target("m"), never) is serve


def test_several_serve_objects_need_a_name() -> None:
    with pytest.raises(CliError, match=r"has 2 Serve objects: say which, as one of m:a, m:b"):
        find_serve(module(a=Serve(), b=Serve()), parse_target("m"), never)
    chosen = Serve()
    assert find_serve(module(a=Serve(), b=chosen), parse_target("m:b"), never) is chosen


def test_a_bind_function_binds_on_the_serve_the_cli_makes() -> None:
    made = Serve(http_port=9000)
    serve = find_serve(module(bind=bind_double), parse_target("m"), lambda: made)
    assert serve is made
    assert [spec.name for spec in serve._bound_specs()] == ["double"]


def test_a_function_without_arguments_returns_the_serve() -> None:
    def create_serve() -> Serve:
        serve = Serve()
        bind_double(serve)
        return serve

    serve = find_serve(module(create_serve=create_serve), parse_target("m"), never)
    assert [spec.name for spec in serve._bound_specs()] == ["double"]
    assert find_serve(module(make=create_serve), parse_target("m:make"), never) is not serve


def test_a_dotted_attribute_is_followed() -> None:
    serve = Serve()
    holder = types.SimpleNamespace(serve=serve)
    assert find_serve(module(app=holder), parse_target("m:app.serve"), never) is serve


@pytest.mark.parametrize(
    ("attributes", "target", "message"),
    [
        ({}, "m", "has no Serve object and no function bind or create_serve"),
        ({"x": 3}, "m:y", "m has no attribute 'y'"),
        ({"x": 3}, "m:x", "m:x is a int: give a Serve, a function that returns one, or a function bind"),
        ({"x": Serve}, "m:x", "m:x is a type"),
        ({"f": lambda a, b: None}, "m:f", r"m:f takes 2 arguments \(a, b\); at most one \(a Serve\)"),
        ({"f": lambda: 42}, "m:f", r"m:f\(\) returned int, not a Serve"),
    ],
)
def test_what_is_not_a_serve_is_refused_with_a_reason(attributes: dict[str, object], target: str, message: str) -> None:
    with pytest.raises(CliError, match=message):
        find_serve(module(**attributes), parse_target(target), Serve)


def test_a_failing_bind_function_is_reported_where_it_failed() -> None:
    def bind(serve: Serve) -> None:
        raise KeyError("weights.bin")

    with pytest.raises(CliError, match=r"m:bind\(serve\) failed: KeyError: 'weights.bin' \(at .*test_cli.py:\d+\)"):
        find_serve(module(bind=bind), parse_target("m"), Serve)


def test_a_file_is_imported_as_a_script_is(write: Callable[[str, str], Path]) -> None:
    path = write("app.py", MODEL)
    serve = load_serve(str(path))
    assert [spec.name for spec in serve._bound_specs()] == ["double"]
    assert sys.modules["app"].__file__ == str(path)


def test_a_file_in_a_package_keeps_its_relative_imports(write: Callable[[str, str], Path]) -> None:
    write("pkg/__init__.py", "")
    write("pkg/models.py", MODEL)
    path = write("pkg/app.py", "from .models import bind\n")
    serve = load_serve(f"{path}:bind")
    assert [spec.name for spec in serve._bound_specs()] == ["double"]
    assert "pkg.app" in sys.modules


def test_a_module_is_found_in_the_current_directory(
    write: Callable[[str, str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write("served_here.py", MODEL)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    assert [spec.name for spec in load_serve("served_here")._bound_specs()] == ["double"]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("import numpy\nx = 1 +\n", r"importing .*broken.py failed: SyntaxError: invalid syntax"),
        ("import not_installed_anywhere\n", r"failed: ModuleNotFoundError: No module named 'not_installed_anywhere'"),
        ("\n\nraise RuntimeError('no GPU')\n", r"failed: RuntimeError: no GPU \(at .*broken.py:3\)"),
        ("import sys\nsys.exit(2)\n", r"exited \(SystemExit: 2\) while it was imported: .*if __name__ =="),
    ],
)
def test_a_module_that_does_not_import_says_why_in_one_message(
    write: Callable[[str, str], Path], source: str, message: str
) -> None:
    path = write("broken.py", source)
    with pytest.raises(CliError, match=message):
        load_serve(str(path))


def test_missing_modules_and_files_are_named() -> None:
    with pytest.raises(CliError, match=r"cannot import 'no_such_module_here': no module named 'no_such_module_here'"):
        load_serve("no_such_module_here")
    with pytest.raises(CliError, match=r"no such file: nowhere/app.py"):
        load_serve("nowhere/app.py")


def test_a_file_whose_name_is_taken_by_another_module_is_refused(write: Callable[[str, str], Path]) -> None:
    path = write("json.py", MODEL)
    with pytest.raises(CliError, match=r"imported as module 'json', but that name is another module"):
        load_serve(str(path))


def test_a_model_that_bind_refuses_is_reported(write: Callable[[str, str], Path]) -> None:
    path = write("bad_model.py", MODEL.replace("inputs=[Tensor", "inputs=2 * [Tensor"))
    message = r"bind\(serve\) failed: bind\('double'\) is invalid \(at .*bad_model.py:12\):\n  - inputs have duplicate"
    with pytest.raises(CliError, match=message):
        load_serve(str(path))


# -- options ------------------------------------------------------------------------------------------------------


def test_serve_options_are_only_those_given() -> None:
    args = build_parser().parse_args(["serve", "app"])
    assert serve_options(args) == {}
    argv = ["serve", "app:serve", "--host", "0.0.0.0", "--http-port", "0", "--grpc-port", "none"]
    argv += ["--metrics-port", "9102", "--fronts", "2", "--log-level", "INFO", "--access-log"]
    options = serve_options(build_parser().parse_args(argv))
    assert options == {
        "host": "0.0.0.0",
        "http_port": 0,
        "grpc_port": None,
        "metrics_port": 9102,
        "fronts": 2,
        "log_level": "info",
        "access_log": True,
    }
    assert serve_options(build_parser().parse_args(["serve", "app", "--no-access-log"])) == {"access_log": False}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "app", "--http-port", "70000"], "not a port number (0-65535): 70000"),
        (["serve", "app", "--grpc-port", "eight"], "not a port number: 'eight'"),
        (["serve", "app", "--log-level", "bogus"], "invalid choice: 'bogus'"),
        (["serve", "app", "--fronts", "0"], "not a positive number"),
        (["serve"], "the following arguments are required: TARGET"),
        (["infer", "localhost:8000"], "the following arguments are required: MODEL"),
        (["launch", "app"], "invalid choice: 'launch'"),
    ],
)
def test_bad_arguments_are_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_options_override_those_of_the_serve_object() -> None:
    serve = Serve(http_port=8000, grpc_port=8001, metrics_port=8002, log_level="warning")
    found = find_serve(module(serve=serve), parse_target("m"), never)
    found._override(http_port=9000, grpc_port=None, log_level="info", access_log=True, host="0.0.0.0")
    assert (serve.http_port, serve.grpc_port, serve.metrics_port) == (9000, None, 8002)
    assert (serve.log_level, serve.access_log, serve.host) == ("info", True, "0.0.0.0")
    with pytest.raises(ConfigurationError, match=r"log_level must be one of 'critical', 'error', 'warning'"):
        serve._override(log_level="loud")


def test_a_bind_function_gets_a_serve_made_with_the_options(write: Callable[[str, str], Path]) -> None:
    path = write("bind_only.py", MODEL)
    serve = load_serve(str(path), {"http_port": 9000, "grpc_port": None, "log_level": "debug"})
    assert (serve.http_port, serve.grpc_port, serve.log_level) == (9000, None, "debug")


# -- check --------------------------------------------------------------------------------------------------------


def test_check_prints_each_model_s_metadata_and_config(
    write: Callable[[str, str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write("checked.py", MODEL)
    assert main(["check", str(path)]) == 0
    out, err = capsys.readouterr()
    [model] = json.loads(out)["models"]
    assert model["metadata"]["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, -1]}]
    assert model["config"]["name"] == "double"
    assert model["config"]["dynamic_batching"]["max_queue_delay_microseconds"] == 0
    assert err == "pybind-serve: 1 model OK (double v1)\n"


def test_check_fails_without_models(write: Callable[[str, str], Path], capsys: pytest.CaptureFixture[str]) -> None:
    path = write("empty.py", "from pybind_serve import Serve\nserve = Serve()\n")
    assert main(["check", str(path)]) == 1
    assert capsys.readouterr().err == f"pybind-serve: error: {path} binds no models\n"


def test_errors_are_one_line_unless_the_traceback_is_asked_for(
    write: Callable[[str, str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write("raises.py", "raise RuntimeError('no GPU')\n")
    assert main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pybind-serve: error: importing ") and err.count("\n") == 1
    assert main(["check", str(path), "--traceback"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "RuntimeError: no GPU" in err
    assert err.splitlines()[-1].startswith("pybind-serve: error: importing ")


# -- infer --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "protocol", "expected"),
    [
        ("localhost:8000", None, "localhost:8000"),
        ("localhost:8001", "grpc", "grpc://localhost:8001"),
        ("grpc://localhost:8001", None, "grpc://localhost:8001"),
        ("grpcs://localhost:8001", "grpc", "grpcs://localhost:8001"),
        ("https://localhost:8000", "http", "https://localhost:8000"),
    ],
)
def test_the_protocol_option_completes_the_url(url: str, protocol: str | None, expected: str) -> None:
    assert _url(url, protocol) == expected


def test_a_protocol_that_contradicts_the_url_is_refused() -> None:
    with pytest.raises(CliError, match=r"--protocol grpc does not match the URL 'http://localhost:8000'"):
        _url("http://localhost:8000", "grpc")


def test_inputs_are_name_equals_json() -> None:
    assert _input("x=[[1, 2.5]]") == ("x", [[1, 2.5]])
    assert _input('text=["a=b"]') == ("text", ["a=b"])
    with pytest.raises(CliError, match=r"give NAME=JSON"):
        _input("[[1, 2]]")
    with pytest.raises(CliError, match=r"--input x: '\[1,' is not JSON"):
        _input("x=[1,")


def test_a_whole_request_becomes_typed_arrays(tmp_path: Path) -> None:
    request = {
        "inputs": [
            {"name": "a", "datatype": "FP16", "shape": [1, 2], "data": [1, 2]},
            {"name": "text", "datatype": "BYTES", "shape": [2], "data": ["hi", "there"]},
        ],
        "parameters": {"factor": 2},
        "outputs": [{"name": "y"}],
    }
    parsed = _request(json.dumps(request))
    assert parsed["inputs"]["a"].dtype == np.float16 and parsed["inputs"]["a"].shape == (1, 2)
    assert parsed["inputs"]["text"].dtype == object and parsed["inputs"]["text"].tolist() == ["hi", "there"]
    assert (parsed["parameters"], parsed["outputs"]) == ({"factor": 2}, ["y"])
    (tmp_path / "request.json").write_text(json.dumps(request))
    assert _request(f"@{tmp_path / 'request.json'}")["outputs"] == ["y"]


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ('{"inputs": [{"name": "a", "shape": [1], "data": [1]}]}', r"input 'a': missing 'datatype'"),
        ('{"inputs": [{"name": "a", "datatype": "FP99", "shape": [1], "data": [1]}]}', r"unknown datatype 'FP99'"),
        ('{"inputs": [{"name": "a", "datatype": "FP32", "shape": [3], "data": [1]}]}', r"input 'a': cannot reshape"),
        ("[1, 2]", r"--request: give a JSON object, got list"),
        ("@/nonexistent/request.json", r"cannot read /nonexistent/request.json"),
    ],
)
def test_a_bad_request_says_what_is_wrong(request_: str, message: str) -> None:
    with pytest.raises(CliError, match=message):
        _request(request_)


def test_outputs_print_as_json_with_text_for_bytes() -> None:
    assert _jsonable(np.array([[1.5, 2]], np.float32)) == [[1.5, 2.0]]
    assert _jsonable(np.array([[b"caf\xc3\xa9", b"\xff"]], dtype=object)) == [["café", "\\xff"]]
    assert _jsonable(np.array([True])) == [True]


def test_infer_without_inputs_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["infer", "localhost:1", "m"]) == 1
    assert "no inputs: give --input NAME=JSON" in capsys.readouterr().err


def test_streaming_needs_grpc(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["infer", "localhost:1", "m", "-i", "x=[[1]]", "--stream"]) == 1
    assert capsys.readouterr().err == "pybind-serve: error: --stream needs gRPC: a grpc:// URL, or --protocol grpc\n"
