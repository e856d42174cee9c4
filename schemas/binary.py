"""Avro's binary form of one schema, read and written by a plan made once from the schema.

fastavro walks the schema for every value it reads or writes: dictionary lookups and
type-name comparisons for each field. For an inbound event that walk was about half of
ingest's work (100,000 of 210,000 instructions an event); encoding a profile took
9 to 12 µs. A :class:`Plan` is the schema turned once into a tree of small nodes, and this
module is compiled (``touchpoint/compiled.py``), so reading and writing follow the tree
in C.

A plan covers the physical types our schemas use: null, int, long, double, string, bytes,
records, arrays, maps, and unions whose branches a value's Python type tells apart.
:func:`plan_for` returns None for a schema with anything else. The codec uses a plan only
where the result is certain to be fastavro's (``schemas/codec.py``): it reads a body
written with the latest schema, and writes a record whose every value has exactly the
Python type the plan expects. Anything else raises :class:`Unfit`, and the codec does what
it did before with fastavro, whose errors name what is wrong. The tests compare both
ways value for value and byte for byte.
"""

from __future__ import annotations

import struct
from typing import Any, Final

__all__ = ["Plan", "Unfit", "plan_for", "read", "write"]

NULL: Final = 0
INT: Final = 1
LONG: Final = 2
DOUBLE: Final = 3
STRING: Final = 4
BYTES: Final = 5
RECORD: Final = 6
ARRAY: Final = 7
MAP: Final = 8
UNION: Final = 9

_PRIMITIVES: Final = {"null": NULL, "int": INT, "long": LONG, "double": DOUBLE,
                      "string": STRING, "bytes": BYTES}
_INT_MIN: Final = -(1 << 31)
_INT_MAX: Final = (1 << 31) - 1
_LONG_MIN: Final = -(1 << 63)
_LONG_MAX: Final = (1 << 63) - 1
_DOUBLE: Final = struct.Struct("<d")


class Unfit(Exception):
    """The plan cannot read these bytes or write this value as fastavro would: use fastavro."""


class Plan:
    """One node of a schema's plan: its kind and, for records, unions and containers, its parts.

    ``names`` are a record's field names; ``parts`` the fields' plans, a union's branches,
    or an array's items or a map's values (one part).
    """

    def __init__(self, kind: int, names: list[str] | None = None,
                 parts: list[Plan] | None = None) -> None:
        self.kind = kind
        self.names: list[str] = names or []
        self.parts: list[Plan] = parts or []


def plan_for(schema: Any) -> Plan | None:
    """The plan of a fastavro-parsed physical schema, or None if it uses what plans do not."""
    try:
        return _plan(schema)
    except Unfit:
        return None


def _plan(schema: Any) -> Plan:
    if isinstance(schema, str):
        kind = _PRIMITIVES.get(schema)
        if kind is None:
            raise Unfit(schema)  # boolean, float, or a named type referred to by name
        return Plan(kind)
    if isinstance(schema, list):
        parts = [_plan(branch) for branch in schema]
        kinds = [part.kind for part in parts]
        # a value's Python type must name one branch: int for int or long, dict for a
        # record or a map
        if (len(set(kinds)) != len(kinds) or (INT in kinds and LONG in kinds)
                or (RECORD in kinds and MAP in kinds) or UNION in kinds):
            raise Unfit("union")
        return Plan(UNION, parts=parts)
    if not isinstance(schema, dict):
        raise Unfit(repr(schema))
    kind_name = schema.get("type")
    if kind_name == "record" and "fields" in schema:
        fields = schema["fields"]
        return Plan(RECORD, [field["name"] for field in fields],
                    [_plan(field["type"]) for field in fields])
    if kind_name == "array":
        items = _plan(schema["items"])
        if _may_be_empty(items):
            raise Unfit("array of items that take no bytes")  # a count could not be bounded
        return Plan(ARRAY, parts=[items])
    if kind_name == "map":
        return Plan(MAP, parts=[_plan(schema["values"])])
    if isinstance(kind_name, str) and kind_name in _PRIMITIVES and len(schema) == 1:
        return Plan(_PRIMITIVES[kind_name])
    raise Unfit(str(kind_name))


