"""The one settings object, read from ``SHELFSIGHT_*`` environment variables.

Build it once at the edge (the CLI, a service's ``main``) and pass it down;
nothing else reads the environment.
"""

from functools import cached_property
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.errors import UserError


def _default_cache() -> Path:
    return Path.home() / ".cache" / "shelfsight"


class Settings(BaseSettings):
    """Everything configurable in Shelfsight. Each field is documented in the README."""

    model_config = SettingsConfigDict(env_prefix="SHELFSIGHT_", frozen=True, extra="ignore")

    cache_dir: Path = Field(
        default_factory=_default_cache,
        description="Where downloaded assets live (Kafka jars); shared by every clone.",
    )
    state_dir: Path | None = Field(
        default=None,
        description="Local stack data, logs and pid files. Default: `<cache_dir>/stack`.",
    )
    kafka_bootstrap: str = Field(
        default="127.0.0.1:9092",
        description="Kafka bootstrap servers. The local stack listens on this host:port.",
    )
    kafka_controller_port: int = Field(
        default=9093, ge=1, le=65535, description="KRaft controller port of the local broker."
    )
    kafka_version: str = Field(
        default="3.9.1", pattern=r"^3\.9\.\d+$", description="Apache Kafka version the stack runs."
    )
    kafka_heap: str = Field(
        default="512m", pattern=r"^\d+[mg]$", description="JVM heap of the local broker."
    )
    kafka_start_timeout_s: float = Field(
        default=120.0, gt=0, description="How long `stack up` waits for the broker."
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0", description="Redis URL. The local stack listens here."
    )
    topic_prefix: str = Field(
        default="",
        pattern=r"^[A-Za-z0-9._-]*$",
        description="Put in front of every topic name, to share one cluster.",
    )
    topic_partitions: int = Field(
        default=3, ge=1, le=1000, description="Partitions of each topic `topics create` makes."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Log level."
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="`text` for people, `json` for log shippers."
    )

    @field_validator("kafka_bootstrap")
    @classmethod
    def _host_port(cls, value: str) -> str:
        for server in value.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"{server!r} is not host:port")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if urlsplit(value).scheme not in {"redis", "rediss", "unix"}:
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @property
    def stack_dir(self) -> Path:
        return self.state_dir or self.cache_dir / "stack"

    def topic(self, name: str) -> str:
        """The real topic name of a logical one (see ``schemas.topics``)."""
        return f"{self.topic_prefix}{name}"

    @cached_property
    def kafka_address(self) -> tuple[str, int]:
        """Host and port of the first bootstrap server: where the local broker listens."""
        host, _, port = self.kafka_bootstrap.split(",")[0].strip().rpartition(":")
        return host.strip("[]"), int(port)

    @cached_property
    def redis_address(self) -> tuple[str, int]:
        parts = urlsplit(self.redis_url)
        return parts.hostname or "127.0.0.1", parts.port or 6379


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with a one-line error when a value is wrong."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"SHELFSIGHT_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        raise UserError(f"invalid settings: {problems}") from None
