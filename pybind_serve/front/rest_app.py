"""The KServe v2 REST front's application: infer on its own fast path (`rest_infer`), every other route on
Starlette (health, metadata, config, repository index, statistics, shared memory, generate, and the trace and
logging extensions' settings).

Every error answer is ``{"error": "..."}`` with the status of its `errors` class.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ..errors import InferenceError, InternalServerError, InvalidInputError, UnsupportedError, client_message
from ..metrics import Metrics
from ..protocol import documents, generate, rest, shared_memory
from ..protocol.messages import InferRequest
from ..security import Guard, Restriction
from ..spec import ModelSpec
from . import inference, statistics
from .models import NO_REPOSITORY, ModelEntry, Models
from .readiness import Readiness
from .regions import NO_CUDA, Regions, enabled
from .rest_infer import InferRoute, decode_body, forwarded_parameters, read_body
from .runtime_settings import RuntimeSettings

__all__ = ["HttpOptions", "create_app", "error_response"]

JSON = "application/json"
EXTENSIONS = [
    "binary_tensor_data",
    "generate",
    "logging",
    "model_configuration",
    "parameters",
    "schedule_policy",
    "statistics",
    "trace",
]


SHARED_MEMORY_EXTENSION = "system_shared_memory"


@dataclass(frozen=True)
class HttpOptions:
    max_body_bytes: int
    server_version: str


def error_response(exc: Exception) -> Response:
    status = exc.http_status if isinstance(exc, InferenceError) else 500
    return Response(rest.encode_error(client_message(exc)), status_code=status, media_type=JSON)


def _json(document: Any) -> Response:
    return Response(json.dumps(document).encode(), media_type=JSON)


async def _json_body(request: Request, what: str) -> dict[str, Any]:
    body = await request.body()
    document = rest.load_json(body) if body.strip() else {}
    if not isinstance(document, dict):
        raise InvalidInputError(f"the body of {what} must be a JSON object, got {type(document).__name__}")
    return document


@dataclass(frozen=True)
class _Front:
    """What the handlers read, as ``request.app.state.front``: the front's registry, counters, readiness and
    options; ``regions``: the registered system shared-memory regions (None: the extension is off)."""

    models: Models
    metrics: Metrics
    options: HttpOptions
    readiness: Readiness
    regions: Regions | None
    extensions: list[str]
    forward: re.Pattern[str] | None = None  # headers to hand the model as request parameters
    settings: RuntimeSettings | None = None  # the trace and log settings (None: those extensions are off)


def _front(request: Request) -> _Front:
    front: _Front = request.app.state.front
    return front


def _model(request: Request) -> ModelEntry:
    return _front(request).models.find(request.path_params["name"], request.path_params.get("version"))


async def _parse_generate(request: Request, spec: ModelSpec) -> InferRequest:
    limit = _front(request).options.max_body_bytes
    body = await read_body(request.receive, dict(request.scope["headers"]), limit)
    body = await decode_body(body, request.headers.get("content-encoding"), limit)
    parsed = generate.parse_generate_request(body, spec)
    forward = _front(request).forward
    if forward is not None:
        parsed.parameters.update(forwarded_parameters(forward, request.scope))
    return parsed


def _generate_responses(request: Request) -> AsyncGenerator[bytes, None]:
    front = _front(request)
    model = (request.path_params["name"], request.path_params.get("version"))
    parse = partial(_parse_generate, request)
    tracer, traced = front.settings.tracer if front.settings is not None else None, None
    if tracer is not None and tracer.on:
        headers = request.headers
        traced = partial(tracer.start, "http", headers.get("traceparent"), headers.get("tracestate"))
    return inference.stream(
        front.models, front.metrics, model, parse, generate.encode_generate_response, time.monotonic(), traced
    )


async def generate_one(request: Request) -> Response:
    responses = _generate_responses(request)
    return Response(await inference.single(responses, f"model {request.path_params['name']!r}"), media_type=JSON)


async def generate_stream(request: Request) -> Response:
    responses = _generate_responses(request)
    try:  # an error before the first response is an ordinary error answer, with its status
        first = await anext(responses, None)
    except InferenceError as exc:
        return error_response(exc)
    return StreamingResponse(_events(first, responses), media_type="text/event-stream; charset=utf-8")


async def live(_: Request) -> Response:
    return Response(status_code=200)


async def ready(request: Request) -> Response:
    return Response(status_code=200 if _front(request).readiness() else 503)


async def server_metadata(request: Request) -> Response:
    front = _front(request)
    return _json(documents.server_metadata(front.options.server_version, front.extensions))


async def model_metadata(request: Request) -> Response:
    return _json(documents.model_metadata(_model(request).spec))


async def model_config(request: Request) -> Response:
    return _json(documents.model_config(_model(request).spec))


async def model_ready(request: Request) -> Response:
    return Response(status_code=200 if _front(request).readiness.model_ready(_model(request)) else 503)


async def repository_index(request: Request) -> Response:
    body = await request.body()
    document = rest.load_json(body) if body.strip() else {}
    only_ready = bool(document.get("ready")) if isinstance(document, dict) else False
    return _json(documents.repository_index(_front(request).models.index(only_ready)))


async def repository_control(action: str, request: Request) -> Response:
    raise UnsupportedError(f"cannot {action} model {request.path_params['name']!r}: {NO_REPOSITORY}")


async def model_statistics(request: Request) -> Response:
    front, name, version = _front(request), request.path_params.get("name", ""), request.path_params.get("version", "")
    return _json({"model_stats": await statistics.model_statistics(front.models, front.metrics, name, version)})


async def shm_status(request: Request) -> Response:
    regions = enabled(_front(request).regions)
    return _json(shared_memory.status_document(regions.status(request.path_params.get("name", ""))))


async def shm_register(request: Request) -> Response:
    regions = enabled(_front(request).regions)
    body = await _json_body(request, "a register request")
    await regions.register_everywhere(shared_memory.parse_register(request.path_params["name"], body))
    return Response(status_code=200)


async def shm_unregister(request: Request) -> Response:
    await enabled(_front(request).regions).unregister_everywhere(request.path_params.get("name", ""))
    return Response(status_code=200)


def _settings(request: Request) -> RuntimeSettings:
    settings = _front(request).settings
    if settings is None:
        raise UnsupportedError("the trace and logging extensions are not served here")
    return settings


async def trace_setting(request: Request) -> Response:
    """Triton's trace extension: the settings of the server, or of one model; POST changes those it names."""
    changes = await _json_body(request, "a trace setting request") if request.method == "POST" else None
    return _json(await _settings(request).trace(request.path_params.get("name"), changes))


