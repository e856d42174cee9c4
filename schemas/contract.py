"""The public event contract (CONTRACT.md §2) as data, and the rules that check it.

One place defines, per channel, the event types, their touchpoint category and 4S
journey stage, and the further fields with their types. Publishing (``touchpoint
publish``) and ingest both check events here, so a channel system gets the same
answer before and after Kafka.

Checks return a :class:`Rejection` (a machine code and a sentence a person can act on)
instead of raising: on the hot path a bad record is data, not an exception.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any, Final

import phonenumbers

__all__ = [
    "CHANNELS",
    "COMMON_FIELDS",
    "IDENTIFIERS",
    "Channel",
    "Rejection",
    "TouchpointKind",
    "check",
    "hash_pii",
    "normalize_email",
    "normalize_phone",
    "parse_occurred_at",
    "routing_key",
]


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why an event was refused: ``code`` for machines, ``reason`` for people."""

    code: str
    reason: str


@dataclass(frozen=True, slots=True)
class TouchpointKind:
    """What an event type is, in the words of touchpoint management (CTM, 4S)."""

    category: str  # communication | channel | personnel | brand
    stage: str  # search | site | shopping | satisfaction


@dataclass(frozen=True)
class Channel:
    """One inbound channel: its event types and the further fields it carries."""

    name: str
    types: Mapping[str, TouchpointKind]
    fields: Mapping[str, type]
    required: tuple[str, ...] = ()


_K = TouchpointKind

# The one table mapping every event type to its touchpoint category and 4S stage.
# Category (DOMAIN: CTM): communication = messages and ads we send; channel = the place
# of contact (site, store environment); personnel = staff and agents; brand = what the
# customer says of the brand (ratings, reviews, complaints).
CHANNELS: Final[Mapping[str, Channel]] = MappingProxyType({
    "web": Channel(
        "web",
        MappingProxyType({
            "page_view": _K("channel", "site"),
            "ad_impression": _K("communication", "search"),
            "ad_click": _K("communication", "search"),
            "search": _K("channel", "search"),
            "add_to_cart": _K("channel", "shopping"),
            "checkout_started": _K("channel", "shopping"),
            "purchase": _K("channel", "shopping"),
            "login": _K("channel", "site"),
            "error": _K("channel", "site"),
        }),
        MappingProxyType({
            "session_id": str, "url": str, "referrer": str, "ad_id": str, "dwell_ms": int,
            "amount": float, "currency": str, "error_code": str,
        }),
    ),
    "store": Channel(
        "store",
        MappingProxyType({
            "visit": _K("channel", "site"),
            "queue_joined": _K("channel", "site"),
            "served": _K("personnel", "shopping"),
            "purchase": _K("channel", "shopping"),
            "return": _K("personnel", "satisfaction"),
        }),
        MappingProxyType({
            "store_id": str, "staff_id": str, "queue_wait_s": int, "amount": float,
            "currency": str, "items": int,
        }),
        required=("store_id",),
    ),
    "callcenter": Channel(
        "callcenter",
        MappingProxyType({
            "call_ended": _K("personnel", "satisfaction"),
            "callback_requested": _K("personnel", "satisfaction"),
        }),
        MappingProxyType({
            "call_id": str, "agent_id": str, "queue_wait_s": int, "talk_s": int,
            "transfers": int, "reason": str, "outcome": str, "notes": str,
        }),
    ),
    "campaign": Channel(
        "campaign",
        MappingProxyType({
            "sent": _K("communication", "search"),
            "delivered": _K("communication", "search"),
            "opened": _K("communication", "search"),
            "clicked": _K("communication", "search"),
            "unsubscribed": _K("communication", "satisfaction"),
        }),
        MappingProxyType({"medium": str, "variant": str}),
        required=("campaign_id",),
    ),
    "feedback": Channel(
        "feedback",
        MappingProxyType({
            "csat": _K("brand", "satisfaction"),
            "nps": _K("brand", "satisfaction"),
            "review": _K("brand", "satisfaction"),
            "complaint": _K("brand", "satisfaction"),
        }),
        MappingProxyType({
            "score": int, "comment": str, "about_channel": str, "store_id": str,
            "case_id": str,
        }),
    ),
})

