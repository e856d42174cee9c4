"""Traffic simulator: realistic, deterministic touchpoint events for all five channels.

``Simulator(seed=...).events()`` yields an endless stream of :class:`SimEvent` (a
channel and the JSON form of CONTRACT §2) in event-time order, from a simulated business
whose journeys cross channels the way identity stitching, profiles and complaint signals
need them to (an anonymous visitor logs in, a late parcel becomes repeat calls and
sometimes a formal complaint). The same seed and parameters give the same events;
:func:`run` sends them to a ``send`` callable, paced by wall-clock time. Paced at
``rate`` events/s, simulated time runs ``speedup`` times faster than wall time, and CRM
customers become up to :data:`MAX_ACTIVITY_BOOST` times more active, guests making up
the rest; well above :attr:`Simulator.natural_rate`, raise ``customers`` to keep the
share of CRM customers.
"""

# ruff: noqa: RUF001 - the Chinese notes and comments use full-width punctuation, as written
from __future__ import annotations

import heapq
import json
import math
import random
import time
from bisect import bisect
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from itertools import accumulate, count
from types import MappingProxyType
from typing import Any, Final, Generic, NamedTuple, TypeVar
from urllib.parse import quote

__all__ = [
    "EVENTS_PER_CUSTOMER_DAY",
    "GUEST_SHARE",
    "MAX_ACTIVITY_BOOST",
    "SimEvent",
    "Simulator",
    "run",
]

EVENTS_PER_CUSTOMER_DAY: Final = 5.0
"""Average events a CRM customer causes per simulated day (unpaced), campaigns aside."""
GUEST_SHARE: Final = 0.25
"""Share of organic (non-campaign) traffic from guests, unpaced: people outside the CRM."""
MAX_ACTIVITY_BOOST: Final = 4.0
"""How many times more active than natural CRM customers may get when paced fast."""

T = TypeVar("T")

_SECOND_MS: Final = 1_000
_MINUTE_MS: Final = 60_000
_HOUR_MS: Final = 3_600_000
_DAY_MS: Final = 86_400_000
_WEEK_MS: Final = 7 * _DAY_MS
_CST_MS: Final = 8 * _HOUR_MS  # the business runs on China Standard Time (no DST)
_EPOCH: Final = date(1970, 1, 1)
# Pieces of ISO-8601 times, formatted once: "HH:MM:" by minute of day, "SS", ".mmm".
_HH_MM: Final = tuple(f"{h:02d}:{m:02d}:" for h in range(24) for m in range(60))
_SS: Final = tuple(f"{s:02d}" for s in range(60))
_DOT_MS: Final = tuple(f".{ms:03d}" for ms in range(1000))
_UUID_MASK: Final = ~(0xF000 << 64 | 0xC000 << 48) & (1 << 128) - 1
_UUID4_BITS: Final = 0x4000 << 64 | 0x8000 << 48  # version 4, RFC 4122 variant
_CAMPAIGN_WAVE_HOURS: Final = (12.0, 18.0)  # uniform gap between two campaign waves

# ---------------------------------------------------------------------------------------
# Activity by local hour (0-23): relative, a zero means closed.
_WEB_BY_HOUR: Final = (0.45, 0.25, 0.15, 0.1, 0.08, 0.1, 0.25, 0.5, 0.8, 1.0, 1.1, 1.2,
                       1.3, 1.2, 1.1, 1.1, 1.1, 1.2, 1.3, 1.5, 1.7, 1.8, 1.5, 0.9)
_STORE_BY_HOUR: Final = (0.0,) * 10 + (0.5, 0.8, 1.6, 1.5, 0.9, 0.8, 0.9, 1.2, 1.7, 1.6,
                                        1.1, 0.6) + (0.0, 0.0)
_CALL_BY_HOUR: Final = (0.0,) * 8 + (0.6, 1.3, 1.5, 1.4, 1.0, 1.2, 1.3, 1.2, 1.1, 1.0, 0.9,
                                      0.8, 0.7, 0.5) + (0.0, 0.0)
_WEEKEND_FACTOR: Final = MappingProxyType({"web": 1.1, "store": 1.4, "call": 0.8})

# Journeys a person starts: (kind, base weight, hourly profile, weekend factor key).
_JOURNEYS: Final = (
    ("web", 0.45, _WEB_BY_HOUR, "web"),
    ("store", 0.45, _STORE_BY_HOUR, "store"),
    ("call", 0.07, _CALL_BY_HOUR, "call"),
    ("survey", 0.06, _WEB_BY_HOUR, "web"),
    ("issue", 0.015, _CALL_BY_HOUR, "call"),
)

# How each channel system writes occurred_at: (share ISO-8601, UTC offset ms, offset text,
# milliseconds shown); the rest is epoch ms. Real systems differ, so the pipeline sees all.
_TIME_STYLE: Final = MappingProxyType({
    "web": (0.4, 0, "+00:00", True),
    "store": (0.8, _CST_MS, "+08:00", True),
    "callcenter": (0.9, _CST_MS, "+08:00", False),
    "campaign": (0.2, 0, "+00:00", True),
    "feedback": (0.7, _CST_MS, "+08:00", True),
})


class _Weighted(NamedTuple, Generic[T]):
    """Values with cumulative weights, for cheap weighted picks."""

    values: tuple[T, ...]
    cum: tuple[float, ...]

    def pick(self, rng: random.Random) -> T:
        return self.values[bisect(self.cum, rng.random() * self.cum[-1])]


def _weighted(*pairs: tuple[T, float]) -> _Weighted[T]:
    return _Weighted(tuple(v for v, _ in pairs), tuple(accumulate(w for _, w in pairs)))


class _Medium(NamedTuple):
    """How a campaign medium reaches people and how they respond (shares of recipients)."""

    name: str
    reach: float  # share of the audience a wave goes to
    deliver: float  # delivered / sent
    open: float  # opened / delivered (0: opens are not tracked)
    click: float  # clicked / opened, or clicked / delivered when opens are not tracked
    unsubscribe: float  # unsubscribed / delivered
    to_cookies: bool  # audience is browser cookies (ads), not CRM customers


_MEDIA: Final = (
    _Medium("email", 0.45, 0.97, 0.28, 0.13, 0.004, False),
    _Medium("sms", 0.30, 0.98, 0.24, 0.14, 0.006, False),
    _Medium("push", 0.25, 0.92, 0.24, 0.15, 0.003, False),
    _Medium("display", 0.20, 0.95, 0.0, 0.02, 0.0, True),
    _Medium("social", 0.20, 0.95, 0.22, 0.16, 0.002, True),
    _Medium("direct_mail", 0.08, 0.96, 0.0, 0.0, 0.0, False),
)
_CAMPAIGN_STORE_RESPONSE: Final = 0.012  # delivered, not clicked, visits a store later
_CAMPAIGN_WEB_RESPONSE: Final = 0.01  # delivered, not clicked, browses the site later
_DIRECT_MAIL_STORE_RESPONSE: Final = 0.04

# ---------------------------------------------------------------------------------------
# Population.
_FAMILY_NAMES: Final = ("wang", "li", "zhang", "liu", "chen", "yang", "huang", "zhao", "wu",
                        "zhou", "xu", "sun", "ma", "zhu", "hu", "guo", "he", "lin", "luo")
_GIVEN_NAMES: Final = ("wei", "fang", "na", "min", "jing", "lei", "qiang", "jun", "yan",
                       "yong", "jie", "tao", "ming", "xia", "hui", "ling", "anna", "david",
                       "grace", "kevin", "lucy", "tom")
_MAIL_DOMAINS: Final = _weighted(("qq.com", 0.35), ("163.com", 0.2), ("126.com", 0.08),
                                 ("gmail.com", 0.12), ("outlook.com", 0.1), ("sina.com", 0.05),
                                 ("foxmail.com", 0.05), ("example.com.cn", 0.05))
