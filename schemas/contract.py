"""The public event contract (docs/contract.md) as data, and the rules that check it.

One place defines, per channel, the event types, their touchpoint category and 4S
journey stage, and the further fields with their types, and next to them the limits:
the range of every numeric field, the longest text, the largest record, the deepest
JSON. Publishing (``touchpoint publish``) and ingest both check events here, with the
same :func:`check_size` and :func:`check`, so a channel system gets the same answer
before and after Kafka.

Checks return a :class:`Rejection` (a machine code and a sentence a person can act on)
instead of raising: on the hot path a bad record is data, not an exception. A reason
never repeats more than ~80 characters of what it was given.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Final

import phonenumbers

__all__ = [
    "CHANNELS",
    "COMMON_FIELDS",
    "IDENTIFIERS",
    "MAX_AMOUNT",
    "MAX_ATTRIBUTES",
    "MAX_ATTRIBUTE_KEY",
    "MAX_ATTRIBUTE_VALUE",
    "MAX_ID_LENGTH",
    "MAX_JSON_DEPTH",
    "MAX_JSON_LINE_BYTES",
    "MAX_RECORD_BYTES",
    "RANGES",
    "TEXT_LIMITS",
    "Channel",
    "Range",
    "Rejection",
    "TouchpointKind",
    "check",
    "check_size",
    "hash_pii",
    "normalize_email",
    "normalize_phone",
    "parse_json",
    "parse_json_event",
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
# The scale of each rated feedback type; a complaint's score has no scale, only RANGES.
_SCORE_RANGE: Final = MappingProxyType({"csat": (1, 5), "nps": (0, 10), "review": (1, 5)})
# 2000-01-01 .. 2100-01-01 in epoch ms: outside this an integer is a unit mistake
# (seconds or microseconds), not a date.
_MIN_MS: Final = 946_684_800_000
_MAX_MS: Final = 4_102_444_800_000

# --- Limits (docs/contract.md, "Limits") -------------------------------------------------------
# Every value an event may carry fits where it is stored: Avro on the topics, ClickHouse
# columns in the warehouse (sinks/migrations/0001_touchpoint_events.sql). Past a limit an
# event is refused whole, never cut or wrapped around: a silently changed value is worse
# than a dead letter that says what to fix.

_INT16: Final = (-(2**15), 2**15 - 1)
_INT32: Final = (-(2**31), 2**31 - 1)
MAX_AMOUNT: Final = 1_000_000_000_000
"""Largest ``amount`` (any currency): above it a value is a unit or parsing mistake."""


@dataclass(frozen=True, slots=True)
class Range:
    """Lowest and highest value of a numeric field, and where the bounds come from."""

    low: int
    high: int
    source: str


# The one range table, per numeric field of every channel (a field name means the same
# column in every channel). Bounds: the warehouse column narrowed by the Avro type (an
# Avro ``int`` is 32-bit, whatever a varint on the wire can carry) and by sense: counts
# and durations are not negative, and returns are the store ``return`` type, so an
# ``amount`` is not negative either.
RANGES: Final[Mapping[str, Range]] = MappingProxyType({
    "dwell_ms": Range(0, _INT32[1], "Avro int; warehouse Int64"),
    "queue_wait_s": Range(0, _INT32[1], "Avro int; warehouse Int32"),
    "talk_s": Range(0, _INT32[1], "Avro int; warehouse Int32"),
    "items": Range(0, _INT32[1], "Avro int; warehouse Int32"),
    "transfers": Range(0, _INT16[1], "warehouse Int16"),
    "score": Range(*_INT16, "warehouse Int16"),
    "amount": Range(0, MAX_AMOUNT, "Avro double; warehouse Float64"),
})

MAX_ID_LENGTH: Final = 256
"""Longest ``event_id``, identifier or code (every string field not in TEXT_LIMITS)."""
TEXT_LIMITS: Final[Mapping[str, int]] = MappingProxyType({
    "notes": 10_000, "comment": 10_000, "url": 4_096, "referrer": 4_096,
})
"""Longest free text, in characters (code points), per field."""
MAX_ATTRIBUTES: Final = 64
"""Most keys in ``attributes``."""
MAX_ATTRIBUTE_KEY: Final = 128
"""Longest ``attributes`` key, in characters."""
MAX_ATTRIBUTE_VALUE: Final = 1_024
"""Longest ``attributes`` value, in characters."""
MAX_RECORD_BYTES: Final = 64 * 1024
"""Largest inbound record, in encoded bytes (single-object header included).

