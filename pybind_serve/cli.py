"""The ``pybind-serve`` command (also ``python -m pybind_serve``): serve, check and call models from a shell.

- ``pybind-serve serve TARGET [--host H] [--http-port N] [--grpc-port N|none] [--metrics-port N|none]
  [--fronts N] [--log-level L] [--access-log]``: import TARGET, take its `Serve` (the options given override
  the Serve's own), and serve until Ctrl-C or SIGTERM, then drain and exit 0.
- ``pybind-serve check TARGET``: import TARGET and validate its models (what `Serve.bind` checks) without
  serving; print each model's metadata and config (the documents ``/v2/models/<m>`` and ``.../config`` answer).
- ``pybind-serve infer URL MODEL --input NAME=JSON ... | --request JSON``: one request through
  `pybind_serve.client`; print its outputs as one JSON object.

TARGET is ``module``, ``module:attr``, ``path/to/file.py`` or ``path/to/file.py:attr``. ``attr`` (dots allowed)
names a `Serve`; a function with no required argument that returns one; or a function taking one argument,
which the CLI calls with a `Serve` it made from the options (``bind(serve)``, to bind the models on it). Without
``attr``: the `Serve` the module made at its top level (if it made exactly one), else its function ``bind`` or
``create_serve``. The module is imported, not run: its ``if __name__ == "__main__":`` block is not executed. A
file is imported as Python imports a script (its directory, or that of the package it is in, goes first on
``sys.path``); a module is looked for in the current directory first.

An error the user can fix (a module that does not import, no Serve in it, a port in use, a failed request)
prints one ``pybind-serve: error: ...`` message and exits 1; ``--traceback`` shows the traceback too.
See docs/cli.md.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import re
import sys
import sysconfig
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from .client import ClientTls, DecoupledModelClient, ModelClient
from .dtypes import from_datatype, is_bytes
from .errors import PortInUseError, ServeError
from .logs import LEVELS
from .protocol.documents import model_config, model_metadata
from .serve import Serve
from .version import __version__

__all__ = ["CliError", "Target", "build_parser", "find_serve", "load_serve", "main", "parse_target", "serve_options"]

PROG = "pybind-serve"
DEFAULT_NAMES = ("bind", "create_serve")  # looked for when TARGET names no attribute and has no Serve object
_ATTRIBUTE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


class CliError(Exception):
    """A problem the user can fix, said in one message (the cause, if any, chained for ``--traceback``)."""


# -- TARGET ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """What ``TARGET`` names: a file (``path``) or a module (``module``), and maybe an attribute of it."""

    text: str
    path: Path | None = None
    module: str | None = None
    attr: str | None = None


def parse_target(text: str) -> Target:
    """``module[:attr]`` or ``path/to/file.py[:attr]``.

    >>> target = parse_target("examples/add_sub/server.py:bind")
    >>> target.path, target.attr
    (PosixPath('examples/add_sub/server.py'), 'bind')
    >>> parse_target("my_app.models")
    Target(text='my_app.models', path=None, module='my_app.models', attr=None)
    """
    where, _, attr = text.rpartition(":") if ":" in text else (text, "", "")
    if not where:
        raise CliError(f"TARGET {text!r} names no module or file: give module[:attr] or path/to/file.py[:attr]")
    if ":" in text and not _ATTRIBUTE.fullmatch(attr):
        raise CliError(f"TARGET {text!r}: {attr!r} after ':' is not an attribute name")
    if where.endswith(".py") or "/" in where or os.sep in where:
        return Target(text, path=Path(where), attr=attr or None)
    if not _ATTRIBUTE.fullmatch(where):
        raise CliError(f"TARGET {text!r}: {where!r} is neither a module name nor a path to a .py file")
    return Target(text, module=where, attr=attr or None)


def import_target(target: Target) -> ModuleType:
    """Import the module or file ``target`` names; `CliError` saying why it could not be."""
    if target.path is None:
        assert target.module is not None
        if os.getcwd() not in sys.path and "" not in sys.path:  # as `python -m` does (a console script does not)
            sys.path.insert(0, os.getcwd())
        return _import(target.module, repr(target.module))
    path = target.path.resolve()
    if not path.is_file():
        raise CliError(f"no such file: {target.path}")
    if path.suffix != ".py":
        raise CliError(f"{target.path} is not a Python file (.py)")
    directory, names = path.parent, [] if path.stem == "__init__" else [path.stem]
    while (directory / "__init__.py").is_file():  # the package it is in, so that its relative imports work
        names.insert(0, directory.name)
        directory = directory.parent
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))
    name = ".".join(names)
    module = _import(name, str(target.path))
    found = getattr(module, "__file__", None)
    if found is None or Path(found).resolve() != path:
        raise CliError(
            f"{target.path} is imported as module {name!r}, but that name is another module ({found}): rename the file"
        )
    return module


def _import(name: str, shown: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(f"{exc.name}.")):
            raise CliError(
                f"cannot import {shown}: no module named {exc.name!r} (is it in the current directory, or installed?)"
            ) from exc
        raise CliError(f"importing {shown} failed: {describe(exc)}") from exc
    except SystemExit as exc:
        raise CliError(
            f"{shown} exited (SystemExit: {exc.code}) while it was imported: start its server under "
            "'if __name__ == \"__main__\":' and give the CLI its Serve or bind function"
        ) from exc
    except Exception as exc:
        raise CliError(f"importing {shown} failed: {describe(exc)}") from exc


def find_serve(module: ModuleType, target: Target, make_serve: Callable[[], Serve]) -> Serve:
    """The `Serve` that ``target`` names in ``module`` (see the module's docstring); ``make_serve`` makes the
    Serve a ``bind(serve)`` function is given."""
    if target.attr is not None:
        value: Any = module
        for part in target.attr.split("."):
            try:
                value = getattr(value, part)
            except AttributeError:
                raise CliError(f"{_shown(target)} has no attribute {target.attr!r}") from None
        return _serve_of(value, f"{_shown(target)}:{target.attr}", make_serve)
    found = sorted(name for name, value in vars(module).items() if isinstance(value, Serve))
    if len(found) > 1:
        choices = ", ".join(f"{target.text}:{name}" for name in found)
        raise CliError(f"{_shown(target)} has {len(found)} Serve objects: say which, as one of {choices}")
    if found:
        return _serve_of(getattr(module, found[0]), f"{_shown(target)}:{found[0]}", make_serve)
    for name in DEFAULT_NAMES:
        value = getattr(module, name, None)
        if callable(value) and not inspect.isclass(value):
            return _serve_of(value, f"{_shown(target)}:{name}", make_serve)
    raise CliError(
        f"{_shown(target)} has no Serve object and no function {' or '.join(DEFAULT_NAMES)}: make a Serve at its "
        "top level, or name one (or a function that returns one, or a function bind(serve)) as TARGET:attr"
    )


def _shown(target: Target) -> str:
    return str(target.path) if target.path is not None else str(target.module)


def _serve_of(value: Any, label: str, make_serve: Callable[[], Serve]) -> Serve:
    if isinstance(value, Serve):
        return value
    if not callable(value) or inspect.isclass(value):
        raise CliError(
            f"{label} is a {type(value).__name__}: give a Serve, a function that returns one, or a function "
            "bind(serve) that binds models on the Serve it is given"
        )
    required = _required_arguments(value)
    if len(required) > 1:
        raise CliError(f"{label} takes {len(required)} arguments ({', '.join(required)}); at most one (a Serve)")
    serve = make_serve() if required else None
    try:
        result = value(serve) if serve is not None else value()
    except Exception as exc:
        if serve is not None:
            serve.stop()
        raise CliError(f"{label}({'serve' if required else ''}) failed: {describe(exc)}") from exc
    if serve is not None:
        return serve
    if not isinstance(result, Serve):
        raise CliError(f"{label}() returned {type(result).__name__}, not a Serve")
    return result


def _required_arguments(fn: Any) -> list[str]:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # no signature to read (a builtin): called without arguments
        return []
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in parameters if p.kind in kinds and p.default is inspect.Parameter.empty]


def load_serve(target_text: str, overrides: dict[str, Any] | None = None) -> Serve:
    """The `Serve` of TARGET, with ``overrides`` (`Serve` options: host, ports, fronts, log_level, access_log)
    applied over its own; nothing started unless the module started it."""
    options = dict(overrides or {})
    target = parse_target(target_text)
    module = import_target(target)
    made: list[Serve] = []

    def make_serve() -> Serve:
        made.append(Serve(**options))
        return made[0]

    serve = find_serve(module, target, make_serve)
    if options and not made:
        serve._override(**options)
    return serve


def describe(exc: BaseException) -> str:
    """``Type: message (at file:line)``, the line being the last frame of the traceback that is not
    pybind_serve's own (where the user's code raised it, or called what raised it); a pybind_serve error without
    its type, whose message says enough.

    >>> try:
    ...     int("x")
    ... except ValueError as exc:
    ...     print(describe(exc).split(" (at ")[0])
    ValueError: invalid literal for int() with base 10: 'x'
    """
    text = str(exc) if isinstance(exc, ServeError) else f"{type(exc).__name__}: {exc}"
    mine = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(_LIBRARIES)]
    if not mine:
        return text
    first, newline, rest = text.partition("\n")
    at = f" (at {_relative(mine[-1].filename)}:{mine[-1].lineno})"
    first = f"{first[:-1]}{at}:" if first.endswith(":") and newline else first + at
    return first + newline + rest


# Where a frame is not the user's: pybind_serve, the standard library, installed packages, importlib's own frames.
_LIBRARIES = (
    str(Path(__file__).parent),
    *sorted({sysconfig.get_path(name) for name in ("stdlib", "platstdlib", "purelib", "platlib")}),
    "<frozen",
)


def _relative(filename: str) -> str:
    try:
        return os.path.relpath(filename)
    except ValueError:  # pragma: no cover - another drive
        return filename


# -- the commands -------------------------------------------------------------------------------------------


def _serve_command(args: argparse.Namespace) -> int:
    serve = load_serve(args.target, serve_options(args))
    serve.serve()  # prints where it listens; returns after Ctrl-C / SIGTERM, drained and stopped
    return 0


_OFF = "none"  # --grpc-port none / --metrics-port none


def serve_options(args: argparse.Namespace) -> dict[str, Any]:
    """The `Serve` options given on the command line of ``serve`` (a port turned off: None)."""
    names = ("host", "http_port", "grpc_port", "metrics_port", "fronts", "log_level", "access_log")
    given = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    return {name: None if value == _OFF else value for name, value in given.items()}


def _check_command(args: argparse.Namespace) -> int:
    serve = load_serve(args.target)
    try:
        specs = serve._bound_specs()
        if not specs:
            raise CliError(f"{args.target} binds no models")
        documents = [{"metadata": model_metadata(spec), "config": model_config(spec)} for spec in specs]
    finally:
        serve.stop()
    print(pretty_json({"models": documents}))
    labels = ", ".join(f"{spec.name} v{spec.version}" for spec in specs)
    print(f"{PROG}: {len(specs)} model{'s' * (len(specs) != 1)} OK ({labels})", file=sys.stderr)
    return 0


def _infer_command(args: argparse.Namespace) -> int:
    url = _url(args.url, args.protocol)
    inputs: dict[str, Any] = {}
    parameters: dict[str, Any] = {}
    outputs: list[str] | None = args.output or None
    if args.request is not None:
        request = _request(args.request)
        inputs, parameters = request["inputs"], request["parameters"]
        outputs = outputs or request["outputs"]
    for item in args.input:
        name, value = _input(item)
        inputs[name] = value
    if args.parameters is not None:
        parameters.update(_json_object(args.parameters, "--parameters"))
    if not inputs and args.request is None:
        raise CliError("no inputs: give --input NAME=JSON (once per input) or --request JSON")
    headers = dict(_header(item) for item in args.header)
    tls = ClientTls(ca=args.ca) if args.ca else None
    options: dict[str, Any] = {"parameters": parameters or None, "headers": headers or None, "outputs": outputs}
    if args.stream:
        if not url.startswith("grpc"):
            raise CliError("--stream needs gRPC: a grpc:// URL, or --protocol grpc")
        with DecoupledModelClient(
            url, args.model, version=args.model_version, timeout_s=args.timeout, tls=tls
        ) as streams:
            if args.wait:
                streams.wait_for_model(args.wait)
            for response in (streams.infer_sample if args.sample else streams.infer_batch)(inputs, **options):
                print(json.dumps({name: _jsonable(array) for name, array in response.items()}), flush=True)
        return 0
    with ModelClient(url, args.model, version=args.model_version, timeout_s=args.timeout, tls=tls) as client:
        if args.wait:
            client.wait_for_model(args.wait)
        result = (client.infer_sample if args.sample else client.infer_batch)(inputs, **options)
    print(json.dumps({name: _jsonable(array) for name, array in result.items()}))
    return 0


def _url(url: str, protocol: str | None) -> str:
    scheme = url.partition("://")[0] if "://" in url else None
    if protocol is None or scheme is None:
        return url if scheme is not None or protocol is None else f"{protocol}://{url}"
    if scheme.rstrip("s") != protocol:
        raise CliError(f"--protocol {protocol} does not match the URL {url!r}")
    return url


def _input(item: str) -> tuple[str, Any]:
    name, equals, value = item.partition("=")
    if not equals or not name:
        raise CliError(f"--input {item!r}: give NAME=JSON, e.g. --input 'x=[[1.0, 2.0]]'")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError as exc:
        raise CliError(f"--input {name}: {value!r} is not JSON ({exc})") from None


def _header(item: str) -> tuple[str, str]:
    name, equals, value = item.partition("=")
    if not equals or not name:
        raise CliError(f"--header {item!r}: give NAME=VALUE")
    return name, value


def _json_object(text: str, option: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"{option}: not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise CliError(f"{option}: give a JSON object, got {type(value).__name__}")
    return value


def _request(text: str) -> dict[str, Any]:
    """A KServe v2 JSON infer request (``--request``: the JSON, ``@file`` or ``-`` for stdin), as the client's
    inputs (numpy arrays of the request's datatypes and shapes), parameters and output names."""
    if text == "-":
        text = sys.stdin.read()
    elif text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as exc:
            raise CliError(f"--request: cannot read {text[1:]}: {exc.strerror}") from None
    request = _json_object(text, "--request")
    inputs = {}
    for entry in request.get("inputs", []):
        try:
            name, datatype, shape, data = entry["name"], entry["datatype"], entry["shape"], entry["data"]
            dtype = from_datatype(datatype)
            array = np.array(data, dtype=object if is_bytes(dtype) else dtype).reshape(shape)
        except (KeyError, TypeError, ValueError, ServeError) as exc:
            what = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
            raise CliError(f"--request: input {entry.get('name', '?')!r}: {what}") from None
        inputs[name] = array
    outputs = [entry["name"] for entry in request.get("outputs", []) if "name" in entry] or None
    return {"inputs": inputs, "parameters": dict(request.get("parameters", {})), "outputs": outputs}


def pretty_json(value: Any, indent: str = "") -> str:
    """JSON indented by two spaces, except that a list of numbers and strings stays on one line.

    >>> print(pretty_json({"shape": [-1, 2], "inputs": [{"name": "a"}]}))
    {
      "shape": [-1, 2],
      "inputs": [
        {
          "name": "a"
        }
      ]
    }
    """
    inner = indent + "  "
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(key)}: {pretty_json(item, inner)}" for key, item in value.items()]
    elif isinstance(value, list) and any(isinstance(item, (dict, list)) for item in value):
        items = [f"{inner}{pretty_json(item, inner)}" for item in value]
    else:
        return json.dumps(value)
    brackets = "{}" if isinstance(value, dict) else "[]"
    return brackets[0] + "\n" + ",\n".join(items) + "\n" + indent + brackets[1]


