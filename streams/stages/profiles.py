"""Profiles: the Faust agent that keeps one profile per resolved customer, fed by every contact.

It reads ``<app_id>-resolved`` (events, merges and absorbed state, keyed by customer id)
into a changelog-backed table of profiles, so a restarted worker recovers them from
Kafka. What each record does is ``rules/profile_batches.py`` (``ProfileStage``): an event
is counted in its customer's profile (``rules/profile.py``) and goes on to the complaint
detector (``rules/signals.py``: a call becomes a complaint signal there) and to campaign
attribution (``rules/campaigns.py``); a merge hands the merged-away customer's profile
over to the customer it became. A timer publishes changed profiles,
at most every ``TOUCHPOINT_PROFILE_EMIT_SECONDS`` per customer, to ``profiles.updates``
(compacted) and ``customer_profiles``. Why merges, replays and crashes neither lose nor
double-count a contact: ``docs/design/identity.md``; why taking the records in batches
keeps that: ``docs/design/delivery.md``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, cast

import faust
from faust.types import TP

from touchpoint.schemas.codec import codec_for, subject_of
from touchpoint.sinks.base import Batch
from touchpoint.sinks.tables import CAMPAIGN_ATTRIBUTION_RAW, CUSTOMER_PROFILES_RAW
from touchpoint.sinks.writer import RetryingWriter
from touchpoint.streams.rules import complaints
from touchpoint.streams.rules.attribution import ATTRIBUTION_COLUMNS
from touchpoint.streams.rules.campaigns import Attributor
from touchpoint.streams.rules.profile import (
    PROFILE_COLUMNS,
    detailed_profile,
    merged_away_row,
    profile_row,
    public_profile,
)
from touchpoint.streams.rules.profile_batches import (
    MERGED_INTO,
    Applied,
    Handled,
    ProfileStage,
    Record,
)
from touchpoint.streams.rules.segments import SegmentRules, TierEstimator
from touchpoint.streams.rules.signals import Detector
from touchpoint.streams.runtime import changelog
from touchpoint.streams.runtime.batches import BatchStream, Delivered, batch_stream
from touchpoint.streams.runtime.behind import Behind
from touchpoint.streams.runtime.consumer import committed_offset, only_current
from touchpoint.streams.runtime.outbox import Outbox, make_current
from touchpoint.streams.stages.identity import AWAIT_HEADER

__all__ = [
    "BATCH_RECORDS",
    "BATCH_SECONDS",
    "KEPT_PROFILES",
    "AppliedTable",
    "ProfilePublisher",
    "profile_lookup",
    "register",
]

log = logging.getLogger(__name__)

#: Records the agent takes at once. A profile is read and written once a batch, not once
#: a record (a JSON decode and a RocksDB read, a JSON encode, a store and a changelog
#: record each); in a backlog a thousand records of one partition often hold several of
#: one customer, and Faust's per-record stream overhead is paid once a batch.
BATCH_RECORDS: Final = 1000
#: The longest a record waits for its batch to fill: live traffic is delayed by far less
#: than the emitter's interval (``TOUCHPOINT_PROFILE_EMIT_SECONDS``).
BATCH_SECONDS: Final = 0.05

#: Profiles the emitter keeps as the stage wrote them, to publish without reading them
#: back: one interval's changes at 2,000 events/s (a few KiB each, decoded).
KEPT_PROFILES: Final = 4096

_EVENT_CODEC = codec_for("event")


class AppliedTable(Applied):
    """:class:`Applied` in a changelog-backed table, a batch's keys written together."""

    def __init__(self, table: changelog.Table) -> None:
        super().__init__(table)
        self.table = table

    def _items(self, partition: int, prefix: str) -> Iterable[tuple[str, int]]:
        return self.table.items_in(partition, prefix)

    def _write(self, keys: dict[str, int]) -> None:
        self.table.set_many(keys.items())

    def _read_many(self, keys: list[str]) -> list[int | None]:
        return cast(list[int | None], self.table.get_many(keys))


