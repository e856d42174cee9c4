"""Avro schemas for every record we publish or read, the codec, and the event contract."""

from __future__ import annotations

from .codec import HEADER_SIZE, MARKER, PACKED_MARKER, Codec, codec_for, subjects
from .registry import Registry, SchemaVersion, default_registry

__all__ = [
    "HEADER_SIZE",
    "MARKER",
    "PACKED_MARKER",
    "Codec",
    "Registry",
    "SchemaVersion",
    "codec_for",
    "default_registry",
    "subjects",
]
