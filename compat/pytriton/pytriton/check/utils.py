"""The helpers PyTriton's functional tests import from ``pytriton.check.utils``: run a script in a thread and
capture its output (`ScriptThread`), pick a free port, dump a process tree's state, and the checks of the docker
image a test ran in.

Outside NVIDIA's containers there is no container version: `get_current_container_version` returns None, and
`verify_docker_image_in_readme_same_as_tested` then has nothing to compare with and passes (it logs why).

>>> with ScriptThread(["python3", "-c", "print('hello'); import sys; sys.exit(3)"], name="hello") as thread:
...     thread.join(timeout=30)
>>> thread.output, thread.returncode
('hello', 3)
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import logging
import logging.handlers
import os
import pathlib
import re
import select
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import IO, Any

__all__ = [
    "DEFAULT_LOG_FORMAT",
    "ProcessMonitoring",
    "ProcessMonitoringThread",
    "ScriptThread",
    "TestMonitoringContext",
    "find_free_port",
    "get_current_container_version",
    "search_warning_on_too_verbose_log_level",
    "verify_docker_image_in_readme_same_as_tested",
]

DEFAULT_LOG_FORMAT = "%(asctime)s %(levelname)8s %(process)8d %(threadName)s %(name)s: %(message)s"
LOGGER = logging.getLogger(__name__)

# The environment variables NVIDIA's framework containers set to their release, e.g. "24.05" or "24.05-tf2"
CONTAINER_VERSION_VARIABLES = ("NVIDIA_PYTORCH_VERSION", "NVIDIA_TENSORFLOW_VERSION")
# What the server logs when it runs with verbose logs (pybind_serve's front logs it, as Triton does)
_VERBOSE_LOG_WARNING = re.compile(
    r"Triton Inference Server is running with enabled verbose logs.*It may affect inference performance"
)
_READ_CHUNK = 65536
_POLL_S = 0.1


class ScriptThread(threading.Thread):
    """Runs ``cmd`` (a list of arguments) in a child process, from a daemon thread that reads its output.

    ``output`` is what it printed, stdout and stderr together, line by line (each also logged, by a logger
    named after the thread); ``returncode`` its exit status once it ended; ``process`` the process (a
    ``psutil.Popen`` when psutil is installed) while it runs, None after. As a context manager it starts the
    process on entry and, on exit, waits up to ``stop_timeout_s`` for it to end by itself (a test usually sends
    it a signal first), then terminates it (SIGTERM, then SIGKILL): leaving the block never leaves it running.
    """

    def __init__(
        self,
        cmd: Sequence[str],
        workdir: str | os.PathLike[str] | None = None,
        group: None = None,
        target: Callable[..., object] | None = None,
        name: str | None = None,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        stop_timeout_s: float = 30.0,
    ) -> None:
        super().__init__(group, target, name, args, kwargs, daemon=True)
        self.cmd = list(cmd)
        self.workdir = workdir
        self.stop_timeout_s = stop_timeout_s
        self.active = False
        self.returncode: int | None = None
        self.spawn_error: BaseException | None = None
        self._process: Any = None
        self._lines: list[str] = []
        self._spawned = threading.Event()
        self._stop_requested = threading.Event()
        self._logger = logging.getLogger(self.name)

    @property
    def output(self) -> str:
        """The lines printed so far, stdout and stderr interleaved as written."""
        return "\n".join(self._lines)

    @property
    def process(self) -> Any:
        """The running process, or None before it started and once it ended."""
        return self._process

    def __enter__(self) -> ScriptThread:
        self.start()
        self._spawned.wait()
        if self.spawn_error is not None:
            self.join()
            raise self.spawn_error
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
        self.join()

    def start(self) -> None:
        self._logger.info("Starting %s: %s", self.name, " ".join(self.cmd))
        super().start()

    def stop(self) -> None:
        """Ask the thread to end its process: wait ``stop_timeout_s`` for it to exit, then terminate it."""
        self._stop_requested.set()

    def run(self) -> None:
        environment = {**os.environ, "PYTHONUNBUFFERED": os.environ.get("PYTHONUNBUFFERED", "1")}
        try:
            process = _popen()(
                self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=self.workdir, env=environment
            )
        except BaseException as error:  # the program does not exist, ...
            self.spawn_error = error
            self._logger.error("%s could not start: %s", self.name, error)
            self._spawned.set()
            return
        with process:
            self._process, self.active = process, True
            self._spawned.set()
            try:
                self._read_until_exit(process)
            finally:
                self.returncode = process.wait()
                self._logger.info("%s process finished with %d", self.name, self.returncode)
                self._process, self.active = None, False

    def _read_until_exit(self, process: Any) -> None:
        """Log and keep the output until the process exits (not until the pipe closes: a child of the process
        may hold it open), ending it if asked to stop."""
        pending, ended = b"", False
        stop_deadline: float | None = None
        while True:
            exited = process.poll() is not None
            if ended:  # the process closed its output but runs on
                time.sleep(0 if exited else _POLL_S)
            else:
                pending, ended = self._consume(process.stdout, pending, wait_s=0 if exited else _POLL_S)
            if exited:
                break
            if self._stop_requested.is_set():
                if stop_deadline is None:
                    stop_deadline = time.monotonic() + self.stop_timeout_s
                elif time.monotonic() > stop_deadline:
                    self._terminate(process)
        if pending:
            self._keep(pending.decode(errors="replace"))

    def _consume(self, stream: IO[bytes], pending: bytes, wait_s: float) -> tuple[bytes, bool]:
        """Read what is there (waiting at most ``wait_s`` for something) and keep its complete lines; return
        the incomplete last one, and whether the output ended."""
        while True:
            readable, _, _ = select.select([stream], [], [], wait_s)
            if not readable:
                return pending, False
            chunk = os.read(stream.fileno(), _READ_CHUNK)
            if not chunk:
                return pending, True
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                self._keep(line.decode(errors="replace").rstrip("\r"))
            wait_s = 0

    def _keep(self, line: str) -> None:
        self._logger.info(line)
        self._lines.append(line)

    def _terminate(self, process: Any) -> None:
        self._logger.warning("%s still runs %gs after stop: terminating it", self.name, self.stop_timeout_s)
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()


def _popen() -> Any:
    """psutil's Popen (it has ``children()``, which some tests ask of ``ScriptThread.process``), else the
    standard library's."""
    try:
        import psutil
    except ImportError:
        return subprocess.Popen
    return psutil.Popen


