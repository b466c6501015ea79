"""Whether a worker shares the owner's host, as far as the fronts' transport goes: their /dev/shm and their ipc
socket files.

A hostname or an IP address says too little (containers share a host's kernel but not its /dev/shm), so the owner
writes a probe, a small file with a random nonce, into /dev/shm under the server's segment prefix (removed with the
server's segments); a worker that reads the same nonce there, and can open the fronts' ipc socket files, reaches
them through shared memory. Any other is on another host for this purpose, and uses the network transport.

>>> probe = write_probe(f"{os.getpid()}_doc")
>>> shares_host(probe, [])
True
>>> shares_host(Probe(probe.name, "another nonce"), [])
False
>>> os.unlink(os.path.join(SHM_DIR, probe.name))  # the server's segments go with it: transport.shm.remove_segments_of
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from ..transport.channel import endpoint_path
from ..transport.shm import SHM_DIR, segment_prefix

__all__ = ["Probe", "shares_host", "write_probe"]


@dataclass(frozen=True)
class Probe:
    """The probe's file name in /dev/shm, and the nonce it holds."""

    name: str
    nonce: str


def write_probe(owner: str, tag: str = "probe") -> Probe:
    """Write the probe of a server (``owner``: its segment owner name); `remove_segments_of` removes it (with
    ``tag``: one of several probes)."""
    probe = Probe(f"{segment_prefix(owner, tag)}0", secrets.token_hex(16))
    path = os.path.join(SHM_DIR, probe.name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(probe.nonce)
    return probe


def shares_host(probe: Probe, endpoints: Sequence[str]) -> bool:
    """Whether this process sees the probe (with its nonce) and may open every ipc socket file of ``endpoints``."""
    try:
        with open(os.path.join(SHM_DIR, probe.name)) as file:
            if file.read() != probe.nonce:
                return False
    except OSError:
        return False
    return all(os.access(endpoint_path(e), os.R_OK | os.W_OK) for e in endpoints)