_MOBILE_PREFIXES: Final = ("130", "131", "132", "135", "136", "137", "138", "139", "150",
                           "151", "152", "158", "159", "166", "177", "180", "186", "187",
                           "188", "189", "199")
_DEVICES_PER_PERSON: Final = _weighted((1, 0.6), (2, 0.3), (3, 0.1))
_RETURNING_GUEST: Final = 0.5  # share of guest journeys by a returning guest
_AGENTS: Final = 60
_STAFF_PER_STORE: Final = 15

# ---------------------------------------------------------------------------------------
# Web site.
_SITE: Final = "https://shop.example.cn"
_CATEGORIES: Final = ("phones", "laptops", "home", "beauty", "sports", "kids", "grocery",
                      "fashion")
_SEARCH_TERMS: Final = ("wireless earbuds", "羽绒服", "air fryer", "手机壳", "running shoes",
                        "面膜", "coffee beans", "儿童书包", "laptop stand", "保温杯",
                        "退货", "delivery time")
_REFERRERS: Final = _weighted((None, 0.45), ("https://www.baidu.com/", 0.2),
                              ("https://www.google.com/", 0.06), ("https://weibo.com/", 0.07),
                              ("https://www.xiaohongshu.com/", 0.1),
                              ("https://www.douyin.com/", 0.07),
                              ("https://mp.weixin.qq.com/", 0.05))
_CAMPAIGN_REFERRERS: Final = MappingProxyType({
    "email": "https://mail.qq.com/", "sms": None, "push": None,
    "display": "https://pos.baidu.com/", "social": "https://www.xiaohongshu.com/",
    "direct_mail": None,
})
_HELP_PAGES: Final = ("/help/delivery", "/help/returns", "/help/payment", "/account/orders",
                      "/account/orders/track", "/contact")
_CHECKOUT_ERRORS: Final = ("PAYMENT_DECLINED", "PAYMENT_TIMEOUT", "HTTP_500", "HTTP_502",
                           "ADDRESS_INVALID", "STOCK_UNAVAILABLE", "COUPON_INVALID")
_PAGE_ERRORS: Final = ("HTTP_500", "HTTP_504", "JS_ERROR", "HTTP_404")
_WEB_INTENTS: Final = _weighted(("browse", 0.58), ("buy", 0.3), ("search", 0.12))
_PAYMENTS: Final = _weighted(("alipay", 0.45), ("wechat_pay", 0.4), ("card", 0.1),
                             ("cash", 0.05))
_LOGIN_METHODS: Final = _weighted(("password", 0.4), ("sms_code", 0.35), ("wechat", 0.25))

# ---------------------------------------------------------------------------------------
# Call center and complaints.
_CALL_REASONS: Final = _weighted(("billing", 0.22), ("delivery", 0.26), ("product", 0.22),
                                 ("technical", 0.12), ("cancel", 0.06), ("other", 0.12))
_ISSUE_REASONS: Final = _weighted(("delivery", 0.4), ("billing", 0.22), ("product", 0.25),
                                  ("technical", 0.13))
_TRANSFERS: Final = _weighted((0, 0.8), (1, 0.14), (2, 0.05), (3, 0.01))
_TRANSFERS_IN_TROUBLE: Final = _weighted((0, 0.45), (1, 0.3), (2, 0.18), (3, 0.07))
# Chance a complaint follows an unresolved issue contact, by number of contacts so far.
_COMPLAINT_AFTER_CONTACTS: Final = (0.0, 0.0, 0.15, 0.3, 0.45, 0.6)
_MAX_ISSUE_CONTACTS: Final = 5
_SPONTANEOUS_COMPLAINT: Final = 0.008  # share of survey journeys: complaint out of the blue
_LODGED_VIA: Final = ("hotline", "email", "web_form", "store_desk", "social_media")

_NOTES_POSITIVE: Final = (
    "Issue resolved on first call, customer thanked the agent",
    "Refund confirmed, customer satisfied",
    "Explained the bill, customer happy with the answer",
    "Customer praised the store staff",
    "问题一次解决，客户表示感谢",
    "已确认退款，客户很满意",
    "解释了账单，客户对答复满意",
    "客户表扬了门店店员",
)
_NOTES_NEUTRAL: Final = (
    "Asked about order status, gave tracking number",
    "Updated delivery address",
    "Product question answered, no further action",
    "Customer asked for store opening hours",
    "Invoice copy requested, sent by e-mail",
    "查询订单状态，已提供物流单号",
    "修改了收货地址",
    "咨询产品使用方法，已解答",
    "客户询问门店营业时间",
    "客户要求补开发票，已邮件发送",
)
_NOTES_NEGATIVE: Final = (
    "Customer upset, parcel late again",
    "Customer angry about double charge, wants a manager",
    "Second call about the same broken item, very frustrated",
    "Complained about the long wait, threatens to cancel membership",
    "Customer says nobody called back as promised",
    "客户很不满意，包裹又延误了",
    "重复扣款，客户非常生气，要求找主管",
    "同一个问题又来电，客户很失望",
    "客户抱怨等待时间太长，威胁要取消会员",
    "客户说承诺的回电一直没有来",
)
_NOTES_ABANDONED: Final = ("Caller hung up while waiting in the queue", "客户排队时挂断")
COMMENTS_POSITIVE: Final = (
    "Fast delivery, great quality", "Staff were very helpful", "Love it, will buy again",
    "质量很好，物流很快", "店员服务热情", "非常满意，会回购",
)
COMMENTS_NEUTRAL: Final = (
    "It's okay", "Average experience", "Product as described",
    "还可以吧", "一般般", "和描述一致",
)
_COMMENTS_NEGATIVE: Final = (
    "Waited 40 minutes in the store, terrible", "Parcel arrived late and damaged",
    "Customer service never called back", "Charged twice, still no refund",
    "排队太久了，体验很差", "包裹延误而且破损", "客服一直不回电话", "重复扣款，退款还没到",
)
_COMPLAINT_TEXTS: Final = (
    "Formal complaint: third late delivery this month and nobody takes responsibility",
    "Formal complaint: charged twice, still no refund after several calls",
    "I want to complain about the waiting time and how I was treated",
    "The product broke again and my calls go nowhere. I want this escalated",
    "正式投诉：这个月第三次送货延误，没有人负责",
    "投诉重复扣款，打了好几次电话都没解决",
    "投诉排队时间过长，服务态度差",
    "产品又坏了，打电话也没人处理，要求升级处理",
)


