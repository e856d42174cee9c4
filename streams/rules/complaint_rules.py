"""Complaint detection's rules: every threshold, weight and window, read from one TOML file.

:class:`Rules` is what ``complaints.py`` detects with; :meth:`Rules.load` reads
``complaints.toml`` (or the file ``TOUCHPOINT_SIGNAL_RULES`` names) and checks every key,
so a typo or a bad value stops the worker at start with the file and key named. The
loader reads each field's type from its class, so these classes stay plain Python while
``complaints.py`` is compiled (setup.py): a compiled class keeps no type arguments.
"""

from __future__ import annotations

import importlib.resources
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

from touchpoint.exceptions import ConfigError

__all__ = ["DEFAULT_RULES", "PREDICTED_REASON", "SEVERITIES", "Rules"]

# by package, not __file__: a compiled module's __file__ is not beside its source
DEFAULT_RULES = Path(str(importlib.resources.files("touchpoint.streams.rules")
                         .joinpath("complaints.toml")))
SEVERITIES = ("watch", "high", "critical")
#: reason code of each predicted outcome of a contact's text
PREDICTED_REASON = {"complaint": "formal_complaint", "cancel": "cancel_request"}


@dataclass(frozen=True)
class ScoreRules:
    """``[score]``: decay and the per-event cap."""

    half_life_hours: float
    max_event_points: float
    forget_after_hours: float


@dataclass(frozen=True)
class SeverityRules:
    """``[severity]``: score thresholds of watch, high and critical."""

    watch: float
    high: float
    critical: float

    def level(self, score: float) -> str | None:
        """The severity a score reaches, or ``None`` below watch."""
        if score >= self.critical:
            return "critical"
        if score >= self.high:
            return "high"
        return "watch" if score >= self.watch else None

    def threshold(self, severity: str) -> float:
        """The score at which ``severity`` starts."""
        return float(getattr(self, severity))


@dataclass(frozen=True)
class RepeatRules:
    """``[repeat_contact]``."""

    window_hours: float
    open_issue_hours: float
    weight: float
    per_extra: float


@dataclass(frozen=True)
class WaitRules:
    """``[long_wait]``."""

    callcenter_s: int
    store_s: int
    weight: float
    callback_requested: float


@dataclass(frozen=True)
class TransferRules:
    """``[transfers]``."""

    min_transfers: int
    weight: float
    per_extra: float


@dataclass(frozen=True)
class CallOutcomeRules:
    """``[call_outcomes]``: points per bad call outcome."""

    unresolved: float
    escalated: float
    abandoned: float


@dataclass(frozen=True)
class RatingRule:
    """``[ratings.<type>]``: low, very low and good scores of one feedback type."""

    low: int
    weight: float
    very_low: int
    very_low_weight: float
    good: int


@dataclass(frozen=True)
class TextRules:
    """``[negative_text]``."""

    threshold: float
    weight: float


@dataclass(frozen=True)
class HoppingRules:
    """``[channel_hopping]``."""

    window_hours: float
    min_channels: int
    min_bad_points: float
    weight: float
    contact_types: tuple[str, ...]
    web_paths: tuple[str, ...]


@dataclass(frozen=True)
class WebErrorRules:
    """``[web_errors]``."""

    per_error: float
    max_per_session: float
    abandoned_checkout: float
    min_checkout_errors: int
    abandon_after_minutes: float
    session_idle_minutes: float


@dataclass(frozen=True)
class FeedbackRules:
    """``[feedback]``: ratings and comments as the customer's verdict on a bad contact."""

    window_hours: float


@dataclass(frozen=True)
class PredictedRule:
    """``[predicted.<kind>]``: a predicted outcome's points and the severity it forces."""

    weight: float
    severity: str


@dataclass(frozen=True)
class ResolutionRules:
    """``[resolution]``."""

    call_outcomes: tuple[str, ...]
    relief: float
    order_relief: float
    fade_below: float


@dataclass(frozen=True)
class EpisodeRules:
    """``[episode]``."""

    cooldown_hours: float
    bypass_severity: str
    update_interval_minutes: float
    carry_over: float


@dataclass(frozen=True)
class ServiceRules:
    """``[service]``: committed service time."""

    hours: float
    from_severity: str


@dataclass(frozen=True)
class OrderRules:
    """``[order]``: how late a contact may arrive and still count as if in order."""

    lateness_hours: float
    journal_items: int


@dataclass(frozen=True)
class LimitRules:
    """``[limits]``: bounds on the per-customer state."""

    evidence_ids: int
    evidence_items: int
    recent_ids: int
    contacts: int
    sessions: int
    outcomes: int
    incidents: int


