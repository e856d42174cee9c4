"""ProfileStage: the records of ``<app_id>-resolved`` applied to the profiles, a batch at a time.

The per-record rules of the profiles stage, kept apart from its Faust agent
(``streams/stages/profiles.py``) so that they are tested without Kafka and compiled
with the other rules (docs/design/compiled.md): every event passes through them. An
event is counted once in its customer's profile (``profile.py``) and goes on to the
complaint detector (``signals.py``) and attribution (``campaigns.py``); a merge leaves
a marker and hands the merged-away customer's profile over to the customer it became.
Why merges, replays and crashes neither lose nor double-count a contact:
``docs/design/identity.md``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any, NamedTuple, cast

import orjson
from mypy_extensions import mypyc_attr

from touchpoint.schemas.codec import codec_for, subject_of
from touchpoint.streams.rules.campaigns import ATTRIBUTION_KEY, Attributor
from touchpoint.streams.rules.profile import apply_event, combine, event_digest, new_profile
from touchpoint.streams.rules.signals import SIGNAL_KEY, Detector

__all__ = ["CARRIED", "HANDOVER_DIGESTS", "MERGED_INTO", "MERGED_STATE", "Applied", "Handled",
           "ProfileStage", "Record", "Send"]

# The table value of a merged-away customer: {MERGED_INTO: "<the customer it became>",
# MERGED_STATE: <its state as handed over>}.
MERGED_INTO = "__merged_into__"
MERGED_STATE = "__merged_state__"

#: The stamp of an applied-event key that came with a hand-over: the event is counted in
#: the handed-over state, which the log delivers (again, after a crash), so the key holds
#: whatever became of the receiving customer's own profile.
CARRIED = -1
#: Digests a hand-over record carries at most: 256 KiB, well below Kafka's default limit
#: of 1 MB a record, however long the history (a longer one takes several records).
HANDOVER_DIGESTS = 32_768


class Send(NamedTuple):
    """A record the profiles stage sends on to ``<app_id>-resolved``."""

    key: str
    value: bytes
    awaiting: tuple[str, ...] = ()  # for events: aliases to fold in before applying


class Record(NamedTuple):
    """A record of ``<app_id>-resolved`` for :meth:`ProfileStage.handle_batch`."""

    key: str  # the customer id
    value: bytes
    awaiting: tuple[str, ...] = ()  # events: the aliases of its await header
    offset: int | None = None  # None: the next after the last record handled (unit tests)
    event: dict[str, Any] | None = None  # events: ``value`` decoded, if the caller has it


class Handled(NamedTuple):
    """What one record of a batch leaves to do once the batch is applied, in this order."""

    sends: list[Send]  # records to send on to ``<app_id>-resolved``
    signals: list[dict[str, Any]]  # complaint-signal records raised or concluded with it


def _applied_key(customer: str, digest: bytes) -> str:
    return f"{customer}/{digest.hex()}"


# The worker's AppliedTable (streams/stages/profiles.py) extends it.
@mypyc_attr(allow_interpreted_subclasses=True)
class Applied:
    """Which events each customer's history counts: one key per event, in any mapping.

    A key is ``"<customer id>/<digest>"`` (:func:`~touchpoint.streams.rules.profile.event_digest`
    in hex), so a customer's keys are found by their prefix; its value is a stamp
    (:class:`ProfileStage`). This one keeps the keys in a plain dict, or any mapping, and
    scans it for a customer's keys (unit tests); :class:`AppliedTable` seeks them in one
    partition's database.
    """

    def __init__(self, keys: MutableMapping[str, int] | None = None) -> None:
        self.keys: MutableMapping[str, int] = {} if keys is None else keys
        # Keys added and not written yet: the stage writes a batch's keys together
        # (flush), and reads them here meanwhile.
        self.pending: dict[str, int] = {}
        # Keys read ahead for the batch (read_ahead), with what each had (None: none); kept
        # true by flush, dropped by discard
        self.ahead: dict[str, int | None] = {}
        # The last key made: an event's key is looked up, then added
        self._last: tuple[str, bytes, str] = ("", b"", "")

    def read_ahead(self, pairs: list[tuple[str, bytes]]) -> None:
        """Read the keys of these (customer, digest) pairs at once, for :meth:`stamp`.

        One call of :meth:`_read_many` instead of one read an event; the keys are not
        written before the next :meth:`flush`, which keeps what was read true.
        """
        keys = list(dict.fromkeys(_applied_key(customer, digest) for customer, digest in pairs))
        self.ahead = dict(zip(keys, self._read_many(keys), strict=True))

    def stamp(self, customer: str, digest: bytes) -> int | None:
        """The stamp of ``digest``'s key under ``customer``, or None if there is none."""
        key = self._key(customer, digest)
        found = self.pending.get(key)
        if found is not None:
            return found
        ahead = self.ahead
        if key in ahead:
            return ahead[key]
        return self.keys.get(key)

    def add(self, customer: str, digest: bytes, stamp: int) -> None:
        """Set ``digest``'s key under ``customer``; written by the next :meth:`flush`."""
        self.pending[self._key(customer, digest)] = stamp

    def _key(self, customer: str, digest: bytes) -> str:
        last_customer, last_digest, key = self._last
        if digest != last_digest or customer != last_customer:
            key = _applied_key(customer, digest)
            self._last = (customer, digest, key)
        return key

    def flush(self) -> None:
        """Write the keys added since the last flush (in the current record's partition)."""
        if self.pending:
            pending, self.pending = self.pending, {}
            self._write(pending)
            if self.ahead:
                self.ahead.update(pending)

    def discard(self) -> None:
        """Forget the keys added since the last flush (their batch is read again) and read ahead."""
        self.pending = {}
        self.ahead = {}

    def of(self, customer: str, partition: int, upto: int) -> list[bytes]:
        """The digests under ``customer`` in ``partition`` whose stamp is ``upto`` or less."""
        self.flush()  # read in the table's order, as if each key was written as added
        prefix = f"{customer}/"
        size = len(prefix) + 16  # "<prefix><16 hex>": not a longer customer id's key
        return [bytes.fromhex(key[len(prefix):]) for key, stamp in self._items(partition, prefix)
                if len(key) == size and stamp <= upto]

    def _items(self, partition: int, prefix: str) -> Iterable[tuple[str, int]]:
        return [(k, v) for k, v in self.keys.items() if k.startswith(prefix)]

    def _read_many(self, keys: list[str]) -> list[int | None]:
        return [self.keys.get(key) for key in keys]

    def _write(self, keys: dict[str, int]) -> None:
        for key, stamp in keys.items():
            self.keys[key] = stamp