class ProfilePublisher:
    """Publishes changed profiles to ``profiles.updates`` and ``customer_profiles_raw``.

    ``note`` takes what the stage changed and merged away, and the profiles as the stage
    wrote them; ``emit`` publishes those profiles (read in their own partition's
    database only after a rebalance, or when one was not kept), a tombstone and a
    ``merged_into`` row for every merged-away id, and, with attribution, the exposure
    rows of the customers published. ``revision`` grows with every change and the
    table keeps the highest, so an older copy never replaces a newer one.
    """

    def __init__(self, app: faust.App, profiles: changelog.Table, *, updates: str,
                 writer: RetryingWriter, rules: SegmentRules, estimator: TierEstimator,
                 map_type: bool, attribution: Attributor | None,
                 kept: int = KEPT_PROFILES) -> None:
        self.profiles = profiles
        self.updates = updates
        self.writer = writer
        self.rules = rules
        self.estimator = estimator
        self.map_type = map_type
        self.attribution = attribution
        self.dirty: dict[str, int] = {}  # changed profiles: customer id -> partition
        # The noted profiles as the stage last wrote them: publishing one need not read
        # and decode it again. At most ``kept`` of them (a few KiB each, decoded);
        # forgotten on every rebalance (the partition's next owner may change them). A
        # noted profile without one is read from the table.
        self.states: dict[str, dict[str, Any]] = {}
        self.kept = kept
        self.merged: dict[str, str] = {}
        self.everything = True  # after a start or rebalance: publish everything held
        self._codec = codec_for("profile")
        # batched per partition, waited for once per emit (outbox.py)
        self._box = Outbox(app)

    def note(self, stage: ProfileStage, partition: int) -> None:
        """Take the stage's changed and merged-away customers, all in ``partition``."""
        # all of them in the event's partition: its customer, and those its sweep concluded
        self.dirty.update(dict.fromkeys(stage.changed, partition))
        states = self.states
        for key, state in stage.written.items():  # a noted one's latest, changed or not
            if key in self.dirty and (key in states or len(states) < self.kept):
                states[key] = state
        for gone, into in stage.merged.items():
            self.merged[gone] = into
            self.dirty.pop(gone, None)
            self.states.pop(gone, None)
        stage.changed.clear()
        stage.merged.clear()
        stage.written = {}

    def forget_states(self) -> None:
        """Drop the profiles kept as written (a rebalance): the next emit reads the table."""
        self.states.clear()

    def state(self, key: str, partition: int) -> dict[str, Any] | None:
        """``key``'s profile or marker to publish: as last written, else read in ``partition``."""
        state = self.states.pop(key, None)
        if state is None:
            state = self.profiles.get_in(partition, key)
        return state

    def publication(self, key: str, state: dict[str, Any], cutoffs: tuple[float, float]
                    ) -> tuple[bytes, tuple[Any, ...], list[tuple[Any, ...]]]:
        """What publishing ``key``'s profile takes: its record, its row, its exposure rows.

        The record for ``profiles.updates`` (the public profile, Avro), its
        ``customer_profiles_raw`` row and its exposures' rows; the tier estimator observes
        the customer's spend. ``cutoffs`` are the estimator's as the emit began.
        """
        pub = public_profile(state, self.rules, cutoffs)
        self.estimator.observe(key, pub["spend_12m"])
        exposures = [] if self.attribution is None else self.attribution.rows(state)
        return (self._codec.encode(pub, check=False), profile_row(pub, map_type=self.map_type),
                exposures)

    async def emit(self, keys: Mapping[str, int]) -> int:
        """Publish the profiles of ``keys`` (customer id -> partition) and the merges."""
        rows, count = [], 0
        exposures: list[tuple[Any, ...]] = []
        cutoffs = self.estimator.cutoffs()
        published: dict[str, int] = {}
        tombstones: dict[str, str] = {}
        for key, partition in keys.items():
            state = self.state(key, partition)
            if state is None:
                continue
            if MERGED_INTO in state:
                self.merged[key] = state[MERGED_INTO]  # written below, again if need be
                continue
            value, row, exposed = self.publication(key, state, cutoffs)
            await self._box.send(self.updates, key.encode(), value)
            published[key] = partition
            rows.append(row)
            exposures += exposed
            count += 1
        for gone, into in list(self.merged.items()):
            self.estimator.forget(gone)
            await self._box.send(self.updates, gone.encode(), None)  # tombstone: compacted
            rows.append(merged_away_row(gone, into, self.rules, cutoffs,
                                        map_type=self.map_type))
            tombstones[gone] = into
            del self.merged[gone]
        try:
            await self._box.delivered()
        except Exception as exc:  # the producer has spent its retries
            log.warning("%s: %d profile records not delivered (%s); sent again at the next "
                        "emit", self.updates, len(published) + len(tombstones), exc)
            self.dirty.update(published)
            self.merged.update(tombstones)
        if rows:
            positions = [(r[0], r[-1], 0) for r in rows]
            await self.writer.write(Batch(CUSTOMER_PROFILES_RAW, PROFILE_COLUMNS, rows,
                                          Batch.token_for(CUSTOMER_PROFILES_RAW, positions)))
        if exposures:
            await self.writer.write(Batch(CAMPAIGN_ATTRIBUTION_RAW, ATTRIBUTION_COLUMNS,
                                          exposures,
                                          Batch.token_for_rows(CAMPAIGN_ATTRIBUTION_RAW,
                                                               exposures)))
        return count


