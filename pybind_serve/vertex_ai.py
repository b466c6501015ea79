"""Google Vertex AI's prediction contract: `VertexAI` serves a model's infer and the server's readiness on a port
and routes of Vertex's choosing, as Triton's ``--allow-vertex-ai`` does.

Vertex AI tells a custom container where to listen and which routes it calls through environment variables
(``AIP_HTTP_PORT``, ``AIP_PREDICT_ROUTE``, ``AIP_HEALTH_ROUTE``); `VertexAI` reads them when the server starts
unless given explicitly. On that port:

- ``GET``/``HEAD`` on the health route answers like ``/v2/health/ready`` (200 when every model is ready);
- ``POST`` on the predict route is a KServe v2 infer request for ``default_model`` (or the only model bound); a
  request with the header ``X-Vertex-Ai-Triton-Redirect: v2/models/<name>/infer`` (any KServe v2 path) goes to
  that path instead, as with Triton;
- anything else is a 404. The KServe ports serve as before.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from .errors import ConfigurationError

__all__ = ["VertexAI"]


@dataclass(frozen=True)
class VertexAI:
    """Where Vertex AI reaches the server: ``port`` (``AIP_HTTP_PORT``, else 8080; 0 = any free port), the
    ``predict_route`` and ``health_route`` (``AIP_PREDICT_ROUTE``, ``AIP_HEALTH_ROUTE``), and the model that
    predict requests go to (``default_model``; None: the only model bound).

    >>> VertexAI(port=8080, predict_route="/predict", health_route="/health").resolved().predict_route
    '/predict'
    """

    port: int | None = None
    predict_route: str | None = None
    health_route: str | None = None
    default_model: str | None = None

    def resolved(self) -> VertexAI:
        """This with what was not given read from Vertex AI's environment variables (`ConfigurationError` if the
        routes are nowhere)."""
        port = self.port if self.port is not None else int(os.environ.get("AIP_HTTP_PORT", "8080"))
        predict = self.predict_route or os.environ.get("AIP_PREDICT_ROUTE")
        health = self.health_route or os.environ.get("AIP_HEALTH_ROUTE")
        problems = []
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            problems.append(f"port must be a port number (0 = any free port), got {port!r}")
        for what, route, variable in (
            ("predict", predict, "AIP_PREDICT_ROUTE"),
            ("health", health, "AIP_HEALTH_ROUTE"),
        ):
            if not route or not route.startswith("/"):
                problems.append(
                    f"the {what} route must be a path starting with '/' (argument {what}_route or ${variable}), "
                    f"got {route!r}"
                )
        if problems:
            raise ConfigurationError.collect("VertexAI", problems)
        return VertexAI(port, predict, health, self.default_model)

    def to_wire(self) -> dict[str, Any]:
        return {
            "predict_route": self.predict_route,
            "health_route": self.health_route,
            "default_model": self.default_model,
        }