COMMON_FIELDS: Final = MappingProxyType({
    "event_id": str, "type": str, "occurred_at": (str, int), "customer_id": str,
    "anonymous_id": str, "email": str, "phone": str, "campaign_id": str, "attributes": dict,
})

# Strongest first: the message key and the provisional customer come from the first present.
IDENTIFIERS: Final = ("customer_id", "phone", "email", "anonymous_id")

_ENUMS: Final[Mapping[str, frozenset[str]]] = MappingProxyType({
    "outcome": frozenset({"resolved", "unresolved", "escalated", "abandoned"}),
    "medium": frozenset({"email", "sms", "push", "display", "social", "direct_mail"}),
    "about_channel": frozenset(CHANNELS),
})
_SCORE_RANGE: Final = MappingProxyType({"csat": (1, 5), "nps": (0, 10), "review": (1, 5)})
_NON_NEGATIVE: Final = frozenset({"dwell_ms", "queue_wait_s", "talk_s", "transfers", "items"})
# 2000-01-01 .. 2100-01-01 in epoch ms: outside this an integer is a unit mistake
# (seconds or microseconds), not a date.
_MIN_MS: Final = 946_684_800_000
_MAX_MS: Final = 4_102_444_800_000
MAX_ID_LENGTH: Final = 256


def parse_occurred_at(value: object) -> int | Rejection:
    """Return the event time as epoch milliseconds, or why it cannot be read."""
    if isinstance(value, bool):
        return Rejection("bad_timestamp", "occurred_at is a boolean: send ISO-8601 or epoch ms")
    if isinstance(value, int):
        if not _MIN_MS <= value < _MAX_MS:
            return Rejection(
                "bad_timestamp",
                f"occurred_at={value} is not epoch milliseconds between 2000 and 2100 "
                "(seconds or microseconds sent by mistake?)",
            )
        return value
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            return Rejection(
                "bad_timestamp",
                f"occurred_at={value!r} is not ISO-8601 (e.g. 2026-11-22T10:15:00+08:00)",
            )
        if parsed.tzinfo is None:
            return Rejection(
                "bad_timestamp",
                f"occurred_at={value!r} has no UTC offset: add one, e.g. +08:00 or Z",
            )
        millis = round(parsed.timestamp() * 1000)
        if not _MIN_MS <= millis < _MAX_MS:
            return Rejection("bad_timestamp", f"occurred_at={value!r} is before 2000 or after 2100")
        return millis
    return Rejection("bad_timestamp", "occurred_at is missing: send ISO-8601 or epoch ms")


def normalize_email(raw: str) -> str | None:
    """Trim and lower-case an e-mail address; ``None`` when it is not one."""
    email = raw.strip().lower()
    local, at, domain = email.partition("@")
    if not at or not local or "." not in domain or " " in email:
        return None
    return email


def normalize_phone(raw: str, region: str) -> str | None:
    """Digits-only phone number with country code; ``None`` when it is not one.

    Numbers written without a country code are read as numbers of ``region``.
    """
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return f"{number.country_code}{number.national_number}"


def hash_pii(value: str, salt: bytes) -> str:
    """Keyed hash (HMAC-SHA256, hex) of a normalized e-mail or phone."""
    return hmac.new(salt, value.encode(), hashlib.sha256).hexdigest()


def routing_key(event: Mapping[str, Any], region: str) -> bytes:
    """Message key: the strongest identifier, so one customer's events keep their order.

    E-mail and phone are keyed by an unkeyed digest, never in clear: the key only has to
    be stable, and publishers do not hold the PII salt.
    """
    for name in IDENTIFIERS:
        raw = event.get(name)
        if not isinstance(raw, str) or not raw.strip():
            continue
        if name == "email":
            value = normalize_email(raw) or raw.strip()
        elif name == "phone":
            value = normalize_phone(raw, region) or raw.strip()
        else:
            return f"{name}:{raw.strip()}".encode()
        return f"{name}#{hashlib.blake2b(value.encode(), digest_size=12).hexdigest()}".encode()
    return b""


