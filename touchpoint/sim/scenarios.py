"""Labelled customer journeys: events with ground truth, to judge early complaint signals.

``generate(seed=..., customers=..., start=...)`` builds a :class:`Scenario`: the
time-ordered events (channel and CONTRACT §2 JSON form) of a population whose fate is
known, and the truth per CRM customer (:class:`CustomerTruth`). Each customer is
``satisfied`` (ordinary contacts, some of which look like trouble at first sight),
``noisy`` (one bad moment, then only fine contacts) or heading to a ``complaint`` or
``cancel`` (a problem that mounts over days, then a formal complaint or a cancel call).
Customers prefer some contact channels, and many events carry only a phone, an e-mail or
a device, so signal quality can be split by channel mix and identity stitching is
exercised. The same arguments give the same scenario; :func:`write` stores it as JSON
Lines plus ``truth.json``, and :func:`load_truth` and :func:`load_events` read them back.
"""

# ruff: noqa: RUF001 - the Chinese notes and comments use full-width punctuation, as written
from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, NamedTuple, TypeVar

from touchpoint.schemas.contract import CHANNELS
from touchpoint.sim.simulate import COMMENTS_NEUTRAL, COMMENTS_POSITIVE

__all__ = [
    "DEFAULT_MIX",
    "HEADING_LABELS",
    "LABELS",
    "TRUTH_FORMAT",
    "VALUE_TIERS",
    "CustomerTruth",
    "Scenario",
    "ScenarioEvent",
    "generate",
    "load_events",
    "load_truth",
    "write",
]

T = TypeVar("T")

LABELS: Final = ("satisfied", "noisy", "complaint", "cancel")
HEADING_LABELS: Final = frozenset({"complaint", "cancel"})
"""Labels of customers heading to a formal complaint (what signals should come before)."""
DEFAULT_MIX: Final[Mapping[str, float]] = MappingProxyType(
    {"satisfied": 0.70, "noisy": 0.15, "complaint": 0.10, "cancel": 0.05})
VALUE_TIERS: Final = ("key", "regular")
TRUTH_FORMAT: Final = "touchpoint.scenario.truth/1"

_SECOND: Final = 1_000
_MINUTE: Final = 60_000
_HOUR: Final = 3_600_000
_DAY: Final = 86_400_000
_CST: Final = 8 * _HOUR  # the business runs on China Standard Time
_STORE_HOURS: Final = (10, 22)  # local opening hours [open, close)
_CALL_HOURS: Final = (8, 22)

# How each channel system writes occurred_at: share ISO-8601 (the rest epoch ms), offset.
_TIME_STYLE: Final = MappingProxyType({
    "web": (0.4, 0, "+00:00"),
    "store": (0.8, _CST, "+08:00"),
    "callcenter": (0.9, _CST, "+08:00"),
    "campaign": (0.2, 0, "+00:00"),
    "feedback": (0.7, _CST, "+08:00"),
})

# Contact-channel preferences: which of web, store and phone a customer uses.
_PREFERENCES: Final = (
    (("web", "store"), 0.20), (("web", "store", "phone"), 0.25), (("web", "phone"), 0.15),
    (("store", "phone"), 0.12), (("phone",), 0.08), (("store",), 0.10), (("web",), 0.10),
)
_ROUTINE_PER_DAY: Final = MappingProxyType({"key": 0.45, "regular": 0.25})
_ANONYMOUS_FIRST: Final = 0.3  # web users whose first visit is anonymous, login later
_IDENTITY_STYLES: Final = (("crm", 0.65), ("phone", 0.25), ("email", 0.10))

_SITE: Final = "https://shop.example.cn"
_CATEGORIES: Final = ("phones", "laptops", "home", "beauty", "sports", "kids", "fashion")
_SEARCHES: Final = ("wireless earbuds", "羽绒服", "air fryer", "手机壳", "running shoes",
                    "保温杯", "coffee beans", "儿童书包")
_HELP_PAGES: Final = MappingProxyType({
    "delivery": ("/account/orders/track", "/help/delivery", "/account/orders", "/contact"),
    "billing": ("/account/payments", "/help/payment", "/help/refunds", "/contact"),
    "product": ("/help/returns", "/account/orders", "/help/warranty", "/contact"),
    "technical": ("/help/app", "/account/settings", "/help/login", "/contact"),
})
_CHECKOUT_ERRORS: Final = ("PAYMENT_DECLINED", "PAYMENT_TIMEOUT", "HTTP_500", "HTTP_502",
                           "ADDRESS_INVALID", "COUPON_INVALID")
_PAGE_ERRORS: Final = ("HTTP_500", "HTTP_504", "JS_ERROR", "HTTP_502")
_PAYMENTS: Final = ("alipay", "wechat_pay", "card", "alipay", "wechat_pay")
_ROUTINE_REASONS: Final = ("billing", "delivery", "product", "technical", "other", "delivery")
_ISSUE_REASONS: Final = (("delivery", 0.4), ("billing", 0.25), ("product", 0.25),
                         ("technical", 0.1))
_MEDIA: Final = ("email", "sms", "push")
_LODGED_VIA: Final = ("hotline", "email", "web_form", "store_desk", "social_media")
_MOBILE_PREFIXES: Final = ("133", "135", "138", "139", "150", "158", "176", "186", "189")
_MAIL_DOMAINS: Final = ("qq.com", "163.com", "126.com", "gmail.com", "outlook.com")
_NAMES: Final = ("wang", "li", "zhang", "liu", "chen", "yang", "huang", "zhao", "wu",
                 "zhou", "xu", "sun", "ma", "lin", "anna", "david", "grace", "kevin", "lucy")