@dataclass(frozen=True, slots=True)
class SimEvent:
    """One simulated touchpoint: its channel and the event in CONTRACT §2 JSON form."""

    channel: str  # one of touchpoint.schemas.contract.CHANNELS
    event: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class Simulator:
    """A simulated business and the people who meet it; :meth:`events` is their traffic.

    ``seed`` fixes everything: the same seed and parameters give the same events.
    ``customers`` is the number of CRM customers (guests come on top); ``start_ms`` the
    event-time origin in epoch ms (default: now, read when :meth:`events` starts);
    ``speedup`` how much faster simulated time runs than wall time when paced;
    ``stores`` and ``campaigns`` how many of each exist.
    """

    seed: int = 0
    customers: int = 2000
    start_ms: int | None = None
    speedup: float = 60.0
    stores: int = 12
    campaigns: int = 6

    def __post_init__(self) -> None:
        if self.customers < 1:
            raise ValueError(f"customers must be 1 or more, got {self.customers}")
        if self.stores < 1:
            raise ValueError(f"stores must be 1 or more, got {self.stores}")
        if self.campaigns < 0:
            raise ValueError(f"campaigns must be 0 or more, got {self.campaigns}")
        if not self.speedup > 0:
            raise ValueError(f"speedup must be more than 0, got {self.speedup}")
        if self.start_ms is not None and self.start_ms < 0:
            raise ValueError(f"start_ms must be epoch milliseconds, got {self.start_ms}")

    @property
    def natural_rate(self) -> float:
        """Events per wall-clock second at which natural traffic runs ``speedup`` times."""
        organic = self._natural_member_density() / (1 - GUEST_SHARE)
        return (organic + self._campaign_density()) * self.speedup

    def events(self, *, rate: float | None = None) -> Generator[SimEvent, None, None]:
        """Yield the simulated traffic, endlessly, in event-time order.

        ``rate`` is the wall-clock rate the events will be sent at (:func:`run` passes
        it), so that simulated time runs ``speedup`` times faster than wall time; None
        leaves event time to the population's natural activity. Every call starts the
        same simulation afresh.
        """
        if rate is not None and not rate > 0:
            raise ValueError(f"rate must be more than 0 events/s or None, got {rate}")
        start_ms = int(time.time() * 1000) if self.start_ms is None else self.start_ms
        members, guests, campaign_scale = self._densities(rate)
        traffic = _Traffic(self, start_ms=start_ms, member_density=members,
                           guest_density=guests, campaign_scale=campaign_scale)
        yield from traffic.stream()

    def _natural_member_density(self) -> float:
        """Return the events per simulated second CRM customers cause, campaigns aside."""
        return self.customers * EVENTS_PER_CUSTOMER_DAY / 86_400

    def _campaign_density(self) -> float:
        """Return the expected campaign-channel events per simulated second."""
        if not self.campaigns:
            return 0.0
        cookies = self.customers + _guest_pool_size(self.customers)
        per_wave = 0.0
        for index in range(self.campaigns):
            medium = _MEDIA[index % len(_MEDIA)]
            audience = medium.reach * (cookies if medium.to_cookies else self.customers)
            clicks = medium.open * medium.click if medium.open else medium.click
            per_wave += audience * (1 + medium.deliver * (1 + medium.open + clicks
                                                          + medium.unsubscribe))
        wave_gap_s = sum(_CAMPAIGN_WAVE_HOURS) / 2 * 3600
        return per_wave / self.campaigns / wave_gap_s

    def _densities(self, rate: float | None) -> tuple[float, float, float]:
        """Return member and guest events per simulated second, and the campaign scale."""
        natural = self._natural_member_density()
        if rate is None:
            return natural, natural * GUEST_SHARE / (1 - GUEST_SHARE), 1.0
        target = rate / self.speedup
        campaigns = self._campaign_density()
        # Campaign waves may take at most half of the traffic, or a slowly paced run
        # would be nothing but campaign waves.
        scale = min(1.0, 0.5 * target / campaigns) if campaigns else 1.0
        organic = target - campaigns * scale
        members = min(natural * MAX_ACTIVITY_BOOST, organic * (1 - GUEST_SHARE))
        return members, organic - members, scale


