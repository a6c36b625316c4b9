"""Starting, finding and stopping the background processes of the local stack.

A started process is remembered by a pid file. Before a pid is trusted, its command
line must still contain a marker: a recycled pid never gets a SIGTERM from us.
"""

import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PidFile:
    """Where a process's pid is kept, and how to recognise that process."""

    path: Path
    marker: str

    def read(self) -> int | None:
        """The pid, if the file names a live process that still has our marker."""
        try:
            pid = int(self.path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        cmd = command_line(pid)
        return pid if cmd is not None and self.marker in cmd else None

    def write(self, pid: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(f"{pid}\n")

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    def stop(self, name: str, timeout: float) -> bool:
        """Stop the process this file names (SIGTERM, then SIGKILL after ``timeout``) and forget it.
        Returns whether one was running."""
        pid = self.read()
        if pid is not None and not terminate(pid, timeout=timeout):
            log.warning(f"{name} did not stop on SIGTERM within {timeout:.0f} s and was killed", extra={"pid": pid})
        self.clear()
        return pid is not None


def command_line(pid: int) -> str | None:
    """The command line of ``pid``, or None when there is no such (live) process."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        status = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # A zombie still has a /proc entry but is no longer running.
    if status.rsplit(")", 1)[-1].split()[0] == "Z":
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace")


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port(below: int = 65_536) -> int:
    """A TCP port nothing listens on now, on loopback (below ``below``)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < below:
            return port


def spawn(argv: list[str], log_path: Path, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start ``argv`` detached from this process group, output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
        )


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    interval: float = 0.25,
    alive: Callable[[], bool] = lambda: True,
) -> bool:
    """Poll ``condition`` until it holds, ``alive`` turns false, or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if not alive():
            return False
        time.sleep(interval)
    return condition()


def terminate(pid: int, timeout: float = 30.0) -> bool:
    """SIGTERM ``pid`` and wait for it to exit; SIGKILL after ``timeout``.

    Returns True when it stopped on SIGTERM, False when it had to be killed.
    """
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    _reap(pid)
    if wait_until(lambda: command_line(pid) is None, timeout, interval=0.1, alive=lambda: _reap(pid)):
        return True
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    wait_until(lambda: command_line(pid) is None, 10.0, interval=0.1, alive=lambda: _reap(pid))
    return False


def running(pid: int) -> bool:
    """Whether ``pid`` is still running (an exited child of ours is reaped first)."""
    _reap(pid)
    return command_line(pid) is not None


def _reap(pid: int) -> bool:
    """Collect ``pid`` if it is our child, so it does not linger as a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    return True
