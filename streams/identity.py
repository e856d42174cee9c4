"""Who an event belongs to.

For now the customer is the CRM ``customer_id`` when the event carries one, else a
stable generated id from the strongest identifier it has. Cross-touchpoint stitching
(linking identifiers, merging customers) builds on this.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

__all__ = ["GENERATED_PREFIX", "provisional_customer_id", "strongest_identifier"]

GENERATED_PREFIX = "u-"
# Strongest first (CONTRACT §2); e-mail and phone arrive here already hashed.
_ORDER = (("customer_id", "customer_id"), ("phone_hash", "phone"), ("email_hash", "email"),
          ("anonymous_id", "anonymous_id"))


def strongest_identifier(event: Mapping[str, Any]) -> tuple[str, str]:
    """The (kind, value) of the strongest identifier of a normalized event."""
    for field, kind in _ORDER:
        value = event.get(field)
        if value:
            return kind, value
    raise ValueError(f"event {event.get('event_id')!r} has no identifier")


def provisional_customer_id(event: Mapping[str, Any]) -> str:
    """The CRM id, or a stable generated id (``u-`` + 20 hex) from the strongest identifier."""
    kind, value = strongest_identifier(event)
    if kind == "customer_id":
        return str(value)
    digest = hashlib.blake2b(f"{kind}:{value}".encode(), digest_size=10).hexdigest()
    return GENERATED_PREFIX + digest
