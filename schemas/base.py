"""The base every contract derives from."""

import re
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from schemas.limits import LIMITS

SCHEMA_VERSION = 1

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@/-]*$"

Identifier = Annotated[
    str,
    StringConstraints(min_length=1, max_length=LIMITS.id_chars, pattern=ID_PATTERN),
    Field(description="Opaque identifier: letters, digits and . _ : @ / -; starts with a letter or digit."),
]

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _no_control_characters(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("control characters are not allowed")
    return value


def bounded_text(max_chars: int, min_chars: int = 0, description: str = "") -> object:
    """A string type with a length bound and no control characters."""
    return Annotated[
        str,
        StringConstraints(min_length=min_chars, max_length=max_chars),
        AfterValidator(_no_control_characters),
        Field(description=description),
    ]


class Contract(BaseModel):
    """A versioned, immutable, strictly validated event.

    ``partition_key_field`` names the field whose value becomes the Kafka message key,
    so that all events about one shopper (or one product) stay ordered on one partition.
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        ser_json_bytes="base64",
        val_json_bytes="base64",
        ser_json_inf_nan="strings",
    )

    partition_key_field: ClassVar[str]

    schema_version: Literal[1] = Field(
        default=SCHEMA_VERSION,
        description="Version of this contract. Consumers reject versions they do not know.",
    )

    def partition_key(self) -> str:
        return str(getattr(self, self.partition_key_field))
