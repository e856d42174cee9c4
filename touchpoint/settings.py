"""Settings: one frozen object built once at start from ``TOUCHPOINT_*`` variables.

Every setting is declared once in ``SETTINGS`` with its variable, default and help;
the README's configuration table is generated from that list
(``touchpoint settings --markdown``) and a unit test keeps the two equal.
Nothing here reads the environment at import time.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from touchpoint.exceptions import ConfigError

__all__ = ["SETTINGS", "Setting", "Settings", "WarehouseURL", "load_settings", "settings_markdown"]


@dataclass(frozen=True)
class Setting:
    """One configurable value: its attribute name, variable, default and help."""

    name: str
    default: str
    help: str
    parse: Callable[[str], Any] = str

    @property
    def env(self) -> str:
        """The environment variable that sets it."""
        return "TOUCHPOINT_" + self.name.upper()


def _int(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError("must be a whole number") from None


def _positive_int(raw: str) -> int:
    value = _int(raw)
    if value < 1:
        raise ValueError("must be 1 or more")
    return value


def _non_negative_int(raw: str) -> int:
    value = _int(raw)
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def _positive_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("must be a number of seconds, e.g. 1.5") from None
    if value <= 0:
        raise ValueError("must be more than 0")
    return value


def _port(raw: str) -> int:
    value = _int(raw)
    if not 1 <= value <= 65535:
        raise ValueError("must be a TCP port (1-65535)")
    return value


def _share(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("must be a share between 0 and 1, e.g. 0.04") from None
    if not 0 < value < 1:
        raise ValueError("must be a share between 0 and 1, e.g. 0.04")
    return value


def _session_timeout(raw: str) -> float:
    value = _positive_float(raw)
    # the broker refuses less than group.min.session.timeout.ms (6 s by default), and
    # Faust more than its request timeout (90 s)
    if not 6 <= value <= 90:
        raise ValueError("must be between 6 and 90 seconds")
    return value


def _fetch_wait(raw: str) -> int:
    value = _non_negative_int(raw)
    if value > 500:  # every hop could add this much; more is surely a mistake
        raise ValueError("must be between 0 and 500 milliseconds")
    return value


def _rocksdb_memory(raw: str) -> int:
    value = _positive_int(raw)
    if value < 16:  # below this RocksDB flushes a memtable every few writes
        raise ValueError("must be at least 16 (MiB)")
    return value


def _log_level(raw: str) -> str:
    value = raw.strip().lower()
    if value not in {"debug", "info", "warning", "error"}:
        raise ValueError("must be one of debug, info, warning, error")
    return value


def _attribution_model(raw: str) -> str:
    value = raw.strip().lower()
    if value not in {"last_touch", "first_touch", "linear"}:
        raise ValueError("must be one of last_touch, first_touch, linear")
    return value


#: The value of a secret setting that means "the one kept in a file under `$HOME`".
LOCAL: Final = "local"
#: Secrets shorter than this are refused: they are guessable, or a mistake.
MIN_SECRET_LENGTH: Final = 16
_TOKEN_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _pii_salt(raw: str) -> str:
    value = raw.strip()
    if value == LOCAL:
        return value
    if not value:
        raise ValueError("is empty: set a secret of at least 16 characters, or `local` for "
                         "the salt kept in $HOME/pii_salt")
    if len(value) < MIN_SECRET_LENGTH:
        raise ValueError(f"is shorter than {MIN_SECRET_LENGTH} characters: a short salt can be "
                         "guessed, and with it every stored e-mail and phone hash")
    return value


def _host_list(raw: str) -> tuple[str, ...]:
    hosts = tuple(h.strip().lower() for h in raw.split(",") if h.strip())
    for host in hosts:
        if not re.fullmatch(r"[a-z0-9.\-\[\]:]+", host):
            raise ValueError(f"{host!r} is not a host name or address")
    return hosts


def _api_tokens(raw: str) -> Mapping[str, str] | str:
    value = raw.strip()
    if value == LOCAL:
        return value
    if not value:
        raise ValueError("is empty: give name=token pairs, or `local` for the token kept in "
                         "$HOME/api_token")
    tokens: dict[str, str] = {}
    for pair in value.split(","):
        name, eq, token = (p.strip() for p in pair.partition("="))
        if not eq or not _TOKEN_NAME.match(name):
            raise ValueError("must be name=token pairs, comma-separated (names: letters, "
                             "digits, _ . -)")
        if name in tokens:
            raise ValueError(f"names the token {name!r} twice")
        if len(token) < MIN_SECRET_LENGTH or any(c.isspace() for c in token):
            raise ValueError(f"token {name!r} must be at least {MIN_SECRET_LENGTH} characters, "
                             "without spaces (e.g. `python -c 'import secrets; "
                             "print(secrets.token_urlsafe())'`)")
        tokens[name] = token
    if len(set(tokens.values())) != len(tokens):
        raise ValueError("gives two names the same token: one token, one name")
    return MappingProxyType(tokens)


def _optional_warehouse_url(raw: str) -> str:
    value = raw.strip()
    if value:
        try:
            WarehouseURL.parse(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
    return value


SETTINGS: tuple[Setting, ...] = (
    Setting("home", ".touchpoint",
            "Local folder for service data, logs, worker state and the embedded warehouse."),
    Setting("kafka_bootstrap", "127.0.0.1:9092", "Kafka bootstrap servers, comma-separated."),
    Setting("topic_prefix", "", "Prefix for every topic name (e.g. `prod.`)."),
    Setting("topic_partitions", "6", "Partitions for topics the pipeline creates.", _positive_int),
    Setting("topic_replication", "1", "Replication factor for topics the pipeline creates.",
            _positive_int),
    Setting("clickhouse_url", "",
            "Warehouse: `clickhouse://host:9000/touchpoint` (server, native protocol) or "
            "`chdb:///path/to/dir` (embedded). Empty means embedded chdb in `$HOME/chdb`."),
    Setting("pii_salt", LOCAL,
            "Secret salt for hashing e-mail and phone, at least 16 characters. `local`: a "
            "random salt created once in `$HOME/pii_salt` (fine on one machine; set the same "
            "secret on every worker when they run on several).", _pii_salt),
    Setting("phone_region", "CN",
            "Region assumed for phone numbers written without a country code (ISO 3166 code)."),
    Setting("app_id", "touchpoint", "Faust application id: the consumer group of the workers, "
            "and the name of its own topic (`<app_id>-resolved`) and table changelogs."),
    Setting("web_host", "127.0.0.1", "Address the worker's web server binds to."),
    Setting("web_port", "6066", "Port of the worker's web server (one per worker).", _port),
    Setting("web_allowed_hosts", "",
            "Further host names the worker's web server answers to, comma-separated (it "
            "always answers to `web_host`, `localhost` and `127.0.0.1`). A request naming any "
            "other `Host` is refused, which stops DNS-rebinding pages.", _host_list),
    Setting("api_tokens", LOCAL,
            "Who may use the worker's HTTP API (customer data, signals, SQL): `name=token` "
            "pairs, comma-separated, each token at least 16 characters; remove a pair to "
            "revoke it. `local`: one token named `local`, created once in `$HOME/api_token`.",
            _api_tokens),
    Setting("api_token", LOCAL,
            "The token `touchpoint` commands send to a worker (`query`, `customer`, `demo`). "
            "`local`: the one in `$HOME/api_token`."),
    Setting("query_timeout_seconds", "10",
            "Longest a SQL query over HTTP (`/warehouse/query`, `touchpoint query` against "
            "the embedded warehouse) may run before the warehouse stops it.", _positive_float),
    Setting("query_max_rows", "10000",
            "Most rows a SQL query over HTTP may return; more is an error, not a cut-off "
            "answer.", _positive_int),
    Setting("clickhouse_query_url", "",
            "Warehouse URL of a read-only ClickHouse user for SQL over HTTP (server backend), "
            "e.g. `clickhouse://reader@host:9000/touchpoint`. Empty: the main connection, "
            "each query run with `readonly=1`.", _optional_warehouse_url),
    Setting("session_timeout_seconds", "10",
            "How long the consumer group waits for a worker that stopped answering "
            "(killed, hung, cut off) before its partitions go to the others, or to its "
            "own restart. Workers heartbeat every 3 s.", _session_timeout),
    Setting("standby_replicas", "1",
            "Copies of each table partition a worker keeps up to date for another worker "
            "that owns it, so it can take the partition over at once when that worker "
            "goes. Each copy costs every worker about as much reading as the owner spends "
            "writing: 0 saves about a quarter of the CPU in a group of two, and a "
            "partition that moves is then rebuilt from its changelog first.",
            _non_negative_int),
    Setting("fetch_wait_ms", "20",
            "How long the broker may hold a worker's fetch to gather a batch (up to 64 KiB) "
            "before answering. Fewer, larger batches leave the worker CPU for the stages "
            "under load; when traffic is light each of the three hops to a profile waits "
            "up to this long. 0: answer at once with what there is.", _fetch_wait),
    Setting("rocksdb_memory_mb", "128",
            "Memory all of a worker's RocksDB databases (its tables and its copy of the "
            "identity graph) share, in MiB: half read cache, half write buffers. A worker "
            "holding more customers needs no more than this; more makes reads of rarely "
            "seen customers cheaper.", _rocksdb_memory),
    Setting("sink_batch_size", "5000", "Rows per warehouse insert, at most.", _positive_int),
    Setting("sink_flush_seconds", "1.0", "Longest wait before a partial batch is written.",
            _positive_float),
    Setting("sink_max_backoff_seconds", "30",
            "Longest pause between retries while the warehouse is unreachable.", _positive_float),
    Setting("profile_emit_seconds", "2.0",
            "Longest a changed profile waits before it is published (per customer, at most "
            "one update per interval).", _positive_float),
    Setting("key_tier_share", "0.04",
            "Share of spending customers in the `key` value tier (top by 12-month spend).",
            _share),
    Setting("growth_tier_share", "0.16", "Share of spending customers in the `growth` tier.",
            _share),
    Setting("at_risk_days", "90", "Days without a purchase before a customer is `at_risk`.",
            _positive_int),
    Setting("lapsed_days", "180", "Days without a purchase before a customer is `lapsed`.",
            _positive_int),
    Setting("signal_rules", "",
            "Complaint-signal rules (TOML: every threshold, weight and window). Empty: the "
            "packaged `streams/rules/complaints.toml`; copy it and point here to change them."),
    Setting("signal_lateness_seconds", "60",
            "How far event time must have passed a signal's deadline (breach, abandoned "
            "checkout) before it is concluded, so late events of other customers can "
            "still arrive.", _non_negative_int),
    Setting("aggregate_grace_seconds", "120",
            "Grace period of the per-minute aggregates: a minute is final once events "
            "this much later (event time) have arrived; events of a final minute count "
            "as late (`touchpoint_minute_late`).", _non_negative_int),
    Setting("attribution_window_days", "7",
            "Campaign attribution window: days after an exposure in which the customer's "
            "touchpoints and purchases are credited to it.", _positive_int),
    Setting("attribution_model", "last_touch",
            "Campaign attribution model: `last_touch`, `first_touch` or `linear` "
            "(streams/rules/attribution.py).", _attribution_model),
    Setting("collect_host", "127.0.0.1",
            "Address `touchpoint collect` (the HTTP collector) binds to; `0.0.0.0` behind a "
            "load balancer."),
    Setting("collect_port", "6070", "Port of `touchpoint collect`.", _port),
    Setting("collect_keys", "",
            "File of the collector's write keys (hashed; `touchpoint keys` manages it). "
            "Empty: `$HOME/collect_keys.json`. Every collector behind one load balancer "
            "reads the same file (shared or copied); changes apply within 2 s."),
    Setting("collect_rate_per_key", "2000",
            "Events a second one write key may send to one collector process (a batch of "
            "up to 500 may come at once); more gets 429 with `Retry-After`.", _positive_int),
    Setting("log_level", "info", "Log level: debug, info, warning or error.", _log_level),
)


@dataclass(frozen=True)
class WarehouseURL:
    """Where the warehouse is: an embedded chdb folder or a ClickHouse server."""

    backend: str  # "chdb" or "clickhouse"
    database: str
    path: Path | None = None
    host: str = "127.0.0.1"
    port: int = 9000
    user: str = "default"
    password: str = ""
    options: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, url: str) -> WarehouseURL:
        """Parse ``chdb:///dir?database=db`` or ``clickhouse://user:pw@host:port/db``."""
        parts = urlsplit(url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if parts.scheme == "chdb":
            if not parts.path:
                raise ConfigError(f"chdb URL {url!r} has no folder: write chdb:///path/to/dir")
            database = query.pop("database", "touchpoint")
            return cls("chdb", database, path=Path(parts.path), options=query)
        if parts.scheme in {"clickhouse", "clickhouse+native"}:
            database = parts.path.strip("/") or "touchpoint"
            return cls(
                "clickhouse", database, host=parts.hostname or "127.0.0.1",
                port=parts.port or 9000, user=parts.username or "default",
                password=parts.password or "", options=query,
            )
        raise ConfigError(
            f"unknown warehouse URL {url!r}: use clickhouse://host:9000/touchpoint "
            "or chdb:///path/to/dir"
        )

    def __str__(self) -> str:
        if self.backend == "chdb":
            return f"chdb://{self.path}?database={self.database}"
        return f"clickhouse://{self.user}@{self.host}:{self.port}/{self.database}"


@dataclass(frozen=True)
class Settings:
    """Validated settings. Build with :func:`load_settings`."""

    home: Path
    kafka_bootstrap: str
    topic_prefix: str
    topic_partitions: int
    topic_replication: int
    clickhouse_url: str
    pii_salt: str
    phone_region: str
    app_id: str
    web_host: str
    web_port: int
    web_allowed_hosts: tuple[str, ...]
    api_tokens: Mapping[str, str]
    api_token: str
    query_timeout_seconds: float
    query_max_rows: int
    clickhouse_query_url: str
    session_timeout_seconds: float
    standby_replicas: int
    fetch_wait_ms: int
    rocksdb_memory_mb: int
    sink_batch_size: int
    sink_flush_seconds: float
    sink_max_backoff_seconds: float
    profile_emit_seconds: float
    key_tier_share: float
    growth_tier_share: float
    at_risk_days: int
    lapsed_days: int
    signal_rules: str
    signal_lateness_seconds: int
    aggregate_grace_seconds: int
    attribution_window_days: int
    attribution_model: str
    collect_host: str
    collect_port: int
    collect_keys: str
    collect_rate_per_key: int
    log_level: str

    @property
    def warehouse(self) -> WarehouseURL:
        """The parsed warehouse URL."""
        return WarehouseURL.parse(self.clickhouse_url)

    @property
    def collect_keys_path(self) -> Path:
        """The collector's write-key file."""
        return Path(self.collect_keys).expanduser() if self.collect_keys else (
            self.home / "collect_keys.json")

    @property
    def kafka_servers(self) -> list[str]:
        """Bootstrap servers as a list."""
        return [s.strip() for s in self.kafka_bootstrap.split(",") if s.strip()]

    def replace(self, **changes: Any) -> Settings:
        """Return a copy with some values changed (used by tests and the CLI)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return Settings(**values)


def load_settings(
    environ: Mapping[str, str] | None = None, *, create_secrets: bool = True,
    **overrides: Any
) -> Settings:
    """Build settings from ``environ`` (default: the process environment) and overrides.

    Secrets set to ``local`` are read from their files under ``home``, which are made the
    first time. With ``create_secrets=False`` nothing is read or made: such a secret keeps
    the value ``local`` (``api_tokens``: ``{"local": "local"}``), for showing the settings
    only, never for hashing or checking tokens.

    Raises :class:`ConfigError` naming the variable and the fix when a value is invalid.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        if setting.name in overrides:
            values[setting.name] = overrides[setting.name]
            continue
        raw = env.get(setting.env, setting.default)
        try:
            values[setting.name] = setting.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{setting.env}={raw!r} is invalid: {exc}") from None
    home = Path(values["home"]).expanduser().resolve()
    values["home"] = home
    if not values["clickhouse_url"]:
        values["clickhouse_url"] = f"chdb://{home / 'chdb'}"
    WarehouseURL.parse(values["clickhouse_url"])  # fail early on a bad URL
    if not create_secrets:
        if values["api_tokens"] == LOCAL:
            values["api_tokens"] = MappingProxyType({LOCAL: LOCAL})
        return Settings(**values)
    if values["pii_salt"] == LOCAL:
        values["pii_salt"] = _local_secret(home / "pii_salt", "TOUCHPOINT_PII_SALT")
    if values["api_tokens"] == LOCAL or values["api_token"] == LOCAL:
        local = _local_secret(home / "api_token", "TOUCHPOINT_API_TOKENS")
        if values["api_tokens"] == LOCAL:
            values["api_tokens"] = MappingProxyType({LOCAL: local})
        if values["api_token"] == LOCAL:
            values["api_token"] = local
    return Settings(**values)


def _local_secret(path: Path, variable: str) -> str:
    """Read, or create once, a machine-local secret (PII salt, API token) at ``path``.

    A file that exists but holds no usable secret is an error, never a weak key: an
    empty salt would hash every e-mail and phone with the key ``''``.
    """
    try:
        secret = path.read_text().strip()
    except FileNotFoundError:
        secret = None
    if secret is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_urlsafe(32)
        try:
            # "x": two processes racing keep the first secret; 0600 from the start
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return _local_secret(path, variable)
        with os.fdopen(fd, "w") as fh:
            fh.write(secret + "\n")
        return secret
    if len(secret) < MIN_SECRET_LENGTH:
        raise ConfigError(
            f"{path} holds {'no secret' if not secret else 'a secret shorter than 16 characters'}"
            f": delete the file to have a new one made (for the PII salt that changes every "
            f"hash from then on), or set {variable}")
    return secret


def settings_markdown() -> str:
    """The configuration table for the README, made from ``SETTINGS``."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for s in SETTINGS:
        default = f"`{s.default}`" if s.default else "(empty)"
        lines.append(f"| `{s.env}` | {default} | {s.help} |")
    return "\n".join(lines)
