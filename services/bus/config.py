"""librdkafka configuration derived from the settings, in one place."""

from schemas.limits import LIMITS
from services.settings import Settings

# A dead letter wraps the original value (base64 at worst: 4/3 larger) plus a small envelope.
DLQ_MESSAGE_BYTES = 2 * LIMITS.event_bytes
# The producer must accept the largest message any topic takes.
PRODUCER_MESSAGE_BYTES = DLQ_MESSAGE_BYTES + 64 * 1024

ConfigValue = str | int | float | bool
KafkaConfig = dict[str, ConfigValue]
"""A librdkafka configuration: property name → value."""


def client_config(settings: Settings) -> KafkaConfig:
    """How any librdkafka client reaches the cluster: the servers and the security settings.

    >>> from pydantic import SecretStr
    >>> from services.settings import load_settings
    >>> secure = load_settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
    ...                        kafka_sasl_username="shop", kafka_sasl_password="pw", kafka_ssl_cafile="/etc/ca.pem")
    >>> sorted(client_config(secure).items())  # doctest: +NORMALIZE_WHITESPACE
    [('bootstrap.servers', '127.0.0.1:9092'), ('sasl.mechanisms', 'SCRAM-SHA-512'), ('sasl.password', 'pw'),
     ('sasl.username', 'shop'), ('security.protocol', 'SASL_SSL'), ('ssl.ca.location', '/etc/ca.pem')]
    """
    config: KafkaConfig = {"bootstrap.servers": settings.kafka_bootstrap}
    protocol = settings.kafka_security_protocol
    if protocol != "PLAINTEXT":
        config["security.protocol"] = protocol
    if protocol.startswith("SASL"):
        config["sasl.mechanisms"] = settings.kafka_sasl_mechanism
        if settings.kafka_sasl_username is not None:
            config["sasl.username"] = settings.kafka_sasl_username
        if settings.kafka_sasl_password is not None:
            config["sasl.password"] = settings.kafka_sasl_password.get_secret_value()
    if protocol.endswith("SSL") and settings.kafka_ssl_cafile is not None:
        config["ssl.ca.location"] = str(settings.kafka_ssl_cafile)
    return config


def producer_config(settings: Settings, **overrides: ConfigValue) -> KafkaConfig:
    return {
        **client_config(settings),
        "enable.idempotence": True,  # acks=all and no duplicates from producer retries
        "linger.ms": 5,
        "compression.type": "lz4",
        "message.max.bytes": PRODUCER_MESSAGE_BYTES,
        **overrides,
    }


def consumer_config(settings: Settings, group_id: str, **overrides: ConfigValue) -> KafkaConfig:
    return {
        **client_config(settings),
        "group.id": group_id,
        "enable.auto.commit": False,  # commit only after the work is done: at-least-once
        "auto.offset.reset": "earliest",
        "fetch.max.bytes": 8 * PRODUCER_MESSAGE_BYTES,
        "max.partition.fetch.bytes": PRODUCER_MESSAGE_BYTES,
        # librdkafka heartbeats from a thread of its own, so a long batch does not count against
        # this; what it bounds is how long a crashed member holds its partitions (default 45 s).
        "session.timeout.ms": int(settings.consumer_session_timeout_s * 1000),
        "heartbeat.interval.ms": int(min(3.0, settings.consumer_session_timeout_s / 3) * 1000),
        **overrides,
    }


def faust_broker(settings: Settings) -> tuple[list[str], object | None]:
    """The Faust (aiokafka) side of the same settings: broker URLs and credentials."""
    import ssl

    import faust

    urls = [f"kafka://{server.strip()}" for server in settings.kafka_bootstrap.split(",")]
    protocol = settings.kafka_security_protocol
    context = None
    if protocol.endswith("SSL"):
        context = ssl.create_default_context(cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None)
    if protocol.startswith("SASL"):
        password = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else None
        return urls, faust.SASLCredentials(
            username=settings.kafka_sasl_username, password=password, mechanism=settings.kafka_sasl_mechanism, ssl_context=context
        )
    if context is not None:
        return urls, faust.SSLCredentials(context)
    return urls, None
