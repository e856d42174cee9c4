"""Write keys: who may send events to the collector, on which channels, from which origins.

A write key belongs to one source (a web shop, a call-center vendor). It is created once
by ``touchpoint keys create``, which prints the secret once; the file
(``TOUCHPOINT_COLLECT_KEYS``) keeps only its SHA-256 digest, the channels it may send and
the browser origins allowed to use it. A secret reads ``tpk_<id>_<random>``: the id finds
the entry without comparing every digest and names the key in logs and metrics, which
never see the secret. Collectors re-read the file when it changes, so a revocation
applies within :data:`RELOAD_SECONDS` without a restart.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from touchpoint.exceptions import ConfigError
from touchpoint.schemas.contract import CHANNELS

__all__ = ["RELOAD_SECONDS", "KeyFile", "WriteKey", "normalize_origin"]

log = logging.getLogger(__name__)

#: How often a collector looks at the key file's modification time.
RELOAD_SECONDS: Final = 2.0
_PREFIX: Final = "tpk_"
_SECRET: Final = re.compile(r"^tpk_([0-9a-f]{12})_[A-Za-z0-9_-]{32,64}$")
_NAME: Final = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _digest(secret: str) -> str:
    # SHA-256 without salt or stretching: the secret is 32 random bytes, not a password,
    # so there is nothing to guess and the check stays microseconds on the hot path.
    return hashlib.sha256(secret.encode()).hexdigest()


def normalize_origin(origin: str) -> str:
    """``scheme://host[:port]`` in lower case, as browsers send ``Origin``; else ConfigError."""
    parts = urlsplit(origin.strip())
    if (parts.scheme not in {"http", "https"} or not parts.hostname or parts.path not in {"", "/"}
            or parts.query or parts.fragment or parts.username or parts.password):
        raise ConfigError(f"{origin!r} is not a browser origin: write scheme://host[:port], "
                          "e.g. https://shop.example.com")
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname.lower()}{port}"


@dataclass(frozen=True, slots=True)
class WriteKey:
    """One source's write key, as stored: never the secret, only its digest."""

    key_id: str
    name: str
    digest: str
    channels: tuple[str, ...]
    origins: tuple[str, ...] = ()
    created_at: int = 0
    revoked_at: int | None = None

    @property
    def active(self) -> bool:
        """Not revoked."""
        return self.revoked_at is None

    def allows_origin(self, origin: str | None) -> bool:
        """Whether a request with this ``Origin`` header (None: not a browser) may use it."""
        return origin is None or origin.lower() in self.origins

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WriteKey:
        """A key as the file holds it."""
        return cls(key_id=data["key_id"], name=data["name"], digest=data["digest"],
                   channels=tuple(data["channels"]), origins=tuple(data.get("origins", ())),
                   created_at=int(data.get("created_at", 0)), revoked_at=data.get("revoked_at"))


class KeyFile:
    """The write-key file: created and changed by the CLI, read by every collector."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._keys: dict[str, WriteKey] = {}
        self._seen: tuple[int, int] | None = None  # (mtime_ns, size) last read
        self._checked = float("-inf")

    # --- the collector's side ------------------------------------------------------------

    def authenticate(self, secret: str | None) -> WriteKey | None:
        """The active key ``secret`` is, or ``None``; re-reads the file when it changed."""
        if not secret:
            return None
        match = _SECRET.match(secret.strip())
        if match is None:
            return None
        self.refresh()
        key = self._keys.get(match.group(1))
        if key is None or not key.active:
            return None
        return key if hmac.compare_digest(key.digest, _digest(secret.strip())) else None

    def refresh(self, *, force: bool = False) -> None:
        """Read the file again if it changed (looked at every RELOAD_SECONDS at most)."""
        now = time.monotonic()
        if not force and now - self._checked < RELOAD_SECONDS:
            return
        self._checked = now
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._keys, self._seen = {}, None
            return
        if (stat.st_mtime_ns, stat.st_size) != self._seen:
            try:
                self._keys = {key.key_id: key for key in self._read()}
            except ConfigError as exc:  # a bad edit must not lock every source out
                log.error("write keys not reloaded, the ones read before still hold: %s", exc)
            self._seen = (stat.st_mtime_ns, stat.st_size)

    def origins(self) -> frozenset[str]:
        """Every origin some active key allows (what a CORS preflight may be told yes)."""
        self.refresh()
        return frozenset(o for key in self._keys.values() if key.active for o in key.origins)

    # --- the CLI's side ------------------------------------------------------------------

    def create(self, name: str, channels: Iterable[str], origins: Iterable[str] = ()
               ) -> tuple[WriteKey, str]:
        """Add a key; returns it and its secret, which is shown once and never stored."""
        if not _NAME.match(name):
            raise ConfigError(f"key name {name!r}: use 1-64 letters, digits, _ . -")
        bound = tuple(dict.fromkeys(channels))
        unknown = [c for c in bound if c not in CHANNELS]
        if not bound or unknown:
            raise ConfigError(f"channels {unknown or 'none'}: bind the key to one or more of "
                              f"{', '.join(CHANNELS)}")
        allowed = tuple(dict.fromkeys(normalize_origin(o) for o in origins))
        with self._locked() as keys:
            key_id = secrets.token_hex(6)
            while key_id in keys:
                key_id = secrets.token_hex(6)
            secret = f"{_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
            key = WriteKey(key_id, name, _digest(secret), bound, allowed,
                           created_at=int(self._clock()))
            keys[key_id] = key
        return key, secret

    def revoke(self, key_id: str) -> WriteKey:
        """Revoke a key by id (kept in the file, marked, so the id is never reused)."""
        with self._locked() as keys:
            key = keys.get(key_id)
            if key is None:
                raise ConfigError(f"no write key {key_id!r}: `touchpoint keys list` shows them")
            if key.active:
                key = WriteKey(**{**asdict(key), "revoked_at": int(self._clock())})
                keys[key_id] = key
        return key

    def all(self) -> list[WriteKey]:
        """Every key in the file, revoked ones too, oldest first."""
        return sorted(self._read(), key=lambda k: (k.created_at, k.key_id))

    def _read(self) -> list[WriteKey]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        try:
            return [WriteKey.from_json(entry) for entry in json.loads(text)["keys"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{self.path} is not a write-key file ({exc!r}): restore it "
                              "from a backup or move it aside and create keys again") from None

    @contextmanager
    def _locked(self) -> Iterator[dict[str, WriteKey]]:
        """The keys to change, written back atomically; one CLI at a time (flock)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(f"{self.path}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            keys = {key.key_id: key for key in self._read()}
            yield keys
            data = {"keys": [{**asdict(k), "channels": list(k.channels),
                              "origins": list(k.origins)} for k in keys.values()]}
            temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}")
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh, indent=1)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(temporary, self.path)  # readers see the old file or the new, whole