_NOTES_POSITIVE: Final = (
    "Issue resolved on first call, customer thanked the agent",
    "Refund confirmed, customer satisfied",
    "Explained the bill, customer happy with the answer",
    "问题一次解决，客户表示感谢",
    "已确认退款，客户很满意",
    "解释了账单，客户对答复满意",
)
_NOTES_NEUTRAL: Final = (
    "Asked about order status, gave tracking number",
    "Updated delivery address",
    "Product question answered, no further action",
    "Invoice copy requested, sent by e-mail",
    "查询订单状态，已提供物流单号",
    "修改了收货地址",
    "咨询产品使用方法，已解答",
    "客户要求补开发票，已邮件发送",
)
# A passing problem: the customer grumbles, the agent sorts it out.
_NOTES_GRUMBLE: Final = (
    "Customer mentioned the long wait, question answered",
    "Transferred to the billing team, sorted out there",
    "客户说等了很久，问题已解答",
    "转接到账务组后解决",
)
_NOTES_NEGATIVE: Final = MappingProxyType({
    "delivery": (
        "Parcel still not delivered, customer calling again",
        "Customer upset, parcel late again and no update",
        "包裹还没到，客户再次来电",
        "客户很不满意，包裹又延误了，没有任何通知",
    ),
    "billing": (
        "Charged twice, refund still missing, customer angry",
        "Customer disputes the bill again, wants a manager",
        "重复扣款，退款还没到，客户很生气",
        "客户再次质疑账单，要求找主管",
    ),
    "product": (
        "Second call about the same broken item, very frustrated",
        "Replacement also faulty, customer disappointed",
        "同一个坏掉的商品又来电，客户很失望",
        "换货后还是有问题，客户非常不满",
    ),
    "technical": (
        "App still fails at login, customer fed up",
        "Same error again, our fix did not work",
        "APP还是无法登录，客户很烦",
        "同样的错误又出现了，之前的处理无效",
    ),
})
_NOTES_ESCALATED: Final = (
    "Escalated to supervisor, customer demands compensation",
    "Customer says nobody called back as promised, escalated",
    "已升级至主管，客户要求赔偿",
    "客户说承诺的回电一直没有来，已升级",
)
_NOTES_FOLLOW_UP: Final = (
    "Follow-up: refund has arrived, customer confirms",
    "Customer called back to confirm the new delivery date",
    "回访：退款已到账，客户确认",
    "客户来电确认新的送货日期",
)
_NOTES_ABANDONED: Final = ("Caller hung up while waiting in the queue", "客户排队时挂断")
_NOTES_CANCEL: Final = (
    "Customer cancels membership after the repeated problems",
    "Wants to close the account, retention offer refused",
    "客户因多次问题要求取消会员",
    "客户要求注销账户，拒绝挽留方案",
)
_COMMENTS_NEGATIVE: Final = (
    "Waited 40 minutes in the store, terrible", "Parcel arrived late and damaged",
    "Customer service never called back", "Charged twice, still no refund",
    "Nobody can tell me where my order is", "Very disappointed, not buying here again",
    "排队太久了，体验很差", "包裹延误而且破损", "客服一直不回电话", "重复扣款，退款还没到",
    "没有人能告诉我订单在哪里", "非常失望，不会再买了",
)
_COMPLAINT_TEXTS: Final = MappingProxyType({
    "delivery": ("Formal complaint: third late delivery and nobody takes responsibility",
                 "正式投诉：多次送货延误，没有人负责"),
    "billing": ("Formal complaint: charged twice, still no refund after several calls",
                "投诉重复扣款，打了好几次电话都没解决"),
    "product": ("The product broke again and my calls go nowhere. I want this escalated",
                "产品又坏了，打电话也没人处理，要求升级处理"),
    "technical": ("Formal complaint: the app has not worked for days and support cannot help",
                  "投诉：APP好几天无法使用，客服也解决不了"),
    "store": ("I want to complain about the waiting time and how I was treated in the store",
              "投诉门店排队时间过长，服务态度差"),
})

_NOISY_MOMENTS: Final = (
    ("rough_call", "phone"), ("rough_visit", "store"),
    ("long_store_wait", "store"), ("long_call_wait", "phone"), ("transfer", "phone"),
    ("abandoned_call", "phone"), ("unresolved_once", "phone"), ("checkout_error", "web"),
    ("low_rating", None), ("negative_review", None),
)
# Heading-to-complaint journeys and the contact channels each needs (any of them).
_TROUBLES: Final = (
    ("repeat_calls", ("phone",), 0.25), ("quiet_repeat", ("phone",), 0.12),
    ("store_trouble", ("store",), 0.13), ("web_trouble", ("web",), 0.13),
    ("channel_hopping", (), 0.17), ("few_warnings", (), 0.20),
)
_PACES: Final = (((1.0, 3.0), 0.4), ((3.0, 6.0), 0.35), ((6.0, 10.0), 0.25))


class ScenarioEvent(NamedTuple):
    """One event of a scenario: its channel and the event in CONTRACT §2 JSON form."""

    channel: str
    event: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CustomerTruth:
    """What really happened to one CRM customer, and what to expect of a detector.

    ``complaint_at`` is the ``occurred_at`` of the formal complaint (``feedback`` /
    ``complaint``) or of the call with reason ``cancel``, for the ``complaint`` and
    ``cancel`` labels; None otherwise. ``trouble_from`` is the first warning contact
    (heading labels) or the bad moment (``noisy``); ``warning_contacts`` how many
    contacts went wrong before ``complaint_at`` (or in the bad moment). ``channels`` are
    every channel of the customer's events. ``phone`` (digits with country code),
    ``email`` (normalized) and ``devices`` are the identifiers events may carry instead
    of ``customer_id``.
    """

    customer_id: str
    label: str
    value_tier: str = "regular"
    complaint_at: datetime | None = None
    channels: tuple[str, ...] = ()
    journey: str = ""
    warning_contacts: int = 0
    trouble_from: datetime | None = None
    phone: str | None = None
    email: str | None = None
    devices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.label not in LABELS:
            raise ValueError(f"customer {self.customer_id}: label {self.label!r} is not one "
                             f"of {', '.join(LABELS)}")
        if self.value_tier not in VALUE_TIERS:
            raise ValueError(f"customer {self.customer_id}: value_tier {self.value_tier!r} "
                             f"is not one of {', '.join(VALUE_TIERS)}")
        if (self.complaint_at is None) == (self.label in HEADING_LABELS):
            raise ValueError(f"customer {self.customer_id}: complaint_at is required for "
                             "the complaint and cancel labels and only for them")
        for name in ("complaint_at", "trouble_from"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"customer {self.customer_id}: {name} needs a UTC offset")

    @property
    def heading(self) -> bool:
        """True for customers heading to a formal complaint (``complaint``, ``cancel``)."""
        return self.label in HEADING_LABELS

    def as_dict(self) -> dict[str, Any]:
        """The JSON form used in ``truth.json``."""
        return {
            "customer_id": self.customer_id,
            "label": self.label,
            "value_tier": self.value_tier,
            "complaint_at": _iso(self.complaint_at),
            "channels": list(self.channels),
            "journey": self.journey,
            "warning_contacts": self.warning_contacts,
            "trouble_from": _iso(self.trouble_from),
            "phone": self.phone,
            "email": self.email,
            "devices": list(self.devices),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CustomerTruth:
        """Read the JSON form (only ``customer_id`` and ``label`` are required)."""
        try:
            return cls(
                customer_id=str(data["customer_id"]),
                label=str(data["label"]),
                value_tier=str(data.get("value_tier") or "regular"),
                complaint_at=_parse_time(data.get("complaint_at")),
                channels=tuple(data.get("channels") or ()),
                journey=str(data.get("journey") or ""),
                warning_contacts=int(data.get("warning_contacts") or 0),
                trouble_from=_parse_time(data.get("trouble_from")),
                phone=data.get("phone"),
                email=data.get("email"),
                devices=tuple(data.get("devices") or ()),
            )
        except KeyError as exc:
            raise ValueError(f"truth record {dict(data)!r} has no {exc.args[0]}") from exc


@dataclass(frozen=True)
class Scenario:
    """Events of a labelled population, in time order, and the truth per customer."""

    seed: int
    start: datetime
    days: float
    events: list[ScenarioEvent]
    truth: Mapping[str, CustomerTruth]
    mix: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))

    def counts(self) -> dict[str, int]:
        """Customers per label."""
        counts = dict.fromkeys(LABELS, 0)
        for record in self.truth.values():
            counts[record.label] += 1
        return counts


