"""Running Shelfsight's own services as child processes, watching them, and stopping them in order:
what `make demo`, `evaluate-recs --live` and the benches do with `serve` and `profiles`."""

import json
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from services.errors import UserError


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 30.0) -> int:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                return self.process.wait(5)
        return int(self.process.returncode)

    def tail(self, lines: int = 8) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""


def start_service(name: str, args: list[str], env: dict[str, str], logs: Path) -> Service:
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.log"
    handle = log.open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli", *args],
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C reaches the demo, which stops the services in order
    )
    return Service(name, process, log)


def wait_healthy(url: str, service: Service, timeout: float = 180.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not service.alive():
            raise UserError(f"{service.name} stopped while starting; its log ({service.log}) ends:\n{service.tail()}")
        report = health(url)
        if report:
            return report
        time.sleep(0.5)
    raise UserError(f"{service.name} did not become healthy at {url} within {timeout:.0f} s; see {service.log}")


def health(url: str) -> dict[str, object]:
    """The /healthz report when the service answers healthy; empty otherwise (503 raises OSError)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return json.loads(answer.read())
    except (OSError, ValueError):
        return {}
