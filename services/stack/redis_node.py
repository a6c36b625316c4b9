"""A local redis-server with its own data folder and the append-only file on."""

import logging
import os
import shutil
import subprocess

import redis

from services.errors import UserError
from services.settings import Settings
from services.stack.components import ComponentStatus, State
from services.stack.processes import PidFile, port_open, running, spawn, wait_until

log = logging.getLogger(__name__)


def redis_info(host: str, port: int, timeout: float = 1.0) -> dict[str, object] | None:
    """``INFO server`` of the Redis at host:port, or None when none answers."""
    client = redis.Redis(host=host, port=port, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return dict(client.info("server"))
    except redis.RedisError:
        return None
    finally:
        client.close()


class RedisNode:
    """Starts and stops the local redis-server described by ``settings``."""

    name = "redis"

    def __init__(self, settings: Settings) -> None:
        self._host, self._port = settings.redis_address
        self._dir = settings.stack_dir / "redis"
        self.log_path = self._dir / "redis.log"
        self._pid = PidFile(self._dir / "redis.pid", marker="redis-server")

    @property
    def address(self) -> str:
        return f"{self._host}:{self._port}"

    def status(self) -> ComponentStatus:
        pid = self._pid.read()
        info = redis_info(self._host, self._port)
        version = f"redis-server {info['redis_version']}" if info else None
        if pid is not None:
            state = State.RUNNING if info else State.UNHEALTHY
            return ComponentStatus(self.name, self.address, state, pid, version, "AOF on")
        if info:
            return ComponentStatus(self.name, self.address, State.EXTERNAL, version=version, detail="not started by Shelfsight; reused")
        return ComponentStatus(self.name, self.address, State.STOPPED)

    def up(self) -> ComponentStatus:
        current = self.status()
        if current.state in (State.RUNNING, State.EXTERNAL):
            return current
        if current.state is State.STOPPED and port_open(self._host, self._port):
            raise UserError(
                f"port {self.address} is busy with something that is not Redis; stop it or set SHELFSIGHT_REDIS_URL to another port"
            )
        pid = current.pid
        if pid is None:
            server = self._server_binary()
            data = self._dir / "data"
            data.mkdir(parents=True, exist_ok=True)
            process = spawn(
                [
                    server,
                    "--bind",
                    self._host,
                    "--port",
                    str(self._port),
                    "--dir",
                    str(data),
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "everysec",
                    "--daemonize",
                    "no",
                    "--logfile",
                    str(self.log_path),
                    "--protected-mode",
                    "yes",
                ],
                self._dir / "console.log",
            )
            pid = process.pid
            self._pid.write(pid)
            log.info("redis starting", extra={"pid": pid, "address": self.address})
        if not wait_until(
            lambda: redis_info(self._host, self._port) is not None,
            timeout=30,
            alive=lambda: running(pid),
        ):
            self.down()
            raise UserError(f"redis-server did not come up at {self.address}; see {self.log_path}")
        return self.status()

    def down(self) -> bool:
        """Stop our redis-server (SIGTERM, then wait). Returns whether one was running."""
        return self._pid.stop("redis", timeout=30)

    def _server_binary(self) -> str:
        path = shutil.which("redis-server")
        if path:
            return path
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            raise UserError("redis-server is not installed: install the Debian package `redis-server` (sudo apt-get install redis-server)")
        log.info("installing redis-server with apt-get")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "redis-server"]):
            result = subprocess.run(argv, capture_output=True, text=True, env=env)
            if result.returncode != 0:
                raise UserError(
                    f"could not install redis-server with apt-get ({result.stderr.strip()[-200:]}); "
                    "install the Debian package `redis-server` yourself"
                )
        path = shutil.which("redis-server")
        if not path:
            raise UserError("apt-get installed redis-server but it is not on PATH; check /usr/bin/redis-server")
        return path
