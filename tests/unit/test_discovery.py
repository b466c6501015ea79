"""How `RemoteServe` finds a server from a URL (`discovery`): the record a server publishes, which records are
trusted, which URLs name a server of this host, and the stale records of dead servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from pybind_serve.discovery import ServerRecord, find_server, is_local_host, publish, record_path, records, withdraw
from pybind_serve.errors import ConfigurationError, StartupError
from pybind_serve.linux import process_start_time
from pybind_serve.transport.channel import remove_stale_endpoints


def record(**changes: object) -> ServerRecord:
    base = ServerRecord(
        pid=os.getpid(),
        started=process_start_time(os.getpid()) or 0,
        owner=f"{os.getpid()}_abc123",
        host="127.0.0.1",
        http_port=18000,
        grpc_port=18001,
        allow_remote=True,
        fronts=("ipc:///tmp/a.sock", "ipc:///tmp/b.sock"),
        drain_timeout_s=30.0,
        idle_release_s=10.0,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def put(server: ServerRecord, directory: Path) -> str:
    """Publish ``server`` in ``directory``; its path."""
    path = record_path(str(directory))
    publish(server, path)
    return path


def dead_pid() -> int:
    """The pid of a process that has ended (and was reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_record_goes_through_json_unchanged() -> None:
    original = record()
    assert ServerRecord.from_json(original.to_json()) == original
    assert json.loads(original.to_json())["format"] == 1


@pytest.mark.parametrize("text", ['{"format": 2, "pid": 1}', '{"format": 1, "pid": 1}', "[]", "not json"])
def test_what_is_not_a_record_of_this_format_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        ServerRecord.from_json(text)


def test_a_published_record_is_private_found_and_withdrawn(tmp_path: Path) -> None:
    path = put(record(), tmp_path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.path.basename(path).startswith(f"pybind_serve_{os.getpid()}_")
    assert [r.path for r in records(str(tmp_path))] == [path]
    withdraw(path)
    withdraw(path)  # idempotent
    assert records(str(tmp_path)) == []


def test_records_others_could_change_or_of_dead_servers_are_ignored(tmp_path: Path) -> None:
    readable = put(record(http_port=1), tmp_path)
    os.chmod(readable, 0o644)
    put(record(http_port=2, pid=dead_pid()), tmp_path)
    put(record(http_port=3, started=1), tmp_path)  # this pid, but another process's start time
    (tmp_path / "pybind_serve_1_0123456789ab.json").write_text("{broken")
    kept = put(record(http_port=4), tmp_path)
    assert [r.path for r in records(str(tmp_path))] == [kept]


def test_find_server_matches_the_http_or_grpc_port_of_a_url_of_this_host(tmp_path: Path) -> None:
    put(record(), tmp_path)
    for url in ("localhost:18000", "http://127.0.0.1:18000", "grpc://localhost:18001", "127.0.0.1:18001"):
        assert find_server(url, directory=str(tmp_path)).http_port == 18000


def test_find_server_says_when_no_server_serves_the_port(tmp_path: Path) -> None:
    put(record(), tmp_path)
    with pytest.raises(StartupError, match="no pybind_serve server of this user on this host serves port 18002"):
        find_server("localhost:18002", timeout_s=0.2, directory=str(tmp_path))


def test_find_server_says_when_the_server_refuses(tmp_path: Path) -> None:
    put(record(allow_remote=False, fronts=()), tmp_path)
    with pytest.raises(StartupError, match=r"refuses remote binding: .*Serve\(allow_remote=False\)"):
        find_server("localhost:18000", timeout_s=5.0, directory=str(tmp_path))  # at once: no waiting


def test_find_server_takes_only_urls_of_this_host(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="only into a server of this host"):
        find_server("http://192.0.2.1:18000", directory=str(tmp_path))
    with pytest.raises(ConfigurationError, match="must start with http://"):
        find_server("ftp://localhost:18000", directory=str(tmp_path))


def test_local_hosts() -> None:
    assert is_local_host("localhost") and is_local_host("127.0.0.1") and is_local_host("0.0.0.0")
    assert not is_local_host("192.0.2.1")  # TEST-NET-1: never an address of this machine
    assert not is_local_host("no-such-host.invalid")


def test_stale_records_go_with_the_stale_socket_files(tmp_path: Path) -> None:
    pid = dead_pid()
    stale = str(tmp_path / f"pybind_serve_{pid}_{'0' * 12}.json")
    publish(record(pid=pid), stale)
    live = put(record(), tmp_path)
    assert remove_stale_endpoints(str(tmp_path)) == [os.path.basename(stale)]
    assert os.path.exists(live) and not os.path.exists(stale)