@dataclass(frozen=True)
class Rules:
    """Every threshold, weight and window of complaint detection, from one TOML file.

    Build it with :meth:`load`; ``streams/rules/complaints.toml`` documents each key.
    """

    score: ScoreRules
    severity: SeverityRules
    tiers: Mapping[str, float]
    repeat_contact: RepeatRules
    long_wait: WaitRules
    transfers: TransferRules
    call_outcomes: CallOutcomeRules
    ratings: Mapping[str, RatingRule]
    negative_text: TextRules
    channel_hopping: HoppingRules
    web_errors: WebErrorRules
    feedback: FeedbackRules
    predicted: Mapping[str, PredictedRule]
    resolution: ResolutionRules
    episode: EpisodeRules
    service: ServiceRules
    order: OrderRules
    limits: LimitRules

    @classmethod
    def load(cls, path: str | Path | None = None) -> Rules:
        """Read and check the rules at ``path`` (default: the packaged ``complaints.toml``).

        Raises :class:`ConfigError` naming the file and the key that is missing, unknown
        or invalid.
        """
        path = Path(path) if path is not None else DEFAULT_RULES
        try:
            with path.open("rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"complaint rules file {path} not found: pass the path of "
                              f"a complaints.toml") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from None
        try:
            rules = _build(cls, data, "")
            rules._check()
        except _KeyProblem as exc:
            raise ConfigError(f"{path}: key {exc.key!r} {exc.problem}") from None
        return rules

    def tier_factor(self, tier: str) -> float:
        """Points multiplier of a value tier (``standard``'s for a tier not listed)."""
        return self.tiers.get(tier, self.tiers["standard"])

    def _check(self) -> None:
        s = self.severity
        if not 0 < s.watch < s.high < s.critical:
            raise _KeyProblem("severity", "must satisfy 0 < watch < high < critical")
        _positive("score.half_life_hours", self.score.half_life_hours)
        _positive("score.max_event_points", self.score.max_event_points)
        _positive("score.forget_after_hours", self.score.forget_after_hours)
        if "standard" not in self.tiers:
            raise _KeyProblem("tiers.standard", "is missing: it is the default multiplier")
        for tier, factor in self.tiers.items():
            _positive(f"tiers.{tier}", factor)
        for kind in ("csat", "review", "nps"):
            rating = self.ratings.get(kind)
            if rating is None:
                raise _KeyProblem(f"ratings.{kind}", "is missing")
            if not rating.very_low <= rating.low < rating.good:
                raise _KeyProblem(f"ratings.{kind}", "must satisfy very_low <= low < good")
        for kind in PREDICTED_REASON:
            if kind not in self.predicted:
                raise _KeyProblem(f"predicted.{kind}", "is missing")
            _severity(f"predicted.{kind}.severity", self.predicted[kind].severity)
        unknown = set(self.predicted) - set(PREDICTED_REASON)
        if unknown:
            raise _KeyProblem(f"predicted.{min(unknown)}",
                              f"is unknown: the predicted outcomes are {sorted(PREDICTED_REASON)}")
        _severity("episode.bypass_severity", self.episode.bypass_severity)
        _severity("service.from_severity", self.service.from_severity)
        _positive("service.hours", self.service.hours)
        if not 0 <= self.resolution.relief <= 1:
            raise _KeyProblem("resolution.relief", "must be between 0 and 1")
        if not 0 <= self.resolution.order_relief <= 1:
            raise _KeyProblem("resolution.order_relief", "must be between 0 and 1")
        if not 0 <= self.episode.carry_over < s.watch:
            raise _KeyProblem("episode.carry_over", "must be at least 0 and below severity.watch")
        if not 0 <= self.resolution.fade_below < s.watch:
            raise _KeyProblem("resolution.fade_below",
                              "must be at least 0 and below severity.watch")
        hop = self.channel_hopping
        _positive("channel_hopping.window_hours", hop.window_hours)
        if hop.min_channels < 2:
            raise _KeyProblem("channel_hopping.min_channels", "must be 2 or more")
        for name in hop.contact_types:
            if name.count(":") != 1:
                raise _KeyProblem("channel_hopping.contact_types",
                                  f"has {name!r}: write channel:type, e.g. store:return")
        _positive("web_errors.abandon_after_minutes", self.web_errors.abandon_after_minutes)
        _positive("feedback.window_hours", self.feedback.window_hours)
        if self.order.lateness_hours < 0:
            raise _KeyProblem("order.lateness_hours", "must be 0 or more")
        if self.order.journal_items < 1:
            raise _KeyProblem("order.journal_items", "must be 1 or more")
        for limit in fields(self.limits):
            if getattr(self.limits, limit.name) < 1:
                raise _KeyProblem(f"limits.{limit.name}", "must be 1 or more")


class _KeyProblem(Exception):
    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key} {problem}")
        self.key, self.problem = key, problem


def _positive(key: str, value: float) -> None:
    if value <= 0:
        raise _KeyProblem(key, f"must be more than 0, got {value}")


def _severity(key: str, value: str) -> None:
    if value not in SEVERITIES:
        raise _KeyProblem(key, f"must be one of {', '.join(SEVERITIES)}, got {value!r}")


_T = TypeVar("_T")


def _build(cls: type[_T], table: Any, where: str) -> _T:
    """A frozen dataclass from a TOML table, every field required, no unknown keys."""
    if not isinstance(table, dict):
        raise _KeyProblem(where, "must be a table")
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]  # only dataclasses here
    hints = get_type_hints(cls)
    for key in table:
        if key not in names:
            raise _KeyProblem(f"{where}.{key}".lstrip("."), "is unknown (a typo?)")
    values = {}
    for name in names:
        key = f"{where}.{name}".lstrip(".")
        if name not in table:
            raise _KeyProblem(key, "is missing")
        values[name] = _convert(hints[name], table[name], key)
    return cls(**values)


def _convert(hint: Any, raw: Any, key: str) -> Any:
    if is_dataclass(hint):
        return _build(hint, raw, key)  # type: ignore[arg-type]  # a dataclass type
    origin = get_origin(hint)
    if origin is Mapping:
        if not isinstance(raw, dict):
            raise _KeyProblem(key, "must be a table")
        value_hint = get_args(hint)[1]
        return {k: _convert(value_hint, v, f"{key}.{k}") for k, v in raw.items()}
    if origin is tuple:
        if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
            raise _KeyProblem(key, "must be a list of strings")
        return tuple(raw)
    if hint is float and isinstance(raw, int | float) and not isinstance(raw, bool):
        return float(raw)
    if hint is int and isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if hint is str and isinstance(raw, str):
        return raw
    raise _KeyProblem(key, f"must be {getattr(hint, '__name__', hint)}, got {raw!r}")
