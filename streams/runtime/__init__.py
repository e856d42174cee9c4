"""Everything that replaces or reaches into Faust, in one place (docs/design/runtime.md).

The app class, the generation-safe consumer, batched changelogs, the RocksDB table
store, the outbox that sends in batches, the store that follows a stage (``behind``),
lean sensors and the garbage-collector tuning.
"""
