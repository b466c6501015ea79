"""The one exception hierarchy of pybind_serve.

Every error the server can answer with carries its HTTP status and gRPC status code, so both fronts
resolve a response from the class alone::

    ServeError                          base of everything raised by pybind_serve
    ├── ConfigurationError              an invalid Tensor / ModelConfig / Serve option (raised at build time)
    ├── StartupError                    the server could not start
    │   └── PortInUseError              a requested port is taken
    └── InferenceError                  answered to a client             HTTP   gRPC
        ├── InvalidInputError           malformed body, wrong name/dtype   400    INVALID_ARGUMENT
        │   └── BatchTooLargeError      more rows than max_batch_size      400    INVALID_ARGUMENT
        ├── PayloadTooLargeError        body over max_body_bytes           413    RESOURCE_EXHAUSTED
        ├── ModelNotFoundError          unknown model or version           404    NOT_FOUND
        ├── UnsupportedError            a protocol feature we do not have  501    UNIMPLEMENTED
        ├── UnavailableError            not ready, stopping                503    UNAVAILABLE
        │   ├── ModelNotReadyError      bound but no worker serving it     503    UNAVAILABLE
        │   ├── QueueFullError          max_queue_size reached             503    UNAVAILABLE
        │   ├── InferenceTimeoutError   queue timeout, or client timeout_s 503    DEADLINE_EXCEEDED
        │   ├── RestrictedError         a restricted endpoint called       403    UNAVAILABLE
        │   │                           without its header (security.py)
        │   └── ServerUnreachableError  client: no connection, or cut off  503    UNAVAILABLE
        ├── ModelExecutionError         the bound function raised          500    INTERNAL
        │   ├── OutputValidationError   outputs not as declared            500    INTERNAL
        │   ├── DecoratorUsageError     a decorator used the wrong way     500    INTERNAL
        │   ├── WorkerDiedError         the worker process died            500    INTERNAL
        │   └── ExecutionTimeoutError   no answer within the model's       504    DEADLINE_EXCEEDED
        │                               execution_timeout_s
        └── InternalServerError         a bug of ours                      500    INTERNAL

A message that goes to a client is cut to `MAX_MESSAGE_CHARS` by `client_message` (an exception's text is
the user's to choose, and a 20 MiB one must not become a 20 MiB response or gRPC trailer).

Errors cross process boundaries as ``(type name, message)`` and are rebuilt with `from_wire`, never
pickled; a client that only has the HTTP status or the gRPC code rebuilds the nearest class with
`from_http_status` / `from_grpc_code`, so ``except`` works the same on both sides. Only clients raise
`ServerUnreachableError` (it is also a builtin `ConnectionError`).
"""

from __future__ import annotations

__all__ = [
    "BatchTooLargeError",
    "ConfigurationError",
    "DecoratorUsageError",
    "ExecutionTimeoutError",
    "InferenceError",
    "InferenceTimeoutError",
    "InternalServerError",
    "InvalidInputError",
    "ModelExecutionError",
    "ModelNotFoundError",
    "ModelNotReadyError",
    "OutputValidationError",
    "PayloadTooLargeError",
    "PortInUseError",
    "QueueFullError",
    "RestrictedError",
    "ServeError",
    "ServerUnreachableError",
    "StartupError",
    "UnavailableError",
    "UnsupportedError",
    "WorkerDiedError",
    "client_message",
    "from_grpc_code",
    "from_http_status",
    "from_wire",
]


MAX_MESSAGE_CHARS = 4096  # the most of an error message that is answered to a client or logged


