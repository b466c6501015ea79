"""Which endpoint group (`security.GROUPS`) an HTTP path or a gRPC method belongs to, as Triton groups them, and
the refusals both fronts answer for a restricted group.

>>> http_group("/v2/models/add/versions/1/infer"), http_group("/v2/systemsharedmemory/status")
('inference', 'shared-memory')
>>> grpc_group("ModelStatistics"), grpc_group("Check")
('statistics', 'health')
"""

from __future__ import annotations

import re

from ..errors import RestrictedError

__all__ = ["grpc_group", "http_group", "http_refusal", "grpc_refusal"]

_MODEL = r"/v2/models/[^/]+(?:/versions/[^/]+)?"
_HTTP = [
    (re.compile(r"/v2/health/.*"), "health"),
    (re.compile(rf"{_MODEL}/ready"), "health"),
    (re.compile(rf"{_MODEL}/(?:infer|generate|generate_stream)"), "inference"),
    (re.compile(rf"{_MODEL}/config"), "model-config"),
    (re.compile(rf"(?:{_MODEL}|/v2/models)/stats"), "statistics"),
    (re.compile(r"/v2/(?:system|cuda)sharedmemory(?:/.*)?"), "shared-memory"),
    (re.compile(r"/v2/repository(?:/.*)?"), "model-repository"),
    (re.compile(r"/v2/trace(?:/.*)?|(?:" + _MODEL + r")/trace/setting"), "trace"),
    (re.compile(r"/v2/logging"), "logging"),
    (re.compile(rf"/v2|{_MODEL}"), "metadata"),
]
_GRPC = {
    "ServerLive": "health",
    "ServerReady": "health",
    "ModelReady": "health",
    "Check": "health",
    "Watch": "health",
    "ServerMetadata": "metadata",
    "ModelMetadata": "metadata",
    "ModelInfer": "inference",
    "ModelStreamInfer": "inference",
    "ModelConfig": "model-config",
    "ModelStatistics": "statistics",
    "RepositoryIndex": "model-repository",
    "RepositoryModelLoad": "model-repository",
    "RepositoryModelUnload": "model-repository",
    "SystemSharedMemoryStatus": "shared-memory",
    "SystemSharedMemoryRegister": "shared-memory",
    "SystemSharedMemoryUnregister": "shared-memory",
    "CudaSharedMemoryStatus": "shared-memory",
    "CudaSharedMemoryRegister": "shared-memory",
    "CudaSharedMemoryUnregister": "shared-memory",
    "TraceSetting": "trace",
    "LogSettings": "logging",
}


def http_group(path: str) -> str | None:
    """The group of a REST path; None for a path of no group (it answers 404 anyway)."""
    for pattern, group in _HTTP:
        if pattern.fullmatch(path):
            return group
    return None


def grpc_group(method: str) -> str | None:
    """The group of a method of ``inference.GRPCInferenceService`` or ``grpc.health.v1.Health``."""
    return _GRPC.get(method)


def http_refusal(key: str) -> RestrictedError:
    return RestrictedError(f"This API is restricted, expecting header '{key}'")


def grpc_refusal(key: str) -> RestrictedError:
    return RestrictedError(f"This protocol is restricted, expecting header '{key}'")
