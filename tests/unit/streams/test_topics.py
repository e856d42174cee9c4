"""The topics the pipeline creates before a worker starts, changelogs included."""

from __future__ import annotations

import asyncio
from pathlib import Path
from unittest import mock

from touchpoint.settings import load_settings
from touchpoint.streams.app import create_app
from touchpoint.streams.runtime import changelog
from touchpoint.streams.topics import TABLES, RawSchema, TopicNames, changelog_topic, raw_topic


def test_every_table_changelog_is_created_ahead_with_its_partitions(tmp_path: Path) -> None:
    settings = load_settings({"TOUCHPOINT_HOME": str(tmp_path),
                              "TOUCHPOINT_PII_SALT": "unit-test-salt-0123",
                              "TOUCHPOINT_APP_ID": "tp-x", "TOUCHPOINT_TOPIC_PARTITIONS": "4"})
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        app = create_app(settings, mock.MagicMock(), faust_options={"loop": loop}).app
        tables = {name: table for name, table in app.tables.items()}
        assert set(tables) == set(TABLES)
        for name, table in tables.items():
            assert table.changelog_topic.get_topic_name() == changelog_topic("tp-x", name)
            assert table.partitions == (TABLES[name] or settings.topic_partitions)
            assert isinstance(table, changelog.Table)  # changelogs in batches
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def test_the_minutes_changelog_takes_records_larger_than_kafkas_default(tmp_path: Path) -> None:
    from touchpoint.streams.topics import LARGE_RECORD_BYTES, ensure_topics

    settings = load_settings({"TOUCHPOINT_HOME": str(tmp_path),
                              "TOUCHPOINT_PII_SALT": "unit-test-salt-0123",
                              "TOUCHPOINT_APP_ID": "tp-x"})
    admin = mock.MagicMock()
    admin.list_topics.return_value = []
    with mock.patch("kafka.KafkaAdminClient", return_value=admin):
        ensure_topics(settings)
    created = {call.args[0][0].name: call.args[0][0] for call in admin.create_topics.call_args_list}
    minutes = created[changelog_topic("tp-x", "touchpoint-minutes")]
    assert minutes.topic_configs == {"cleanup.policy": "compact",
                                     "max.message.bytes": str(LARGE_RECORD_BYTES)}
    profiles = created[changelog_topic("tp-x", "touchpoint-profiles")]
    assert profiles.topic_configs == {"cleanup.policy": "compact"}
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        app = create_app(settings, mock.MagicMock(), faust_options={"loop": loop}).app
        assert app.conf.producer_max_request_size == LARGE_RECORD_BYTES
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def test_the_topics_between_stages_belong_to_the_group_and_the_contract_s_are_shared() -> None:
    one, other = TopicNames("p.", "live"), TopicNames("p.", "replay")
    assert one.resolved == "p.live-resolved" and one.resolved not in other.all()
    shared = [*one.inbound, one.deadletter, one.unresolved, one.signals, one.profiles]
    assert shared == [*other.inbound, other.deadletter, other.unresolved, other.signals,
                      other.profiles]
    assert TopicNames().resolved == "touchpoint-resolved"


def test_a_raw_topic_gives_the_events_faust_raw_serializers_give() -> None:
    import faust
    from faust.types import TP, Message

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        app = faust.App("raw-test", loop=loop)
        ours = raw_topic(app, "t")
        faust_raw = app.topic("t", key_serializer="raw", value_serializer="raw")
        assert isinstance(ours.schema, RawSchema)

        def message(key: bytes | None, value: bytes | None) -> Message:
            return Message("t", 3, 17, 1795000000.0, 0, headers=[("h", b"1")], key=key,
                           value=value, checksum=None, tp=TP("t", 3))

        for key, value in ((b"k", b"\xc3\x4a{}"), (None, b"v"), (b"k", None), (None, None)):
            got = loop.run_until_complete(ours.decode(message(key, value), propagate=True))
            want = loop.run_until_complete(faust_raw.decode(message(key, value),
                                                            propagate=True))
            assert (got.key, got.value, got.headers) == (want.key, want.value, want.headers)
            assert got.message.offset == 17
        # sending is Faust's raw serialization, unchanged
        assert ours.prepare_key(b"k", None) == faust_raw.prepare_key(b"k", None)
        assert ours.prepare_value(b"v", None) == faust_raw.prepare_value(b"v", None)
    finally:
        loop.close()
        asyncio.set_event_loop(None)