# --- the agent ---------------------------------------------------------------------------

def register(app: faust.App, *, resolved: faust.TopicT, updates: faust.TopicT,
             signals: faust.TopicT, writer: RetryingWriter, stored: Behind,
             rules: SegmentRules,
             signal_rules: complaints.Rules, signal_lateness_ms: int, emit_seconds: float,
             map_type: bool, partitions: int, stats: dict[str, int],
             attribution: Attributor | None = None) -> Any:
    """Add the profiles table, agent and emitter to ``app``; return the table.

    Beside it, the table ``touchpoint-applied`` keeps a key for every event counted in a
    customer's history (:class:`AppliedTable`), in the customer's partition like its
    profile. With ``attribution``, campaign attribution runs on every applied event and merge
    (``campaigns.py``), and the emitter writes the exposure rows of the customers it
    publishes. The agent also stores every record it reads (events, merges, aliases)
    through ``stored``, which acknowledges each once its rows are in the warehouse.
    """
    # the app's tables are changelog.Table (app.py)
    profiles = cast(changelog.Table, app.Table("touchpoint-profiles", partitions=partitions,
                                               key_type=str))
    signal_codec = codec_for("complaint_signal")
    estimator = TierEstimator(rules)
    detector = Detector(signal_rules, lambda p, at: rules.tier(p, estimator.cutoffs(), at),
                        lateness_ms=signal_lateness_ms)
    applied = cast(changelog.Table, app.Table("touchpoint-applied", partitions=partitions,
                                              key_type=str))
    resolved_name = resolved.get_topic_name()
    stage = ProfileStage(profiles, stats, detector, attribution, applied=AppliedTable(applied),
                         committed=lambda p: committed_offset(app, TP(resolved_name, p)),
                         read_many=profiles.get_many, write_many=profiles.set_many)
    publisher = ProfilePublisher(app, profiles, updates=updates.get_topic_name(),
                                 writer=writer, rules=rules, estimator=estimator,
                                 map_type=map_type, attribution=attribution)

    records = batch_stream(app, resolved)  # in batches, past Faust's streams (batches.py)
    box = Outbox(app)  # what a batch sends on, delivered before it is stored (outbox.py)
    signals_name = signals.get_topic_name()

    @app.agent(resolved, name="touchpoint.profiles")
    async def profile_agent(stream: faust.StreamT[bytes]) -> None:
        # each record is acknowledged by `stored`, once applied and stored
        async with stored.running(records):
            async for taken in records.take(BATCH_RECORDS, within=BATCH_SECONDS):
                await handle(records, taken)

    async def handle(stream: BatchStream, taken: Sequence[faust.EventT]) -> None:
        """Apply a batch, then send what it leaves to send and store its records."""
        events = list(only_current(app, taken))
        by_partition: dict[int, list[faust.EventT]] = {}
        for event in events:
            by_partition.setdefault(event.message.partition, []).append(event)
        # No await from here until every partition's records are applied, its profiles
        # written and noted: the emitter (same loop) reads the table and clears what was
        # noted, and a profile noted before it is written would not be published.
        handled: dict[int, Handled] = {}  # by id() of the event
        for partition, group in by_partition.items():
            make_current(group[-1])  # table reads and writes go to this partition
            done = stage.handle_batch(
                [Record(_customer_id(e.key), e.value, _awaited(e.message.headers),
                        e.message.offset, _decoded_event(e)) for e in group], partition)
            handled.update(zip(map(id, group), done, strict=True))
            publisher.note(stage, partition)
        # In record order. A revocation from here on does not stop them: the table has
        # these records' changes already, and a profile read again that has reached a
        # record does not raise its signals again (as one by one, a record's sends went
        # on after its table write). Delivered before any record of the batch is stored,
        # so acknowledged: a send Kafka does not take after the producer's retries
        # raises, and the records are read again (see outbox.py).
        for event in events:
            sends, raised = handled[id(event)]
            for out in sends:
                await box.send(resolved_name, out.key.encode(), out.value,
                               _await_headers(out.awaiting))
            for record in raised:  # complaint signals raised or concluded
                stats["signals"] = stats.get("signals", 0) + 1
                await box.send(signals_name, record["customer_id"].encode(),
                               signal_codec.encode(record, check=False))
        await box.delivered()
        await stored.add_all(events)
        if len(events) < len(taken):
            current = set(map(id, events))
            for event in taken:
                if id(event) not in current:
                    # fetched before a rebalance: the partition's owner reads it again
                    # (the consumer does not count this acknowledgement)
                    await stream.ack(event)

    @app.timer(interval=emit_seconds, name="touchpoint.profiles.emit")
    async def emitter() -> None:
        # After a start or rebalance, everything this worker holds is published once:
        # changes made before a crash may not have been.
        if publisher.everything:
            publisher.everything = False
            keys, current = _track_everything_held(app, profiles, resolved, detector)
        else:
            keys, current = dict(sorted(publisher.dirty.items())), []
        # No await between taking the noted profiles and clearing them: the stage notes
        # more while this waits, and those must stay noted for the next round.
        publisher.dirty.clear()
        for record in current:  # each held customer's latest signal, published again
            stats["signals"] = stats.get("signals", 0) + 1
            await signals.send(key=record["customer_id"].encode(),
                               value=signal_codec.encode(record, check=False))
        started = time.monotonic()
        count = await publisher.emit(keys)
        stats["emitted"] = stats.get("emitted", 0) + count
        for placed, contacts in detector.placed.items():  # in order, replayed, beyond bound
            stats[f"signal_contacts_{placed}"] = contacts
        if count:
            log.debug("emitted %d profiles in %.2fs", count, time.monotonic() - started)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # mode types sync receivers
    async def _revoked(sender: Any, *args: Any, **kwargs: Any) -> None:
        publisher.forget_states()

    @app.on_rebalance_complete.connect  # type: ignore[arg-type]  # mode types sync receivers
    async def _rebalanced(sender: Any, **kwargs: Any) -> None:
        publisher.everything = True
        publisher.forget_states()

    profiles.estimator = estimator
    return profiles


