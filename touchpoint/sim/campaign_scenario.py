"""A campaign scenario with known truth: events, and the exact reports they must give.

``generate(seed=..., customers=..., start=...)`` builds a :class:`CampaignScenario`: the
events of customers answering (or not) e-mail, SMS, direct-mail and web-ad campaigns, in
publish order, and ``expected``: the exact campaign report per campaign x medium x
variant and the events per minute x channel. The truth is known by construction, not
computed by the pipeline's code: each customer lives one *story* (a response in a store,
a purchase outside the window, two campaigns competing for one visit, an anonymous ad
clicker who logs in...) that records which exposures it makes and which it answers,
under the default model (last touch, 7-day window). A few events arrive late, within
the default grace, so the per-minute figures must still be exact.
:meth:`CampaignScenario.write` stores the events and ``expected.json``;
:func:`load_expected` reads it back.
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, NamedTuple

from touchpoint.schemas.contract import CHANNELS
from touchpoint.sim.scenarios import ScenarioEvent
from touchpoint.streams.rules.identity import generated_id

__all__ = [
    "EXPECTED_FORMAT",
    "STORIES",
    "CampaignScenario",
    "generate",
    "load_expected",
]

# Names the module's first home (touchpoint.campaign_scenario): files written before the
# move to touchpoint.sim still load.
EXPECTED_FORMAT: Final = "touchpoint.campaign_scenario.expected/1"
_SECOND: Final = 1_000
_MINUTE: Final = 60_000
_HOUR: Final = 3_600_000
_DAY: Final = 86_400_000
_WINDOW: Final = 7 * _DAY
_LATE_SHARE: Final = 0.03
_SITE: Final = "https://shop.example.cn"
_STORES: Final = ("S001", "S002", "S003", "S004")

# Campaigns: id -> (medium, variants). Web ads have no medium or variant fields: their
# medium is "display" and their variant the ad id.
CAMPAIGNS: Final = {
    "CMP-EMAIL-11": ("email", ("A", "B")),
    "CMP-SMS-11": ("sms", ("A", "B")),
    "CMP-DM-11": ("direct_mail", ("A",)),
    "CMP-WEB-11": ("display", ("AD-W1", "AD-W2")),
}


@dataclass
class _Exposure:
    """One exposure as the story means it, and how the customer answered it."""

    campaign_id: str
    medium: str
    variant: str
    delivered: bool = False
    opened: bool = False
    clicked: bool = False
    responded: bool = False
    converted: bool = False
    revenue: float = 0.0


@dataclass
class _Customer:
    """One scenario customer: identifiers, the events written, the exposures made."""

    index: int
    customer_id: str
    email: str
    anonymous_id: str
    events: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)
    exposures: list[_Exposure] = field(default_factory=list)
    final_id: str = ""
    identifiers: list[str] = field(default_factory=list)


class CampaignScenario(NamedTuple):
    """The events in publish order, and the exact reports they must give."""

    events: list[ScenarioEvent]
    expected: dict[str, Any]

    def write(self, directory: str | Path) -> Path:
        """Write ``events.jsonl``, ``<channel>.jsonl`` files and ``expected.json``."""
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        files = {ch: (path / f"{ch}.jsonl").open("w", encoding="utf-8") for ch in CHANNELS}
        try:
            with (path / "events.jsonl").open("w", encoding="utf-8") as combined:
                for channel, event in self.events:
                    line = json.dumps(event, ensure_ascii=False)
                    combined.write(f'{{"channel": "{channel}", "event": {line}}}\n')
                    files[channel].write(line + "\n")
        finally:
            for handle in files.values():
                handle.close()
        (path / "expected.json").write_text(
            json.dumps(self.expected, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        return path


def load_expected(path: str | Path) -> dict[str, Any]:
    """Read ``expected.json`` (or the directory holding it)."""
    file = Path(path)
    if file.is_dir():
        file = file / "expected.json"
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read the expected report {file}: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != EXPECTED_FORMAT:
        raise ValueError(f"{file} is not a campaign scenario's expected.json "
                         f"(format {EXPECTED_FORMAT})")
    return data


class _Story:
    """Writes one customer's events; helpers keep each channel's fields right."""

    def __init__(self, rng: random.Random, customer: _Customer, ids: Callable[[], str]) -> None:
        self.rng, self.c, self._ids = rng, customer, ids
        self.session = 0

    def emit(self, t: int, channel: str, kind: str, **fields: Any) -> dict[str, Any]:
        """Write one event at ``t`` (epoch ms); identifiers default to the CRM id."""
        if not any(k in fields for k in ("customer_id", "email", "anonymous_id")):
            fields["customer_id"] = self.c.customer_id
        event = {"event_id": self._ids(), "type": kind,
                 "occurred_at": _occurred_at(self.rng, channel, t),
                 **{k: v for k, v in fields.items() if v is not None}}
        self.c.events.append((t, channel, event))
        return event

    def message(self, t: int, exposure: _Exposure, *, delivered: bool = True,
                opened: bool = False, clicked: bool = False, by_email: bool = False) -> int:
        """A campaign message: sent, delivered, opened, clicked; returns its last time."""
        ids: dict[str, Any] = ({"email": self.c.email} if by_email
                               else {"customer_id": self.c.customer_id})
        fields = {"campaign_id": exposure.campaign_id, "medium": exposure.medium,
                  "variant": exposure.variant, **ids}
        self.emit(t, "campaign", "sent", **fields)
        exposure.delivered = delivered
        if not delivered:
            return t
        gap = self.rng.randint(1, 4) * _DAY if exposure.medium == "direct_mail" else \
            self.rng.randint(1, 90) * _SECOND
        t += gap
        self.emit(t, "campaign", "delivered", **fields)
        if opened:
            t += self.rng.randint(10, 180) * _MINUTE
            self.emit(t, "campaign", "opened", **fields)
            exposure.opened = True
        if clicked:
            t += self.rng.randint(5, 600) * _SECOND
            self.emit(t, "campaign", "clicked", **fields)
            exposure.clicked = True
        return t

    def page(self, t: int, *, anonymous: bool = False, campaign_id: str | None = None,
             path: str | None = None) -> int:
        """A page view in the current session; returns the time after its dwell."""
        dwell = self.rng.randint(3_000, 90_000)
        url = f"{_SITE}{path or '/p/' + str(self.rng.randint(10000, 99999))}"
        self.emit(t, "web", "page_view", session_id=self._session(), url=url, dwell_ms=dwell,
                  campaign_id=campaign_id, **self._web_ids(anonymous))
        return t + dwell

    def new_session(self) -> None:
        """Start a new tracker session."""
        self.session += 1

    def buy_online(self, t: int, amount: float, *, anonymous: bool = False) -> int:
        """Cart, checkout and purchase in the current session; returns the purchase time."""
        ids = self._web_ids(anonymous)
        self.emit(t, "web", "add_to_cart", session_id=self._session(),
                  url=f"{_SITE}/cart", **ids)
        t += self.rng.randint(20, 120) * _SECOND
        self.emit(t, "web", "checkout_started", session_id=self._session(),
                  url=f"{_SITE}/checkout", **ids)
        t += self.rng.randint(30, 240) * _SECOND
        self.emit(t, "web", "purchase", session_id=self._session(), url=f"{_SITE}/checkout",
                  amount=amount, currency="CNY", **ids)
        return t

    def store_visit(self, t: int, *, amount: float | None = None,
                    campaign_id: str | None = None) -> int:
        """A store visit (visit, queue, served, maybe a purchase); returns its last time."""
        store = self.rng.choice(_STORES)
        self.emit(t, "store", "visit", store_id=store)
        t += self.rng.randint(1, 10) * _MINUTE
        wait = self.rng.choice((60, 240, 420, 1200))
        self.emit(t, "store", "queue_joined", store_id=store, queue_wait_s=wait)
        t += wait * _SECOND
        staff = f"{store}-{self.rng.randint(1, 9)}"
        self.emit(t, "store", "served", store_id=store, staff_id=staff)
        if amount is not None:
            t += self.rng.randint(2, 15) * _MINUTE
            self.emit(t, "store", "purchase", store_id=store, amount=amount, currency="CNY",
                      items=self.rng.randint(1, 4), campaign_id=campaign_id)
        return t

    def call(self, t: int, *, outcome: str = "resolved") -> int:
        """A call to the call center; returns its end."""
        wait = self.rng.choice((15, 40, 90, 420))
        self.emit(t, "callcenter", "call_ended", call_id=f"CALL-{self._ids()}",
                  agent_id=f"A{self.rng.randint(1, 40):02d}", queue_wait_s=wait,
                  talk_s=self.rng.randint(60, 600), transfers=self.rng.choice((0, 0, 1, 2)),
                  reason=self.rng.choice(("billing", "delivery", "product")), outcome=outcome)
        return t + wait * _SECOND

    def ad(self, t: int, exposure: _Exposure | None, *, clicks: bool,
           anonymous: bool = False) -> int:
        """An on-site ad impression (and click); ``None``: a house ad with no campaign."""
        ids = self._web_ids(anonymous)
        campaign = exposure.campaign_id if exposure else None
        ad_id = exposure.variant if exposure else "AD-HOUSE"
        self.emit(t, "web", "ad_impression", session_id=self._session(), url=f"{_SITE}/",
                  ad_id=ad_id, campaign_id=campaign, **ids)
        if exposure is not None:
            exposure.delivered = True
        if clicks:
            t += self.rng.randint(2, 20) * _SECOND
            self.emit(t, "web", "ad_click", session_id=self._session(), url=f"{_SITE}/",
                      ad_id=ad_id, campaign_id=campaign, **ids)
            if exposure is not None:
                exposure.clicked = True
        return t

    def amount(self) -> float:
        """A basket value with cents."""
        return round(self.rng.uniform(20, 900), 2)

    def expose(self, campaign_id: str, variant: str | None = None) -> _Exposure:
        """A new exposure of this customer to ``campaign_id``."""
        medium, variants = CAMPAIGNS[campaign_id]
        exposure = _Exposure(campaign_id, medium, variant or self.rng.choice(variants))
        self.c.exposures.append(exposure)
        return exposure

    def _session(self) -> str:
        return f"ws-{self.c.index}-{self.session}"

    def _web_ids(self, anonymous: bool) -> dict[str, Any]:
        return {"anonymous_id": self.c.anonymous_id} if anonymous else {
            "customer_id": self.c.customer_id, "anonymous_id": self.c.anonymous_id}


def _converted(exposure: _Exposure, amount: float) -> None:
    exposure.responded = exposure.converted = True
    exposure.revenue = round(exposure.revenue + amount, 2)


# Each story: (name, weight, function(story, t0)). t0 is the story's first exposure;
# nothing of the story happens more than 12 days after it. Comments give the truth.

def _ignored(s: _Story, t0: int) -> None:
    # Delivered, never answered; a visit 9 days later is outside the window.
    s.message(t0, s.expose("CMP-EMAIL-11"))
    s.page(t0 + 9 * _DAY)


def _opened_only(s: _Story, t0: int) -> None:
    s.message(t0, s.expose("CMP-EMAIL-11"), opened=True)


def _click_browse(s: _Story, t0: int) -> None:
    # The landing page view answers the e-mail; no purchase.
    x = s.expose("CMP-EMAIL-11")
    t = s.message(t0, x, opened=True, clicked=True)
    s.new_session()
    t = s.page(t + 3 * _SECOND, campaign_id=x.campaign_id, path="/promo/cmp-email-11")
    s.page(t)
    x.responded = True


def _click_buy(s: _Story, t0: int) -> None:
    x = s.expose(s.rng.choice(("CMP-EMAIL-11", "CMP-SMS-11")))
    t = s.message(t0, x, opened=True, clicked=True)
    s.new_session()
    t = s.page(t + 2 * _SECOND, campaign_id=x.campaign_id, path="/promo/spring")
    amount = s.amount()
    s.buy_online(t, amount)
    _converted(x, amount)


def _store_buy(s: _Story, t0: int) -> None:
    # Offline attribution: a store visit two days later, and a purchase there.
    x = s.expose(s.rng.choice(("CMP-EMAIL-11", "CMP-SMS-11")))
    t = s.message(t0, x, opened=s.rng.random() < 0.5)
    amount = s.amount()
    s.store_visit(t + 2 * _DAY, amount=amount, campaign_id=x.campaign_id)
    _converted(x, amount)


def _call_only(s: _Story, t0: int) -> None:
    x = s.expose("CMP-SMS-11")
    t = s.message(t0, x, opened=True)
    s.call(t + _DAY)
    x.responded = True


def _late_purchase(s: _Story, t0: int) -> None:
    # A visit on day 3 answers; the purchase on day 8.5 is outside the window.
    x = s.expose("CMP-EMAIL-11")
    s.message(t0, x)
    s.store_visit(t0 + 3 * _DAY)
    x.responded = True
    s.store_visit(t0 + 8 * _DAY + 12 * _HOUR, amount=s.amount())


def _bought_before(s: _Story, t0: int) -> None:
    # A purchase the day before the exposure is not a response to it.
    s.new_session()
    t = s.page(t0 - _DAY)
    s.buy_online(t, s.amount())
    s.message(t0, s.expose("CMP-SMS-11"))


def _undelivered(s: _Story, t0: int) -> None:
    s.message(t0, s.expose("CMP-EMAIL-11"), delivered=False)


def _unsubscribed(s: _Story, t0: int) -> None:
    # Unsubscribing is an answer to the campaign, not a touchpoint of the customer's own.
    x = s.expose("CMP-EMAIL-11")
    t = s.message(t0, x, opened=True)
    s.emit(t + 30 * _SECOND, "campaign", "unsubscribed", campaign_id=x.campaign_id,
           medium=x.medium, variant=x.variant)


def _survey_answer(s: _Story, t0: int) -> None:
    x = s.expose("CMP-SMS-11")
    t = s.message(t0, x)
    s.emit(t + _DAY, "feedback", "csat", score=5, comment="Quick and friendly",
           about_channel="store")
    x.responded = True


def _two_campaigns(s: _Story, t0: int) -> None:
    # E-mail delivered and opened on day 0, SMS delivered on day 1, store purchase on day
    # 2: the last touch before the visit is the SMS, which gets the response and revenue.
    email = s.expose("CMP-EMAIL-11")
    s.message(t0, email, opened=True)
    sms = s.expose("CMP-SMS-11")
    t = s.message(t0 + _DAY, sms)
    amount = s.amount()
    s.store_visit(t + _DAY, amount=amount)
    _converted(sms, amount)


def _sent_twice(s: _Story, t0: int) -> None:
    # The same campaign sent twice, three days apart: two exposures; a visit on day 4
    # answers the second send (the later touch).
    first = s.expose("CMP-EMAIL-11", "A")
    s.message(t0, first)
    second = s.expose("CMP-EMAIL-11", "A")
    t = s.message(t0 + 3 * _DAY, second)
    s.store_visit(t + _DAY)
    second.responded = True


def _direct_mail(s: _Story, t0: int) -> None:
    x = s.expose("CMP-DM-11")
    t = s.message(t0, x)
    amount = s.amount()
    s.store_visit(t + 2 * _DAY, amount=amount, campaign_id=x.campaign_id)
    _converted(x, amount)


def _ads_seen_twice(s: _Story, t0: int) -> None:
    # Two impressions of one campaign's ad within a day are one exposure; a house ad is
    # none; the visit to a store the next day answers the exposure.
    x = s.expose("CMP-WEB-11")
    s.new_session()
    t = s.page(t0 - 5 * _SECOND)
    s.ad(t0, x, clicks=False)
    s.ad(t + 20 * _SECOND, None, clicks=False)
    s.new_session()
    s.ad(t0 + 6 * _HOUR, x, clicks=False)
    s.store_visit(t0 + _DAY)
    x.responded = True


def _anonymous_then_login(s: _Story, t0: int) -> None:
    # The CRM customer got an e-mail two days before. On a new device, anonymously, they
    # browse (answering the e-mail: its only touch so far), click an ad and land, log in
    # (linking the cookie: two customers merge) and buy. The ad click is the last touch
    # before the landing and the purchase: the ad exposure gets that response and the
    # revenue. Only once the two customers are one does the e-mail get its response.
    email = s.expose("CMP-EMAIL-11")
    s.message(t0 - 2 * _DAY, email)
    email.responded = True
    x = s.expose("CMP-WEB-11")
    s.new_session()
    t = s.page(t0 - 40 * _SECOND, anonymous=True, path="/")
    t = s.ad(max(t, t0), x, clicks=True, anonymous=True)
    t = s.page(t + 2 * _SECOND, anonymous=True, campaign_id=x.campaign_id,
               path="/promo/cmp-web-11")
    s.emit(t, "web", "login", session_id=s._session(), url=f"{_SITE}/login",
           customer_id=s.c.customer_id, anonymous_id=s.c.anonymous_id)
    amount = s.amount()
    s.buy_online(t + 30 * _SECOND, amount)
    _converted(x, amount)


def _anonymous_only(s: _Story, t0: int) -> None:
    # A visitor who never logs in: a customer with a generated id answers the ad.
    s.c.final_id = generated_id(f"anonymous_id:{s.c.anonymous_id}")
    s.c.identifiers = [f"anonymous_id:{s.c.anonymous_id}"]
    x = s.expose("CMP-WEB-11")
    s.new_session()
    t = s.ad(t0, x, clicks=True, anonymous=True)
    s.page(t + 2 * _SECOND, anonymous=True, campaign_id=x.campaign_id,
           path="/promo/cmp-web-11")
    x.responded = True


def _addressed_by_email(s: _Story, t0: int) -> None:
    # Campaign messages carry only the e-mail address, linked to the CRM id by an
    # earlier login that carried both.
    s.new_session()
    s.emit(t0 - 3 * _DAY, "web", "login", session_id=s._session(), url=f"{_SITE}/login",
           customer_id=s.c.customer_id, email=s.c.email)
    x = s.expose("CMP-EMAIL-11")
    t = s.message(t0, x, opened=True, clicked=True, by_email=True)
    s.new_session()
    t = s.page(t + 5 * _SECOND, campaign_id=x.campaign_id, path="/promo/cmp-email-11")
    amount = s.amount()
    s.buy_online(t, amount)
    _converted(x, amount)


def _no_campaign(s: _Story, t0: int) -> None:
    # Background traffic: contacts without any campaign.
    s.new_session()
    t = s.page(t0)
    s.page(t)
    s.store_visit(t0 + _DAY, amount=s.amount() if s.rng.random() < 0.5 else None)
    if s.rng.random() < 0.5:
        s.call(t0 + 2 * _DAY, outcome=s.rng.choice(("resolved", "unresolved")))


STORIES: Final = (
    ("ignored", 10, _ignored), ("opened_only", 8, _opened_only),
    ("click_browse", 6, _click_browse), ("click_buy", 6, _click_buy),
    ("store_buy", 6, _store_buy), ("call_only", 4, _call_only),
    ("late_purchase", 4, _late_purchase), ("bought_before", 3, _bought_before),
    ("undelivered", 3, _undelivered), ("unsubscribed", 2, _unsubscribed),
    ("survey_answer", 3, _survey_answer), ("two_campaigns", 4, _two_campaigns),
    ("sent_twice", 3, _sent_twice), ("direct_mail", 3, _direct_mail),
    ("ads_seen_twice", 4, _ads_seen_twice), ("anonymous_then_login", 4, _anonymous_then_login),
    ("anonymous_only", 3, _anonymous_only), ("addressed_by_email", 3, _addressed_by_email),
    ("no_campaign", 10, _no_campaign),
)


def generate(*, seed: int = 1, customers: int = 120, start: datetime) -> CampaignScenario:
    """Build the scenario: ``customers`` customers, stories starting from ``start``.

    Every story appears at least once when ``customers`` is at least the number of
    stories; the rest are drawn by weight. Events span about two weeks from ``start``. The
    same arguments give the same scenario.
    """
    if customers < 1:
        raise ValueError(f"customers must be 1 or more, got {customers}")
    if start.tzinfo is None:
        raise ValueError("start needs a UTC offset, e.g. datetime(2026, 11, 2, tzinfo=UTC)")
    # Like EXPECTED_FORMAT, the seed names the module's first home: the same stories as before.
    rng = random.Random(f"touchpoint.campaign_scenario:{seed}")
    start_ms = int(start.timestamp()) * _SECOND
    counter = iter(range(1, 10**9))

    def next_id() -> str:
        return f"cs{seed}-{next(counter):07d}"

    names = [s for s, _, _ in STORIES]
    picks = names[:customers] + rng.choices(
        names, weights=[w for _, w, _ in STORIES], k=max(0, customers - len(names)))
    rng.shuffle(picks)
    functions = {name: fn for name, _, fn in STORIES}
    people: list[_Customer] = []
    for index, name in enumerate(picks, start=1):
        customer = _Customer(index, f"CS{seed:02d}{index:05d}", f"cs{seed}.{index}@example.cn",
                             f"cookie-{seed}-{index:05d}")
        story = _Story(random.Random(f"{seed}:{index}"), customer, next_id)
        t0 = start_ms + 3 * _DAY + rng.randrange(0, 2 * _DAY)
        functions[name](story, t0)
        if not customer.final_id:
            customer.final_id = customer.customer_id
            customer.identifiers = [f"customer_id:{customer.customer_id}",
                                    f"email:{customer.email}",
                                    f"anonymous_id:{customer.anonymous_id}"]
        people.append(customer)
    events = _publish_order(rng, people)
    return CampaignScenario(events, _expected(seed, start, picks, people))


def _publish_order(rng: random.Random, people: list[_Customer]) -> list[ScenarioEvent]:
    """Time order, except a few events published 20-90 s late (within the grace)."""
    keyed = []
    sequence = 0
    for customer in people:
        for t, channel, event in customer.events:
            delay = rng.randint(20, 90) * _SECOND if rng.random() < _LATE_SHARE else 0
            keyed.append((t + delay, t, sequence, ScenarioEvent(channel, event)))
            sequence += 1
    keyed.sort(key=lambda item: item[:3])
    return [item[3] for item in keyed]


def _expected(seed: int, start: datetime, picks: list[str],
              people: list[_Customer]) -> dict[str, Any]:
    campaigns: dict[tuple[str, str, str], Counter[str]] = defaultdict(Counter)
    revenue: dict[tuple[str, str, str], float] = defaultdict(float)
    for customer in people:
        for x in customer.exposures:
            key = (x.campaign_id, x.medium, x.variant)
            counts = campaigns[key]
            counts["exposed"] += 1
            for flag in ("delivered", "opened", "clicked", "responded", "converted"):
                counts[flag] += int(getattr(x, flag))
            revenue[key] += x.revenue
    minutes: dict[tuple[int, str], list[float]] = defaultdict(lambda: [0, 0.0])
    channels: Counter[str] = Counter()
    for customer in people:
        for t, channel, event in customer.events:
            cell = minutes[t - t % _MINUTE, channel]
            cell[0] += 1
            if event["type"] == "purchase":
                cell[1] += event["amount"]
            channels[channel] += 1
    flags = ("exposed", "delivered", "opened", "clicked", "responded", "converted")
    return {
        "format": EXPECTED_FORMAT,
        "seed": seed,
        "start": start.isoformat(),
        "model": "last_touch",
        "window_days": _WINDOW // _DAY,
        "grace_seconds": 120,
        "stories": dict(sorted(Counter(picks).items())),
        "campaigns": [
            {"campaign_id": c, "medium": m, "variant": v,
             **{flag: campaigns[c, m, v][flag] for flag in flags},
             "revenue": round(revenue[c, m, v], 2)}
            for c, m, v in sorted(campaigns)
        ],
        "minutes": [
            {"minute": _iso(minute), "channel": channel, "events": int(n),
             "revenue": round(amount, 2)}
            for (minute, channel), (n, amount) in sorted(minutes.items())
        ],
        "channels": dict(sorted(channels.items())),
        "events": sum(channels.values()),
        "customers": [{"customer_id": c.final_id, "identifiers": c.identifiers}
                      for c in people],
    }


def _occurred_at(rng: random.Random, channel: str, t: int) -> str | int:
    """Epoch ms, or ISO-8601 with milliseconds in UTC or China Standard Time."""
    style = rng.random()
    if style < 0.4:
        return t
    local = channel in ("store", "callcenter", "feedback")
    moment = datetime.fromtimestamp(t // 1000, UTC) + timedelta(hours=8 if local else 0)
    suffix = "+08:00" if local else ("Z" if style < 0.7 else "+00:00")
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t % 1000:03d}{suffix}"


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