async def log_setting(request: Request) -> Response:
    """Triton's logging extension: the front's log settings; POST changes those it names."""
    changes = await _json_body(request, "a log setting request") if request.method == "POST" else None
    return _json(await _settings(request).logging(changes))


async def cuda_status(request: Request) -> Response:
    if request.path_params.get("name"):  # none can be registered
        raise InvalidInputError(f"Unable to find cuda shared memory region: '{request.path_params['name']}'")
    return _json([])


async def cuda_register(_: Request) -> Response:
    raise UnsupportedError(NO_CUDA)


async def cuda_unregister(_: Request) -> Response:
    return Response(status_code=200)  # none is registered (perf_analyzer unregisters all before it starts)


_SYSTEM, _CUDA = "/v2/systemsharedmemory", "/v2/cudasharedmemory"
ROUTES = [
    Route("/v2/health/live", live),
    Route("/v2/health/ready", ready),
    Route("/v2", server_metadata),
    Route("/v2/repository/index", repository_index, methods=["GET", "POST"]),
    Route("/v2/repository/models/{name}/load", partial(repository_control, "load"), methods=["POST"]),
    Route("/v2/repository/models/{name}/unload", partial(repository_control, "unload"), methods=["POST"]),
    Route("/v2/models/stats", model_statistics),  # before the model routes: "stats" is no model's name here
    Route(f"{_SYSTEM}/status", shm_status),
    Route(f"{_SYSTEM}/region/{{name}}/status", shm_status),
    Route(f"{_SYSTEM}/region/{{name}}/register", shm_register, methods=["POST"]),
    Route(f"{_SYSTEM}/unregister", shm_unregister, methods=["POST"]),
    Route(f"{_SYSTEM}/region/{{name}}/unregister", shm_unregister, methods=["POST"]),
    Route(f"{_CUDA}/status", cuda_status),
    Route(f"{_CUDA}/region/{{name}}/status", cuda_status),
    Route(f"{_CUDA}/region/{{name}}/register", cuda_register, methods=["POST"]),
    Route(f"{_CUDA}/unregister", cuda_unregister, methods=["POST"]),
    Route(f"{_CUDA}/region/{{name}}/unregister", cuda_unregister, methods=["POST"]),
    Route("/v2/trace/setting", trace_setting, methods=["GET", "POST"]),
    Route("/v2/models/{name}/trace/setting", trace_setting, methods=["GET", "POST"]),
    Route("/v2/logging", log_setting, methods=["GET", "POST"]),
]
for _prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
    ROUTES += [
        Route(_prefix, model_metadata),
        Route(f"{_prefix}/stats", model_statistics),
        Route(f"{_prefix}/config", model_config),
        Route(f"{_prefix}/ready", model_ready),
        Route(f"{_prefix}/generate", generate_one, methods=["POST"]),
        Route(f"{_prefix}/generate_stream", generate_stream, methods=["POST"]),
    ]