def find_free_port() -> int:
    """A TCP port free on this host now (another process may take it before it is used)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("", 0))
        port: int = sock.getsockname()[1]
        return port


class ProcessMonitoring:
    """Logs the state of a process and its descendants: their parents and command lines and, when the
    ``py-spy`` program is installed, their Python stacks. Needs psutil."""

    def __init__(
        self, pid: int, logger: logging.Logger | None = None, loglevel: int = logging.INFO, remove_color: bool = False
    ) -> None:
        import psutil

        self._logger = logger or logging.getLogger("monitoring")
        self._level = loglevel
        self._process = psutil.Process(pid)
        self._children: list[Any] = list(self._process.children(recursive=True))
        self._remove_color = remove_color
        self._custom_monitors: list[Callable[[int], None]] = []
        self._log("Initial children of %d: %s", pid, self._children)

    def register_custom_monitor(self, custom_monitor: Callable[[int], None]) -> None:
        """Call ``custom_monitor(pid)`` for each process at each `dump_state`."""
        self._custom_monitors.append(custom_monitor)

    def dump_state(self) -> None:
        """Log each process's stack (py-spy) and custom monitors, then each one's parent."""
        import psutil

        processes = [self._process, *self.children]
        py_spy = shutil.which("py-spy")
        self._log("==== Stacks of %d processes%s", len(processes), "" if py_spy else " (py-spy is not installed)")
        for process in processes:
            try:
                self._log("Process %d: %s", process.pid, process.cmdline())
                for monitor in self._custom_monitors:
                    monitor(process.pid)
                if py_spy:
                    self._log("%s", self._stack(py_spy, process.pid))
            except psutil.NoSuchProcess as error:
                self._log("Process gone: %s", error)
        self._log("==== Processes and their parents")
        for process in processes:
            try:
                self._log("%s parent=%s", process, process.parent())
            except psutil.NoSuchProcess:
                self._log("%s is gone", process)

    @property
    def children(self) -> list[Any]:
        """The descendants seen so far, those started since the last look included."""
        import psutil

        with contextlib.suppress(psutil.NoSuchProcess):
            known = {child.pid for child in self._children}
            self._children += [c for c in self._process.children(recursive=True) if c.pid not in known]
        return self._children

    def _stack(self, py_spy: str, pid: int) -> str:
        done = subprocess.run(
            [py_spy, "dump", "-ll", "--nonblocking", "-p", str(pid)], capture_output=True, text=True, timeout=60
        )
        text = done.stdout + done.stderr
        return re.sub(r"\x1b\[[0-9;]*m", "", text) if self._remove_color else text

    def _log(self, message: str, *args: Any) -> None:
        self._logger.log(self._level, message, *args)


class ProcessMonitoringThread:
    """Runs `ProcessMonitoring.dump_state` now and every ``interval`` seconds, on a daemon thread."""

    def __init__(self, monitoring: ProcessMonitoring, interval: float = 60) -> None:
        self._monitoring = monitoring
        self._interval = interval
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stopped.clear()
        self._thread = threading.Thread(target=self._run, name="process-monitoring", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> ProcessMonitoringThread:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _run(self) -> None:
        while True:
            self._monitoring.dump_state()
            if self._stopped.wait(self._interval):
                return


class TestMonitoringContext:
    """Logging for a long test, set from its command line (`extend_args` adds the options): DEBUG logs with
    ``--verbose``, a rotating log file (``--log-path``, ``--maximum-log-file``, gzip with ``--compress-logs``),
    faulthandler (``--enable-fault-handler``, ``--faulthandler-interval``), and this process's state logged
    every ``--process-monitoring-interval`` seconds."""

    __test__ = False  # not a pytest test class, whatever its name

    @staticmethod
    def extend_args(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--verbose", action="store_true", help="Log at DEBUG level")
        parser.add_argument("--log-path", type=str, default=None, help="Also log to this file, rotated")
        parser.add_argument("--compress-logs", action="store_true", help="Gzip the rotated log files")
        parser.add_argument(
            "--maximum-log-file", type=int, default=10 * 1024 * 1024, help="Rotate the log file past this many bytes"
        )
        parser.add_argument("--enable-fault-handler", action="store_true", help="Enable faulthandler")
        parser.add_argument(
            "--faulthandler-interval", type=float, default=None, help="Dump all threads' stacks every this many s"
        )
        parser.add_argument(
            "--process-monitoring-interval",
            type=float,
            default=None,
            help="Log this process's state every this many seconds",
        )

    def __init__(self, args: argparse.Namespace) -> None:
        self._args = args
        self._monitor: ProcessMonitoringThread | None = None

    def __enter__(self) -> TestMonitoringContext:
        args = self._args
        level = logging.DEBUG if args.verbose else logging.INFO
        logging.basicConfig(level=level, format=DEFAULT_LOG_FORMAT)
        root = logging.getLogger()
        if args.log_path is not None:
            handler = logging.handlers.RotatingFileHandler(
                args.log_path, maxBytes=args.maximum_log_file, backupCount=500
            )
            handler.setFormatter(logging.Formatter(DEFAULT_LOG_FORMAT))
            handler.setLevel(logging.DEBUG)
            if args.compress_logs:
                handler.namer = lambda name: f"{name}.gz"
                handler.rotator = _gzip_rotation
            root.setLevel(logging.DEBUG)
            root.addHandler(handler)
        if args.enable_fault_handler:
            faulthandler.enable()
        if args.faulthandler_interval is not None:
            faulthandler.dump_traceback_later(args.faulthandler_interval, repeat=True, exit=False)
        if args.process_monitoring_interval is not None:
            monitoring = ProcessMonitoring(os.getpid(), root, loglevel=logging.DEBUG, remove_color=True)
            self._monitor = ProcessMonitoringThread(monitoring, interval=args.process_monitoring_interval)
            self._monitor.start()
        return self

    def __exit__(self, *_: object) -> None:
        if self._monitor is not None:
            self._monitor.stop()
            self._monitor = None
        if self._args.faulthandler_interval is not None:
            faulthandler.cancel_dump_traceback_later()


def _gzip_rotation(source: str, destination: str) -> None:
    import gzip

    with open(source, "rb") as plain, gzip.open(destination, "wb") as packed:
        shutil.copyfileobj(plain, packed)
    os.remove(source)


def get_current_container_version() -> str | None:
    """The release of the NVIDIA framework container this runs in (``24.05``), or None outside one."""
    for variable in CONTAINER_VERSION_VARIABLES:
        version = os.environ.get(variable)
        if version:
            return version.split("-")[0]  # TensorFlow's: <release>-tf<major>
    return None


def verify_docker_image_in_readme_same_as_tested(
    readme_path: str | os.PathLike[str], image_name_with_version: str
) -> None:
    """Assert that every image of the same framework the README names (``<registry>/<framework>:<tag>``) is
    ``image_name_with_version``, the image the test ran in.

    Outside a container the tested image's tag holds no version (``get_current_container_version()`` gave None,
    formatted as ``None``): there is nothing to compare, so the check passes without reading the README.
    """
    image, _, tag = image_name_with_version.rpartition(":")
    if not image or tag.split("-")[0] in ("", "None"):
        LOGGER.info("Not in an NVIDIA container (image %s): the README's image is not checked", image_name_with_version)
        return
    framework = image.rsplit("/", 1)[-1]
    text = pathlib.Path(readme_path).read_text()
    for found in re.finditer(rf"[\w/.\-:]+/{re.escape(framework)}:[\w.-]+", text):
        assert found.group() == image_name_with_version, f"{readme_path}: {found.group()} != {image_name_with_version}"


def search_warning_on_too_verbose_log_level(logs: str) -> re.Match[str] | None:
    """The server's warning that verbose logs slow inference down, if ``logs`` has it."""
    return _VERBOSE_LOG_WARNING.search(logs)
