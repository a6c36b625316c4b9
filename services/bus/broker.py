"""Checking that a broker is there before doing work that needs one."""

from services.bus.config import client_config
from services.errors import UserError
from services.settings import Settings
from services.stack.kafka_node import broker_answers


def require_broker(settings: Settings, timeout: float = 5.0) -> None:
    """Fail with one clear line when no Kafka broker answers."""
    if not broker_answers(settings.kafka_bootstrap, timeout=timeout, client=client_config(settings)):
        raise UserError(
            f"no Kafka broker answers at {settings.kafka_bootstrap}; start one with "
            "`shelfsight stack up` or point SHELFSIGHT_KAFKA_BOOTSTRAP at yours"
        )
