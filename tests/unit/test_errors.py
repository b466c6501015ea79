"""The error hierarchy: status codes as the errors.py docstring table states them, `from_wire`, `collect`, and
the classes a client rebuilds from an HTTP status or a gRPC code."""

from __future__ import annotations

import pytest

from pybind_serve import errors
from pybind_serve.errors import (
    BatchTooLargeError,
    ConfigurationError,
    DecoratorUsageError,
    ExecutionTimeoutError,
    InferenceError,
    InferenceTimeoutError,
    InternalServerError,
    InvalidInputError,
    ModelExecutionError,
    ModelNotFoundError,
    ModelNotReadyError,
    OutputValidationError,
    PayloadTooLargeError,
    PortInUseError,
    QueueFullError,
    RestrictedError,
    ServeError,
    ServerUnreachableError,
    StartupError,
    UnavailableError,
    UnsupportedError,
    WorkerDiedError,
    from_grpc_code,
    from_http_status,
    from_wire,
)

# The table of the errors.py docstring: class, parent, HTTP status, gRPC code.
TABLE = [
    (InvalidInputError, InferenceError, 400, "INVALID_ARGUMENT"),
    (BatchTooLargeError, InvalidInputError, 400, "INVALID_ARGUMENT"),
    (PayloadTooLargeError, InferenceError, 413, "RESOURCE_EXHAUSTED"),
    (ModelNotFoundError, InferenceError, 404, "NOT_FOUND"),
    (UnsupportedError, InferenceError, 501, "UNIMPLEMENTED"),
    (UnavailableError, InferenceError, 503, "UNAVAILABLE"),
    (ModelNotReadyError, UnavailableError, 503, "UNAVAILABLE"),
    (QueueFullError, UnavailableError, 503, "UNAVAILABLE"),
    (InferenceTimeoutError, UnavailableError, 503, "DEADLINE_EXCEEDED"),
    (RestrictedError, UnavailableError, 403, "UNAVAILABLE"),
    (ModelExecutionError, InferenceError, 500, "INTERNAL"),
    (OutputValidationError, ModelExecutionError, 500, "INTERNAL"),
    (DecoratorUsageError, ModelExecutionError, 500, "INTERNAL"),
    (WorkerDiedError, ModelExecutionError, 500, "INTERNAL"),
    (ExecutionTimeoutError, ModelExecutionError, 504, "DEADLINE_EXCEEDED"),
    (InternalServerError, InferenceError, 500, "INTERNAL"),
]
INFERENCE_ERRORS = [InferenceError, ServerUnreachableError] + [cls for cls, *_ in TABLE]


@pytest.mark.parametrize(("cls", "parent", "http_status", "grpc_code"), TABLE)
def test_status_codes_follow_the_table(cls: type[ServeError], parent: type, http_status: int, grpc_code: str) -> None:
    assert cls.__bases__ == (parent,)
    assert (cls.http_status, cls.grpc_code) == (http_status, grpc_code)
    error = cls("boom")
    assert (error.http_status, error.grpc_code) == (http_status, grpc_code)
    assert str(error) == "boom"


@pytest.mark.parametrize("cls", [ServeError, InferenceError, ConfigurationError, StartupError, PortInUseError])
def test_the_other_classes_answer_500_internal(cls: type[ServeError]) -> None:
    assert (cls.http_status, cls.grpc_code) == (500, "INTERNAL")


def test_the_top_of_the_tree() -> None:
    assert issubclass(ServeError, Exception)
    assert ConfigurationError.__bases__ == (ServeError, ValueError)
    assert StartupError.__bases__ == (ServeError, RuntimeError)
    assert PortInUseError.__bases__ == (StartupError,)
    assert InferenceError.__bases__ == (ServeError,)


