"""The Kafka consumer of the worker: Faust's, with acknowledgements that cannot outlive a rebalance.

Faust commits, per partition, the end of the first unbroken run of acknowledged offsets.
Two things in faust-streaming 0.15 let an acknowledgement from *before* a rebalance into that run:

- on revocation it forgets the partition's committed offset, and ``Consumer.ack`` then
  accepts any offset at all;
- a stream skips records of an older consumer generation, and acknowledges them as it
  skips them.

With ``stream_wait_empty`` off (see ``app.py``) a stage can still be working on, or
skipping, records of the old generation while the new one starts again from the committed
offset. An old record's offset then joins the new generation's acknowledgements, and
the next commit can jump past records that nobody has processed yet. The worker that
dies before reaching them, or is rebalanced once more, loses them.

This consumer accepts an acknowledgement only for a record fetched in the current
generation, and none between revocation and the next assignment. A refused record is
not lost: the partition's owner in the new generation reads it again from the committed
offset, and every stage is idempotent for repeats.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from faust.transport.drivers import aiokafka as driver
from faust.types import TP, EventT, Message

__all__ = ["Consumer", "Transport", "is_current", "only_current"]

E = TypeVar("E", bound=EventT)


class Consumer(driver.Consumer):
    """Faust's aiokafka consumer, acknowledging only records of the current generation."""

    #: Generation whose records may be acknowledged; ``None`` while partitions are revoked.
    ack_generation: int | None = None
    #: Acknowledgements refused because their record came from an earlier generation.
    stale_acks: int = 0
    #: Batches with records skipped because their partition was revoked (:func:`only_current`).
    batches_abandoned: int = 0

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        """Refuse acknowledgements until the next assignment, then revoke as Faust does."""
        self.ack_generation = None
        await super().on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        """Accept acknowledgements of this generation, then assign as Faust does."""
        # Before Faust's own handling: streams may resume and acknowledge from inside it.
        self.ack_generation = generation_id
        await super().on_partitions_assigned(assigned, generation_id)

    def ack(self, message: Message) -> bool:
        """Acknowledge ``message`` unless it was fetched in an earlier generation."""
        generation = message.generation_id
        if generation is not None and generation != self.ack_generation:
            if not message.acked:
                message.acked = True
                self._unacked_messages.discard(message)
                self.stale_acks += 1
            return False
        return bool(super().ack(message))


class Transport(driver.Transport):
    """The aiokafka transport with :class:`Consumer`."""

    Consumer = Consumer


def is_current(app: object, message: Message) -> bool:
    """Whether ``message`` was fetched in the consumer's current generation.

    ``False`` from the moment its partition is revoked. A stage working through a batch
    checks this before each record and stops when it turns false: the partition's next
    owner reads the rest again from the committed offset, and a stale owner that went on
    would write its tables' changelogs and send outputs interleaved with the new owner's.
    """
    consumer = getattr(app, "consumer", None)
    if not isinstance(consumer, Consumer) or message.generation_id is None:
        return True  # not our consumer (unit tests), or a record without a generation
    return message.generation_id == consumer.ack_generation


def only_current(app: object, events: Iterable[E]) -> Iterator[E]:
    """The events of a batch fetched in the consumer's current generation, in order.

    Checked as each event is taken, so after a revocation while the stage works on the
    batch the rest is skipped; the partition's next owner reads it again. A batch can
    also *start* with records of the previous generation, followed by current ones: Faust
    checks the generation as a record enters the batch buffer, and one record may wait at
    the buffer's door through a whole rebalance. Those are skipped and the current ones
    processed. (Stopping there instead would lose the current ones:
    ``take_events`` acknowledges every record of a batch once the stage is done with it.)
    """
    skipped = False
    for event in events:
        if is_current(app, event.message):
            yield event
        elif not skipped:
            skipped = True
            consumer = getattr(app, "consumer", None)
            if isinstance(consumer, Consumer):
                consumer.batches_abandoned += 1