def _guest_pool_size(customers: int) -> int:
    """Return how many returning guests there are (first-time guests come on top)."""
    return max(customers // 2, 50)


# ---------------------------------------------------------------------------------------
# The simulated world. Everything mutable lives in the _Traffic of one events() call.


class _Store:
    __slots__ = ("busy", "staff", "store_id")

    def __init__(self, number: int, busy: float) -> None:
        self.store_id = f"S{number:03d}"
        self.busy = busy  # 1.0 = average footfall; flagship stores run above 1.5
        self.staff = tuple(f"E{number:03d}{j:02d}" for j in range(1, _STAFF_PER_STORE + 1))


class _Issue:
    """An open problem (late parcel, double charge...) that drives repeat contacts."""

    __slots__ = ("contacts", "reason")

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.contacts = 0


class _Person:
    """A CRM customer (``customer_id`` set) or a guest the business has no id for."""

    __slots__ = ("activity", "customer_id", "devices", "email", "grievance", "grievance_at",
                 "home_store", "issue", "linked", "phone", "value")

    def __init__(self, customer_id: str | None, phone: str, email: str,
                 devices: tuple[str, ...], home_store: _Store, value: float) -> None:
        self.customer_id = customer_id
        self.phone = phone  # 11 national digits; written in many formats
        self.email = email  # canonical; written with case and spaces varying
        self.devices = devices  # cookie / app device ids
        self.linked: set[str] = set()  # devices logged in from (membership tests only)
        self.home_store = home_store
        self.value = value  # spend multiplier, heavy-tailed
        self.activity = 0.3 + value**0.5  # valuable customers come more often
        self.grievance = 0.0  # accumulated bad experience, fades over weeks
        self.grievance_at = 0
        self.issue: _Issue | None = None


class _Campaign(NamedTuple):
    campaign_id: str
    medium: _Medium
    ad_ids: tuple[str, ...]


class _Slots(NamedTuple):
    """Journey kinds at one hour of the week, and how busy that hour is."""

    kinds: _Weighted[str]
    density: float  # relative to the weekly mean


class _Clock:
    """When the next journey of a crowd (CRM customers or guests) starts.

    Every event the crowd causes moves the clock on by its share of simulated time at
    the target density, so the density holds however long the journeys are.
    """

    __slots__ = ("density", "next")

    def __init__(self, start_ms: int, density: float) -> None:
        self.density = density  # events per simulated second, weekly mean
        self.next: float = start_ms if density > 0 else math.inf

    def spend(self, rng: random.Random, t: float, events: int, busy: float) -> None:
        gap = rng.expovariate(1) * max(events, 1) * 1000 / (self.density * busy)
        self.next = max(self.next, t) + max(int(gap), 1)


class _Traffic:
    """One run of the simulation: population, pending events and journey clocks."""

    def __init__(self, sim: Simulator, *, start_ms: int, member_density: float,
                 guest_density: float, campaign_scale: float) -> None:
        # Seeds name the module's first home (touchpoint.simulate): a seed gives the same
        # traffic as before the move to touchpoint.sim.
        population = random.Random(f"touchpoint.simulate:{sim.seed}:population")
        self.rng = random.Random(f"touchpoint.simulate:{sim.seed}:traffic")
        self.random = self.rng.random
        # Event ids also depend on the start: a rerun from the same start repeats them
        # (a replay, deduplicated downstream), a run started later does not.
        self.ids = random.Random(f"touchpoint.simulate:{sim.seed}:{start_ms}:ids")
        self.stores = tuple(_Store(n, population.choice((0.6, 0.8, 1.0, 1.0, 1.2, 1.7, 2.0)))
                            for n in range(1, sim.stores + 1))
        self.customers = tuple(self._new_person(population, f"C{n:06d}")
                               for n in range(1, sim.customers + 1))
        self.activity_cum = tuple(accumulate(c.activity for c in self.customers))
        self.guests = tuple(self._new_person(population, None)
                            for _ in range(_guest_pool_size(sim.customers)))
        # Display and social ads reach browser cookies, of customers and guests alike.
        self.cookies = tuple(p.devices[0] for p in self.customers + self.guests)
        self.owners = self.customers + self.guests
        self.campaigns = _make_campaigns(start_ms, sim.campaigns)
        ad_campaigns = tuple(c for c in self.campaigns if c.medium.to_cookies)
        self.ad_campaigns = ad_campaigns or self.campaigns
        self.search_urls = tuple((term, f"{_SITE}/search?q={quote(term)}")
                                 for term in _SEARCH_TERMS)
        self.campaign_scale = campaign_scale
        self.slots = _slot_table(_JOURNEYS)
        self.journeys: dict[str, Callable[[int, _Person], Any]] = {
            "web": self._web_visit, "store": self._store_visit, "call": self._routine_call,
            "survey": self._survey, "issue": self._issue_start,
        }
        # Pending events and follow-ups, ordered by time: (time, sequence, item).
        self.heap: list[tuple[int, int, Any]] = []
        self.sequence = count()
        self.emitted = 0
        self.case_numbers = count(1)
        self.dates: dict[int, str] = {}
        self.members = _Clock(start_ms, member_density)
        self.guest_clock = _Clock(start_ms, guest_density)
        self.wave_next: float = (start_ms + self._int(20, 90) * _MINUTE_MS
                                 if self.campaigns else math.inf)
        self.waves = 0

    # -- the engine -----------------------------------------------------------------

    def stream(self) -> Iterator[SimEvent]:
        """Run journeys and follow-ups in time order, yielding their events."""
        heap = self.heap
        pop = heapq.heappop
        members, guests = self.members, self.guest_clock
        while True:
            due = min(members.next, guests.next, self.wave_next)
            while heap and heap[0][0] <= due:
                at, _, item = pop(heap)
                if item.__class__ is SimEvent:
                    yield item
                else:
                    self._follow_up(at, *item)
                    break  # it may have moved the clocks: look again
            else:
                self._start(due)

    def _start(self, due: float) -> None:
        """Start what is due: a campaign wave, or a customer's or a guest's journey."""
        if due == self.wave_next:
            self._campaign_wave(int(due))
        elif due == self.members.next:
            self._journey(int(due), self.members, self._pick_customer())
        else:
            self._journey(int(due), self.guest_clock, self._pick_guest())

    def _journey(self, t: int, clock: _Clock, person: _Person) -> None:
        slots = self.slots[_hour_of_week(t)]
        before = self.emitted
        self.journeys[slots.kinds.pick(self.rng)](t, person)
        clock.spend(self.rng, t, self.emitted - before, slots.density)

    def _follow_up(self, t: int, function: Callable[..., Any], person: _Person,
                   args: tuple[Any, ...]) -> None:
        before = self.emitted
        function(t, person, *args)
        if self.emitted > before:
            clock = self.members if person.customer_id else self.guest_clock
            if clock.density > 0:
                slots = self.slots[_hour_of_week(int(clock.next))]
                clock.spend(self.rng, clock.next, self.emitted - before, slots.density)

    def _later(self, t: int, function: Callable[..., Any], person: _Person,
               *args: Any) -> None:
        """Run ``function(t, person, *args)`` when simulated time reaches ``t``."""
        heapq.heappush(self.heap, (t, next(self.sequence), (function, person, args)))

    def _emit(self, t: int, channel: str, kind: str, ids: dict[str, str],
              fields: dict[str, Any] | None = None) -> None:
        if fields:
            event = {"event_id": self._event_id(), "type": kind,
                     "occurred_at": self._occurred_at(channel, t), **ids, **fields}
        else:
            event = {"event_id": self._event_id(), "type": kind,
                     "occurred_at": self._occurred_at(channel, t), **ids}
        self._push(t, channel, event)

    def _push(self, t: int, channel: str, event: dict[str, Any]) -> None:
        self.emitted += 1
        heapq.heappush(self.heap, (t, next(self.sequence), SimEvent(channel, event)))

    def _event_id(self) -> str:
        """Make a UUID-4-shaped id from a seeded generator (uuid4() would not repeat)."""
        h = (self.ids.getrandbits(128) & _UUID_MASK | _UUID4_BITS).to_bytes(16, "big").hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def _occurred_at(self, channel: str, t: int) -> str | int:
        iso_share, offset, suffix, millis = _TIME_STYLE[channel]
        if self.random() >= iso_share:
            return t
        day, ms = divmod(t + offset, _DAY_MS)
        day_text = self.dates.get(day)
        if day_text is None:
            day_text = self.dates[day] = (_EPOCH + timedelta(days=day)).isoformat()
        clock = f"{_HH_MM[ms // _MINUTE_MS]}{_SS[ms // _SECOND_MS % 60]}"
        if millis:
            return f"{day_text}T{clock}{_DOT_MS[ms % _SECOND_MS]}{suffix}"
        return f"{day_text}T{clock}{suffix}"

    # rng.choice, rng.randint and rng.lognormvariate, at a fraction of the cost.

    def _choice(self, values: Sequence[T]) -> T:
        return values[int(self.random() * len(values))]

    def _int(self, low: int, high: int) -> int:
        return low + int(self.random() * (high - low + 1))

    def _lognormal(self, mu: float, sigma: float) -> float:
        return math.exp(mu + sigma * self.rng.gauss(0.0, 1.0))

    # -- people ---------------------------------------------------------------------

    def _new_person(self, rng: random.Random, customer_id: str | None) -> _Person:
        given, family = _pick(rng, _GIVEN_NAMES), _pick(rng, _FAMILY_NAMES)
        local = _pick(rng, (f"{given}.{family}", f"{given}{family}", f"{family}{given}"))
        email = f"{local}{1 + int(rng.random() * 9999)}@{_MAIL_DOMAINS.pick(rng)}"
        devices = tuple(_hex_id(rng, "ck_", 64) for _ in range(_DEVICES_PER_PERSON.pick(rng)))
        # Pareto spend: a few percent of customers bring close to half the revenue.
        value = min(rng.paretovariate(1.3), 40.0)
        return _Person(customer_id, _mobile(rng), email, devices, _pick(rng, self.stores),
                       value)

    def _pick_customer(self) -> _Person:
        cum = self.activity_cum
        return self.customers[bisect(cum, self.random() * cum[-1])]

    def _pick_guest(self) -> _Person:
        if self.random() < _RETURNING_GUEST:
            return self._choice(self.guests)
        return self._new_person(self.rng, None)  # first time here, never seen again

    def _phone(self, person: _Person) -> str:
        return _phone_text(self.rng, person.phone)

    def _email(self, person: _Person) -> str:
        """Write the address as a person or system typed it; the pipeline normalizes."""
        email = person.email
        r = self.random()
        if r < 0.65:
            return email
        if r < 0.8:
            local, _, domain = email.partition("@")
            return f"{local.title()}@{domain.upper()}"
        if r < 0.9:
            return f" {email} "
        return email.upper()

    def _mood(self, person: _Person, t: int) -> float:
        """Return the grievance now: bad experiences add up and fade, half-life a week."""
        if person.grievance == 0.0:
            return 0.0
        return person.grievance * 0.5 ** (max(t - person.grievance_at, 0) / _WEEK_MS)

    def _hurt(self, person: _Person, t: int, amount: float) -> None:
        person.grievance = max(self._mood(person, t) + amount, 0.0)
        person.grievance_at = t

    def _rating(self, person: _Person, t: int, low: int, high: int) -> int:
        """Score between low and high: happy people rate high, aggrieved ones low."""
        x = min(max(self.rng.gauss(0.8 - 0.25 * self._mood(person, t), 0.22), 0.0), 1.0)
        return low + round(x * (high - low))

    # -- web ------------------------------------------------------------------------

    def _web_visit(self, t: int, person: _Person) -> None:
        intent = "help" if person.issue is not None and self.random() < 0.3 else None
        self._web_session(t, person, self._choice(person.devices), intent=intent)

    def _web_session(self, t: int, person: _Person, device: str, *, intent: str | None = None,
                     campaign: _Campaign | None = None) -> int:
        """One visit: landing, browsing, maybe login, cart and checkout. Returns its end."""
        rng = self.rng
        intent = intent or _WEB_INTENTS.pick(rng)
        session = _hex_id(rng, "s_", 48)
        member = person.customer_id is not None
        logged_in = member and device in person.linked and rng.random() < 0.7
        ids = self._web_ids(device, person if logged_in else None)
        # Customers on a device they never logged in from browse anonymously until then.
        login_at = -1
        if member and not logged_in:
            chance = 0.85 if intent == "buy" else 0.7 if intent == "help" else 0.3
            if rng.random() < chance:
                login_at = self._int(0, 2)
        t = self._landing(t, ids, session, campaign)
        if intent == "help":
            return self._help_pages(t, ids, session, person, device, login_at)
        pages = 1 + int(rng.expovariate(1 / (2.5 if intent == "browse" else 1.5)))
        for step in range(pages):
            if step == login_at:
                t, ids = self._login(t, person, device, session)
            t = self._browse_step(t, ids, session, intent)
        if intent == "buy":
            if login_at >= pages:
                t, ids = self._login(t, person, device, session)
            t = self._checkout(t, ids, session, person, logged_in or login_at >= 0)
        return t

    def _web_ids(self, device: str, person: _Person | None) -> dict[str, str]:
        if person is None or person.customer_id is None:
            return {"anonymous_id": device}
        return {"anonymous_id": device, "customer_id": person.customer_id}

    def _web(self, t: int, kind: str, ids: dict[str, str], session: str, url: str,
             **fields: Any) -> None:
        self._push(t, "web", {"event_id": self._event_id(), "type": kind,
                              "occurred_at": self._occurred_at("web", t), **ids,
                              "session_id": session, "url": url, **fields})

    def _dwell(self) -> int:
        return int(self._lognormal(10.1, 0.9))  # median about 25 s

    def _landing(self, t: int, ids: dict[str, str], session: str,
                 campaign: _Campaign | None) -> int:
        dwell = self._dwell()
        if campaign is None:
            url = self._choice((f"{_SITE}/", f"{_SITE}/c/{self._choice(_CATEGORIES)}",
                                self._product_url()))
            referrer = _REFERRERS.pick(self.rng)
            extra: dict[str, Any] = {"referrer": referrer} if referrer else {}
        else:
            medium = campaign.medium.name
            url = (f"{_SITE}/promo/{campaign.campaign_id.lower()}?utm_source={medium}"
                   f"&utm_campaign={campaign.campaign_id}")
            referrer = _CAMPAIGN_REFERRERS[medium]
            extra = {"campaign_id": campaign.campaign_id}
            if referrer:
                extra["referrer"] = referrer
        # A short dwell after a campaign click tells marketing the landing page needs work.
        self._web(t, "page_view", ids, session, url, dwell_ms=dwell, **extra)
        return t + dwell

    def _product_url(self) -> str:
        category = self._choice(_CATEGORIES)
        return f"{_SITE}/p/{category[:2].upper()}{self._int(1, 4000):05d}"

    def _browse_step(self, t: int, ids: dict[str, str], session: str, intent: str) -> int:
        rng = self.rng
        if rng.random() < (0.35 if intent == "search" else 0.12):
            term, url = self._choice(self.search_urls)
            self._web(t, "search", ids, session, url, attributes={"query": term})
            t += self._int(1500, 6000)
        if rng.random() < 0.75:
            url = self._product_url()
        else:
            url = f"{_SITE}/c/{self._choice(_CATEGORIES)}"
        dwell = self._dwell()
        self._web(t, "page_view", ids, session, url, dwell_ms=dwell)
        if rng.random() < 0.15:
            t = self._ad(t + self._int(200, 1500), ids, session, url)
        if rng.random() < 0.01:
            self._web(t + self._int(100, 900), "error", ids, session, url,
                      error_code=self._choice(_PAGE_ERRORS))
        return t + dwell

    def _ad(self, t: int, ids: dict[str, str], session: str, url: str) -> int:
        campaign = self._choice(self.ad_campaigns) if self.ad_campaigns else None
        if campaign is not None:
            fields = {"ad_id": self._choice(campaign.ad_ids), "campaign_id": campaign.campaign_id}
        else:
            fields = {"ad_id": f"AD-H{self._int(1, 9):02d}"}  # house ads
        self._web(t, "ad_impression", ids, session, url, **fields)
        if self.random() < 0.04:
            t += self._int(1000, 20000)
            self._web(t, "ad_click", ids, session, url, **fields)
            if campaign is not None:
                t = self._landing(t + self._int(300, 1500), ids, session, campaign)
        return t

    def _login(self, t: int, person: _Person, device: str,
               session: str) -> tuple[int, dict[str, str]]:
        """Log in: the event that links a cookie to a customer (CONTRACT §2)."""
        ids = self._web_ids(device, person)
        login_ids = {**ids, "email": self._email(person)} if self.random() < 0.3 else ids
        self._web(t, "login", login_ids, session, f"{_SITE}/login",
                  attributes={"method": _LOGIN_METHODS.pick(self.rng)})
        person.linked.add(device)
        return t + self._int(4000, 30000), ids

    def _checkout(self, t: int, ids: dict[str, str], session: str, person: _Person,
                  logged_in: bool) -> int:
        rng = self.rng
        for _ in range(self._choice((1, 1, 1, 2))):
            self._web(t, "add_to_cart", ids, session, self._product_url())
            t += self._int(3000, 60000)
        guest_checkout = not logged_in
        if guest_checkout and rng.random() < 0.6:
            return t  # the login wall: most anonymous carts are abandoned
        self._web(t, "checkout_started", ids, session, f"{_SITE}/checkout")
        t += self._int(10000, 90000)
        if rng.random() < 0.06 + 0.1 * min(self._mood(person, t), 3.0):
            for _ in range(self._choice((1, 1, 2, 3))):
                self._web(t, "error", ids, session, f"{_SITE}/checkout/pay",
                          error_code=self._choice(_CHECKOUT_ERRORS))
                t += self._int(5000, 40000)
            if rng.random() < 0.6:  # abandoned after errors
                self._hurt(person, t, 0.4)
                return t
            self._web(t, "checkout_started", ids, session, f"{_SITE}/checkout")
            t += self._int(10000, 60000)
        elif rng.random() < 0.15:
            return t  # abandoned without a visible reason
        # A guest checkout asks for an e-mail address for the receipt.
        buyer = {**ids, "email": self._email(person)} if guest_checkout else ids
        self._web(t, "purchase", buyer, session, f"{_SITE}/order/confirm",
                  amount=self._basket(person), currency="CNY",
                  attributes={"payment": _PAYMENTS.pick(rng)})
        if rng.random() < 0.04:
            self._later(t + self._int(2, 10) * _DAY_MS, self._review, person, None)
        return t + self._int(5000, 20000)

    def _basket(self, person: _Person) -> float:
        return round(self._lognormal(4.9, 0.8) * person.value**0.8, 2)  # ~134 CNY times value

    def _help_pages(self, t: int, ids: dict[str, str], session: str, person: _Person,
                    device: str, login_at: int) -> int:
        """Look for help: help and order pages, often with errors when things are wrong."""
        troubled = person.issue is not None
        for step in range(self._int(2, 5)):
            if step == login_at:
                t, ids = self._login(t, person, device, session)
            url = _SITE + self._choice(_HELP_PAGES)
            dwell = self._dwell()
            self._web(t, "page_view", ids, session, url, dwell_ms=dwell)
            if self.random() < (0.35 if troubled else 0.03):
                self._web(t + self._int(200, 3000), "error", ids, session, url,
                          error_code=self._choice(_PAGE_ERRORS))
            t += dwell
        return t

    # -- stores ---------------------------------------------------------------------

    def _store_visit(self, t: int, person: _Person, *, returning: bool = False,
                     campaign: _Campaign | None = None) -> bool:
        """Visit a store: maybe a queue, service, purchase or return. True if it went well."""
        rng = self.rng
        t = self._in_hours(t, _STORE_BY_HOUR)
        store = person.home_store if rng.random() < 0.8 else self._choice(self.stores)
        where = {"store_id": store.store_id}
        if person.customer_id is not None:
            visitor = loyalty = {"customer_id": person.customer_id}  # loyalty card or app
        else:
            # No card: the footfall system knows the phone's Wi-Fi id, the till a phone
            # number for the e-receipt.
            visitor = {"anonymous_id": person.devices[0]}
            loyalty = {"phone": self._phone(person)}
        self._emit(t, "store", "visit", visitor, where)
        t += self._int(1, 8) * _MINUTE_MS
        staff = self._choice(store.staff)
        wait = 0
        if returning or rng.random() < 0.5:
            ticket = {"phone": self._phone(person)} if rng.random() < 0.4 else loyalty
            self._emit(t, "store", "queue_joined", ticket, where)
            wait = self._store_wait(t, store)
            t += wait * 1000
            self._emit(t, "store", "served", loyalty,
                       {**where, "staff_id": staff, "queue_wait_s": wait})
            t += self._int(3, 15) * _MINUTE_MS
            if wait > 900:
                self._hurt(person, t, 0.8)
        went_well = wait <= 900
        if returning or rng.random() < 0.03:
            self._emit(t, "store", "return", loyalty,
                       {**where, "staff_id": staff, "amount": self._basket(person),
                        "currency": "CNY", "items": self._choice((1, 1, 1, 2))})
            t += self._int(2, 10) * _MINUTE_MS
            went_well = went_well and (not returning or rng.random() < 0.5)
        if rng.random() < (0.35 if wait > 900 else 0.62):
            fields = {**where, "staff_id": staff, "amount": self._basket(person),
                      "currency": "CNY", "items": self._choice((1, 1, 1, 2, 2, 3, 4, 6)),
                      "attributes": {"payment": _PAYMENTS.pick(rng)}}
            if campaign is not None and rng.random() < 0.5:
                fields["campaign_id"] = campaign.campaign_id  # the coupon was scanned
            self._emit(t, "store", "purchase", loyalty, fields)
        if rng.random() < (0.5 if wait > 900 else 0.15):
            self._later(t + self._int(30, 1440) * _MINUTE_MS, self._csat, person, "store",
                        store.store_id)
        return went_well

    def _store_wait(self, t: int, store: _Store) -> int:
        """Seconds in the queue: mostly short, a tail of long ones at busy stores and hours."""
        load = store.busy * _STORE_BY_HOUR[_local_hour(t)] * (1.4 if _is_weekend(t) else 1.0)
        if self.random() < min(0.02 * load * load, 0.2):
            return self._int(900, 3600)
        return int(self._lognormal(4.6, 0.7) * load)  # median ~100 s at average load

    def _campaign_store_visit(self, t: int, person: _Person, campaign: _Campaign) -> None:
        self._store_visit(t, person, campaign=campaign)

    # -- call center ----------------------------------------------------------------

    def _routine_call(self, t: int, person: _Person) -> None:
        self._call(t, person)

    def _call(self, t: int, person: _Person, *, reason: str | None = None,
              resolve_chance: float = 0.86, callback: bool = False,
              troubled: bool = False) -> str:
        """Make one call; return its outcome, or "callback" when the caller asked for one."""
        rng = self.rng
        t = self._in_hours(t, _CALL_BY_HOUR)
        reason = reason or _CALL_REASONS.pick(rng)
        # Caller ID gives the phone; an agent who looks the caller up adds the CRM id.
        ids = {"phone": self._phone(person)}
        if person.customer_id is not None and (callback or rng.random() < 0.4):
            ids["customer_id"] = person.customer_id
        wait = 0 if callback else self._call_wait(t)
        if wait > 240 and rng.random() < 0.3:
            waited = self._int(60, 240)
            self._emit(t + waited * 1000, "callcenter", "callback_requested", ids,
                       {"queue_wait_s": waited, "reason": reason})
            self._hurt(person, t, 0.3)
            if not troubled:  # an issue's next contact comes from the issue itself
                self._later(t + self._int(20, 240) * _MINUTE_MS, self._callback, person,
                            reason)
            return "callback"
        call = {"call_id": _hex_id(rng, "CL", 40), "queue_wait_s": wait, "reason": reason}
        if wait > 180 and rng.random() < 0.35:
            self._emit(t + wait * 1000, "callcenter", "call_ended", ids,
                       {**call, "talk_s": 0, "transfers": 0, "outcome": "abandoned",
                        "notes": self._choice(_NOTES_ABANDONED)})
            self._hurt(person, t, 0.6)
            if not troubled and rng.random() < 0.5:
                self._later(t + self._int(10, 120) * _MINUTE_MS, self._routine_call, person)
            return "abandoned"
        transfers = (_TRANSFERS_IN_TROUBLE if troubled else _TRANSFERS).pick(rng)
        talk = int(self._lognormal(5.5, 0.6) * (1.6 if troubled else 1.0)) + 90 * transfers
        r = rng.random()
        if r < resolve_chance:
            outcome = "resolved"
        elif r < resolve_chance + (1 - resolve_chance) * 0.7:
            outcome = "unresolved"
        else:
            outcome = "escalated"
        hurt = (0.5 if wait > 300 else 0.0) + (0.6 if transfers >= 2 else 0.0)
        hurt += {"resolved": 0.0, "unresolved": 1.0, "escalated": 0.7}[outcome]
        self._hurt(person, t, hurt)
        if hurt == 0.0:
            person.grievance *= 0.6  # relief
        end = t + (wait + talk) * 1000
        self._emit(end, "callcenter", "call_ended", ids,
                   {**call, "agent_id": f"AG{self._int(1, _AGENTS):03d}", "talk_s": talk,
                    "transfers": transfers, "outcome": outcome,
                    "notes": self._note(person, t, outcome)})
        if rng.random() < 0.3:
            self._later(end + self._int(2, 30) * _MINUTE_MS, self._csat, person,
                        "callcenter", None)
        return outcome

    def _callback(self, t: int, person: _Person, reason: str) -> None:
        self._call(t, person, reason=reason, callback=True)

    def _call_wait(self, t: int) -> int:
        """Seconds before an agent answers: short mostly, long at peak hours."""
        load = _CALL_BY_HOUR[_local_hour(t)]
        if self.random() < 0.04 * load * load:
            return self._int(300, 1800)
        return int(self._lognormal(3.7, 0.8) * load)  # median ~40 s

    def _note(self, person: _Person, t: int, outcome: str) -> str:
        mood = self._mood(person, t)
        if outcome != "resolved" and (mood > 1.0 or self.random() < 0.5):
            return self._choice(_NOTES_NEGATIVE)
        if outcome == "resolved" and mood < 1.0 and self.random() < 0.4:
            return self._choice(_NOTES_POSITIVE)
        if mood > 2.0:
            return self._choice(_NOTES_NEGATIVE)
        return self._choice(_NOTES_NEUTRAL)

    # -- problems, repeat contacts, complaints ------------------------------------------

    def _issue_start(self, t: int, person: _Person) -> None:
        """Something went wrong (late parcel, double charge...): get in touch about it."""
        if person.issue is None:
            person.issue = _Issue(_ISSUE_REASONS.pick(self.rng))
            self._hurt(person, t, 0.5)
        if self.random() < 0.5:
            end = self._web_session(t, person, self._choice(person.devices), intent="help")
            self._later(end + self._int(5, 120) * _MINUTE_MS, self._issue_contact, person)
        else:
            self._issue_contact(t, person)

    def _issue_contact(self, t: int, person: _Person) -> None:
        """Contact the business about the open issue: a call mostly, or the store or web."""
        rng = self.rng
        issue = person.issue
        if issue is None:
            return  # closed meanwhile (a complaint was lodged)
        issue.contacts += 1
        r = rng.random()
        if issue.contacts > 1 and r < 0.15:
            resolved = self._store_visit(t, person, returning=True)
        elif issue.contacts > 1 and r < 0.25:
            self._web_session(t, person, self._choice(person.devices), intent="help")
            resolved = False
        else:
            outcome = self._call(t, person, reason=issue.reason, troubled=True,
                                 resolve_chance=0.25 + 0.1 * issue.contacts)
            resolved = outcome == "resolved"
        if resolved:
            person.issue = None
            return
        complain = _COMPLAINT_AFTER_CONTACTS[min(issue.contacts, _MAX_ISSUE_CONTACTS)]
        if rng.random() < complain * min(0.5 + self._mood(person, t) / 4, 1.5):
            person.issue = None  # the complaint desk takes it over
            self._later(t + self._int(30, 1440) * _MINUTE_MS, self._complaint, person,
                        issue.reason)
            return
        if issue.contacts >= _MAX_ISSUE_CONTACTS:
            person.issue = None  # gives up, quietly: a customer at risk
            return
        if rng.random() < 0.35:
            self._later(t + self._int(10, 600) * _MINUTE_MS, self._csat, person,
                        "callcenter", None)
        # The angrier, the sooner they try again.
        hours = rng.uniform(1, 48) / (1 + self._mood(person, t) / 2)
        self._later(t + int(hours * _HOUR_MS), self._issue_contact, person)

    def _complaint(self, t: int, person: _Person, reason: str | None) -> None:
        """Lodge a formal complaint (what signals should have come before)."""
        r = self.random()
        if person.customer_id is not None and r < 0.6:
            ids = {"customer_id": person.customer_id}
        elif r < 0.85:
            ids = {"phone": self._phone(person)}
        else:
            ids = {"email": self._email(person)}
        about = "store" if reason is None and self.random() < 0.3 else "callcenter"
        fields: dict[str, Any] = {
            "case_id": f"CASE-{next(self.case_numbers):06d}",
            "comment": self._choice(_COMPLAINT_TEXTS), "about_channel": about,
            "attributes": {"lodged_via": self._choice(_LODGED_VIA),
                           "reason": reason or "other"},
        }
        if about == "store":
            fields["store_id"] = person.home_store.store_id
        self._emit(t, "feedback", "complaint", ids, fields)
        self._hurt(person, t, 1.0)

    # -- feedback -------------------------------------------------------------------

    def _survey(self, t: int, person: _Person) -> None:
        r = self.random()
        if r < _SPONTANEOUS_COMPLAINT:
            self._complaint(t, person, None)
        elif r < 0.6:
            self._nps(t, person)
        else:
            self._review(t, person, person.home_store.store_id if r < 0.75 else None)

    def _survey_ids(self, person: _Person) -> dict[str, str]:
        r = self.random()
        if person.customer_id is not None and r < 0.6:
            return {"customer_id": person.customer_id}
        if person.customer_id is None and r < 0.3:
            return {"phone": self._phone(person)}
        return {"email": self._email(person)}

    def _comment(self, score: float, top: int) -> str:
        share = score / top
        if share <= 0.4:
            return self._choice(_COMMENTS_NEGATIVE)
        if share < 0.75:
            return self._choice(COMMENTS_NEUTRAL)
        return self._choice(COMMENTS_POSITIVE)

    def _nps(self, t: int, person: _Person) -> None:
        score = self._rating(person, t, 0, 10)
        fields: dict[str, Any] = {"score": score}
        if self.random() < 0.3:
            fields["comment"] = self._comment(score, 10)
        self._emit(t, "feedback", "nps", self._survey_ids(person), fields)

    def _review(self, t: int, person: _Person, store_id: str | None) -> None:
        score = self._rating(person, t, 1, 5)
        fields: dict[str, Any] = {"score": score, "comment": self._comment(score, 5),
                                  "about_channel": "store" if store_id else "web"}
        if store_id:
            fields["store_id"] = store_id
        self._emit(t, "feedback", "review", self._survey_ids(person), fields)

    def _csat(self, t: int, person: _Person, about: str, store_id: str | None) -> None:
        """Answer the short survey after a call or a store visit (SMS link or e-mail)."""
        score = self._rating(person, t, 1, 5)
        fields: dict[str, Any] = {"score": score, "about_channel": about}
        if store_id:
            fields["store_id"] = store_id
        if self.random() < 0.25 or score <= 2:
            fields["comment"] = self._comment(score, 5)
        if about == "callcenter" and self.random() < 0.6:
            ids = {"phone": self._phone(person)}  # the survey went out by SMS
        else:
            ids = self._survey_ids(person)
        self._emit(t, "feedback", "csat", ids, fields)
        if score <= 2:
            self._hurt(person, t, 0.3)

    # -- campaigns ------------------------------------------------------------------

    def _campaign_wave(self, t: int) -> None:
        """Send one campaign to its audience, spread over the sender's throttle window."""
        campaign = self.campaigns[self.waves % len(self.campaigns)]
        self.waves += 1
        self.wave_next = t + int(self.rng.uniform(*_CAMPAIGN_WAVE_HOURS) * _HOUR_MS)
        medium = campaign.medium
        audience = len(self.cookies) if medium.to_cookies else len(self.customers)
        size = round(audience * medium.reach * self.campaign_scale
                     * self.rng.uniform(0.85, 1.15))
        for index in self.rng.sample(range(audience), min(max(size, 1), audience)):
            sent_at = t + int(self.random() * 45 * _MINUTE_MS)
            if medium.to_cookies:
                cookie = self.cookies[index]
                self._campaign_message(sent_at, self.owners[index], campaign,
                                       {"anonymous_id": cookie}, cookie)
            else:
                person = self.customers[index]
                self._campaign_message(sent_at, person, campaign,
                                       self._recipient_ids(medium.name, person), None)

    def _recipient_ids(self, medium: str, person: _Person) -> dict[str, str]:
        if medium == "email":
            ids = {"email": self._email(person)}
        elif medium == "sms":
            ids = {"phone": self._phone(person)}
        elif medium == "push":
            ids = {"anonymous_id": person.devices[0]}  # the app's device id
        elif person.customer_id is not None:
            return {"customer_id": person.customer_id}  # direct mail goes to CRM addresses
        else:
            return {"email": self._email(person)}
        if person.customer_id is not None and self.random() < 0.6:
            ids["customer_id"] = person.customer_id
        return ids

    def _campaign_message(self, t: int, person: _Person, campaign: _Campaign,
                          ids: dict[str, str], cookie: str | None) -> None:
        """Send one message: delivered, maybe opened, fewer clicked; some opt out, respond."""
        rng = self.rng
        medium = campaign.medium
        fields = {"campaign_id": campaign.campaign_id, "medium": medium.name,
                  "variant": "A" if rng.random() < 0.5 else "B"}
        self._emit(t, "campaign", "sent", ids, fields)
        if rng.random() >= medium.deliver:
            return
        if medium.name == "direct_mail":
            t += self._int(1, 4) * _DAY_MS
        else:
            t += self._int(1, 90) * _SECOND_MS
        self._emit(t, "campaign", "delivered", ids, fields)
        seen = t
        clicked_at = None
        if medium.open:
            if rng.random() < medium.open:
                seen = t + int(self._lognormal(8.6, 1.3) * _SECOND_MS)  # median ~1.5 h
                self._emit(seen, "campaign", "opened", ids, fields)
                if rng.random() < medium.click:
                    clicked_at = seen + self._int(5, 600) * _SECOND_MS
        elif rng.random() < medium.click:
            clicked_at = t + int(self._lognormal(7.0, 1.2) * _SECOND_MS)
        if clicked_at is not None:
            self._emit(clicked_at, "campaign", "clicked", ids, fields)
            device = cookie or self._choice(person.devices)
            self._later(clicked_at + self._int(1, 5) * _SECOND_MS, self._campaign_landing,
                        person, campaign, device)
        if medium.unsubscribe and rng.random() < medium.unsubscribe:
            self._emit(seen + self._int(1, 600) * _MINUTE_MS // 10, "campaign",
                       "unsubscribed", ids, fields)
        elif clicked_at is None:
            self._campaign_response(t, person, campaign)

    def _campaign_response(self, t: int, person: _Person, campaign: _Campaign) -> None:
        """Let a recipient who did not click still come to a store or the site later."""
        r = self.random()
        store_chance = (_DIRECT_MAIL_STORE_RESPONSE if campaign.medium.name == "direct_mail"
                        else _CAMPAIGN_STORE_RESPONSE)
        if r < store_chance:
            self._later(t + self._int(2, 72) * _HOUR_MS, self._campaign_store_visit, person,
                        campaign)
        elif r < store_chance + _CAMPAIGN_WEB_RESPONSE:
            self._later(t + self._int(1, 48) * _HOUR_MS, self._web_visit, person)

    def _campaign_landing(self, t: int, person: _Person, campaign: _Campaign,
                          device: str) -> None:
        intent = "buy" if self.random() < 0.35 else "browse"
        self._web_session(t, person, device, intent=intent, campaign=campaign)

    # -- time -----------------------------------------------------------------------

    def _in_hours(self, t: int, profile: tuple[float, ...]) -> int:
        """Return ``t`` if open then, else a moment in the first hour of the next opening."""
        hour = _local_hour(t)
        if profile[hour]:
            return t
        hour_start = t - (t + _CST_MS) % _HOUR_MS
        for step in range(1, 25):
            if profile[(hour + step) % 24]:
                return hour_start + step * _HOUR_MS + int(self.random() * _HOUR_MS)
        return t


def _local_hour(t: int) -> int:
    return (t + _CST_MS) // _HOUR_MS % 24


def _is_weekend(t: int) -> bool:
    return ((t + _CST_MS) // _DAY_MS + 3) % 7 >= 5  # 1970-01-01 was a Thursday


def _hour_of_week(t: int) -> int:
    """Return 0-23 for weekday hours, 24-47 for weekend hours (what slot tables tell apart)."""
    return _local_hour(t) + (24 if _is_weekend(t) else 0)


def _slot_table(
    journeys: tuple[tuple[str, float, tuple[float, ...], str], ...],
) -> tuple[_Slots, ...]:
    """Return, per weekday and weekend hour, which journeys start and how busy it is."""
    rows = []
    for weekend in (False, True):
        for hour in range(24):
            rows.append([(kind, weight * profile[hour]
                          * (_WEEKEND_FACTOR[factor] if weekend else 1.0))
                         for kind, weight, profile, factor in journeys])
    totals = [sum(w for _, w in row) for row in rows]
    mean = (sum(totals[:24]) * 5 + sum(totals[24:]) * 2) / (24 * 7)
    return tuple(_Slots(_weighted(*row), total / mean)
                 for row, total in zip(rows, totals, strict=True))


def _make_campaigns(start_ms: int, number: int) -> tuple[_Campaign, ...]:
    """Name campaigns after the start month (CMP-2026-11-A, ...), one medium each."""
    month = (_EPOCH + timedelta(milliseconds=start_ms + _CST_MS)).strftime("%Y-%m")
    campaigns = []
    for index in range(number):
        code = chr(ord("A") + index % 26) + (str(index // 26) if index >= 26 else "")
        ads = tuple(f"AD-{code}{n:02d}" for n in range(1, 5))
        campaigns.append(_Campaign(f"CMP-{month}-{code}", _MEDIA[index % len(_MEDIA)], ads))
    return tuple(campaigns)


def _pick(rng: random.Random, values: Sequence[T]) -> T:
    return values[int(rng.random() * len(values))]  # rng.choice, at a third of the cost


def _hex_id(rng: random.Random, prefix: str, bits: int) -> str:
    return f"{prefix}{rng.getrandbits(bits):0{bits // 4}x}"


def _mobile(rng: random.Random) -> str:
    """Make an 11-digit mainland China mobile number (national form)."""
    return f"{_pick(rng, _MOBILE_PREFIXES)}{int(rng.random() * 100_000_000):08d}"


def _phone_text(rng: random.Random, digits: str) -> str:
    """Write the number as some system would: with or without +86, spaces, dashes."""
    a, b, c = digits[:3], digits[3:7], digits[7:]
    form = int(rng.random() * 7)
    if form == 0:
        return f"+86 {a} {b} {c}"
    if form == 1:
        return f"+86-{a}-{b}-{c}"
    if form == 2:
        return f"+86{digits}"
    if form == 3:
        return f"{a} {b} {c}"
    if form == 4:
        return f"{a}-{b}-{c}"
    if form == 5:
        return f"+86 {digits}"
    return digits


# ---------------------------------------------------------------------------------------
# Sending.

_PROGRESS_EVERY_S: Final = 0.1
_MIN_SLEEP_S: Final = 0.005  # below this, keep sending: sleeps that short are not precise


def run(simulator: Simulator, send: Callable[[SimEvent], None], *, rate: float | None = None,
        duration: float | None = None, events: int | None = None,
        progress: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep) -> int:
    """Send the simulator's events at ``rate`` per second (None = as fast as possible).

    Stops after ``duration`` seconds or ``events`` events, whichever comes first (at
    least one must be given). Event i is due at ``start + i / rate``: the schedule is
    absolute, so slow sends do not make it drift, and at high rates events go out in
    small bursts between sleeps of a few milliseconds. ``progress(n_sent)`` is called at
    most about ten times a second, and once at the end. Returns the number sent.
    """
    if duration is None and events is None:
        raise ValueError("run() needs a stopping point: pass duration= (seconds) "
                         "or events= (a count), or both")
    if rate is not None and not rate > 0:
        raise ValueError(f"rate must be more than 0 events/s, or None for as fast as "
                         f"possible; got {rate}")
    if duration is not None and not duration >= 0:
        raise ValueError(f"duration must be 0 or more seconds, got {duration}")
    if events is not None and events < 0:
        raise ValueError(f"events must be 0 or more, got {events}")
    limit = math.inf if events is None else events
    start = clock()
    deadline = math.inf if duration is None else start + duration
    next_report = start + _PROGRESS_EVERY_S
    sent = 0
    stream = simulator.events(rate=rate)
    try:
        while sent < limit:
            now = clock()
            if rate is not None:
                due = start + sent / rate
                if due >= deadline:
                    break
                if due - now >= _MIN_SLEEP_S:
                    sleep(due - now)
                    now = clock()
            if now >= deadline:
                break
            send(next(stream))
            sent += 1
            if progress is not None and now >= next_report:
                progress(sent)
                next_report = now + _PROGRESS_EVERY_S
    finally:
        stream.close()
    if progress is not None:
        progress(sent)
    return sent


# --- faulty records, as a misbehaving channel system sends them --------------------------

FAULTS: tuple[str, ...] = ("undecodable", "unknown_type", "no_identifier", "bad_timestamp")


def faulty(sim_event: SimEvent, rng: random.Random) -> tuple[str, bytes]:
    """Break ``sim_event`` in one of the ways real producers do; return (channel, value).

    The value bypasses the publisher's checks (as a buggy producer's would), so the
    pipeline's dead-letter path sees it: JSON instead of Avro, a type the channel does
    not have, no identifier, an unreadable time.
    """
    from touchpoint.schemas.codec import codec_for
    from touchpoint.schemas.contract import CHANNELS, COMMON_FIELDS

    fault = rng.choice(FAULTS)
    event = dict(sim_event.event)
    if fault == "undecodable":
        return sim_event.channel, json.dumps(event, ensure_ascii=False).encode()
    if fault == "unknown_type":
        event["type"] = "legacy_" + str(event["type"])
    elif fault == "no_identifier":
        for name in ("customer_id", "anonymous_id", "email", "phone"):
            event.pop(name, None)
    else:
        event["occurred_at"] = "yesterday at noon"
    fields = (*COMMON_FIELDS, *CHANNELS[sim_event.channel].fields)
    record = {name: event.get(name) for name in fields}
    record["attributes"] = dict(event.get("attributes") or {})
    return sim_event.channel, codec_for(sim_event.channel).encode(record)