def _track_everything_held(app: faust.App, profiles: changelog.Table, resolved: faust.TopicT,
                           detector: Detector) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """Every customer this worker holds (id -> partition), and their signals' current states.

    The detector tracks them anew.
    """
    keys: dict[str, int] = {}
    current: list[dict[str, Any]] = []
    detector.reset()
    for held in profiles:
        key = held.decode() if isinstance(held, bytes) else held
        where = app.producer.key_partition(resolved.get_topic_name(), key.encode())
        keys[key] = where.partition
        state = profiles.get_in(where.partition, key)
        if state is not None and MERGED_INTO not in state:
            current += detector.track(state, where.partition)
    return keys, current


def _decoded_event(record: faust.EventT) -> dict[str, Any] | None:
    """The event of an event record, decoded once for the stage and for storing it.

    The store (``store.resolved_batches``) reads it from the record's ``decoded``.
    """
    if subject_of(record.value) != "event":
        return None
    event = _EVENT_CODEC.decode(record.value)
    if isinstance(record, Delivered):
        record.decoded = event
    return event


def _customer_id(key: Any) -> str:
    return key.decode() if isinstance(key, bytes) else str(key)


def _awaited(headers: Any) -> tuple[str, ...]:
    """The aliases named by a record's await header (see ``identity.AWAIT_HEADER``)."""
    if not headers:
        return ()
    items = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in items:
        if name == AWAIT_HEADER and value:
            return tuple(value.decode().split(","))
    return ()


def _await_headers(awaiting: tuple[str, ...]) -> list[tuple[str, bytes]] | None:
    """The await header naming ``awaiting``, if any (see ``identity.AWAIT_HEADER``)."""
    return [(AWAIT_HEADER, ",".join(awaiting).encode())] if awaiting else None


def profile_lookup(profiles: Any, rules: SegmentRules) -> Callable[[str], dict[str, Any] | None]:
    """A function returning the public profile of a customer held by this worker."""
    def lookup(customer_id: str) -> dict[str, Any] | None:
        state = profiles.get(customer_id)
        if state is None or MERGED_INTO in state:
            return None
        return detailed_profile(state, rules, profiles.estimator.cutoffs())
    return lookup
