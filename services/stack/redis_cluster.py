"""A local Redis Cluster of a few redis-server nodes: to run Shelfsight's cluster layout for real.

Loopback only, no replicas, no persistence: for trying ``SHELFSIGHT_REDIS_CLUSTER`` and for the
tests that check every script stays inside one hash slot (a real cluster refuses the rest).

    cluster = LocalRedisCluster(Path("/tmp/rc"), ports=[7101, 7102, 7103]).up()
    ...  # SHELFSIGHT_REDIS_URL=redis://127.0.0.1:7101/0 SHELFSIGHT_REDIS_CLUSTER=true
    cluster.down()
"""

import functools
import logging
import shutil
import subprocess
from pathlib import Path

import redis

from services.errors import UserError
from services.stack.processes import free_port, port_open, spawn, terminate, wait_until

log = logging.getLogger(__name__)


class LocalRedisCluster:
    def __init__(self, folder: Path, ports: list[int], host: str = "127.0.0.1") -> None:
        if len(ports) < 3:
            raise ValueError("a Redis Cluster needs at least 3 master nodes")
        self.folder, self.ports, self.host = folder, ports, host
        self._processes: list[subprocess.Popen[bytes]] = []

    @classmethod
    def on_free_ports(cls, folder: Path, nodes: int = 3) -> "LocalRedisCluster":
        ports: list[int] = []
        while len(ports) < nodes:
            port = free_port(below=55_536)  # each node's cluster bus listens on its port + 10000
            if port not in ports and not port_open("127.0.0.1", port + 10_000):
                ports.append(port)
        return cls(folder, ports)

    @property
    def url(self) -> str:
        """The URL of one node: a cluster client finds the others from it."""
        return f"redis://{self.host}:{self.ports[0]}/0"

    def up(self, timeout_s: float = 60.0) -> "LocalRedisCluster":
        server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if server is None or cli is None:
            raise UserError("redis-server and redis-cli are needed: install the Debian package `redis-server`")
        for port in self.ports:
            if port_open(self.host, port):
                raise UserError(f"port {self.host}:{port} is busy; pick other ports for the local Redis Cluster")
        for port in self.ports:
            node = self.folder / str(port)
            node.mkdir(parents=True, exist_ok=True)
            self._processes.append(
                spawn(
                    [
                        server,
                        "--bind",
                        self.host,
                        "--port",
                        str(port),
                        "--dir",
                        str(node),
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "5000",
                        "--appendonly",
                        "no",
                        "--save",
                        "",
                        "--daemonize",
                        "no",
                        "--logfile",
                        str(node / "redis.log"),
                    ],
                    node / "console.log",
                )
            )
        try:
            for port, process in zip(self.ports, self._processes, strict=True):
                if not wait_until(functools.partial(port_open, self.host, port), timeout=30, alive=functools.partial(_alive, process)):
                    raise UserError(f"redis-server did not come up at {self.host}:{port}; see {self.folder / str(port)}")
            created = subprocess.run(
                [cli, "--cluster", "create", *(f"{self.host}:{p}" for p in self.ports), "--cluster-replicas", "0", "--cluster-yes"],
                capture_output=True,
                text=True,
                timeout=timeout_s,
            )
            if created.returncode != 0:
                raise UserError(f"redis-cli --cluster create failed: {created.stdout[-300:]} {created.stderr[-300:]}")
            if not wait_until(self._ready, timeout=timeout_s):
                raise UserError(f"the local Redis Cluster on ports {self.ports} did not reach cluster_state:ok")
        except BaseException:
            self.down()
            raise
        log.info("redis cluster up", extra={"ports": self.ports})
        return self

    def _ready(self) -> bool:
        for port in self.ports:
            client = redis.Redis(host=self.host, port=port, socket_timeout=1)
            try:
                if client.cluster("info").get("cluster_state") != "ok":
                    return False
            except redis.RedisError:
                return False
            finally:
                client.close()
        return True

    def down(self) -> None:
        for process in self._processes:
            if process.poll() is None:
                terminate(process.pid, timeout=10)
        self._processes.clear()
        shutil.rmtree(self.folder, ignore_errors=True)


def _alive(process: subprocess.Popen[bytes]) -> bool:
    return process.poll() is None