Ten times the largest event the field limits are meant for (a 10,000-character Chinese
note is ~30 KB in UTF-8), and small enough that an ingest batch of 1,000 records holds at
most 64 MiB, where Kafka's 1 MB default would allow a gigabyte.
"""
MAX_JSON_DEPTH: Final = 32
"""Deepest nesting of arrays and objects in a line of the JSON form (an event needs 2)."""
MAX_JSON_LINE_BYTES: Final = 1024 * 1024
"""Longest line of the JSON form, in bytes: 16 times MAX_RECORD_BYTES, room for escapes."""
_SHOWN: Final = 80  # most characters of a received value a reason repeats


def parse_occurred_at(value: object) -> int | Rejection:
    """Return the event time as epoch milliseconds, or why it cannot be read."""
    if isinstance(value, bool):
        return Rejection("bad_timestamp", "occurred_at is a boolean: send ISO-8601 or epoch ms")
    if isinstance(value, int):
        if not _MIN_MS <= value < _MAX_MS:
            return Rejection(
                "bad_timestamp",
                f"occurred_at={_show(value)} is not epoch milliseconds between 2000 and 2100 "
                "(seconds or microseconds sent by mistake?)",
            )
        return value
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            return Rejection(
                "bad_timestamp",
                f"occurred_at={_show(value)} is not ISO-8601 (e.g. 2026-11-22T10:15:00+08:00)",
            )
        if parsed.tzinfo is None:
            return Rejection(
                "bad_timestamp",
                f"occurred_at={_show(value)} has no UTC offset: add one, e.g. +08:00 or Z",
            )
        millis = round(parsed.timestamp() * 1000)
        if not _MIN_MS <= millis < _MAX_MS:
            return Rejection("bad_timestamp",
                             f"occurred_at={_show(value)} is before 2000 or after 2100")
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
    # longer is never a phone (phonenumbers refuses 250+ too), and never fills the cache
    return None if len(raw) > MAX_ID_LENGTH else _phone_digits(raw, region)


@lru_cache(maxsize=16_384)
def _phone_digits(raw: str, region: str) -> str | None:
    # Cached: parsing takes ~16 µs, and ingest asks twice per event (the contract check,
    # then the hash), as every event of a customer asks again.
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


def check_size(size: int) -> Rejection | None:
    """Check the encoded size of one inbound record, in bytes; ``None`` means it fits.

    Ingest checks the raw value before decoding it, the publisher the value it encoded:
    the same bytes get the same answer.
    """
    if size > MAX_RECORD_BYTES:
        return Rejection(
            "too_large",
            f"record is {size:,} bytes, more than the {MAX_RECORD_BYTES:,} an event may take: "
            f"shorten its free text (notes and comment up to {TEXT_LIMITS['notes']:,} "
            "characters) or attributes, and keep documents and transcripts in your system",
        )
    return None


def check(channel: str, event: Mapping[str, Any], *, region: str,
          strict: bool = False) -> Rejection | None:
    """Check one event of ``channel`` against the contract; ``None`` means valid.

    ``region`` is the phone region (``TOUCHPOINT_PHONE_REGION``) numbers without a
    country code are read in: e-mail and phone must be ones ingest can normalize.
    ``strict`` also refuses fields the contract does not name (JSON input, where an
    unknown field would otherwise be dropped silently by the Avro encoding). The size of
    the encoded record is :func:`check_size`'s, checked first by both paths.
    """
    spec = CHANNELS.get(channel)
    if spec is None:
        return Rejection("unknown_channel",
                         f"unknown channel {_show(channel)}: use one of {_names(CHANNELS)}")
    if not isinstance(event, Mapping):
        return Rejection("bad_event", "an event must be a mapping of field names to values "
                                      f"(a JSON object), not {type(event).__name__}")
    # read as a dict: the compiled checks then look fields up directly, not through a
    # method call each (decoded and JSON events are dicts already)
    fields: dict[str, Any] = event if isinstance(event, dict) else dict(event)
    event_id = fields.get("event_id")
    if not isinstance(event_id, str) or not event_id.strip():
        return Rejection("missing_field", "event_id is missing: every event needs a unique id")
    if len(event_id) > MAX_ID_LENGTH:
        return _too_long("event_id", event_id, MAX_ID_LENGTH)
    kind = fields.get("type")
    if not isinstance(kind, str) or not kind:
        return Rejection("missing_field", "type is missing")
    if kind not in spec.types:
        return Rejection(
            "unknown_type",
            f"type {_show(kind)} is not a {channel} event type: use one of {_names(spec.types)}",
        )
    when = parse_occurred_at(fields.get("occurred_at"))
    if isinstance(when, Rejection):
        return when
    if strict:
        unknown = sorted(str(k) for k in fields if k not in COMMON_FIELDS and k not in spec.fields)
        if unknown:
            return Rejection(
                "unknown_field",
                f"unknown field(s) {_clip(', '.join(unknown))} for {channel}: "
                "put extra data under attributes",
            )
    return _check_fields(channel, spec, kind, fields, region)


def _check_fields(channel: str, spec: Channel, kind: str, event: dict[str, Any],
                  region: str) -> Rejection | None:
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
            return _too_long(name, value, MAX_ID_LENGTH)
    # Ingest normalizes these to hash them; one that cannot be normalized is refused here,
    # so the publisher refuses what ingest would. Neither is ever repeated in a reason.
    if event.get("email") and normalize_email(event["email"]) is None:
        return Rejection("bad_field", "email is not an e-mail address (name@domain)")
    if event.get("phone") and normalize_phone(event["phone"], region) is None:
        return Rejection(
            "bad_field",
            f"phone is not a phone number (numbers without a country code are read as "
            f"{region}; set TOUCHPOINT_PHONE_REGION)",
        )
    problem = _check_attributes(event.get("attributes"))
    if problem is not None:
        return problem
    for name in spec.required:
        value = event.get(name)
        if not isinstance(value, str) or not value.strip():
            return Rejection("missing_field", f"{name} is required on {channel} events")
    for name, expected in spec.fields.items():
        value = event.get(name)
        if value is None:
            continue
        problem = _check_value(name, expected, value)
        if problem is not None:
            return problem
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


def _check_attributes(attributes: object) -> Rejection | None:
    if attributes is None:
        return None
    if not (isinstance(attributes, Mapping)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in attributes.items())):
        return Rejection("bad_field", "attributes must map strings to strings")
    if len(attributes) > MAX_ATTRIBUTES:
        return Rejection("too_long", f"attributes has {len(attributes):,} keys, more than "
                                     f"{MAX_ATTRIBUTES}: keep the ones reports need")
    for key, value in attributes.items():
        if len(key) > MAX_ATTRIBUTE_KEY:
            return _too_long("an attributes key", key, MAX_ATTRIBUTE_KEY)
        if len(value) > MAX_ATTRIBUTE_VALUE:
            return _too_long(f"attributes[{_show(key)}]", value, MAX_ATTRIBUTE_VALUE)
    return None


def _check_value(name: str, expected: type, value: object) -> Rejection | None:
    if expected is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if isinstance(value, float) and not math.isfinite(value):
            return Rejection("bad_field", f"{name} must be a finite number")
    else:
        ok = isinstance(value, expected) and not isinstance(value, bool)
    if not ok:
        return Rejection("bad_field",
                         f"{name} must be {_type_word(expected)}, got {type(value).__name__}")
    bounds = RANGES.get(name)
    if bounds is not None and not bounds.low <= value <= bounds.high:  # type: ignore[operator]
        if bounds.low == 0 and value < 0:  # type: ignore[operator]
            return Rejection("out_of_range", f"{name} must not be negative, got {_show(value)}")
        return Rejection(
            "out_of_range",
            f"{name}={_show(value)} is out of range: {bounds.low:,} to {bounds.high:,} "
            f"({bounds.source}); check the value and its unit",
        )
    if isinstance(value, str):
        limit = TEXT_LIMITS.get(name, MAX_ID_LENGTH)
        if len(value) > limit:
            return _too_long(name, value, limit)
    allowed = _ENUMS.get(name)
    if allowed is not None and value not in allowed:
        return Rejection("bad_field", f"{name} {_show(value)} is not one of {_names(allowed)}")
    return None


def _too_long(name: str, value: str, limit: int) -> Rejection:
    return Rejection("too_long", f"{name} is {len(value):,} characters, more than {limit:,}: "
                                 "shorten it (events are refused whole, never cut)")


def _show(value: object) -> str:
    """A received value for a reason: ``repr`` of text, at most ~80 characters of it."""
    if isinstance(value, str):
        shown = repr(value[:_SHOWN])
        return shown if len(value) <= _SHOWN else shown + "..."
    if isinstance(value, int) and value.bit_length() > 64:
        # str() of a huge int is slow, and refused past 4,300 digits (a ValueError).
        return f"<an integer of {value.bit_length():,} bits>"
    return _clip(str(value))


def _clip(text: str) -> str:
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _type_word(kind: type) -> str:
    return {str: "a string", int: "an integer", float: "a number"}.get(kind, kind.__name__)


def _names(values: Mapping[str, Any] | frozenset[str]) -> str:
    return ", ".join(sorted(values))


# --- the JSON form ------------------------------------------------------------------------------

# A string (escapes and all) or one bracket: strings are skipped, so brackets in text
# do not count as nesting.
_JSON_TOKENS: Final = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


def parse_json_event(line: str | bytes) -> dict[str, Any] | Rejection:
    """Read one line of the JSON form (JSON Lines, UTF-8) into an event, or say why not.

    Refuses, before parsing, a line longer than MAX_JSON_LINE_BYTES or nested deeper
    than MAX_JSON_DEPTH, so no line can exhaust memory or the parser's recursion.
    """
    event = parse_json(line, max_bytes=MAX_JSON_LINE_BYTES, what="line")
    if isinstance(event, Rejection):
        return event
    if not isinstance(event, dict):
        return Rejection("bad_json", "a line must be one JSON object")
    return event


def parse_json(data: str | bytes, *, max_bytes: int, what: str = "body") -> Any:
    """Read one JSON document of at most ``max_bytes`` (UTF-8), or a :class:`Rejection`.

    The JSON form's reader (:func:`parse_json_event`, the collector's request bodies):
    refuses, before parsing, a document over ``max_bytes`` or nested deeper than
    MAX_JSON_DEPTH, so none can exhaust memory or the parser's recursion. ``what`` names
    the document in reasons ("line", "body").
    """
    if isinstance(data, bytes):
        if len(data) > max_bytes:
            return _too_large(what, len(data), max_bytes)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            return Rejection("bad_json", f"{what} is not UTF-8 (byte 0x{data[exc.start]:02x} at "
                                         f"position {exc.start}): "
                                         + ("save the file as UTF-8" if what == "line"
                                            else "send UTF-8"))
    else:
        text = data
        if len(text) > max_bytes:  # characters: at least as many bytes
            return _too_large(what, len(text), max_bytes)
    text = text.strip().removeprefix("\ufeff")  # a byte-order mark some editors write
    if _deeper_than(text, MAX_JSON_DEPTH):
        return Rejection("too_deep", f"{what} nests arrays or objects more than "
                                     f"{MAX_JSON_DEPTH} deep: an event is one object of "
                                     "fields, attributes one object inside it")
    try:
        return json.loads(text)
    except ValueError as exc:  # JSONDecodeError, or a number of more than 4,300 digits
        if isinstance(exc, json.JSONDecodeError):
            return Rejection("bad_json", f"not JSON: {exc.msg} at column {exc.colno}")
        return Rejection("bad_json", f"not JSON we can read: {_clip(str(exc))}")


def _deeper_than(text: str, limit: int) -> bool:
    if text.count("[") + text.count("{") <= limit:  # the usual case, at C speed
        return False
    depth = 0
    for match in _JSON_TOKENS.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth > limit:
                return True
        elif token in ("]", "}"):
            depth -= 1
    return False


def _too_large(what: str, size: int, limit: int) -> Rejection:
    return Rejection("too_large", f"{what} is {size:,} bytes or more, over the {limit:,} a "
                                  f"JSON event {what} may take (and {MAX_RECORD_BYTES:,} "
                                  "once encoded): shorten it")