def _may_be_empty(plan: Plan) -> bool:
    """Whether a value of ``plan`` can take no bytes at all."""
    if plan.kind == NULL:
        return True
    if plan.kind == RECORD:
        return all(_may_be_empty(part) for part in plan.parts)
    return False


# --- reading ------------------------------------------------------------------------------

class _Cursor:
    def __init__(self, data: bytes, pos: int) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data)

    def long(self) -> int:
        data, pos, end = self.data, self.pos, self.end
        shift = 0
        raw = 0
        while True:
            if pos >= end:
                raise Unfit("truncated")
            byte = data[pos]
            pos += 1
            raw |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
            if shift >= 70:
                raise Unfit("a varint of more than 10 bytes")
        self.pos = pos
        value = (raw >> 1) ^ -(raw & 1)
        if value < _LONG_MIN or value > _LONG_MAX:
            raise Unfit("wider than 64 bits")
        return value

    def take(self) -> bytes:
        size = self.long()
        start = self.pos
        stop = start + size
        if size < 0 or stop > self.end:
            raise Unfit("truncated")
        self.pos = stop
        return self.data[start:stop]

    def text(self) -> str:
        try:
            return self.take().decode()
        except UnicodeDecodeError as exc:
            raise Unfit("not UTF-8") from exc

    def count(self) -> int:
        """A block's item count (0 ends the array or map), past its byte size if given."""
        count = self.long()
        if count < 0:
            count = -count
            self.long()
        if count > self.end - self.pos:
            raise Unfit("more items than bytes")  # every item takes a byte at least
        return count


def read(plan: Plan, data: bytes, pos: int) -> tuple[Any, int]:
    """The value of ``plan`` in ``data`` from ``pos``, and where it ends; Unfit if unreadable."""
    cursor = _Cursor(data, pos)
    value = _read(plan, cursor)
    return value, cursor.pos


def _read(plan: Plan, cursor: _Cursor) -> Any:
    kind = plan.kind
    if kind == STRING:
        return cursor.text()
    if kind == RECORD:
        record: dict[str, Any] = {}
        names, parts = plan.names, plan.parts
        for i in range(len(names)):
            record[names[i]] = _read(parts[i], cursor)
        return record
    if kind == UNION:
        index = cursor.long()
        if index < 0 or index >= len(plan.parts):
            raise Unfit("no such branch")
        return _read(plan.parts[index], cursor)
    if kind in (LONG, INT):
        return cursor.long()
    if kind == NULL:
        return None
    if kind == DOUBLE:
        start = cursor.pos
        if start + 8 > cursor.end:
            raise Unfit("truncated")
        cursor.pos = start + 8
        value: float = _DOUBLE.unpack_from(cursor.data, start)[0]
        return value
    if kind == BYTES:
        return cursor.take()
    if kind == MAP:
        values = plan.parts[0]
        mapping: dict[str, Any] = {}
        count = cursor.count()
        while count:
            for _ in range(count):
                key = cursor.text()
                mapping[key] = _read(values, cursor)
            count = cursor.count()
        return mapping
    items = plan.parts[0]  # ARRAY
    array: list[Any] = []
    count = cursor.count()
    while count:
        for _ in range(count):
            array.append(_read(items, cursor))
        count = cursor.count()
    return array


# --- writing ------------------------------------------------------------------------------

def write(plan: Plan, value: Any) -> bytes:
    """``value`` in Avro's binary form by ``plan``; Unfit unless certain to be fastavro's bytes."""
    pieces: list[bytes] = []  # joined once: a list append is cheaper than growing bytes
    _write(plan, value, pieces)
    return b"".join(pieces)


#: The one-byte varints: zigzag values below 128
_ONE_BYTE: Final = [bytes([raw]) for raw in range(0x80)]