class ProfileStage:
    """What the profiles stage does with the records of ``<app_id>-resolved``.

    ``handle_batch`` applies a batch of one partition's records in order, updates the
    table and returns, for each record, the records to send on (absorbed state for the
    customer a merge led to, or records forwarded past a merged-away id) and the
    complaint-signal records to publish; after it, ``changed`` and ``merged`` say which
    profiles to publish and which ids are gone. ``handle`` does the same for one record,
    adding its signals to ``signals``. Kept apart from the agent so the ordering rules are
    tested without Kafka.

    Within a batch each customer's profile (or marker) is read from the table at most
    once and written at most once, at the end, with the value the last of its records
    that changed it would have written one by one: the records read and change the
    batch's copy, so each sees what the records before it did. The ``applied`` keys are
    written at the end too, before the profiles (and before a hand-over reads a
    customer's keys), and read from what the batch added meanwhile; a batch that raises
    writes none of them. With ``read_many`` and ``write_many`` (the worker's table) the
    batch's customers, and its events' applied keys (:meth:`Applied.read_ahead`), are read
    in one call each before its records, and the profiles written in one call. The table
    is written before anything the batch sends, as it was before each record's sends, so
    a crash in between is a case that was handled already (the records are
    unacknowledged, so read again): a merge whose
    marker is in the changelog and whose hand-over was lost is handed over again
    (``_merge_again``); a hand-over delivered while the marker was lost comes again when
    the merge is read again, and the customer it reaches folds a state in once (by
    ``merged_from``); events passed on are passed on again and count once where they
    land; keys whose profile change was lost are stamped past the profile (below).

    The rules (``docs/design/identity.md``): an event that names aliases is held until
    each of them has been folded in; a merged-away id keeps a marker naming the customer
    it became (and the state it handed over), and whatever still arrives for it is passed
    on there; a merge read again after a crash hands that state over again, and the
    customer it became folds a state in once (by ``merged_from``).

    Repeats: every event counted in a customer's history has a key in ``applied``
    (:class:`Applied`), and a hand-over carries the merged-away customer's keys along.
    The keys and the profiles are two tables, whose changelogs a crash can cut at
    different points, so each key is stamped with the offset of the record whose
    profile change counted it, and each profile with the offset of the last record that
    changed it (``"offset"``). A key counts only if the profile has reached its stamp (a
    key whose profile change was lost does not hide the event when it is read again);
    a record read again that the profile has reached writes its key again (a profile
    change whose key was lost); and events released from ``held`` are also listed in the
    profile (``"released"``) until their record is committed, since the record read
    again is not theirs. ``committed`` gives a partition's committed offset.
    """

    def __init__(self, table: MutableMapping[str, Any], stats: dict[str, int],
                 detector: Detector | None = None,
                 attribution: Attributor | None = None, *,
                 applied: Applied | None = None,
                 committed: Callable[[int], int | None] = lambda partition: None,
                 read_many: Callable[[list[str]], list[Any]] | None = None,
                 write_many: Callable[[list[tuple[str, Any]]], None] | None = None) -> None:
        self.table = table
        # The table's reads and writes of many keys at once, if it has them: a batch's
        # customers are read together before its records, and written together after.
        self.read_many = read_many
        self.write_many = write_many
        self.stats = stats
        self.detector = detector
        self.attribution = attribution
        self.applied = Applied() if applied is None else applied
        self.committed = committed
        self.changed: set[str] = set()
        self.merged: dict[str, str] = {}
        #: The profiles and markers the last batch wrote, as written (``ProfilePublisher``).
        self.written: dict[str, dict[str, Any]] = {}
        self.signals: list[dict[str, Any]] = []  # complaint-signal records to publish
        self._event, self._merge = codec_for("event"), codec_for("merge")
        self._absorb = codec_for("absorb")
        self._counted: set[bytes] = set()  # digests counted by the record being handled
        # the batch's profiles and markers as read (None: none) or changed, and which changed
        self._batch: dict[str, dict[str, Any] | None] = {}
        self._writes: dict[str, None] = {}
        self._digests: dict[str, bytes] = {}  # the batch's events' digests, by event id
        self._next = 0  # the offset of a record handled without one (unit tests)

    def _count(self, name: str) -> None:
        self.stats[name] = self.stats.get(name, 0) + 1

    def handle(self, key: str, value: bytes, partition: int = 0,
               awaiting: Iterable[str] = (), offset: int | None = None) -> list[Send]:
        """Apply one record keyed by customer ``key``; return the records to send on.

        A batch of one (:meth:`handle_batch`); its complaint signals go to ``signals``.
        """
        [done] = self.handle_batch([Record(key, value, tuple(awaiting), offset)], partition)
        self.signals += done.signals
        return done.sends

    def handle_batch(self, records: Iterable[Record], partition: int = 0) -> list[Handled]:
        """Apply ``records``, all of ``partition``, in order; write the table once at the end.

        Complaint signals of the partition's customers that fell due by its event-time
        watermark are concluded with the record that moved the watermark there.
        ``awaiting`` (events only) are the aliases the customer must have folded in
        before the event is applied; until then it is held. ``offset`` is the record's
        offset in its partition. Returns what each record leaves to send, in order. If
        it raises, the table is not written: the batch is read again, as after a crash.
        """
        earlier, self.signals = self.signals, []
        self._batch.clear()
        self._writes.clear()
        self.written = {}
        try:
            if self.read_many is not None:
                # What _get would read for each record's customer: the table is not
                # written before the end of the batch
                records = list(records)  # read twice
                keys = list(dict.fromkeys(record.key for record in records))
                self._batch.update(zip(keys, self.read_many(keys), strict=True))
                # and the applied key each event looks up first, its own customer's
                digests = self._digests
                pairs = []
                for record in records:
                    if record.event is not None:
                        event_id = record.event["event_id"]
                        digest = digests[event_id] = event_digest(event_id)
                        pairs.append((record.key, digest))
                self.applied.read_ahead(pairs)
            done = []
            for key, value, awaiting, offset, event in records:
                if offset is None:
                    offset = self._next
                self._next = max(self._next, offset + 1)
                self._counted.clear()
                sent = self._handle(key, value, partition, offset, tuple(awaiting), event)
                # After every record, not once a batch: a sweep concludes what the
                # watermark of that moment passed, before the batch's later events are
                # observed (one of them may still change a pending signal), and the next
                # sweep waits for the watermark to move on from there. Until the
                # watermark has moved a sweep step this costs two dict reads.
                self._conclude_due_signals(partition)
                done.append(Handled(sent, self.signals))
                self.signals = []
            self.applied.flush()
            # _writes names only keys _set gave a value
            written = cast(dict[str, dict[str, Any]],
                           {key: self._batch[key] for key in self._writes})
            if self.write_many is not None:
                self.write_many(list(written.items()))
            else:
                for key, state in written.items():
                    self.table[key] = state
            self.written = written
            return done
        finally:
            self.signals = earlier
            self._batch.clear()
            self._writes.clear()
            self._digests.clear()
            self.applied.discard()

    def _get(self, key: str) -> dict[str, Any] | None:
        """``key``'s profile or marker as the batch has it: read from the table once."""
        try:
            return cast(dict[str, Any] | None, self._batch[key])
        except KeyError:
            value = self._batch[key] = self.table.get(key)
            return cast(dict[str, Any] | None, value)

    def _set(self, key: str, value: dict[str, Any]) -> None:
        """Set ``key``'s profile or marker; the table gets it at the end of the batch."""
        self._batch[key] = value
        self._writes[key] = None

    def _handle(self, key: str, value: bytes, partition: int, offset: int,
                awaiting: tuple[str, ...], event: dict[str, Any] | None) -> list[Send]:
        subject = subject_of(value)
        current = self._get(key)
        if current is not None and MERGED_INTO in current:
            return self._pass_on(key, current, subject, value, partition, awaiting)
        if subject == "event":
            if event is None:
                event = self._event.decode(value)
            self._on_event(key, current, event, partition, offset, awaiting)
        elif subject == "merge":
            into = self._merge.decode(value)["into_id"]
            return self._on_merge(key, current, into, partition)
        elif subject == "absorb":
            self._on_absorb(key, current, self._absorb.decode(value), partition, offset)
        return []

    def _on_event(self, key: str, current: dict[str, Any] | None, event: dict[str, Any],
                  partition: int, offset: int, awaiting: tuple[str, ...]) -> None:
        """An event of ``key``: applied, or held until the aliases it awaits are folded in."""
        state = current or new_profile(key)
        event_id = event["event_id"]
        digest = self._digests.get(event_id)
        if digest is None:
            digest = event_digest(event_id)
        if _offset(state) >= offset:
            self._read_again(key, state, event, digest, offset)
        elif self._seen(key, state, digest):
            self._count("repeats")
        elif awaiting and not set(awaiting).issubset(state["merged_from"]):
            self._hold(key, state, event, awaiting, partition, offset)
        else:
            self._apply_event(key, state, event, digest, partition, offset)
            self._put(key, state, partition, offset)

    def _read_again(self, key: str, state: dict[str, Any], event: dict[str, Any],
                    digest: bytes, offset: int) -> None:
        """An event whose record the profile has reached: its key is written again.

        The profile already has what the record did (the event counted, found a repeat,
        or held), but a crash may have lost the key of a counted one.
        """
        self._count("repeats")
        if not any(e["event_id"] == event["event_id"] for _, e in state.get("held", ())):
            self._ensure(key, state, digest, offset)

    def _on_merge(self, key: str, current: dict[str, Any] | None, into: str,
                  partition: int) -> list[Send]:
        """``key`` merged ``into`` another customer: leave a marker, hand the state over."""
        # Sent even when this id has no profile: the customer it became may hold
        # events until it knows this id is folded in.
        state = current or new_profile(key)
        self._set(key, {MERGED_INTO: into, MERGED_STATE: state})
        self.merged[key] = into
        self._count("merged_away")
        if self.detector is not None:
            self.detector.forget(key, partition)
        return self._handover(key, into, state, partition)

    def _on_absorb(self, key: str, current: dict[str, Any] | None, record: dict[str, Any],
                   partition: int, offset: int) -> None:
        """A hand-over record reaches ``key``: its digests are written, its state folded in once."""
        # Every time, even for a state folded in already: a record read again after a
        # crash may be all that is left of them.
        applied = record["applied"]
        for at in range(0, len(applied), 8):
            self.applied.add(key, applied[at:at + 8], CARRIED)
        if record["state"] is None:
            return  # digests only: the state comes in a later record
        other = orjson.loads(record["state"])
        state = current or new_profile(key)
        if _offset(state) >= offset:  # read again: what its releases counted is kept
            for hexed, at in state.get("released", {}).items():
                if at == offset:
                    self._ensure(key, state, bytes.fromhex(hexed), offset)
            return
        if other["customer_id"] in state["merged_from"]:
            return
        combine(state, other)
        if self.detector is not None:
            self.signals += self.detector.absorb(state, other.get(SIGNAL_KEY), partition)
        if self.attribution is not None:
            self.attribution.absorb(state, other.get(ATTRIBUTION_KEY))
        self._release(key, state, partition, offset)
        self._put(key, state, partition, offset)
        self.changed.add(key)
        self._count("absorbed")

    def _pass_on(self, key: str, marker: dict[str, Any], subject: str | None, value: bytes,
                 partition: int, awaiting: tuple[str, ...]) -> list[Send]:
        """A record for ``key``, merged away: it belongs to the customer ``key`` became.

        What still arrives for it (the state of a customer merged into it earlier, sent
        from another partition; a repeat of an old event) is passed on there.
        """
        target = marker[MERGED_INTO]
        if subject == "merge":
            return self._merge_again(key, marker, value, partition)
        if subject == "absorb":
            record = self._absorb.decode(value)
            record["into_id"] = target
            value = self._absorb.encode(record)
        if subject == "event":
            # It may be counted in this id's state, which is on its way to the target
            # (or still to be sent again, after a crash): it waits there until that
            # state is folded in, then counts once.
            awaiting = tuple(dict.fromkeys((*awaiting, key)))
        if subject in ("absorb", "event"):
            self._count("forwarded")
            return [Send(target, value, awaiting)]
        return []

    def _handover(self, key: str, into: str, state: dict[str, Any],
                  partition: int) -> list[Send]:
        """The records that hand ``key``'s state over to ``into``: digests first, state last.

        They all go to ``into``'s partition, in order, so the state is folded in (and
        held events checked) only when every digest of its history is there. The digests
        are the keys under ``key`` that its state has reached, read in ``partition``'s
        database (they stay there for a hand-over sent again), and those of the events
        it released lately.
        """
        digests = self.applied.of(key, partition, _offset(state))
        digests += map(bytes.fromhex, state.get("released", ()))
        applied = b"".join(dict.fromkeys(digests))
        size = HANDOVER_DIGESTS * 8
        records: list[dict[str, Any]] = [
            {"from_id": key, "into_id": into, "applied": applied[at:at + size], "state": None}
            for at in range(0, max(len(applied), 1), size)]
        records[-1]["state"] = orjson.dumps(state, option=orjson.OPT_NON_STR_KEYS).decode()
        return [Send(into, self._absorb.encode(record)) for record in records]

    def _merge_again(self, key: str, marker: dict[str, Any], value: bytes,
                     partition: int) -> list[Send]:
        """A merge of ``key``, already merged away (read again after a crash): hand over again.

        The marker is written before the state it hands over is delivered, so a worker
        that died between the two kept the marker and lost the state.
        """
        into = self._merge.decode(value)["into_id"]
        if into != marker[MERGED_INTO]:
            return []
        self._set(key, marker)  # again: the changelog may not have the first write
        self._count("merged_again")
        return self._handover(key, into, marker[MERGED_STATE], partition)

    def _seen(self, key: str, state: dict[str, Any], digest: bytes) -> bool:
        """Whether ``digest``'s event is counted in ``key``'s history already."""
        if digest in self._counted:
            return True
        released = state.get("released")
        if released and digest.hex() in released:
            return True
        stamp = self.applied.stamp(key, digest)
        # a key the profile has not reached belongs to a change a crash lost
        return stamp is not None and stamp <= _offset(state)

    def _ensure(self, key: str, state: dict[str, Any], digest: bytes, offset: int) -> None:
        """Write ``digest``'s key, counted by the record at ``offset``, unless it is there."""
        stamp = self.applied.stamp(key, digest)
        if stamp is None or stamp > _offset(state):
            self.applied.add(key, digest, offset)

    def _apply_event(self, key: str, state: dict[str, Any], event: dict[str, Any],
                     digest: bytes, partition: int, offset: int) -> None:
        """Count a new ``event`` in the profile, then run the complaint detector and attribution."""
        apply_event(state, event)
        self.applied.add(key, digest, offset)
        self._counted.add(digest)
        if self.detector is not None:
            self.signals += self.detector.observe(state, event, partition, digest)
        if self.attribution is not None:
            self.attribution.observe(state, event)
        self.changed.add(key)
        self._count("applied")

    def _put(self, key: str, state: dict[str, Any], partition: int, offset: int) -> None:
        """Write ``key``'s profile as changed by the record at ``offset``."""
        state["offset"] = offset
        released = state.get("released")
        committed = self.committed(partition)
        if released and committed is not None:
            # a committed record's keys are in Kafka: the list need not keep them
            released = {hexed: at for hexed, at in released.items() if at >= committed}
            if released:
                state["released"] = released
            else:
                del state["released"]
        self._set(key, state)

    def _hold(self, key: str, state: dict[str, Any], event: dict[str, Any],
              awaiting: tuple[str, ...], partition: int, offset: int) -> None:
        held = state.setdefault("held", [])
        if any(e["event_id"] == event["event_id"] for _, e in held):
            self._count("repeats")
            return
        held.append([list(awaiting), event])
        self._put(key, state, partition, offset)
        self._count("held")

    def _release(self, key: str, state: dict[str, Any], partition: int, offset: int) -> None:
        """Apply the held events whose awaited aliases are all folded in now."""
        held = state.pop("held", None)
        if not held:
            return
        folded = set(state["merged_from"])
        waiting = []
        for awaiting, event in held:
            if not folded.issuperset(awaiting):
                waiting.append([awaiting, event])
                continue
            self._count("released")
            digest = event_digest(event["event_id"])
            if self._seen(key, state, digest):
                self._count("repeats")
                continue
            self._apply_event(key, state, event, digest, partition, offset)
            # listed until this record is committed: read again, it cannot tell its keys
            state.setdefault("released", {})[digest.hex()] = offset
        if waiting:
            state["held"] = waiting

    def _conclude_due_signals(self, partition: int) -> None:
        """Conclude the complaint signals of ``partition`` that fell due by its watermark."""
        if self.detector is None:
            return
        for customer in self.detector.sweep(partition):
            current = self._get(customer)
            if current is None or MERGED_INTO in current:
                self.detector.forget(customer, partition)
                continue
            # on a copy: a profile that concludes nothing is not written, and one by one
            # the change expire() made to it was never read again either. expire() reads
            # and replaces the detector's part only, so only that part is copied deeply
            # (the attribution state, the largest part, is shared).
            state = dict(current)
            stored = current.get(SIGNAL_KEY)
            if stored is not None:
                state[SIGNAL_KEY] = _copied(stored)
            records = self.detector.expire(state, partition)
            if records:
                self._set(customer, state)
                self.changed.add(customer)
                self.signals += records


def _copied(value: Any) -> Any:
    """A deep copy of JSON-like data: dicts, lists and tuples copied, text and numbers shared.

    What ``copy.deepcopy`` gives for a state (which holds only JSON types), at about a
    tenth of its cost; anything else is deep-copied as before.
    """
    kind = type(value)
    if kind is dict:
        return {key: _copied(item) for key, item in value.items()}
    if kind is list:
        return [_copied(item) for item in value]
    if value is None or kind is str or kind is int or kind is float or kind is bool:
        return value
    if kind is tuple:
        return tuple([_copied(item) for item in value])
    return copy.deepcopy(value)


def _offset(state: dict[str, Any]) -> int:
    """The offset of the last record that changed a profile (-1: none yet)."""
    return cast(int, state.get("offset", -1))
