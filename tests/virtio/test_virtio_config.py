"""Device configuration space and config_generation (virtio 1.2 2.5)."""

from __future__ import annotations

import struct

import pytest

from xenvirtio.virtio.config import (
    ConfigAccessError,
    ConfigSpace,
    ConfigUnstableError,
    read_consistent,
)


def test_generation_bumps_only_on_change() -> None:
    cfg = ConfigSpace(struct.pack("<QI", 1000, 512))
    assert cfg.generation == 0
    assert cfg.update(0, struct.pack("<Q", 2000))
    assert cfg.generation == 1
    assert not cfg.update(0, struct.pack("<Q", 2000))
    assert cfg.generation == 1
    assert struct.unpack("<QI", cfg.read(0, 12)) == (2000, 512)


def test_driver_writes_only_writable_fields() -> None:
    cfg = ConfigSpace(bytes(8), driver_writable=[(4, 2)])
    assert cfg.driver_write(4, b"\x01\x02")
    assert not cfg.driver_write(0, b"\x09")
    assert cfg.snapshot() == b"\0\0\0\0\x01\x02\0\0"
    with pytest.raises(ConfigAccessError):
        cfg.read(6, 4)


def test_driver_write_hook_takes_a_write_only_register() -> None:
    seen: list[tuple[int, bytes]] = []

    def hook(offset: int, data: bytes) -> bool:
        seen.append((offset, data))
        return offset == 0  # byte 0 is a write-only register

    cfg = ConfigSpace(bytes(8), driver_writable=[(4, 2)], on_driver_write=hook)
    assert cfg.driver_write(0, b"\x41")  # taken by the device: nothing stored
    assert cfg.driver_write(4, b"\x01\x02")  # declined: stored in the writable range
    assert not cfg.driver_write(2, b"\x09")  # declined and read-only: ignored
    assert seen == [(0, b"\x41"), (4, b"\x01\x02"), (2, b"\x09")]
    assert cfg.snapshot() == b"\0\0\0\0\x01\x02\0\0"
    assert cfg.generation == 0  # driver writes are not device-side changes


def test_driver_write_hook_never_sees_an_access_outside() -> None:
    seen: list[int] = []
    cfg = ConfigSpace(bytes(4), on_driver_write=lambda off, data: bool(seen.append(off)))
    with pytest.raises(ConfigAccessError):
        cfg.driver_write(3, b"\x01\x02")
    assert seen == []


def test_consistent_read_retries_a_torn_read() -> None:
    cfg = ConfigSpace(struct.pack("<II", 1, 1))
    reads = 0

    def read_pair() -> tuple[int, ...]:
        nonlocal reads
        reads += 1
        low = cfg.read(0, 4)
        if reads == 1:  # the device changes both fields between the driver's two reads
            cfg.update(0, struct.pack("<II", 2, 2))
        return struct.unpack("<II", low + cfg.read(4, 4))

    assert read_consistent(lambda: cfg.generation, read_pair) == (2, 2)
    assert reads == 2


def test_a_device_that_never_settles() -> None:
    counter = iter(range(10**6))
    with pytest.raises(ConfigUnstableError):
        read_consistent(lambda: next(counter), lambda: None, max_tries=5)
