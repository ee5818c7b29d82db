"""FileBackend against a real file: data lands where it should, holes are punched."""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path

import pytest
from nbd_support import make_image

from xenvirtio.nbd.backend import BlockIOError
from xenvirtio.nbd.file_backend import FileBackend

SIZE = 4 << 20


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def test_read_write_round_trip_at_offsets(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    original = make_image(image, SIZE)

    async def run() -> tuple[bytes, bytes]:
        with FileBackend(image) as disk:
            assert (disk.size, disk.block_size, disk.read_only) == (SIZE, 1, False)
            await disk.write(4096, b"\xaa" * 8192, fua=True)
            head = bytes(await disk.read(0, 4096))
            mid = bytes(await disk.read(4096, 8192))
            return head, mid

    head, mid = asyncio.run(run())
    assert head == original[:4096] and mid == b"\xaa" * 8192
    on_disk = image.read_bytes()
    assert on_disk[4096 : 4096 + 8192] == b"\xaa" * 8192
    assert on_disk[:4096] == original[:4096] and on_disk[12288:] == original[12288:]


def test_trim_punches_a_hole_and_keeps_the_size(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    make_image(image, SIZE)
    before = allocated(image)

    async def run() -> bytes:
        with FileBackend(image) as disk:
            await disk.trim(1 << 20, 2 << 20)
            return bytes(await disk.read(1 << 20, 2 << 20))

    assert asyncio.run(run()) == bytes(2 << 20)  # ext4/tmpfs holes read as zeroes
    assert image.stat().st_size == SIZE
    assert allocated(image) <= before - (2 << 20)


@pytest.mark.parametrize("may_trim", [True, False])
def test_write_zeroes_reads_back_zero(tmp_path: Path, may_trim: bool) -> None:
    image = tmp_path / "disk.img"
    original = make_image(image, SIZE)

    async def run() -> None:
        with FileBackend(image) as disk:
            await disk.write_zeroes(512, 3 * 512, may_trim)

    asyncio.run(run())
    data = image.read_bytes()
    assert data[512:2048] == bytes(1536)
    assert data[:512] == original[:512] and data[2048:] == original[2048:]
    assert len(data) == SIZE


def test_read_only_file_refuses_writes_with_an_errno(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    make_image(image, SIZE)

    async def run() -> None:
        with FileBackend(image, read_only=True) as disk:
            assert disk.read_only and not disk.can_trim and not disk.can_write_zeroes
            await disk.write(0, b"x", fua=False)

    with pytest.raises(BlockIOError) as caught:
        asyncio.run(run())
    assert caught.value.errno == errno.EBADF


def test_a_file_shrunk_behind_our_back_gives_eio_not_short_data(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    make_image(image, SIZE)

    async def run() -> None:
        with FileBackend(image) as disk:
            os.truncate(image, SIZE // 2)
            await disk.read(SIZE - 4096, 4096)

    with pytest.raises(BlockIOError) as caught:
        asyncio.run(run())
    assert caught.value.errno == errno.EIO


def test_without_fallocate_trim_is_a_no_op_and_write_zeroes_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = tmp_path / "disk.img"
    original = make_image(image, SIZE)
    calls: list[int] = []

    def unsupported(fd: int, mode: int, offset: int, length: int) -> None:
        calls.append(mode)
        raise OSError(errno.EOPNOTSUPP, "not here")

    monkeypatch.setattr("xenvirtio.nbd.file_backend.fallocate", unsupported)

    async def run() -> None:
        with FileBackend(image) as disk:
            await disk.trim(0, 1 << 20)
            await disk.write_zeroes(1 << 20, (2 << 20) + 512, may_trim=True)

    asyncio.run(run())
    data = image.read_bytes()
    assert data[: 1 << 20] == original[: 1 << 20]  # trim was only a hint
    end = (3 << 20) + 512
    assert data[1 << 20 : end] == bytes(end - (1 << 20)) and data[end:] == original[end:]
    assert len(calls) == 3  # punch (trim), punch, zero-range (write_zeroes), then writes


@pytest.mark.parametrize("nowait", ["half", "eagain", "unsupported"])
def test_reads_finish_in_the_pool_whatever_rwf_nowait_managed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nowait: str
) -> None:
    image = tmp_path / "disk.img"
    original = make_image(image, SIZE)
    real_preadv = os.preadv
    nowait_calls: list[int] = []

    def preadv(fd: int, buffers: list[bytearray], offset: int, flags: int = 0) -> int:
        if flags & os.RWF_NOWAIT:
            nowait_calls.append(offset)
            if nowait == "eagain":
                raise BlockingIOError(errno.EAGAIN, "would block")
            if nowait == "unsupported":
                raise OSError(errno.EOPNOTSUPP, "no RWF_NOWAIT here")
            half = memoryview(buffers[0])[: len(buffers[0]) // 2]
            return real_preadv(fd, [half], offset)
        return real_preadv(fd, buffers, offset)

    monkeypatch.setattr(os, "preadv", preadv)

    async def run() -> list[bytes]:
        with FileBackend(image) as disk:
            return [bytes(await disk.read(off, 8192)) for off in (0, 100_000, 1 << 20)]

    assert asyncio.run(run()) == [original[o : o + 8192] for o in (0, 100_000, 1 << 20)]
    # Without support it is tried once, then never again.
    assert len(nowait_calls) == (1 if nowait == "unsupported" else 3)
