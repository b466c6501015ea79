"""The front's registry of attached `RemoteServe` processes (`front.remotes`): what an attach must prove, who owns
a model version, and the callback when a remote process ends (a real child process, watched through its pidfd)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import pytest

from pybind_serve.errors import StartupError
from pybind_serve.front.remotes import Remote, Remotes
from pybind_serve.linux import process_start_time


def attach_frame(pid: int, changes: dict[str, Any] | None = None) -> dict[str, Any]:
    frame = {"id": f"remote{pid}xabcdef12", "pid": pid, "started": process_start_time(pid), "owner": f"{pid}_abc123"}
    return {**frame, **(changes or {})}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"id": "worker-1"}, "not a RemoteServe id"),
        ({"owner": "1_abc123"}, "attaches with its pid and segment owner"),
        ({"pid": "1"}, "attaches with its pid and segment owner"),
        ({"started": 1}, "must run on the server's host, in its PID namespace"),
    ],
)
def test_an_attach_must_name_a_live_process_of_this_host(changes: dict[str, Any], message: str) -> None:
    async def attach() -> None:
        Remotes(on_gone=lambda remote: None).attach(attach_frame(os.getpid(), changes))

    with pytest.raises(StartupError, match=message):
        asyncio.run(attach())


def test_models_belong_to_whoever_loaded_them_last() -> None:
    async def scenario() -> None:
        remotes = Remotes(on_gone=lambda remote: None)
        frame = attach_frame(os.getpid())
        assert remotes.attach(frame) is False
        assert remotes.attach(frame) is True  # attached already
        remotes.loaded(("m", 1), frame["id"])
        assert remotes.owner_of(("m", 1)) == frame["id"]
        remotes.loaded(("m", 1), None)  # the owning Serve bound the same name: it takes the model over
        assert remotes.owner_of(("m", 1)) is None
        remotes.loaded(("n", 1), frame["id"])
        remote = remotes.detach(frame["id"])
        assert remote is not None and remote.models == {("n", 1)}  # only what it still owned
        assert remotes.owner_of(("n", 1)) is None
        with pytest.raises(StartupError, match="is not attached to this front"):
            remotes.check(frame["id"])
        remotes.close()

    asyncio.run(scenario())


def test_the_end_of_a_remote_process_is_reported_with_its_models() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)

    async def scenario() -> Remote:
        gone: asyncio.Future[Remote] = asyncio.get_running_loop().create_future()
        remotes = Remotes(on_gone=gone.set_result)
        frame = attach_frame(child.pid)
        remotes.attach(frame)
        remotes.loaded(("m", 1), frame["id"])
        assert child.stdin is not None
        child.stdin.close()  # the child ends
        remote = await asyncio.wait_for(gone, 10)
        assert remotes.owner_of(("m", 1)) is None
        remotes.close()
        return remote

    try:
        remote = asyncio.run(scenario())
    finally:
        child.wait(10)
    assert remote.pid == child.pid and remote.models == {("m", 1)}
    assert remote.worker_prefix == f"remote{child.pid}xabcdef12-".encode()
