"""The identity stage's table cache; the graph itself is tested in rules/test_identity.py."""

from __future__ import annotations

from touchpoint.streams.stages.identity import ReadThrough


def test_read_through_keeps_reads_and_writes_through() -> None:
    class Counting(dict[str, str]):
        reads = 0

        def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
            Counting.reads += 1
            return super().get(key, default)

    table = Counting(a="C1")
    owner = ReadThrough(table, limit=2)
    assert owner.get("a") == owner.get("a") == "C1"
    assert Counting.reads == 1  # the second read came from the kept copy
    owner["b"] = "C2"
    assert table["b"] == "C2" and owner.get("b") == "C2" and Counting.reads == 1
    assert owner.get("missing") is None and "missing" not in owner
    owner["c"] = "C3"  # over the limit: the kept copy starts over, the table keeps all
    assert dict(table) == {"a": "C1", "b": "C2", "c": "C3"}
    assert owner.pop("a") == "C1" and owner.get("a") is None
    owner.clear_kept()
    assert owner.get("b") == "C2" and Counting.reads > 1
