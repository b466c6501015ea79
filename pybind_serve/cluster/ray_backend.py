"""`RayBackend`: run a `Serve`'s workers as Ray actors (``Serve(backend=RayBackend(...))``), with the same ``bind``.

The fronts of this host (the owner's) are its processes, and every other node of the cluster gets a front replica
(`NodeFronts`, unless ``node_fronts=False``): clients may send requests to any node. Every instance of every bound
model becomes a `WorkerActor` that Ray places on a node with the model's `Resources` free. Workers that share this
host's /dev/shm reach its fronts as a local worker does (ipc and shared memory); the others, and every worker
reaching a replica on another node, over the fronts' TCP ROUTERs, with the tensor bytes in the messages, encrypted
and authenticated by CurveZMQ unless ``encrypt=False``. See docs/scale_out.md.

Ray is imported by `open` (when the `Serve` starts), never before: pybind_serve imports without it.

>>> RayBackend(address="ray://head:10001", transport="tcp")
RayBackend(address='ray://head:10001', transport='tcp', encrypt=True, node_fronts=True)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from ..backend import FrontCalls, FrontSite, Notify, WorkerSite
from ..errors import ConfigurationError, StartupError
from ..transport.network import FrontNetwork, new_keys
from .actor import TRANSPORTS
from .front_actor import FrontPlan
from .node_fronts import NodeFronts
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
    - ``node_fronts``: True (the default): a front replica on every other node of the cluster when the server
      starts (one per host: nodes that share this host are served by its fronts), so that clients may send
      requests to any node (a load balancer over all of them); False: the fronts stay on this host; a list of Ray
      node ids or node IP addresses: those nodes only, even one that shares this host.
    - ``node_ports``: the replicas' ports, ``{"http": ..., "grpc": ..., "metrics": ...}``; None: the same as this
      host's fronts; 0: any free port (to run several nodes on one host, as in tests). A kind left out keeps this
      host's port; None turns it off on the replicas.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        front_host: str | None = None,
        transport: str = "auto",
        encrypt: bool = True,
        init_options: dict[str, Any] | None = None,
        node_fronts: bool | Sequence[str] = True,
        node_ports: dict[str, int | None] | None = None,
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
        problems += _node_problems(node_fronts, node_ports)
        if problems:
            raise ConfigurationError.collect("RayBackend", problems)
        self.address, self.front_host, self.transport, self.encrypt = address, front_host, transport, encrypt
        self.init_options = dict(init_options or {})
        self.node_fronts: bool | tuple[str, ...] = node_fronts if isinstance(node_fronts, bool) else tuple(node_fronts)
        self.node_ports = dict(node_ports or {})
        self._replicas: NodeFronts | None = None
        self._initialised = False  # whether open() called ray.init (then close() shuts it down)
        self._pool: ActorPool | None = None

    def __repr__(self) -> str:
        return (
            f"RayBackend(address={self.address!r}, transport={self.transport!r}, encrypt={self.encrypt}, "
            f"node_fronts={self.node_fronts!r})"
        )

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

    @property
    def replicas(self) -> list[dict[str, Any]]:
        """Where the running server's front replicas on other nodes listen: each one's ``node_id``, ``node_ip``,
        ``http_port``, ``grpc_port``, ``metrics_port`` (none lost with its node)."""
        if self._replicas is None:
            raise StartupError("the server has not started its front replicas: call run() first")
        return [member.describe() for member in self._replicas.members if not member.lost]

    def front_replicas(self, site: FrontSite) -> NodeFronts:
        """Start the front replicas on the cluster's other nodes (``node_fronts``)."""
        import ray

        ports = {**site.ports, **self.node_ports}
        keys = site.network.keys
        plan = FrontPlan(site.options, site.host, ports, keys, site.startup_timeout_s, site.stop_timeout_s)
        self._replicas = NodeFronts(ray, self.node_fronts, plan, site.owner)
        self._replicas.start()
        return self._replicas

    def workers(self, site: WorkerSite, notify: Notify, fronts: FrontCalls) -> ActorPool:
        self._pool = ActorPool(site, notify, fronts, self.transport)
        return self._pool

    def close(self) -> None:
        """Stop the front replicas, disconnect from Ray if `open` connected; idempotent."""
        self._pool = None
        if self._replicas is not None:
            self._replicas.close()
            self._replicas = None
        if self._initialised:
            import ray

            self._initialised = False
            ray.shutdown()


def _node_problems(node_fronts: Any, node_ports: Any) -> list[str]:
    problems = []
    names_ok = isinstance(node_fronts, (list, tuple)) and all(isinstance(n, str) and n for n in node_fronts)
    if not isinstance(node_fronts, bool) and not names_ok:
        problems.append(
            f"node_fronts must be True, False or a list of Ray node ids or IP addresses, got {node_fronts!r}"
        )
    if node_ports is not None:
        if not isinstance(node_ports, dict) or not set(node_ports) <= {"http", "grpc", "metrics"}:
            problems.append(f"node_ports must be a dict with keys among 'http', 'grpc', 'metrics', got {node_ports!r}")
        else:
            for kind, port in node_ports.items():
                if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 <= port < 65536):
                    problems.append(f"node_ports[{kind!r}] must be a port (0: any free one) or None, got {port!r}")
    return problems