def _varint(value: int, pieces: list[bytes]) -> None:
    raw = (value << 1) ^ (value >> 63)  # zigzag, as a 64-bit long
    if raw < 0x80:
        pieces.append(_ONE_BYTE[raw])
        return
    packed = 0  # the varint's bytes, the first lowest, made into bytes in one call
    size = 0
    while raw >= 0x80:
        packed |= ((raw & 0x7F) | 0x80) << (8 * size)
        raw >>= 7
        size += 1
    packed |= raw << (8 * size)
    pieces.append(packed.to_bytes(size + 1, "little"))


def _text(value: str, pieces: list[bytes]) -> None:
    try:
        encoded = value.encode()
    except UnicodeEncodeError as exc:
        raise Unfit("not UTF-8") from exc
    _varint(len(encoded), pieces)
    pieces.append(encoded)


def _write(plan: Plan, value: Any, pieces: list[bytes]) -> None:
    kind = plan.kind
    if kind == STRING:
        if type(value) is not str:
            raise Unfit("not a str")
        _text(value, pieces)
    elif kind == RECORD:
        if type(value) is not dict:
            raise Unfit("not a dict")
        names, parts = plan.names, plan.parts
        for i in range(len(names)):
            name = names[i]
            if name not in value:
                raise Unfit("a field left out")  # fastavro writes its default: left to it
            _write(parts[i], value[name], pieces)
    elif kind in (LONG, INT):
        if type(value) is not int:
            raise Unfit("not an int")
        if kind == INT and (value < _INT_MIN or value > _INT_MAX):
            raise Unfit("beyond an int")
        if value < _LONG_MIN or value > _LONG_MAX:
            raise Unfit("beyond a long")
        _varint(value, pieces)
    elif kind == UNION:
        _write_branch(plan, value, pieces)
    elif kind == DOUBLE:
        if type(value) is float:
            pieces.append(_DOUBLE.pack(value))
        elif type(value) is int:
            pieces.append(_DOUBLE.pack(float(value)))  # as fastavro: float(value)
        else:
            raise Unfit("not a float")
    elif kind == NULL:
        if value is not None:
            raise Unfit("not None")
    elif kind == MAP:
        if type(value) is not dict:
            raise Unfit("not a dict")
        if value:
            _varint(len(value), pieces)
            values = plan.parts[0]
            for key, item in value.items():
                if type(key) is not str:
                    raise Unfit("a key not a str")
                _text(key, pieces)
                _write(values, item, pieces)
        pieces.append(_ONE_BYTE[0])
    elif kind == ARRAY:
        if type(value) is not list:
            raise Unfit("not a list")
        if value:
            _varint(len(value), pieces)
            items = plan.parts[0]
            for item in value:
                _write(items, item, pieces)
        pieces.append(_ONE_BYTE[0])
    else:  # BYTES
        if type(value) is not bytes:
            raise Unfit("not bytes")
        _varint(len(value), pieces)
        pieces.append(value)


def _write_branch(plan: Plan, value: Any, pieces: list[bytes]) -> None:
    """Write the first branch that takes ``value``, as fastavro picks it (by validation)."""
    parts = plan.parts
    for index in range(len(parts)):
        if _takes(parts[index].kind, value):
            _varint(index, pieces)
            _write(parts[index], value, pieces)
            return
    raise Unfit("no branch for the value")


def _takes(kind: int, value: Any) -> bool:
    """Whether fastavro's validation lets a branch of ``kind`` take ``value`` (by its type)."""
    if value is None:
        return kind == NULL
    found = type(value)
    if found is str:
        return kind == STRING
    if found is int:
        return kind in (LONG, DOUBLE) or (kind == INT and _INT_MIN <= value <= _INT_MAX)
    if found is float:
        return kind == DOUBLE
    if found is dict:
        return kind in (RECORD, MAP)
    if found is list:
        return kind == ARRAY
    if found is bytes:
        return kind == BYTES
    return False