def client_message(error: BaseException | str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """The text of an error as a client gets it: cut to ``limit`` characters, saying so when it was cut.

    >>> client_message(ValueError("x" * 5000), limit=20)
    'xxxxxxxxxxxxxxxxxxxx... [cut: 5000 characters in all]'
    """
    text = error if isinstance(error, str) else str(error)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [cut: {len(text)} characters in all]"


class ServeError(Exception):
    """Base class of every error raised by pybind_serve."""

    http_status: int = 500
    grpc_code: str = "INTERNAL"


class ConfigurationError(ServeError, ValueError):
    """An invalid spec or option; lists every problem found, one per line.

    >>> ConfigurationError.collect("Tensor 'x'", ["dtype missing", "shape has 0"])
    ConfigurationError("Tensor 'x' is invalid:\\n  - dtype missing\\n  - shape has 0")
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems or [])

    @classmethod
    def collect(cls, subject: str, problems: list[str]) -> ConfigurationError:
        lines = "\n".join(f"  - {p}" for p in problems)
        return cls(f"{subject} is invalid:\n{lines}", problems)


class StartupError(ServeError, RuntimeError):
    """The server could not start; the message says what to change."""


class PortInUseError(StartupError):
    """A port the server was asked to listen on is already in use."""

    @classmethod
    def of(cls, kind: str, host: str, port: int) -> PortInUseError:
        """The error for the ``kind`` port (``http``, ``grpc``, ``metrics``), saying how to get another.

        >>> print(PortInUseError.of("grpc", "127.0.0.1", 8001))
        grpc port 8001 on 127.0.0.1 is already in use: stop the other server, or pass grpc_port=0 to pick a free port
        """
        return cls(
            f"{kind} port {port} on {host} is already in use: stop the other server, "
            f"or pass {kind}_port=0 to pick a free port"
        )


class InferenceError(ServeError):
    """An error answered to a client: its class decides the status codes."""


class InvalidInputError(InferenceError):
    http_status = 400
    grpc_code = "INVALID_ARGUMENT"


class BatchTooLargeError(InvalidInputError):
    pass


class PayloadTooLargeError(InferenceError):
    http_status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class ModelNotFoundError(InferenceError):
    http_status = 404
    grpc_code = "NOT_FOUND"


class UnsupportedError(InferenceError):
    """A protocol feature pybind_serve does not have (e.g. loading models from a repository)."""

    http_status = 501
    grpc_code = "UNIMPLEMENTED"


class UnavailableError(InferenceError):
    http_status = 503
    grpc_code = "UNAVAILABLE"


class ModelNotReadyError(UnavailableError):
    pass


class QueueFullError(UnavailableError):
    pass


class InferenceTimeoutError(UnavailableError):
    grpc_code = "DEADLINE_EXCEEDED"


class SharedMemoryFullError(UnavailableError):
    """The server's shared memory (/dev/shm) has no room for a batch's tensors: that batch fails (503 /
    UNAVAILABLE: a retry may fit once others finish) and the server goes on. Give the server more: ``docker run
    --shm-size``, a Kubernetes ``emptyDir`` with ``medium: Memory`` on /dev/shm (docs/deployment.md)."""


class RestrictedError(UnavailableError):
    """A restricted endpoint group called without its header and value: 403 over HTTP and, as Triton answers
    it, UNAVAILABLE over gRPC (where a client cannot tell it from other unavailability)."""

    http_status = 403


class ServerUnreachableError(UnavailableError, ConnectionError):
    """Raised by clients: the server cannot be reached, or the connection broke before the answer came.

    Also a builtin `ConnectionError`, so code that already catches that (or `OSError`) keeps working.

    >>> isinstance(ServerUnreachableError("cannot reach the server at 127.0.0.1:8000"), ConnectionError)
    True
    """


class ModelExecutionError(InferenceError):
    http_status = 500
    grpc_code = "INTERNAL"


class OutputValidationError(ModelExecutionError):
    pass


class DecoratorUsageError(ModelExecutionError):
    pass


class WorkerDiedError(ModelExecutionError):
    pass


class ExecutionTimeoutError(ModelExecutionError):
    """The function did not answer a batch within its model's ``execution_timeout_s``."""

    http_status = 504
    grpc_code = "DEADLINE_EXCEEDED"


class InternalServerError(InferenceError):
    http_status = 500
    grpc_code = "INTERNAL"


_BY_NAME: dict[str, type[InferenceError]] = {
    cls.__name__: cls
    for cls in (
        InferenceError,
        InvalidInputError,
        BatchTooLargeError,
        PayloadTooLargeError,
        ModelNotFoundError,
        RestrictedError,
        UnsupportedError,
        UnavailableError,
        ModelNotReadyError,
        QueueFullError,
        SharedMemoryFullError,
        InferenceTimeoutError,
        ServerUnreachableError,
        ModelExecutionError,
        OutputValidationError,
        DecoratorUsageError,
        WorkerDiedError,
        ExecutionTimeoutError,
        InternalServerError,
    )
}


def from_wire(type_name: str, message: str) -> InferenceError:
    """Rebuild an error sent from another process as ``(type name, message)``.

    An unknown name (a user's own exception class) becomes a `ModelExecutionError`.

    >>> from_wire("QueueFullError", "queue of 'm' is full").http_status
    503
    """
    return _BY_NAME.get(type_name, ModelExecutionError)(message)


_BY_HTTP_STATUS: dict[int, type[InferenceError]] = {
    400: InvalidInputError,
    403: RestrictedError,
    404: ModelNotFoundError,
    413: PayloadTooLargeError,
    500: ModelExecutionError,
    501: UnsupportedError,
    503: UnavailableError,
    504: ExecutionTimeoutError,
}


def from_http_status(status: int, message: str) -> InferenceError:
    """The error a client raises for an HTTP error answer: the most general class with that status.

    A 500 becomes a `ModelExecutionError` (the function failed: the usual cause); a status no class
    carries becomes a plain `InferenceError`.

    >>> from_http_status(503, "queue of 'm' is full")
    UnavailableError("queue of 'm' is full")
    """
    return _BY_HTTP_STATUS.get(status, InferenceError)(message)


_BY_GRPC_CODE: dict[str, type[InferenceError]] = {
    "INVALID_ARGUMENT": InvalidInputError,
    "NOT_FOUND": ModelNotFoundError,
    "RESOURCE_EXHAUSTED": PayloadTooLargeError,
    "UNIMPLEMENTED": UnsupportedError,
    "UNAVAILABLE": UnavailableError,
    "DEADLINE_EXCEEDED": InferenceTimeoutError,
    "INTERNAL": ModelExecutionError,
}


def from_grpc_code(code: str, message: str) -> InferenceError:
    """The error a client raises for a gRPC status (its name, e.g. ``NOT_FOUND``): as `from_http_status`,
    the most general class with that code, and a plain `InferenceError` for a code no class carries.

    >>> from_grpc_code("DEADLINE_EXCEEDED", "model 'm' v1: timed out in the queue")
    InferenceTimeoutError("model 'm' v1: timed out in the queue")
    """
    return _BY_GRPC_CODE.get(code, InferenceError)(message)