def test_server_unreachable_is_unavailable_and_a_builtin_connection_error() -> None:
    assert ServerUnreachableError.__bases__ == (UnavailableError, ConnectionError)
    error = ServerUnreachableError("cannot reach the server at 127.0.0.1:1")
    assert (error.http_status, error.grpc_code) == (503, "UNAVAILABLE")
    assert str(error) == "cannot reach the server at 127.0.0.1:1"
    with pytest.raises(OSError, match="cannot reach"):
        raise error


@pytest.mark.parametrize(("cls", "parent", "http_status", "grpc_code"), TABLE)
def test_a_client_rebuilds_the_most_general_class_of_a_status(
    cls: type[ServeError], parent: type, http_status: int, grpc_code: str
) -> None:
    from_status, from_code = from_http_status(http_status, "m"), from_grpc_code(grpc_code, "m")
    assert (from_status.http_status, from_code.grpc_code) == (http_status, grpc_code)
    assert str(from_status) == str(from_code) == "m"
    # A 500 / INTERNAL is most often the function failing: InternalServerError is not told apart.
    expected = ModelExecutionError if cls is InternalServerError else cls
    assert isinstance(expected("m"), type(from_status))
    # DEADLINE_EXCEEDED is also a queue timeout's code: over gRPC, an execution timeout is rebuilt as that.
    assert isinstance((InferenceTimeoutError if cls is ExecutionTimeoutError else expected)("m"), type(from_code))


@pytest.mark.parametrize("code", ["UNKNOWN", "CANCELLED", "PERMISSION_DENIED", ""])
def test_grpc_codes_no_class_carries_become_inference_errors(code: str) -> None:
    assert type(from_grpc_code(code, "no")) is InferenceError


def test_every_public_class_is_in_the_table() -> None:
    public = {getattr(errors, name) for name in errors.__all__ if isinstance(getattr(errors, name), type)}
    covered = set(INFERENCE_ERRORS) | {ServeError, ConfigurationError, StartupError, PortInUseError}
    assert public == covered


@pytest.mark.parametrize("cls", INFERENCE_ERRORS)
def test_from_wire_round_trip(cls: type[InferenceError]) -> None:
    original = cls(f"{cls.__name__} of model 'm' v1")
    rebuilt = from_wire(type(original).__name__, str(original))
    assert type(rebuilt) is cls
    assert str(rebuilt) == str(original)
    assert (rebuilt.http_status, rebuilt.grpc_code) == (original.http_status, original.grpc_code)


@pytest.mark.parametrize(
    "name",
    [
        "ValueError",
        "MyOwnError",
        "",
        "ServeError",
        "ConfigurationError",
        "StartupError",
        "PortInUseError",
        "queuefullerror",
    ],
)
def test_from_wire_unknown_names_become_model_execution_errors(name: str) -> None:
    rebuilt = from_wire(name, "the function raised")
    assert type(rebuilt) is ModelExecutionError
    assert str(rebuilt) == "the function raised"
    assert (rebuilt.http_status, rebuilt.grpc_code) == (500, "INTERNAL")


def test_collect_message_format() -> None:
    error = ConfigurationError.collect("Tensor 'x'", ["dtype missing", "shape has 0"])
    assert type(error) is ConfigurationError
    assert str(error) == "Tensor 'x' is invalid:\n  - dtype missing\n  - shape has 0"
    assert error.problems == ["dtype missing", "shape has 0"]


def test_collect_copies_the_problems() -> None:
    problems = ["a"]
    error = ConfigurationError.collect("X", problems)
    problems.append("b")
    assert error.problems == ["a"]


def test_collect_single_problem() -> None:
    assert str(ConfigurationError.collect("ModelConfig", ["max_batch_size must be an int >= 1, got 0"])) == (
        "ModelConfig is invalid:\n  - max_batch_size must be an int >= 1, got 0"
    )


def test_configuration_error_without_problems() -> None:
    error = ConfigurationError("port must be an int")
    assert error.problems == []
    assert str(error) == "port must be an int"
    with pytest.raises(ValueError, match="port must be an int"):
        raise error
