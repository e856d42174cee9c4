"""The topics the pipeline creates before a worker starts, changelogs included."""

from __future__ import annotations

import asyncio
from pathlib import Path
from unittest import mock

from touchpoint.settings import load_settings
from touchpoint.streams.app import create_app
from touchpoint.streams.topics import TABLES, changelog_topic


def test_every_table_changelog_is_created_ahead_with_its_partitions(tmp_path: Path) -> None:
    settings = load_settings({"TOUCHPOINT_HOME": str(tmp_path), "TOUCHPOINT_PII_SALT": "s",
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
    finally:
        asyncio.set_event_loop(None)
        loop.close()