def _jsonable(array: np.ndarray) -> Any:
    """An output as nested lists; BYTES elements as text (UTF-8, undecodable bytes escaped)."""

    def text(value: Any) -> Any:
        if isinstance(value, list):
            return [text(v) for v in value]
        return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value

    return text(array.tolist())


# -- the parser ---------------------------------------------------------------------------------------------


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"not a port number (0-65535): {port}")
    return port


def _port_or_off(text: str) -> int | str:
    return _OFF if text.lower() in ("none", "off") else _port(text)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a positive number: {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"not a number of seconds > 0: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Serve Python functions over the KServe v2 / Triton protocol (docs/cli.md)."
    )
    parser.add_argument("--version", action="version", version=f"pybind_serve {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--traceback", action="store_true", help="on an error, show its traceback too")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    target_help = (
        "module[:attr] or path/to/file.py[:attr]; attr: a Serve, a function returning one, or a function "
        "bind(serve); without attr: the module's Serve object, else its function bind or create_serve"
    )

    serve = commands.add_parser(
        "serve",
        parents=[common],
        help="serve TARGET's models until Ctrl-C / SIGTERM",
        description="Serve TARGET's models until Ctrl-C / SIGTERM, then drain and exit 0. The options given "
        "override the Serve's own.",
    )
    serve.add_argument("target", metavar="TARGET", help=target_help)
    serve.add_argument("--host", help="address to listen on (the Serve's own by default: 127.0.0.1)")
    serve.add_argument("--http-port", type=_port, metavar="N", help="HTTP port (0: any free port)")
    serve.add_argument("--grpc-port", type=_port_or_off, metavar="N|none", help="gRPC port; none: no gRPC")
    serve.add_argument("--metrics-port", type=_port_or_off, metavar="N|none", help="metrics port; none: no metrics")
    serve.add_argument("--fronts", type=_positive, metavar="N", help="front processes sharing the ports")
    serve.add_argument("--log-level", choices=list(LEVELS), type=str.lower, help="pybind_serve's and uvicorn's")
    serve.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a line per HTTP request and gRPC call",
    )
    serve.set_defaults(run=_serve_command)

    check = commands.add_parser(
        "check", parents=[common], help="import TARGET, validate its models, print their metadata and config"
    )
    check.add_argument("target", metavar="TARGET", help=target_help)
    check.set_defaults(run=_check_command)

    infer = commands.add_parser("infer", parents=[common], help="send one request and print the outputs as JSON")
    infer.add_argument("url", metavar="URL", help="http://host:port, grpc://host:port, or host:port (HTTP)")
    infer.add_argument("model", metavar="MODEL")
    infer.add_argument(
        "-i",
        "--input",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="an input's values as JSON, batch axis first (without it with --sample); once per input",
    )
    infer.add_argument("--request", metavar="JSON|@FILE|-", help="a whole KServe v2 JSON infer request")
    infer.add_argument("--parameters", metavar="JSON", help="the request's parameters, a JSON object")
    infer.add_argument("--protocol", choices=("http", "grpc"), help="for a URL without a scheme (default: http)")
    infer.add_argument("--sample", action="store_true", help="the inputs are one sample: no batch axis")
    infer.add_argument(
        "--stream", action="store_true", help="a decoupled model's responses over gRPC: a JSON line for each"
    )
    infer.add_argument("-o", "--output", action="append", default=[], metavar="NAME", help="only these outputs")
    infer.add_argument("--model-version", metavar="V", help="a version of the model (default: the server's choice)")
    infer.add_argument("--header", action="append", default=[], metavar="NAME=VALUE", help="an HTTP header / metadata")
    infer.add_argument("--ca", metavar="FILE", help="CA bundle (PEM) to trust for https:// and grpcs:// URLs")
    infer.add_argument("--timeout", type=_seconds, default=60.0, metavar="S", help="seconds (default 60)")
    infer.add_argument(
        "--wait", type=_seconds, metavar="S", help="first wait up to S seconds for the model to be ready"
    )
    infer.set_defaults(run=_infer_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:  # before the server took over Ctrl-C (while importing, starting)
        return 130
    except BrokenPipeError:  # stdout closed early (| head): no traceback, and none at exit either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (CliError, ServeError) as exc:
        _error(exc, args.traceback)
        return 1


def _error(exc: BaseException, show_traceback: bool) -> None:
    if show_traceback:
        traceback.print_exception(exc)
    message = str(exc)
    if isinstance(exc, PortInUseError):  # the option to change is the command line's
        message = re.sub(r"pass (\w+)_port=0", lambda m: f"pass --{m.group(1)}-port 0", message)
    print(f"{PROG}: error: {message}", file=sys.stderr)
