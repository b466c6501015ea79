"""The ASGI application of the Vertex AI port (`pybind_serve.vertex_ai`): its two routes, rewritten to KServe v2
paths and served by the REST front's own application, so they behave exactly like the KServe ones."""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import InferenceError, InvalidInputError, ModelNotFoundError
from .models import Models
from .rest_infer import answer_error

__all__ = ["VertexRoute"]

REDIRECT_HEADER = b"x-vertex-ai-triton-redirect"


class VertexRoute:
    """ASGI: ``health_route`` → ``/v2/health/ready``; ``predict_route`` → the redirect header's path, or the
    default model's infer; anything else 404."""

    def __init__(self, api: ASGIApp, models: Models, options: dict[str, Any]) -> None:
        self._api, self._models = api, models
        self._predict, self._health = options["predict_route"], options["health_route"]
        self._default = options.get("default_model")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._api(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        try:
            if path == self._health and method in ("GET", "HEAD"):
                target = "/v2/health/ready"
            elif path == self._predict and method == "POST":
                target = self._predict_target(scope)
            else:
                raise ModelNotFoundError(f"the Vertex AI port serves {self._predict} (POST) and {self._health} (GET)")
        except InferenceError as exc:
            await answer_error(send, exc)
            return
        await self._api({**scope, "path": target, "raw_path": target.encode()}, receive, send)

    def _predict_target(self, scope: Scope) -> str:
        for name, value in scope["headers"]:
            if name == REDIRECT_HEADER:
                return "/" + value.decode("latin-1").lstrip("/")
        model = self._default
        if model is None:
            names = sorted({row[0] for row in self._models.index(only_ready=False)})
            if len(names) != 1:
                raise InvalidInputError(
                    f"{len(names)} models are served: name one with VertexAI(default_model=...) or the "
                    f"{REDIRECT_HEADER.decode()} header"
                )
            model = names[0]
        return f"/v2/models/{model}/infer"