def generate(*, seed: int, customers: int, start: datetime, days: float = 28.0,
             mix: Mapping[str, float] | None = None, key_share: float = 0.06,
             stores: int = 12, id_prefix: str = "J") -> Scenario:
    """Build a labelled scenario of ``customers`` CRM customers over ``days`` from ``start``.

    ``mix`` gives the share of each label (default :data:`DEFAULT_MIX`: 70% satisfied,
    15% noisy, 10% complaint, 5% cancel); counts are exact (largest remainder), labels are
    shuffled over customers. ``key_share`` of every label (at least one where the label
    has customers) are key customers. Customer ids are ``id_prefix`` and six digits, so
    scenario customers do not collide with the simulator's ``C000001``... Journeys fill
    the ``days``; what follows a late complaint or bad moment may run a few days past
    them. The same arguments give the same scenario.
    """
    if customers < 1:
        raise ValueError(f"customers must be 1 or more, got {customers}")
    if start.tzinfo is None:
        raise ValueError("start needs a UTC offset, e.g. datetime(2026, 11, 2, tzinfo=UTC)")
    if not days >= 2:
        raise ValueError(f"days must be 2 or more (dissatisfaction builds over 1-10 days), "
                         f"got {days}")
    if not 0 <= key_share <= 1:
        raise ValueError(f"key_share must be between 0 and 1, got {key_share}")
    if stores < 1:
        raise ValueError(f"stores must be 1 or more, got {stores}")
    shares = _check_mix(DEFAULT_MIX if mix is None else mix)
    # Seeds name the module's first home (touchpoint.scenarios): a seed gives the same
    # journeys as before the move to touchpoint.sim.
    rng = random.Random(f"touchpoint.scenarios:{seed}:population")
    labels = [label for label, n in _counts(customers, shares).items() for _ in range(n)]
    rng.shuffle(labels)
    tiers = _tiers(rng, labels, key_share)
    start_ms = int(start.timestamp()) * _SECOND
    world = _World(seed=seed, start_ms=start_ms, end_ms=start_ms + int(days * _DAY),
                   stores=tuple(f"S{n:03d}" for n in range(1, stores + 1)),
                   campaigns=_campaigns(start))
    pending: list[tuple[int, int, int, ScenarioEvent]] = []
    truth: dict[str, CustomerTruth] = {}
    for index, (label, tier) in enumerate(zip(labels, tiers, strict=True)):
        customer_id = f"{id_prefix}{index + 1:06d}"
        journey = _Journey(world, customer_id, label, tier)
        journey.live()
        truth[customer_id] = journey.truth()
        pending.extend((t, index, seq, ScenarioEvent(ch, ev))
                       for seq, (t, ch, ev) in enumerate(journey.events))
    pending.sort(key=lambda item: item[:3])
    return Scenario(seed=seed, start=start, days=days,
                    events=[item[3] for item in pending], truth=truth, mix=shares)


def write(scenario: Scenario, directory: str | Path) -> Path:
    """Write ``events.jsonl``, one ``<channel>.jsonl`` per channel and ``truth.json``.

    ``events.jsonl`` holds ``{"channel": ..., "event": {...}}`` lines in time order; the
    channel files hold bare events, for ``touchpoint publish -c CHANNEL FILE``. Returns
    the directory.
    """
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    files = {ch: (path / f"{ch}.jsonl").open("w", encoding="utf-8") for ch in CHANNELS}
    try:
        with (path / "events.jsonl").open("w", encoding="utf-8") as combined:
            for channel, event in scenario.events:
                line = json.dumps(event, ensure_ascii=False)
                combined.write(f'{{"channel": "{channel}", "event": {line}}}\n')
                files[channel].write(line + "\n")
    finally:
        for handle in files.values():
            handle.close()
    truth = {
        "format": TRUTH_FORMAT,
        "seed": scenario.seed,
        "start": _iso(scenario.start),
        "days": scenario.days,
        "mix": dict(scenario.mix),
        "counts": scenario.counts(),
        "customers": [record.as_dict() for record in scenario.truth.values()],
    }
    (path / "truth.json").write_text(json.dumps(truth, ensure_ascii=False, indent=1) + "\n",
                                     encoding="utf-8")
    return path


def load_truth(path: str | Path) -> dict[str, CustomerTruth]:
    """Read ``truth.json`` (or the directory holding it): truth by customer id."""
    file = Path(path)
    if file.is_dir():
        file = file / "truth.json"
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read the truth file {file}: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != TRUTH_FORMAT:
        raise ValueError(f"{file} is not a scenario truth file (format {TRUTH_FORMAT}): "
                         "write it with touchpoint.sim.scenarios.write")
    records = (CustomerTruth.from_dict(item) for item in data.get("customers", ()))
    return {record.customer_id: record for record in records}


def load_events(directory: str | Path) -> Iterator[ScenarioEvent]:
    """Yield the events of ``events.jsonl`` in ``directory``, in time order."""
    with (Path(directory) / "events.jsonl").open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                item = json.loads(line)
                yield ScenarioEvent(item["channel"], item["event"])


# ---------------------------------------------------------------------------------------
# Population.


def _check_mix(mix: Mapping[str, float]) -> dict[str, float]:
    unknown = sorted(set(mix) - set(LABELS))
    if unknown:
        raise ValueError(f"mix has unknown label(s) {', '.join(unknown)}: use "
                         f"{', '.join(LABELS)}")
    if any(not share >= 0 for share in mix.values()) or not sum(mix.values()) > 0:
        raise ValueError("mix shares must be 0 or more and not all 0, e.g. "
                         "{'satisfied': 0.7, 'noisy': 0.15, 'complaint': 0.1, 'cancel': 0.05}")
    total = sum(mix.values())
    return {label: mix.get(label, 0.0) / total for label in LABELS}


def _counts(customers: int, shares: Mapping[str, float]) -> dict[str, int]:
    """Return exact customers per label: floors, then the largest remainders."""
    exact = {label: customers * shares[label] for label in LABELS}
    counts = {label: math.floor(value) for label, value in exact.items()}
    by_remainder = sorted(LABELS, key=lambda label: (-(exact[label] - counts[label]),
                                                     LABELS.index(label)))
    for label in by_remainder[:customers - sum(counts.values())]:
        counts[label] += 1
    return counts


def _tiers(rng: random.Random, labels: Sequence[str], key_share: float) -> list[str]:
    """Mark ``key_share`` of each label's customers (at least one) as key customers."""
    tiers = ["regular"] * len(labels)
    for label in LABELS:
        members = [i for i, value in enumerate(labels) if value == label]
        if not members or key_share <= 0:
            continue
        for i in rng.sample(members, min(len(members), max(1, round(len(members) * key_share)))):
            tiers[i] = "key"
    return tiers


def _campaigns(start: datetime) -> tuple[tuple[str, str], ...]:
    month = start.astimezone(UTC).strftime("%Y-%m")
    return tuple((f"CMP-{month}-J{n}", _MEDIA[n % len(_MEDIA)]) for n in range(1, 5))


