"""GuardedMemory records accesses and refuses (and records) those outside its ranges."""

from __future__ import annotations

import pytest

from xenvirtio.mem.api import GuestMemoryError
from xenvirtio.mem.flat import FlatMemory
from xenvirtio.mem.guard import GuardedMemory


def test_records_and_refuses() -> None:
    guard = GuardedMemory(FlatMemory(0x100), [(0x10, 0x10)])
    guard.write(0x10, b"ok")
    assert guard.read(0x10, 2) == b"ok"
    assert guard.violations == []
    with pytest.raises(GuestMemoryError):
        guard.read(0x18, 0x10)  # straddles the end of the allowed range
    with pytest.raises(GuestMemoryError):
        guard.view(0x40, 1)
    assert [(a.op, a.gpa, a.size) for a in guard.violations] == [
        ("read", 0x18, 0x10),
        ("view", 0x40, 1),
    ]
    with pytest.raises(AssertionError):
        guard.assert_clean()


def test_check_refuses_without_recording() -> None:
    guard = GuardedMemory(FlatMemory(0x100), [(0x10, 0x10)])
    guard.check(0x10, 0x10)
    with pytest.raises(GuestMemoryError):
        guard.check(0x40, 1)
    assert guard.accesses == [] and guard.violations == []
    guard.allow(0x40, 1)
    guard.check(0x40, 1)
