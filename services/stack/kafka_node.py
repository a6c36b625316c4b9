"""A single-node Apache Kafka broker (KRaft) assembled from Maven Central jars."""

import logging
import shutil
import subprocess
import uuid
import zipfile
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from schemas.limits import LIMITS
from services.bus.config import KafkaConfig
from services.errors import UserError
from services.settings import Settings
from services.stack.components import ComponentStatus, State
from services.stack.processes import PidFile, port_open, running, spawn, wait_until

log = logging.getLogger(__name__)

_MAIN_CLASS = "kafka.Kafka"
_MAVEN_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies"


def broker_answers(bootstrap: str, timeout: float = 2.0, client: KafkaConfig | None = None) -> bool:
    """Whether a Kafka broker at ``bootstrap`` answers a metadata request."""
    from confluent_kafka.admin import AdminClient

    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    if not port_open(host.strip("[]"), int(port), timeout=min(timeout, 1.0)):
        return False
    admin = AdminClient(
        {
            **(client or {}),  # security settings, for a cluster that needs them
            "bootstrap.servers": bootstrap,
            "socket.timeout.ms": max(int(timeout * 1000), 10),
            "log_level": 0,  # a probe: refused connections are expected, not worth logging
        }
    )
    try:
        return len(admin.list_topics(timeout=timeout).brokers) > 0
    except Exception:  # any KafkaException or timeout means "not answering"
        return False