@dataclass(frozen=True)
class _World:
    seed: int
    start_ms: int
    end_ms: int
    stores: tuple[str, ...]
    campaigns: tuple[tuple[str, str], ...]


# ---------------------------------------------------------------------------------------
# One customer's journey.


class _Journey:
    """Builds one customer's events; everything random comes from the customer's own rng."""

    def __init__(self, world: _World, customer_id: str, label: str, tier: str) -> None:
        self.world = world
        self.customer_id = customer_id
        self.label = label
        self.tier = tier
        self.rng = rng = random.Random(f"touchpoint.scenarios:{world.seed}:{customer_id}")
        self.prefs: tuple[str, ...] = _weighted(rng, _PREFERENCES)
        self.identity: str = _weighted(rng, _IDENTITY_STYLES)
        self.phone = f"{rng.choice(_MOBILE_PREFIXES)}{rng.randrange(100_000_000):08d}"
        name = f"{rng.choice(_NAMES)}.{rng.choice(_NAMES)}{rng.randrange(1, 9999)}"
        self.email = f"{name}@{rng.choice(_MAIL_DOMAINS)}"
        self.devices = tuple(f"ck_{rng.getrandbits(64):016x}"
                             for _ in range(rng.choice((1, 1, 2))))
        self.home_store = rng.choice(world.stores)
        self.anonymous_first = "web" in self.prefs and rng.random() < _ANONYMOUS_FIRST
        self.web_seen = False
        self.events: list[tuple[int, str, dict[str, Any]]] = []
        # When each identifier was first linked to customer_id by an event with both.
        self.linked: dict[str, int] = {}
        self.journey = "routine"
        self.warnings = 0
        self.trouble_from: int | None = None
        self.complaint_at: int | None = None
        self.reason = "other"

    # -- plot ------------------------------------------------------------------------

    def live(self) -> None:
        """Generate the journey for the customer's label."""
        world, rng = self.world, self.rng
        if self.label == "satisfied":
            self._routine(world.start_ms, world.end_ms)
        elif self.label == "noisy":
            self._noisy()
        else:
            self._heading()
        if self.anonymous_first and not self.web_seen:
            self._web_session(world.start_ms + int(rng.uniform(0.1, 0.7)
                                                   * (world.end_ms - world.start_ms)), "browse")
        # A device seen only anonymously is logged in from later (else nobody could tell
        # whose visits they were).
        for device in self.devices:
            if device in self.linked:
                continue
            seen = [t for t, _, event in self.events if event.get("anonymous_id") == device]
            if seen:
                self._web_session(max(seen) + rng.randint(1, 5) * _DAY, "buy", device=device)

    def truth(self) -> CustomerTruth:
        """The customer's truth record (after :meth:`live`)."""
        return CustomerTruth(
            customer_id=self.customer_id, label=self.label, value_tier=self.tier,
            complaint_at=_datetime(self.complaint_at),
            channels=tuple(sorted({channel for _, channel, _ in self.events})),
            journey=self.journey, warning_contacts=self.warnings,
            trouble_from=_datetime(self.trouble_from), phone=f"86{self.phone}",
            email=self.email, devices=self.devices)

    def _routine(self, begin: int, end: int, *, at_least: int = 2) -> None:
        """Ordinary contacts between ``begin`` and ``end``: nothing goes wrong."""
        rng = self.rng
        if end - begin < _HOUR:
            return
        mean = _ROUTINE_PER_DAY[self.tier] * (end - begin) / _DAY
        count = max(at_least, _poisson(rng, mean))
        times = sorted(rng.randrange(begin, end) for _ in range(count))
        kinds = [*self.prefs, *self.prefs, "feedback", "campaign"]
        for t in times:
            self._routine_contact(t, rng.choice(kinds))

    def _routine_contact(self, t: int, kind: str) -> int:
        rng = self.rng
        if kind == "web":
            return self._web_session(t, rng.choice(("browse", "buy", "buy", "search")))
        if kind == "store":
            # Returns are ordinary commerce too: most go smoothly.
            end = self._store_visit(t, wait=self._normal_store_wait(),
                                    purchase=rng.random() < 0.75, give_back=rng.random() < 0.06)
            if rng.random() < 0.2:
                end = self._rating(end + rng.randint(30, 600) * _MINUTE, "csat", good=True,
                                   about="store")
            return end
        if kind == "phone":
            reason = rng.choice(_ROUTINE_REASONS)
            end = self._call(t, reason=reason, outcome="resolved",
                             wait=rng.randint(5, 200), transfers=0,
                             notes=rng.choice(_NOTES_POSITIVE + _NOTES_NEUTRAL))
            if rng.random() < 0.3:
                end = self._rating(end + rng.randint(2, 30) * _MINUTE, "csat", good=True,
                                   about="callcenter")
            if rng.random() < 0.08:  # a follow-up on the same matter, no trouble in it
                end = self._call(end + rng.randint(20, 72) * _HOUR, reason=reason,
                                 outcome="resolved", wait=rng.randint(5, 200), transfers=0,
                                 notes=rng.choice(_NOTES_FOLLOW_UP))
            return end
        if kind == "feedback":
            return self._rating(t, rng.choice(("nps", "review", "csat")), good=True)
        return self._campaign_message(t)

    def _noisy(self) -> None:
        """Ordinary contacts, one bad moment, then fine contacts again."""
        world, rng = self.world, self.rng
        span = world.end_ms - world.start_ms
        moment_at = world.start_ms + int(rng.uniform(0.15, 0.6) * span)
        self._routine(world.start_ms, moment_at, at_least=1)
        moments = [m for m in _NOISY_MOMENTS if m[1] is None or m[1] in self.prefs]
        kind, channel = rng.choice(moments)
        self.journey = f"noisy_{kind}"
        end = self._bad_moment(moment_at, kind)
        if channel is not None and rng.random() < 0.35:
            about = {"store": "store", "phone": "callcenter", "web": "web"}[channel]
            end = self._rating(end + rng.randint(20, 300) * _MINUTE, "csat", good=False,
                               about=about, warning=True)
        # Afterwards all is well again: at least two fine contacts, one of them a rating.
        self._routine_contact(end + rng.randint(1, 4) * _DAY + rng.randrange(_DAY),
                              rng.choice(self.prefs))
        self._rating(end + rng.randint(3, 8) * _DAY, rng.choice(("csat", "nps", "review")),
                     good=True)
        self._routine(end + _DAY, world.end_ms, at_least=0)

    def _bad_moment(self, t: int, kind: str) -> int:
        rng = self.rng
        reason = rng.choice(_ROUTINE_REASONS)
        if kind == "long_store_wait":
            return self._store_visit(t, wait=rng.randint(1500, 3600), purchase=rng.random() < 0.5,
                                     warning=True)
        if kind == "long_call_wait":
            return self._call(t, reason=reason, outcome="resolved", wait=rng.randint(600, 1500),
                              transfers=0, notes=rng.choice(_NOTES_GRUMBLE), warning=True)
        if kind == "transfer":
            return self._call(t, reason=reason, outcome="resolved", wait=rng.randint(20, 200),
                              transfers=rng.choice((1, 2)), notes=rng.choice(_NOTES_GRUMBLE),
                              warning=True)
        if kind == "abandoned_call":
            end = self._call(t, reason=reason, outcome="abandoned", wait=rng.randint(200, 600),
                             transfers=0, notes=rng.choice(_NOTES_ABANDONED), warning=True)
            return self._call(end + rng.randint(30, 180) * _MINUTE, reason=reason,
                              outcome="resolved", wait=rng.randint(10, 120), transfers=0,
                              notes=rng.choice(_NOTES_POSITIVE))
        if kind == "unresolved_once":
            end = self._call(t, reason=reason, outcome="unresolved", wait=rng.randint(20, 200),
                             transfers=0, notes=rng.choice(_NOTES_NEUTRAL), warning=True)
            return self._call(end + rng.randint(4, 30) * _HOUR, reason=reason,
                              outcome="resolved", wait=rng.randint(10, 120), transfers=0,
                              notes=rng.choice(_NOTES_POSITIVE))
        if kind == "rough_call":
            # A bad day on the phone: abandoned, called back after a transfer or two, and
            # a low rating of it; but the matter is settled in the end.
            end = self._call(t, reason=reason, outcome="abandoned", wait=rng.randint(300, 700),
                             transfers=0, notes=rng.choice(_NOTES_ABANDONED), warning=True)
            end = self._call(end + rng.randint(20, 120) * _MINUTE, reason=reason,
                             outcome="resolved", wait=rng.randint(300, 900),
                             transfers=rng.choice((1, 2)), notes=rng.choice(_NOTES_GRUMBLE),
                             warning=True)
            return self._rating(end + rng.randint(10, 120) * _MINUTE, "csat", good=False,
                                about="callcenter", warning=True)
        if kind == "rough_visit":
            end = self._store_visit(t, wait=rng.randint(1500, 3000), purchase=False,
                                    warning=True)
            end = self._rating(end + rng.randint(30, 300) * _MINUTE, "csat", good=False,
                               about="store", warning=True)
            return self._rating(end + rng.randint(4, 30) * _HOUR, "review", good=False,
                                about="store", warning=True)
        if kind == "checkout_error":
            return self._web_session(t, "buy", checkout_errors=1, warning=True)
        if kind == "low_rating":
            return self._rating(t, "csat", good=False, warning=True)
        return self._rating(t, "review", good=False, warning=True)

    def _heading(self) -> None:
        """An ordinary history, then trouble over 1-10 days, then the formal complaint."""
        world, rng = self.world, self.rng
        span_days = (world.end_ms - world.start_ms) / _DAY
        low, high = _weighted(rng, _PACES)
        window = min(rng.uniform(low, high), max(span_days - 1.0, 1.0))
        latest = world.end_ms - int(window * _DAY) - _DAY // 2
        trouble_at = rng.randrange(world.start_ms + _DAY // 2, max(latest, world.start_ms
                                                                    + _DAY // 2 + 1))
        self._routine(world.start_ms, trouble_at, at_least=1)
        troubles = [(name, weight) for name, needs, weight in _TROUBLES
                    if not needs or set(needs) & set(self.prefs)]
        if len(self.prefs) < 2:
            troubles = [(n, w) for n, w in troubles if n != "channel_hopping"]
        self.journey = _weighted(rng, troubles)
        self.reason = _weighted(rng, _ISSUE_REASONS)
        steps = self._plan(self.journey)
        # Warning contacts spread over the window from its start, a little faster
        # towards the end.
        offsets = [0.0, *sorted(rng.random() ** 0.8 for _ in steps[1:])]
        deadline = trouble_at + int(window * _DAY)
        t = trouble_at
        about = "callcenter"
        for offset, step in zip(offsets, steps, strict=True):
            t = max(t + 10 * _MINUTE, trouble_at + int(offset * (deadline - trouble_at)))
            t, about = self._warning(t, step)
            if rng.random() < 0.15:  # life goes on: an ordinary purchase in between
                self._routine_contact(t + rng.randint(2, 20) * _HOUR, rng.choice(self.prefs))
        first = self.trouble_from if self.trouble_from is not None else trouble_at
        complaint_at = max(first + int(window * _DAY), t + rng.randint(20, 600) * _MINUTE)
        self._formal_end(complaint_at, about)

    def _plan(self, journey: str) -> list[str]:
        """Return the warning contacts of a heading journey, in order."""
        rng, prefs = self.rng, self.prefs
        if journey == "few_warnings":
            pool = ["rating", "mild_rating", *(_CHANNEL_STEPS[ch][0] for ch in prefs)]
            return [rng.choice(pool) for _ in range(rng.choice((2, 2, 3)))]
        if journey == "quiet_repeat":
            # Polite repeat calls about one matter, each "resolved", none of it solved.
            steps = ["quiet_call"] * rng.randint(3, 5)
            if "web" in prefs and rng.random() < 0.5:
                steps.insert(rng.randint(0, 1), "web_browse_help")
            if rng.random() < 0.5:
                steps.append("mild_rating")
            return steps
        count = _weighted(rng, (((3, 4), 0.35), ((4, 6), 0.45), ((7, 10), 0.2)))
        n = rng.randint(*count)
        if journey == "repeat_calls":
            steps = ["call"] * n
            if "web" in prefs and rng.random() < 0.5:
                steps[0] = "web_help"
        elif journey == "store_trouble":
            steps = [rng.choice(("store_wait", "store_return", "rating")) for _ in range(n)]
            steps[0] = "store_return"
        elif journey == "web_trouble":
            steps = [rng.choice(("checkout_fail", "web_help", "checkout_fail")) for _ in range(n)]
            if "phone" in prefs:  # hops to the phone when the site does not help
                steps[-2:] = ["call", "call"]
        else:  # channel_hopping: each contact in another channel than the last
            order = list(prefs)
            rng.shuffle(order)
            steps = [rng.choice(_CHANNEL_STEPS[order[i % len(order)]]) for i in range(n)]
        # A low rating slips in now and then, after a bad contact.
        for i in range(1, len(steps)):
            if steps[i] != "rating" and rng.random() < 0.2:
                steps.insert(i, "rating")
                break
        return steps

    def _warning(self, t: int, step: str) -> tuple[int, str]:
        """Make one warning contact; return its end and the channel it was about."""
        rng = self.rng
        reason = self.reason
        if step == "call":
            return self._bad_call(t, single=self.journey == "few_warnings"), "callcenter"
        if step == "quiet_call":
            note = (rng.choice(_NOTES_NEUTRAL) if rng.random() < 0.6
                    else rng.choice(_NOTES_NEGATIVE[reason]))
            return self._call(t, reason=reason, wait=rng.randint(10, 300), transfers=0,
                              outcome="resolved" if rng.random() < 0.8 else "unresolved",
                              notes=note, warning=True), "callcenter"
        if step == "web_help":
            return self._web_session(t, "help", page_errors=rng.randint(1, 3),
                                     warning=True), "web"
        if step == "web_browse_help":  # reads the help pages again and again, no errors
            return self._web_session(t, "help", warning=True), "web"
        if step == "checkout_fail":
            return self._web_session(t, "buy", checkout_errors=rng.randint(1, 3),
                                     abandon=True, warning=True), "web"
        if step == "store_wait":
            return self._store_visit(t, wait=rng.randint(1200, 3600), purchase=False,
                                     warning=True), "store"
        if step == "store_return":
            wait = rng.choice((self._normal_store_wait(), rng.randint(900, 2400)))
            return self._store_visit(t, wait=wait, purchase=False, give_back=True,
                                     warning=True), "store"
        # A low (or, "mild", a middling) rating of whatever channel the trouble is in.
        kind = rng.choice(("csat", "csat", "nps", "review"))
        about = {"delivery": "web", "billing": "callcenter", "product": "store",
                 "technical": "web"}.get(reason, "callcenter")
        if about == "store" and "store" not in self.prefs:
            about = "callcenter"
        return self._rating(t, kind, good=False, mild=step == "mild_rating", about=about,
                            warning=True), about

    def _bad_call(self, t: int, *, single: bool = False) -> int:
        """Call about the open problem, which stays open (``single``: just one contact)."""
        rng = self.rng
        reason = self.reason
        roll = rng.random()
        if roll < 0.15 and not single:
            waited = rng.randint(120, 400)
            end = self._callback_request(t, reason, waited)
            return self._call(end + rng.randint(1, 8) * _HOUR, reason=reason,
                              outcome=rng.choice(("unresolved", "escalated")), wait=0,
                              transfers=rng.choice((0, 1)),
                              notes=rng.choice(_NOTES_NEGATIVE[reason] + _NOTES_ESCALATED),
                              warning=True)
        if roll < 0.3:
            end = self._call(t, reason=reason, outcome="abandoned", wait=rng.randint(300, 1500),
                             transfers=0, notes=rng.choice(_NOTES_ABANDONED), warning=True)
            if single or rng.random() < 0.5:
                return end
            t = end + rng.randint(10, 90) * _MINUTE  # tries again soon
        outcome = _weighted(rng, (("unresolved", 0.6), ("escalated", 0.3), ("resolved", 0.1)))
        # "Resolved" in the books, but the notes tell another story.
        notes = (rng.choice(_NOTES_ESCALATED) if outcome == "escalated"
                 else rng.choice(_NOTES_NEGATIVE[reason])
                 if outcome == "resolved" or rng.random() < 0.75
                 else rng.choice(_NOTES_NEUTRAL))
        end = self._call(t, reason=reason, outcome=outcome,
                         wait=rng.choice((rng.randint(30, 240), rng.randint(400, 1500))),
                         transfers=_weighted(rng, ((0, 0.4), (1, 0.3), (2, 0.2), (3, 0.1))),
                         notes=notes, warning=True)
        if not single and rng.random() < 0.3:
            end = self._rating(end + rng.randint(5, 60) * _MINUTE, "csat", good=False,
                               about="callcenter", warning=True)
        return end

    def _formal_end(self, t: int, about: str) -> None:
        """Lodge the formal complaint, or call to cancel; sometimes a survey follows."""
        rng = self.rng
        if self.label == "cancel":
            self.complaint_at = self._call(t, reason="cancel",
                                           outcome=rng.choice(("resolved", "escalated")),
                                           wait=rng.randint(20, 600), transfers=rng.choice((0, 1)),
                                           notes=rng.choice(_NOTES_CANCEL))
            return
        t = self._second(t)
        ids = self._ids(t, prefer=rng.choice(("customer_id", "customer_id", "phone", "email")))
        text_key = "store" if about == "store" else self.reason
        fields: dict[str, Any] = {
            "case_id": f"CASE-{self.customer_id}", "about_channel": about,
            "comment": rng.choice(_COMPLAINT_TEXTS[text_key]),
            "attributes": {"lodged_via": rng.choice(_LODGED_VIA), "reason": self.reason},
        }
        if about == "store":
            fields["store_id"] = self.home_store
        self._emit(t, "feedback", "complaint", ids, fields)
        self.complaint_at = t
        if rng.random() < 0.4:  # how the complaint was handled
            score = rng.randint(1, 4)
            self._emit(t + rng.randint(1, 4) * _DAY, "feedback", "csat",
                       {"customer_id": self.customer_id},
                       {"score": score, "about_channel": "callcenter",
                        "comment": _comment(rng, score, 5),
                        "case_id": f"CASE-{self.customer_id}"})

    # -- contacts ----------------------------------------------------------------------

    def _web_session(self, t: int, intent: str, *, device: str | None = None,
                     checkout_errors: int = 0, page_errors: int = 0, abandon: bool = False,
                     warning: bool = False) -> int:
        """One visit; anonymous until the customer logs in on a new device. Returns its end."""
        rng = self.rng
        t = self._second(t)
        device = device or rng.choice(self.devices)
        session = f"s_{rng.getrandbits(48):012x}"
        logged_in = self._linked(device, t)
        # Some customers' first visit stays anonymous (browsing only); they log in later.
        stays_anonymous = (self.anonymous_first and not self.web_seen and not logged_in
                           and intent in ("browse", "search"))
        self.web_seen = True
        login_at = None if logged_in or stays_anonymous else rng.randint(0, 2)
        ids = self._web_ids(device, logged_in)
        if intent == "help":
            visited = list(_HELP_PAGES.get(self.reason, _HELP_PAGES["delivery"]))
            rng.shuffle(visited)
            del visited[rng.randint(2, len(visited)):]
            errors_on = set(rng.sample(range(len(visited)), min(page_errors, len(visited))))
            marked = not warning
            if warning and not errors_on:  # help pages alone: the first view shows it
                self._mark_warning(t)
                marked = True
            for step, page in enumerate(visited):
                if step == login_at:
                    t, ids = self._login(t, device, session)
                dwell = rng.randint(5_000, 90_000)
                self._emit(t, "web", "page_view", ids,
                           {"session_id": session, "url": _SITE + page, "dwell_ms": dwell})
                if step in errors_on:
                    failed_at = t + rng.randint(1, 5) * _SECOND
                    if not marked:
                        self._mark_warning(failed_at)
                        marked = True
                    self._emit(failed_at, "web", "error", ids,
                               {"session_id": session, "url": _SITE + page,
                                "error_code": rng.choice(_PAGE_ERRORS)})
                t += dwell // _SECOND * _SECOND + _SECOND
            if login_at is not None and not self._linked(device, t):
                t, ids = self._login(t, device, session)
            return t
        pages = 1 + min(int(rng.expovariate(1 / 2.5)), 8)
        for step in range(pages):
            if step == login_at:
                t, ids = self._login(t, device, session)
            if intent == "search" and step == 0:
                term = rng.choice(_SEARCHES)
                self._emit(t, "web", "search", ids,
                           {"session_id": session, "url": f"{_SITE}/search",
                            "attributes": {"query": term}})
                t += rng.randint(2, 8) * _SECOND
            dwell = rng.randint(3_000, 120_000)
            category = rng.choice(_CATEGORIES)
            url = f"{_SITE}/p/{category[:2].upper()}{rng.randint(1, 4000):05d}"
            self._emit(t, "web", "page_view", ids,
                       {"session_id": session, "dwell_ms": dwell, "url": url})
            if rng.random() < 0.01:  # a dead product link: it happens to everyone
                self._emit(t + _SECOND, "web", "error", ids,
                           {"session_id": session, "url": url, "error_code": "HTTP_404"})
            t += dwell // _SECOND * _SECOND + _SECOND
        if login_at is not None and not self._linked(device, t):
            t, ids = self._login(t, device, session)
        if intent != "buy":
            return t
        for _ in range(rng.choice((1, 1, 2))):
            self._emit(t, "web", "add_to_cart", ids,
                       {"session_id": session, "url": f"{_SITE}/cart"})
            t += rng.randint(5, 60) * _SECOND
        self._emit(t, "web", "checkout_started", ids,
                   {"session_id": session, "url": f"{_SITE}/checkout"})
        t += rng.randint(10, 90) * _SECOND
        if checkout_errors:
            if warning:
                self._mark_warning(t)
            for _ in range(checkout_errors):
                self._emit(t, "web", "error", ids,
                           {"session_id": session, "url": f"{_SITE}/checkout/pay",
                            "error_code": rng.choice(_CHECKOUT_ERRORS)})
                t += rng.randint(5, 40) * _SECOND
            if abandon:
                return t  # gives up: the cart stays behind
            self._emit(t, "web", "checkout_started", ids,
                       {"session_id": session, "url": f"{_SITE}/checkout"})
            t += rng.randint(10, 60) * _SECOND
        self._emit(t, "web", "purchase", ids,
                   {"session_id": session, "url": f"{_SITE}/order/confirm",
                    "amount": self._amount(), "currency": "CNY",
                    "attributes": {"payment": rng.choice(_PAYMENTS)}})
        return t + rng.randint(5, 20) * _SECOND

    def _login(self, t: int, device: str, session: str) -> tuple[int, dict[str, str]]:
        """Log in: links the device (and sometimes the e-mail address) to the customer."""
        rng = self.rng
        ids = {"anonymous_id": device, "customer_id": self.customer_id}
        login_ids = dict(ids)
        if self.identity == "email" or rng.random() < 0.3:
            login_ids["email"] = _email_text(rng, self.email)
            self._link("email", t)
        self._emit(t, "web", "login", login_ids,
                   {"session_id": session, "url": f"{_SITE}/login",
                    "attributes": {"method": rng.choice(("password", "sms_code", "wechat"))}})
        self._link(device, t)
        return t + rng.randint(4, 30) * _SECOND, ids

    def _web_ids(self, device: str, logged_in: bool) -> dict[str, str]:
        if logged_in:
            return {"anonymous_id": device, "customer_id": self.customer_id}
        return {"anonymous_id": device}

    def _store_visit(self, t: int, *, wait: int | None, purchase: bool,
                     give_back: bool = False, warning: bool = False) -> int:
        """Visit the (mostly home) store: queue, service, maybe a return and a purchase."""
        rng = self.rng
        t = self._open(t, _STORE_HOURS)
        store = self.home_store if rng.random() < 0.85 else rng.choice(self.world.stores)
        where = {"store_id": store}
        card = {"customer_id": self.customer_id}
        self._emit(t, "store", "visit", card, where)
        t += rng.randint(1, 8) * _MINUTE
        staff = f"E{store[1:]}{rng.randint(1, 15):02d}"
        if wait is not None:
            ticket = self._ids(t, prefer="phone" if rng.random() < 0.3 else "customer_id")
            self._emit(t, "store", "queue_joined", ticket, where)
            t += wait * _SECOND
            if warning and wait > 900:
                self._mark_warning(t)
            self._emit(t, "store", "served", card,
                       {**where, "staff_id": staff, "queue_wait_s": wait})
            t += rng.randint(3, 15) * _MINUTE
        if give_back:
            if warning and not (wait is not None and wait > 900):
                self._mark_warning(t)
            self._emit(t, "store", "return", card,
                       {**where, "staff_id": staff, "amount": self._amount(),
                        "currency": "CNY", "items": rng.choice((1, 1, 2)),
                        "attributes": {"reason": rng.choice(("faulty", "damaged", "wrong_item"))}})
            t += rng.randint(2, 10) * _MINUTE
        if purchase:
            self._emit(t, "store", "purchase", card,
                       {**where, "staff_id": staff, "amount": self._amount(),
                        "currency": "CNY", "items": rng.choice((1, 1, 2, 3, 4)),
                        "attributes": {"payment": rng.choice(_PAYMENTS)}})
        return t

    def _normal_store_wait(self) -> int | None:
        rng = self.rng
        return None if rng.random() < 0.4 else rng.randint(20, 480)

    def _call(self, t: int, *, reason: str, outcome: str, wait: int, transfers: int,
              notes: str, warning: bool = False) -> int:
        """One call; the platform writes call_ended when it ends. Returns that time."""
        rng = self.rng
        t = self._open(t, _CALL_HOURS)
        fields: dict[str, Any] = {"call_id": f"CL{rng.getrandbits(40):010x}",
                                  "queue_wait_s": wait, "reason": reason}
        if outcome == "abandoned":
            fields.update(talk_s=0, transfers=0, outcome=outcome, notes=notes)
            end = t + wait * _SECOND
        else:
            talk = rng.randint(90, 600) + 120 * transfers + (240 if outcome != "resolved" else 0)
            fields.update(agent_id=f"AG{rng.randint(1, 60):03d}", talk_s=talk,
                          transfers=transfers, outcome=outcome, notes=notes)
            end = t + (wait + talk) * _SECOND
        if warning:
            self._mark_warning(end)
        self._emit(end, "callcenter", "call_ended", self._call_ids(end), fields)
        return end

    def _callback_request(self, t: int, reason: str, waited: int) -> int:
        t = self._open(t, _CALL_HOURS) + waited * _SECOND
        self._mark_warning(t)
        self._emit(t, "callcenter", "callback_requested", self._call_ids(t),
                   {"queue_wait_s": waited, "reason": reason})
        return t

    def _call_ids(self, t: int) -> dict[str, str]:
        """Caller ID gives the phone; an agent who looks the caller up adds the CRM id."""
        phone = _phone_text(self.rng, self.phone)
        if self.identity != "crm" and self._linked("phone", t) and self.rng.random() < 0.6:
            return {"phone": phone}
        self._link("phone", t)
        return {"phone": phone, "customer_id": self.customer_id}

    def _rating(self, t: int, kind: str, *, good: bool, mild: bool = False,
                about: str | None = None, warning: bool = False) -> int:
        """A csat, nps or review: good (mostly high, some neutral), bad, or ``mild``ly bad.

        A mild one has a middling score and a negative comment.
        """
        rng = self.rng
        t = self._second(t)
        top = 10 if kind == "nps" else 5
        if kind == "nps":
            score = (rng.choice((7, 8, 9, 9, 10, 10)) if good else rng.randint(5, 6) if mild
                     else rng.randint(0, 4))
        else:
            score = (rng.choice((3, 4, 4, 5, 5, 5)) if good else 3 if mild
                     else rng.choice((1, 1, 2)))
        if warning:
            self._mark_warning(t)
        fields: dict[str, Any] = {"score": score}
        if mild:
            fields["comment"] = rng.choice(_COMMENTS_NEGATIVE)
        elif kind == "review" or not good or rng.random() < 0.3:
            fields["comment"] = _comment(rng, score, top)
        if kind != "nps":
            about = about or rng.choice(self.prefs).replace("phone", "callcenter")
            fields["about_channel"] = about
            if about == "store":
                fields["store_id"] = self.home_store
        # Surveys go out by SMS (answered by phone number) or e-mail.
        prefer = {"crm": "customer_id", "phone": "phone", "email": "email"}[self.identity]
        self._emit(t, "feedback", kind, self._ids(t, prefer=prefer), fields)
        return t

    def _campaign_message(self, t: int) -> int:
        """A campaign message (sent by the CRM, so it carries the customer id)."""
        rng = self.rng
        t = self._second(t)
        campaign_id, medium = rng.choice(self.world.campaigns)
        ids: dict[str, str] = {"customer_id": self.customer_id}
        if medium == "email":
            ids["email"] = _email_text(rng, self.email)
            self._link("email", t)
        elif medium == "sms":
            ids["phone"] = _phone_text(rng, self.phone)
            self._link("phone", t)
        else:
            ids["anonymous_id"] = self.devices[0]
            self._link(self.devices[0], t)
        fields = {"campaign_id": campaign_id, "medium": medium, "variant": rng.choice("AB")}
        self._emit(t, "campaign", "sent", ids, fields)
        t += rng.randint(1, 90) * _SECOND
        self._emit(t, "campaign", "delivered", ids, fields)
        if rng.random() < 0.3:
            t += rng.randint(5, 600) * _MINUTE
            self._emit(t, "campaign", "opened", ids, fields)
            if rng.random() < 0.3:
                t += rng.randint(5, 300) * _SECOND
                self._emit(t, "campaign", "clicked", ids, fields)
                if "web" in self.prefs:
                    t = self._web_session(t + 3 * _SECOND, "browse")
        return t

    # -- plumbing ------------------------------------------------------------------------

    def _emit(self, t: int, channel: str, kind: str, ids: Mapping[str, str],
              fields: Mapping[str, Any] | None = None) -> None:
        rng = self.rng
        event_id = (rng.getrandbits(128) & ~(0xF000 << 64 | 0xC000 << 48)
                    | 0x4000 << 64 | 0x8000 << 48).to_bytes(16, "big").hex()
        event = {"event_id": f"{event_id[:8]}-{event_id[8:12]}-{event_id[12:16]}-"
                             f"{event_id[16:20]}-{event_id[20:]}",
                 "type": kind, "occurred_at": _occurred_at(rng, channel, t), **ids}
        if fields:
            event.update(fields)
        self.events.append((t, channel, event))

    def _ids(self, t: int, *, prefer: str) -> dict[str, str]:
        """Identify by ``prefer`` when it is already linked to the customer, else the CRM id."""
        if prefer == "phone" and self._linked("phone", t):
            return {"phone": _phone_text(self.rng, self.phone)}
        if prefer == "email" and self._linked("email", t):
            return {"email": _email_text(self.rng, self.email)}
        return {"customer_id": self.customer_id}

    def _link(self, identifier: str, t: int) -> None:
        self.linked[identifier] = min(self.linked.get(identifier, t), t)

    def _linked(self, identifier: str, t: int) -> bool:
        at = self.linked.get(identifier)
        return at is not None and at < t

    def _mark_warning(self, t: int) -> None:
        """Count a contact that went wrong; ``t`` is the time of the event that shows it."""
        self.warnings += 1
        if self.trouble_from is None or t < self.trouble_from:
            self.trouble_from = t

    def _amount(self) -> float:
        rng = self.rng
        if self.tier == "key":
            return round(rng.uniform(2_500, 20_000), 2)
        return round(min(rng.lognormvariate(5.0, 0.7), 2_000.0), 2)

    def _open(self, t: int, hours: tuple[int, int]) -> int:
        """Return ``t`` (whole seconds) if open then, else a time early in the next opening."""
        t = self._second(t)
        opens, closes = hours
        hour = (t + _CST) // _HOUR % 24
        if opens <= hour < closes:
            return t
        day_start = t - (t + _CST) % _DAY
        if hour >= closes:
            day_start += _DAY
        return day_start + opens * _HOUR + self.rng.randrange(0, 90) * _MINUTE

    @staticmethod
    def _second(t: int) -> int:
        return t - t % _SECOND


_CHANNEL_STEPS: Final = MappingProxyType({
    "phone": ("call", "call"),
    "store": ("store_wait", "store_return"),
    "web": ("web_help", "checkout_fail"),
})


def _weighted(rng: random.Random, pairs: Sequence[tuple[T, float]]) -> T:
    values = [value for value, _ in pairs]
    return rng.choices(values, weights=[weight for _, weight in pairs])[0]


def _poisson(rng: random.Random, mean: float) -> int:
    """Draw a Poisson count (Knuth; means here are small)."""
    limit, k, p = math.exp(-mean), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _comment(rng: random.Random, score: int, top: int) -> str:
    share = score / top
    if share <= 0.4:
        return rng.choice(_COMMENTS_NEGATIVE)
    if share < 0.75:
        return rng.choice(COMMENTS_NEUTRAL)
    return rng.choice(COMMENTS_POSITIVE)


def _occurred_at(rng: random.Random, channel: str, t: int) -> str | int:
    iso_share, offset, suffix = _TIME_STYLE[channel]
    if rng.random() >= iso_share:
        return t
    local = datetime.fromtimestamp(t / 1000, UTC) + timedelta(milliseconds=offset)
    return local.strftime("%Y-%m-%dT%H:%M:%S") + suffix


def _phone_text(rng: random.Random, digits: str) -> str:
    """Write the number as some system would: with or without +86, spaces, dashes."""
    a, b, c = digits[:3], digits[3:7], digits[7:]
    return rng.choice((f"+86 {a} {b} {c}", f"+86-{a}-{b}-{c}", f"+86{digits}",
                       f"{a} {b} {c}", f"{a}-{b}-{c}", digits))


def _email_text(rng: random.Random, email: str) -> str:
    """Write the address as typed; the pipeline normalizes it."""
    r = rng.random()
    if r < 0.7:
        return email
    if r < 0.85:
        local, _, domain = email.partition("@")
        return f"{local.title()}@{domain.upper()}"
    return f" {email} "


def _datetime(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="milliseconds")


def _parse_time(value: object) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return datetime.fromtimestamp(value / 1000, UTC)
    if isinstance(value, str):
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            raise ValueError(f"time {value!r} has no UTC offset")
        return parsed
    raise ValueError(f"time {value!r} is neither ISO-8601 nor epoch milliseconds")
