"""`pytriton.check.utils`, the helpers PyTriton's functional tests import: `ScriptThread` runs a real child
process, `find_free_port` gives a bindable port, and the container checks behave outside NVIDIA's containers."""

from __future__ import annotations

import logging
import signal
import socket
import sys
import time
from pathlib import Path

import pytest
from pytriton.check.utils import (
    DEFAULT_LOG_FORMAT,
    ProcessMonitoring,
    ScriptThread,
    find_free_port,
    get_current_container_version,
    search_warning_on_too_verbose_log_level,
    verify_docker_image_in_readme_same_as_tested,
)

IMAGE = "nvcr.io/nvidia/pytorch:{version}-py3"


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_script_thread_captures_output_and_exit_status() -> None:
    code = "import sys; print('out', flush=True); print('err', file=sys.stderr, flush=True); sys.exit(3)"
    with ScriptThread(python(code), name="script") as thread:
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert thread.output.splitlines() == ["out", "err"]
    assert thread.returncode == 3
    assert thread.process is None  # once it ended


def test_script_thread_process_takes_signals() -> None:
    code = (
        "import signal, sys, time; signal.signal(signal.SIGINT, lambda *_: sys.exit(0)); "
        "print('up', flush=True); time.sleep(30)"
    )
    with ScriptThread(python(code), name="server") as thread:
        deadline = time.monotonic() + 30
        while "up" not in thread.output and time.monotonic() < deadline:
            time.sleep(0.02)
        thread.process.send_signal(signal.SIGINT)
    assert (thread.output, thread.returncode) == ("up", 0)


def test_leaving_the_block_ends_a_process_that_does_not_stop() -> None:
    with ScriptThread(python("import time; time.sleep(60)"), name="stuck", stop_timeout_s=0.2) as thread:
        pass
    assert thread.returncode == -signal.SIGTERM


def test_a_program_that_does_not_exist_raises_at_entry() -> None:
    with pytest.raises(FileNotFoundError), ScriptThread(["/nonexistent/program"], name="missing"):
        pass


def test_find_free_port_is_bindable() -> None:
    port = find_free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_process_monitoring_logs_a_process(caplog: pytest.LogCaptureFixture) -> None:
    with ScriptThread(python("import time; time.sleep(30)"), name="watched", stop_timeout_s=0) as thread:
        monitoring = ProcessMonitoring(thread.process.pid, loglevel=logging.WARNING)
        seen: list[int] = []
        monitoring.register_custom_monitor(seen.append)
        monitoring.dump_state()
    assert seen == [monitoring._process.pid]
    assert "sleep" in caplog.text


def test_container_version_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NVIDIA_PYTORCH_VERSION", raising=False)
    monkeypatch.delenv("NVIDIA_TENSORFLOW_VERSION", raising=False)
    assert get_current_container_version() is None
    monkeypatch.setenv("NVIDIA_TENSORFLOW_VERSION", "24.05-tf2")
    assert get_current_container_version() == "24.05"
    monkeypatch.setenv("NVIDIA_PYTORCH_VERSION", "24.09")
    assert get_current_container_version() == "24.09"


def test_readme_image_check(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("docker run nvcr.io/nvidia/pytorch:24.05-py3 bash\n")
    verify_docker_image_in_readme_same_as_tested(readme, IMAGE.format(version="24.05"))
    with pytest.raises(AssertionError, match=r"24\.05-py3 != "):
        verify_docker_image_in_readme_same_as_tested(readme, IMAGE.format(version="24.09"))
    # outside a container there is no version to compare: the check passes, even without a README
    verify_docker_image_in_readme_same_as_tested(tmp_path / "missing.md", IMAGE.format(version=None))


def test_verbose_log_warning_search() -> None:
    line = (
        "W Triton Inference Server is running with enabled verbose logs (level 4). It may affect inference performance."
    )
    assert search_warning_on_too_verbose_log_level(f"start\n{line}\nend")
    assert not search_warning_on_too_verbose_log_level("start\nend")
    assert "%(message)s" in DEFAULT_LOG_FORMAT
