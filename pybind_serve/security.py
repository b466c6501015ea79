"""Who may call what, with Triton's semantics: restricted endpoint groups, an access token, and the request
headers forwarded to the model.

A `Restriction` makes endpoint groups answer only callers that send a given header (gRPC: metadata key) with a
given value; others get HTTP 403 ``This API is restricted, expecting header '<key>'`` or gRPC UNAVAILABLE
``This protocol is restricted, expecting header '<key>'``, as Triton's ``--http-restricted-api`` /
``--grpc-restricted-protocol`` do. ``Serve(access_token=True)`` is the common case in one word (PyTriton's
security config): the groups that change or reveal the server's state (`TOKEN_GROUPS`) need the header
``triton-access-token`` with a token generated for this server (or given), readable as ``serve.access_token``.

>>> guard = Guard([Restriction(("statistics",), "admin-key", "s3cret")])
>>> guard.refusal("statistics", {"admin-key": "wrong"}.get)
'admin-key'
>>> guard.refusal("statistics", {"admin-key": "s3cret"}.get) is None
True
>>> guard.refusal("inference", {}.get) is None
True
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "GROUPS",
    "Tls",
    "RESERVED_PARAMETERS",
    "TOKEN_GROUPS",
    "TOKEN_HEADER",
    "Guard",
    "Restriction",
    "forwarded_headers",
    "new_token",
    "restriction_problems",
]

GROUPS = (
    "health",
    "metadata",
    "inference",
    "shared-memory",
    "model-config",
    "model-repository",
    "statistics",
    "trace",
    "logging",
)
TOKEN_HEADER = "triton-access-token"
TOKEN_GROUPS = ("shared-memory", "model-repository", "statistics", "trace", "logging")

# Request parameters with a meaning of their own: a forwarded header may not take one of these names.
RESERVED_PARAMETERS = frozenset(
    {
        "sequence_id",
        "sequence_start",
        "sequence_end",
        "priority",
        "timeout",
        "headers",
        "binary_data",
        "binary_data_output",
        "binary_data_size",
        "shared_memory_region",
        "shared_memory_offset",
        "shared_memory_byte_size",
        "triton_enable_empty_final_response",
    }
)


@dataclass(frozen=True)
class Restriction:
    """The endpoint ``groups`` (of `GROUPS`) answer only callers whose header ``key`` (case-insensitive; gRPC
    metadata keys are lower case) has the value ``value``."""

    groups: tuple[str, ...]
    key: str
    value: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "groups", tuple(self.groups))

    def to_wire(self) -> dict[str, Any]:
        return {"groups": list(self.groups), "key": self.key, "value": self.value}

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Restriction:
        return cls(tuple(data["groups"]), data["key"], data["value"])


@dataclass(frozen=True)
class Tls:
    """The server's TLS: its certificate chain and key (PEM files), and optionally the CA that client
    certificates must be signed by (mutual TLS: a client without one is refused)."""

    certfile: str
    keyfile: str
    client_ca: str | None = None

    def problems(self) -> list[str]:
        files = {"tls_certfile": self.certfile, "tls_keyfile": self.keyfile, "tls_client_ca": self.client_ca}
        return [
            f"{name} must be a readable PEM file, got {path!r}"
            for name, path in files.items()
            if path is not None and not (isinstance(path, str) and os.access(path, os.R_OK))
        ]

    def to_wire(self) -> dict[str, Any]:
        return {"certfile": self.certfile, "keyfile": self.keyfile, "client_ca": self.client_ca}


def new_token() -> str:
    """A fresh access token (URL-safe, 256 bits)."""
    return secrets.token_urlsafe(32)


def restriction_problems(restrictions: Iterable[Restriction]) -> list[str]:
    """What is wrong with a set of restrictions: unknown groups, a group restricted twice, an empty key."""
    problems, seen = [], set()
    for restriction in restrictions:
        if not isinstance(restriction, Restriction):
            problems.append(f"restricted must hold Restriction objects, got {type(restriction).__name__}")
            continue
        if not restriction.key or not isinstance(restriction.key, str) or not isinstance(restriction.value, str):
            problems.append(f"a restriction needs a header name and a value (strings), got {restriction!r}")
        for group in restriction.groups:
            if group not in GROUPS:
                problems.append(f"unknown endpoint group {group!r}; the groups are {', '.join(GROUPS)}")
            elif group in seen:
                problems.append(f"endpoint group {group!r} is restricted more than once")
            seen.add(group)
    return problems


class Guard:
    """One front's check of a call against the restrictions."""

    def __init__(self, restrictions: Sequence[Restriction]) -> None:
        self._by_group = {group: (r.key.lower(), r.value) for r in restrictions for group in r.groups}

    def __bool__(self) -> bool:
        return bool(self._by_group)

    def restricts(self, group: str | None) -> bool:
        return group in self._by_group

    def refusal(self, group: str, header: Callable[[str], str | None]) -> str | None:
        """The header a call of ``group`` lacks (``header(name)`` reads the call's, by lower-case name), or None
        when it may go ahead."""
        rule = self._by_group.get(group)
        if rule is None:
            return None
        key, value = rule
        given = header(key)
        return None if given is not None and secrets.compare_digest(given, value) else key


def forwarded_headers(pattern: re.Pattern[str] | None, headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The headers whose name matches ``pattern`` (matched against the lower-case name), as request parameters.

    Raises `ValueError` for a matching header named like a reserved parameter (the fronts answer 400).
    """
    if pattern is None:
        return {}
    found = {}
    for name, value in headers:
        name = name.lower()
        if pattern.search(name):
            if name in RESERVED_PARAMETERS:
                raise ValueError(f"header '{name}' matches the forward pattern but is a reserved parameter name")
            found[name] = value
    return found
