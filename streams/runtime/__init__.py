"""Everything that replaces or reaches into Faust, in one place.

The generation-safe consumer, batched changelogs, the RocksDB table store, the outbox
that sends in batches, lean sensors and the garbage-collector tuning.
"""
