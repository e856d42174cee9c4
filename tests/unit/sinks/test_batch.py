"""Batch tokens: the same rows give the same token, different rows never share one."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from touchpoint.sinks.base import Batch

ROWS = [(1793491380000, "web", "purchase", "S01", "", 0, 3, 2, 129.5, None),
        (1793491440000, "store", "visit", "S02", "CMP-1", 1, 1, 1, 0.0, None)]


def test_the_same_rows_in_any_order_give_the_same_token() -> None:
    token = Batch.token_for_rows("t", ROWS)
    assert Batch.token_for_rows("t", list(reversed(ROWS))) == token
    assert Batch.token_for_rows("t", [list(row) for row in ROWS]) == token
    assert Batch.token_for_rows("other", ROWS) != token


def test_rows_json_would_write_alike_get_different_tokens() -> None:
    def token(value: object) -> str:
        return Batch.token_for_rows("t", [(1, "a", value)])

    values: list[object] = [None, math.nan, math.inf, -math.inf, 1, 1.0, True, "1", "null",
                            2**70, 2**70 + 1, datetime(2026, 1, 1, tzinfo=UTC),
                            "2026-01-01T00:00:00+00:00", b"1", [1, None], [1, math.nan]]
    tokens = [token(value) for value in values]
    assert len(set(tokens)) == len(values)
    assert tokens == [token(value) for value in values]  # and each is stable
