"""Creating Shelfsight's topics, idempotently."""

from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from schemas.limits import LIMITS
from schemas.topics import TOPICS
from services.bus.config import DLQ_MESSAGE_BYTES, client_config
from services.errors import UserError
from services.settings import Settings

_DLQ_RETENTION_MS = 30 * 24 * 3600 * 1000  # a month to look into refused messages


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic and dead-letter topic, with the settings' prefix and partitions."""
    specs = []
    for topic in TOPICS.values():
        config = {"max.message.bytes": str(LIMITS.event_bytes + 64 * 1024), **_durability(settings)}
        if topic.compacted:
            config["cleanup.policy"] = "compact"
        if topic.keep_forever:
            config["retention.ms"] = "-1"
        elif topic.retention_hours is not None:
            config["retention.ms"] = str(topic.retention_hours * 3600 * 1000)
        specs.append(TopicSpec(settings.topic(topic.name), settings.topic_partitions, config))
        if topic.has_dlq:
            specs.append(
                TopicSpec(
                    settings.topic(topic.dlq),
                    1,
                    {"max.message.bytes": str(DLQ_MESSAGE_BYTES), "retention.ms": str(_DLQ_RETENTION_MS), **_durability(settings)},
                )
            )
    return specs


def _durability(settings: Settings) -> dict[str, str]:
    if settings.topic_min_insync_replicas is None:
        return {}
    return {"min.insync.replicas": str(settings.topic_min_insync_replicas)}


def create_topics(settings: Settings, timeout: float = 30.0) -> list[tuple[str, str]]:
    """Create what is missing. Returns (topic, "created" | "exists") for each."""
    if (settings.topic_min_insync_replicas or 1) > settings.topic_replication_factor:
        raise UserError(
            f"SHELFSIGHT_TOPIC_MIN_INSYNC_REPLICAS ({settings.topic_min_insync_replicas}) is more than "
            f"SHELFSIGHT_TOPIC_REPLICATION_FACTOR ({settings.topic_replication_factor}): nothing could be written"
        )
    admin = AdminClient(client_config(settings))
    specs = topic_specs(settings)
    futures = admin.create_topics(
        [
            NewTopic(s.name, num_partitions=s.partitions, replication_factor=settings.topic_replication_factor, config=s.config)
            for s in specs
        ],
        operation_timeout=timeout,
        request_timeout=timeout,
    )
    results = []
    for spec in specs:
        try:
            futures[spec.name].result(timeout=timeout)
            results.append((spec.name, "created"))
        except KafkaException as exc:
            code = exc.args[0].code()
            if code == KafkaError.INVALID_REPLICATION_FACTOR:
                raise UserError(
                    f"the cluster cannot hold {settings.topic_replication_factor} replicas of {spec.name} "
                    f"({exc.args[0].str()}): lower SHELFSIGHT_TOPIC_REPLICATION_FACTOR"
                ) from None
            if code != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
            results.append((spec.name, "exists"))
    return results


def delete_topics(settings: Settings, names: list[str], timeout: float = 30.0) -> None:
    """Delete topics (tests clean up their prefixed topics with this)."""
    admin = AdminClient(client_config(settings))
    for future in admin.delete_topics(names, operation_timeout=timeout).values():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise
