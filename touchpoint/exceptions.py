"""The one exception hierarchy of Touchpoint; every package's errors derive from here."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ContractError",
    "DecodeError",
    "EncodeError",
    "InputError",
    "KafkaUnavailable",
    "PublishError",
    "QueryRefused",
    "SchemaError",
    "ServiceError",
    "TouchpointError",
    "WarehouseError",
    "WarehouseRejected",
    "WarehouseUnavailable",
]


class TouchpointError(Exception):
    """Base of every error Touchpoint raises on purpose."""


class ConfigError(TouchpointError):
    """A setting is missing or invalid; the message names the variable and the fix."""


class ContractError(TouchpointError):
    """An event breaks the public contract (CONTRACT.md §2); ``code`` names the rule."""

    def __init__(self, message: str, code: str = "invalid") -> None:
        super().__init__(message)
        self.code = code


class DecodeError(TouchpointError):
    """Bytes on a topic could not be decoded into a record; ``code`` says why.

    ``code`` is a short machine code for the dead-letter topic: ``undecodable`` (not
    single-object Avro, or a truncated or corrupt body), ``unknown_schema`` (writer schema
    fingerprint not deployed), ``wrong_subject`` (a record of another subject) or
    ``incompatible_schema`` (the deployed versions cannot be resolved to each other).
    """

    def __init__(self, message: str, *, code: str = "undecodable") -> None:
        super().__init__(message)
        self.code = code


class EncodeError(TouchpointError):
    """One of our own records does not fit its schema; ``field`` names the culprit."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class SchemaError(TouchpointError):
    """A schema is missing, malformed or clashes with another; the message names the file."""


class InputError(TouchpointError):
    """Input files cannot be used as given (missing, unsorted, changed since a checkpoint).

    The message names the file, the line when there is one, and the fix.
    """


class PublishError(TouchpointError):
    """Events could not be delivered to Kafka."""


class ServiceError(TouchpointError):
    """A local service (Kafka, ClickHouse server) could not be started or reached."""


class WarehouseError(TouchpointError):
    """The warehouse refused a statement (bad SQL, wrong schema): retrying will not help."""


class WarehouseUnavailable(WarehouseError):
    """The warehouse cannot be reached right now; retrying later may succeed."""


class QueryRefused(WarehouseError):
    """A person's SQL was refused before it ran: not one SELECT of the project's tables.

    The message says what to change; ``code`` names the rule (``table``, ``database``,
    ``table_function``, ``function``, ``clause``, ``in_table``, ``statements``,
    ``not_select``, ``lexical``, ``syntax``, ``ambiguous``, ``size``).
    """

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


class WarehouseRejected(WarehouseError):
    """The warehouse refused the rows of an insert for their content; others may be stored.

    A value its column cannot hold (out of range, wrong type, unparseable): the same rows
    are refused again however often they are sent, while the rest of their batch can be
    stored. ``code`` is ClickHouse's error code when the engine gave one.
    """

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class KafkaUnavailable(PublishError):
    """Kafka did not acknowledge events in time; sending them again later may succeed."""