class KafkaNode:
    """Fetches, formats, starts and stops the local broker described by ``settings``."""

    name = "kafka"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._host, self._port = settings.kafka_address
        self._dir = settings.stack_dir / "kafka"
        self._libs = settings.cache_dir / f"kafka-{settings.kafka_version}" / "libs"
        self._config = self._dir / "server.properties"
        self.log_path = self._dir / "logs" / "server.log"
        self._console_log = self._dir / "logs" / "console.log"
        self._pid = PidFile(self._dir / "kafka.pid", marker=_MAIN_CLASS)

    @property
    def address(self) -> str:
        return f"{self._host}:{self._port}"

    def status(self) -> ComponentStatus:
        pid = self._pid.read()
        answers = broker_answers(self._settings.kafka_bootstrap)
        if pid is not None:
            state = State.RUNNING if answers else State.UNHEALTHY
            return ComponentStatus(self.name, self.address, state, pid, self._version(), "KRaft, single node")
        if answers:
            return ComponentStatus(self.name, self.address, State.EXTERNAL, detail="not started by Shelfsight; reused")
        return ComponentStatus(self.name, self.address, State.STOPPED)

    def up(self) -> ComponentStatus:
        """Start the broker unless ours or another one already answers."""
        current = self.status()
        if current.state in (State.RUNNING, State.EXTERNAL):
            return current
        if current.state is State.UNHEALTHY and (pid := current.pid) is not None:
            # Ours, but still starting (or wedged): give it the usual time before judging.
            return self._wait_ready(lambda: running(pid))
        for port in (self._port, self._settings.kafka_controller_port):
            if port_open(self._host, port):
                raise UserError(
                    f"port {self._host}:{port} is busy with something that is not a Kafka broker; "
                    "stop it or choose other ports (SHELFSIGHT_KAFKA_BOOTSTRAP, SHELFSIGHT_KAFKA_CONTROLLER_PORT)"
                )
        java = _require("java", "OpenJDK 17: apt-get install openjdk-17-jre-headless")
        self.fetch()
        self._render_config()
        self._format_storage(java)
        process = spawn(
            [
                java,
                "-Xms256m",
                f"-Xmx{self._settings.kafka_heap}",
                "-XX:+ExitOnOutOfMemoryError",
                "-Djava.awt.headless=true",
                *self._log_options(),
                "-cp",
                f"{self._libs}/*",
                _MAIN_CLASS,
                str(self._config),
            ],
            self._console_log,
        )
        self._pid.write(process.pid)
        log.info("kafka starting", extra={"pid": process.pid, "address": self.address})
        return self._wait_ready(lambda: process.poll() is None)

    def down(self) -> bool:
        """Stop our broker (SIGTERM, then wait). Returns whether one was running."""
        return self._pid.stop("kafka", timeout=60)

    def fetch(self) -> Path:
        """Download the broker jars once into the cache (outside any clone)."""
        if self._libs.is_dir() and any(self._libs.glob("kafka_2.13-*.jar")):
            return self._libs
        mvn = _require("mvn", "Maven: apt-get install maven")
        pom = resources.files("services.stack") / "kafka" / "pom.xml"
        partial = self._libs.with_name("libs.partial")
        shutil.rmtree(partial, ignore_errors=True)
        log.info("fetching Apache Kafka jars from Maven Central", extra={"version": self._settings.kafka_version})
        with resources.as_file(pom) as pom_path:
            result = subprocess.run(
                [
                    mvn,
                    "-B",
                    "-q",
                    "-f",
                    str(pom_path),
                    _MAVEN_DEPENDENCY_PLUGIN,
                    "-DincludeScope=runtime",
                    f"-DoutputDirectory={partial}",
                    f"-Dkafka.version={self._settings.kafka_version}",
                ],
                capture_output=True,
                text=True,
            )
        if result.returncode != 0:
            tail = (result.stdout + result.stderr).strip().splitlines()[-1:] or ["no output"]
            raise UserError(f"Maven could not fetch Kafka {self._settings.kafka_version}: {tail[0]}")
        partial.rename(self._libs)
        return self._libs

    def _render_config(self) -> None:
        template = (resources.files("services.stack") / "kafka" / "server.properties.template").read_text()
        self._config.parent.mkdir(parents=True, exist_ok=True)
        self._config.write_text(
            template.format(
                host=self._host,
                port=self._port,
                controller_port=self._settings.kafka_controller_port,
                data_dir=self._dir / "data",
                message_max_bytes=LIMITS.event_bytes + 1024 * 1024,
            )
        )

    def _format_storage(self, java: str) -> None:
        if (self._dir / "data" / "meta.properties").exists():
            return
        result = subprocess.run(
            [
                java,
                *self._log_options(),
                "-cp",
                f"{self._libs}/*",
                "kafka.tools.StorageTool",
                "format",
                "-t",
                str(uuid.uuid4()),
                "-c",
                str(self._config),
                "--ignore-formatted",
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise UserError(f"could not format Kafka storage in {self._dir / 'data'}: {result.stderr.strip()[-300:]}")

    def _log_options(self) -> list[str]:
        log4j = resources.files("services.stack") / "kafka" / "log4j.properties"
        return [f"-Dlog4j.configuration=file:{log4j}", f"-Dkafka.logs.dir={self.log_path.parent}"]

    def _wait_ready(self, alive: Callable[[], bool]) -> ComponentStatus:
        # `alive` asks the process itself, not the pid file's marker: the java launcher
        # may re-exec itself, and its command line is briefly empty while it does.
        ready = wait_until(
            lambda: broker_answers(self._settings.kafka_bootstrap, timeout=1.0),
            timeout=self._settings.kafka_start_timeout_s,
            interval=0.5,
            alive=alive,
        )
        if not ready:
            self.down()
            raise UserError(
                f"the Kafka broker did not come up at {self.address} within "
                f"{self._settings.kafka_start_timeout_s:.0f} s; see {self._console_log} and {self.log_path}"
            )
        return self.status()

    def _version(self) -> str | None:
        """The Apache Kafka version of the jars our broker runs from."""
        for jar in self._libs.glob("kafka-clients-*.jar"):
            with zipfile.ZipFile(jar) as archive:
                for line in archive.read("kafka/kafka-version.properties").decode().splitlines():
                    if line.startswith("version="):
                        return f"Apache Kafka {line.split('=', 1)[1].strip()}"
        return None


def _require(program: str, hint: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise UserError(f"`{program}` is not installed; the local Kafka needs it. Install {hint}")
    return path
