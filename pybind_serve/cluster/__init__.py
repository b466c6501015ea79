"""Scale out: a `Serve`'s workers on a Ray cluster, with the same ``bind`` calls (docs/scale_out.md).

``Serve(backend=RayBackend(address=...))`` starts every instance of every bound model as a Ray actor, placed by
its model's `Resources` (``ModelConfig(resources=...)``); the fronts stay on this host, and clients keep speaking
KServe v2 to its ports. Nothing here imports Ray until the server starts (the ``ray`` extra installs it).
"""

from .ray_backend import RayBackend

__all__ = ["RayBackend"]