def create_app(
    models: Models,
    metrics: Metrics,
    options: HttpOptions,
    readiness: Readiness,
    regions: Regions | None = None,
    restrictions: Sequence[Restriction] = (),
    forward: str | None = None,
    settings: RuntimeSettings | None = None,
) -> InferRoute:
    """The ASGI application of the REST front: infer on its own fast path (`rest_infer`), the rest on
    Starlette (`ROUTES`, whose handlers read the front from ``app.state``); ``regions``: the registered system
    shared-memory regions (None: the extension is off); ``restrictions``: endpoint groups that need a header
    (`security`); ``forward``: a pattern of header names handed to the model as request parameters; ``settings``:
    the trace and log settings (their extensions' routes, and tracing: None turns both off)."""
    extensions = sorted([*EXTENSIONS, SHARED_MEMORY_EXTENSION]) if regions is not None else EXTENSIONS
    app = Starlette(routes=ROUTES, exception_handlers=_exception_handlers())
    pattern = re.compile(forward, re.IGNORECASE) if forward else None
    if settings is None:
        extensions = [name for name in extensions if name not in ("logging", "trace")]
    app.state.front = _Front(models, metrics, options, readiness, regions, extensions, pattern, settings)
    tracer = settings.tracer if settings is not None else None
    return InferRoute(app, models, metrics, options.max_body_bytes, regions, Guard(restrictions), pattern, tracer)


async def _events(first: bytes | None, rest_: AsyncGenerator[bytes, None]) -> AsyncIterator[bytes]:
    """The server-sent events of a generate_stream answer; an error after the first becomes an error event.

    Starlette cancels this when the client disconnects, which closes ``rest_`` and so cancels the request.
    """
    try:
        if first is not None:
            yield generate.sse_event(first)
        async for response in rest_:
            yield generate.sse_event(response)
    except InferenceError as exc:
        yield generate.sse_event(rest.encode_error(client_message(exc)))
    finally:
        await rest_.aclose()


def _exception_handlers() -> dict[Any, Callable[[Request, Exception], Awaitable[Response]]]:
    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return Response(rest.encode_error(client_message(exc.detail)), status_code=exc.status_code, media_type=JSON)

    async def known_error(_: Request, exc: Exception) -> Response:
        return error_response(exc)

    async def unexpected(_: Request, exc: Exception) -> Response:
        return error_response(InternalServerError(f"internal server error: {exc!r}"))

    return {
        HTTPException: http_error,
        InferenceError: known_error,
        json.JSONDecodeError: lambda r, e: known_error(r, InvalidInputError(f"malformed JSON: {e}")),
        Exception: unexpected,
    }
