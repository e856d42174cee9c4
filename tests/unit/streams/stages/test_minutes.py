"""The per-minute stage: windows stored every few seconds, events acknowledged after."""

from __future__ import annotations

from touchpoint.streams.stages.minutes import Unstored


def test_windows_are_stored_every_few_seconds_and_only_with_something_new() -> None:
    now = [100.0]
    unstored = Unstored(every=5.0, clock=lambda: now[0])
    assert not unstored.due()  # nothing counted
    unstored.add(0, ["e1", "e2"])  # type: ignore[list-item]  # events stand in as tokens
    now[0] += 4.9
    assert not unstored.due()
    now[0] += 0.2
    assert unstored.due()
    partitions, events = unstored.take()
    assert (partitions, events) == ({0: "e2"}, ["e1", "e2"])
    assert not unstored.due()  # taken: nothing new
    unstored.add(1, ["e3"])  # type: ignore[list-item]
    assert not unstored.due()  # stored just now
    now[0] += 5.0
    assert unstored.due()
    unstored.drop()  # revoked: the next owner reads them again
    assert not unstored.due()
    assert unstored.take() == ({}, [])