def check(channel: str, event: Mapping[str, Any], *, strict: bool = False) -> Rejection | None:
    """Check one event of ``channel`` against the contract; ``None`` means valid.

    ``strict`` also refuses fields the contract does not name (JSON input, where an
    unknown field would otherwise be dropped silently by the Avro encoding).
    """
    spec = CHANNELS.get(channel)
    if spec is None:
        return Rejection("unknown_channel",
                         f"unknown channel {channel!r}: use one of {_names(CHANNELS)}")
    event_id = event.get("event_id")
    if not isinstance(event_id, str) or not event_id.strip():
        return Rejection("missing_field", "event_id is missing: every event needs a unique id")
    if len(event_id) > MAX_ID_LENGTH:
        return Rejection("bad_field", f"event_id is longer than {MAX_ID_LENGTH} characters")
    kind = event.get("type")
    if not isinstance(kind, str) or not kind:
        return Rejection("missing_field", "type is missing")
    if kind not in spec.types:
        return Rejection(
            "unknown_type",
            f"type {kind!r} is not a {channel} event type: use one of {_names(spec.types)}",
        )
    when = parse_occurred_at(event.get("occurred_at"))
    if isinstance(when, Rejection):
        return when
    if strict:
        unknown = [k for k in event if k not in COMMON_FIELDS and k not in spec.fields]
        if unknown:
            return Rejection(
                "unknown_field",
                f"unknown field(s) {', '.join(sorted(unknown))} for {channel}: "
                "put extra data under attributes",
            )
    return _check_fields(channel, spec, kind, event)


def _check_fields(
    channel: str, spec: Channel, kind: str, event: Mapping[str, Any]
) -> Rejection | None:
    if not any(isinstance(event.get(k), str) and event[k].strip() for k in IDENTIFIERS):
        return Rejection(
            "no_identifier",
            "no customer identifier: send at least one of customer_id, anonymous_id, email, phone",
        )
    for name in ("customer_id", "anonymous_id", "email", "phone", "campaign_id"):
        value = event.get(name)
        if value is not None and not isinstance(value, str):
            return Rejection("bad_field", f"{name} must be a string, got {type(value).__name__}")
        if isinstance(value, str) and len(value) > MAX_ID_LENGTH:
            return Rejection("bad_field", f"{name} is longer than {MAX_ID_LENGTH} characters")
    attributes = event.get("attributes")
    if attributes is not None and not (
        isinstance(attributes, Mapping)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in attributes.items())
    ):
        return Rejection("bad_field", "attributes must map strings to strings")
    for name in spec.required:
        value = event.get(name)
        if not isinstance(value, str) or not value.strip():
            return Rejection("missing_field", f"{name} is required on {channel} events")
    for name, expected in spec.fields.items():
        value = event.get(name)
        if value is None:
            continue
        problem = _check_value(name, expected, value)
        if problem:
            return Rejection("bad_field", problem)
    score_range = _SCORE_RANGE.get(kind) if channel == "feedback" else None
    if score_range is not None:
        score = event.get("score")
        low, high = score_range
        if score is None:
            return Rejection("missing_field",
                             f"score is required on {kind} feedback ({low}-{high})")
        if not low <= score <= high:
            return Rejection("bad_field",
                             f"score {score} is out of range for {kind} ({low}-{high})")
    return None


def _check_value(name: str, expected: type, value: object) -> str | None:
    if expected is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok and not math.isfinite(float(value)):  # type: ignore[arg-type]
            return f"{name} must be a finite number"
    else:
        ok = isinstance(value, expected) and not isinstance(value, bool)
    if not ok:
        return f"{name} must be {_type_word(expected)}, got {type(value).__name__}"
    if name in _NON_NEGATIVE and value < 0:  # type: ignore[operator]
        return f"{name} must not be negative, got {value}"
    allowed = _ENUMS.get(name)
    if allowed is not None and value not in allowed:
        return f"{name} {value!r} is not one of {_names(allowed)}"
    return None


def _type_word(kind: type) -> str:
    return {str: "a string", int: "an integer", float: "a number"}.get(kind, kind.__name__)


def _names(values: Mapping[str, Any] | frozenset[str]) -> str:
    return ", ".join(sorted(values))
