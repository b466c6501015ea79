"""`RayBackend`: run a `Serve`'s workers as Ray actors (``Serve(backend=RayBackend(...))``), with the same ``bind``.

The fronts stay processes of this host (the owner's); every instance of every bound model becomes a `WorkerActor`
that Ray places on a node with the model's `Resources` free. Workers that share this host's /dev/shm reach the
fronts as a local worker does (ipc and shared memory); the others over the fronts' TCP ROUTERs, with the tensor
bytes in the messages, encrypted and authenticated by CurveZMQ unless ``encrypt=False``. See docs/scale_out.md.

Ray is imported by `open` (when the `Serve` starts), never before: pybind_serve imports without it.

>>> RayBackend(address="ray://head:10001", transport="tcp")
RayBackend(address='ray://head:10001', transport='tcp', encrypt=True)
"""

from __future__ import annotations

import logging
from typing import Any

from ..backend import FrontCalls, Notify, WorkerSite
from ..errors import ConfigurationError, StartupError
from ..transport.network import FrontNetwork, new_keys
from .actor import TRANSPORTS
from .pool import ActorPool

__all__ = ["RayBackend"]

log = logging.getLogger("pybind_serve")


class RayBackend:
    """Workers as Ray actors: pass it to ``Serve(backend=...)``.

    - ``address``: the cluster, as ``ray.init`` takes it (``"auto"``, ``"ray://head:10001"``, ``"10.0.0.1:6379"``);
      None: the connection this process already has (``ray.init`` called before), else ``ray.init()``'s default.
      Ray is initialised when the server starts, and shut down when it stops if it was initialised here.
    - ``front_host``: the address of this host that the cluster's nodes reach the fronts at; None: this node's
      address as Ray knows it.
    - ``transport``: ``"auto"`` (shared memory for workers that share this host, the network for the others),
      ``"tcp"`` (the network for all, e.g. to measure it on one host) or ``"shm"`` (every worker must share this
      host).
    - ``encrypt``: the network transport is CurveZMQ, authenticated and encrypted (the default); False sends tensor
      bytes in the clear and lets any peer that reaches the fronts' TCP port connect as a worker: only for a
      network where every host is trusted (as Ray's own ports need one).
    - ``init_options``: more keyword arguments for ``ray.init`` (``namespace``, ``runtime_env``...).
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        front_host: str | None = None,
        transport: str = "auto",
        encrypt: bool = True,
        init_options: dict[str, Any] | None = None,
    ) -> None:
        problems = []
        if address is not None and (not isinstance(address, str) or not address):
            problems.append(f"address must be None or a Ray address such as 'auto', got {address!r}")
        if front_host is not None and (not isinstance(front_host, str) or not front_host):
            problems.append(f"front_host must be None or a host address, got {front_host!r}")
        if transport not in TRANSPORTS:
            problems.append(f"transport must be one of {list(TRANSPORTS)}, got {transport!r}")
        if not isinstance(encrypt, bool):
            problems.append(f"encrypt must be a bool, got {encrypt!r}")
        if init_options is not None and not isinstance(init_options, dict):
            problems.append(f"init_options must be a dict of ray.init's keyword arguments, got {init_options!r}")
        if problems:
            raise ConfigurationError.collect("RayBackend", problems)
        self.address, self.front_host, self.transport, self.encrypt = address, front_host, transport, encrypt
        self.init_options = dict(init_options or {})
        self._initialised = False  # whether open() called ray.init (then close() shuts it down)
        self._pool: ActorPool | None = None

    def __repr__(self) -> str:
        return f"RayBackend(address={self.address!r}, transport={self.transport!r}, encrypt={self.encrypt})"

    @property
    def pool(self) -> ActorPool:
        """The actors of the running server (`ActorPool`: `where`, `actors`); `StartupError` before it runs."""
        if self._pool is None:
            raise StartupError("the server has not started its Ray actors: call run() first")
        return self._pool

    def open(self) -> FrontNetwork:
        """Connect to the cluster (``ray.init``, unless this process is connected already)."""
        try:
            import ray
        except ImportError:
            raise StartupError("RayBackend needs Ray: pip install 'pybind_serve[ray]'") from None
        if not ray.is_initialized():
            try:
                ray.init(address=self.address, **self.init_options)
            except Exception as exc:
                raise StartupError(f"could not connect to the Ray cluster at {self.address!r}: {exc}") from exc
            self._initialised = True
        host = self.front_host or ray.util.get_node_ip_address()
        return FrontNetwork(host, new_keys() if self.encrypt else None)

    def workers(self, site: WorkerSite, notify: Notify, fronts: FrontCalls) -> ActorPool:
        self._pool = ActorPool(site, notify, fronts, self.transport)
        return self._pool

    def close(self) -> None:
        """Disconnect from Ray if `open` connected; idempotent."""
        self._pool = None
        if self._initialised:
            import ray

            self._initialised = False
            ray.shutdown()
