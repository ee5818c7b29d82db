"""A frontend that writes malformed requests gets error responses; one that breaks the
ring is failed (dev_fatal); another frontend of the same backend keeps being served.
The hostile frontend is `RawBlkfront`: its ring entries are exactly the test's bytes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from xenvirtio.devices.blkif.backend import BlkbackConfig, BlkifBackendRunner
from xenvirtio.hv.api import Hypervisor
from xenvirtio.hv.emu import open_emu
from xenvirtio.hv.xenbus.client import read_state
from xenvirtio.hv.xenbus.paths import error_dir
from xenvirtio.pvring.blkif.request import Segment, encode_rw
from xenvirtio.spec import blkif as B
from xenvirtio.spec.xenbus_state import XenbusState
from xenvirtio.testing.blkif_hostile import RawBlkfront
from xenvirtio.testing.blkif_stack import BlkifStack
from xenvirtio.testing.hv_harness import wait_until


@pytest.fixture
def dom0(blkif_run_dir: Path) -> Iterator[Hypervisor]:
    hv = open_emu(blkif_run_dir)
    try:
        yield hv
    finally:
        hv.close()


@pytest.fixture
def runner(dom0: Hypervisor) -> Iterator[BlkifBackendRunner]:
    runner = BlkifBackendRunner(dom0)
    runner.start_thread(0.02)
    try:
        yield runner
    finally:
        runner.close()


def crafted(header: tuple[int, int, int, int], segs: list[tuple[int, int, int]]) -> bytes:
    """A direct request with any header (op, nr_segments, sector) and raw segments."""
    op, nseg, _, sector = header
    out = bytearray(B.REQUEST_SIZE)
    B.REQUEST_HEADER.pack_into(out, 0, op, nseg, 0, 0, sector)
    for i, seg in enumerate(segs[: B.BLKIF_MAX_SEGMENTS_PER_REQUEST]):
        B.SEGMENT.pack_into(out, B.REQUEST_HEADER.size + i * B.SEGMENT.size, *seg)
    return bytes(out)


@pytest.mark.parametrize("persistent", [True, False], ids=["persistent", "grant-copy"])
def test_malformed_requests_get_errors(
    dom0: Hypervisor, runner: BlkifBackendRunner, blkif_run_dir: Path, image: Path,
    persistent: bool,
) -> None:  # fmt: skip
    with RawBlkfront(blkif_run_dir, dom0, runner, image, persistent=persistent) as raw:
        page = raw.pages[0]
        good = (page.gref, 0, 7)
        sectors = raw.sectors
        cases = {
            "too many segments": crafted((B.BLKIF_OP_READ, 12, 0, 0), [good] * 11),
            "no segments": crafted((B.BLKIF_OP_READ, 0, 0, 0), []),
            "first > last": crafted((B.BLKIF_OP_READ, 1, 0, 0), [(page.gref, 5, 2)]),
            "last past the page": crafted((B.BLKIF_OP_WRITE, 1, 0, 0), [(page.gref, 0, 8)]),
            "gref out of range": crafted((B.BLKIF_OP_READ, 1, 0, 0), [(1 << 30, 0, 7)]),
            "gref not granted": crafted((B.BLKIF_OP_WRITE, 1, 0, 0), [(4000, 0, 7)]),
            "beyond the disk": crafted((B.BLKIF_OP_READ, 1, 0, sectors - 4), [good]),
        }
        for name, entry in cases.items():
            assert raw.request(entry).status == B.BLKIF_RSP_ERROR, name
        unknown = raw.request(crafted((B.BLKIF_OP_RESERVED_1, 1, 0, 0), [good]))
        assert unknown.status == B.BLKIF_RSP_EOPNOTSUPP
        # The device still works, and nothing was written by the refused requests.
        read = raw.request(encode_rw(B.BLKIF_OP_READ, 0, 0, [Segment(page.gref, 0, 7)]))
        assert read.status == B.BLKIF_RSP_OKAY
        assert bytes(page.view) == image.read_bytes()[:4096]
        page.view[:] = b"x" * 4096
        write = raw.request(encode_rw(B.BLKIF_OP_WRITE, 0, 8, [Segment(page.gref, 0, 7)]))
        flush = raw.request(encode_rw(B.BLKIF_OP_FLUSH_DISKCACHE, 0, 0, []))
        assert write.status == flush.status == B.BLKIF_RSP_OKAY
        assert image.read_bytes()[4096:8192] == b"x" * 4096
        be = runner.backends[str(raw.backend)]
        assert sum(q.errors for q in be.queues) == len(cases) + 1


def test_barrier_drains_the_ring_and_reaches_the_disk(
    dom0: Hypervisor, runner: BlkifBackendRunner, blkif_run_dir: Path, image: Path
) -> None:
    with RawBlkfront(blkif_run_dir, dom0, runner, image) as raw:
        assert dom0.store is not None and raw.backend is not None
        assert dom0.store.read(f"{raw.backend}/{B.KEY_FEATURE_BARRIER}") == b"1"
        for i, page in enumerate(raw.pages):
            page.view[:] = bytes([0x41 + i]) * 4096
        seg = [Segment(p.gref, 0, 7) for p in raw.pages]
        before = [
            raw.put(encode_rw(B.BLKIF_OP_WRITE, 0, 8 * i, [s])) for i, s in enumerate(seg[:6])
        ]
        barrier = raw.put(encode_rw(B.BLKIF_OP_WRITE_BARRIER, 0, 48, [seg[6]]))
        empty = raw.put(encode_rw(B.BLKIF_OP_WRITE_BARRIER, 0, 0, []))
        after = raw.put(encode_rw(B.BLKIF_OP_READ, 0, 0, [seg[7]]))
        raw.push()
        answers = raw.wait([*before, barrier, empty, after])
        assert all(r.status == B.BLKIF_RSP_OKAY for r in answers)
        order = [r.id for r in answers]
        assert set(order[:6]) == set(before) and order[6:] == [barrier, empty, after]
        assert bytes(raw.pages[7].view) == b"A" * 4096  # read after the barrier: data there
        disk = image.read_bytes()
        assert all(disk[4096 * i : 4096 * (i + 1)] == bytes([0x41 + i]) * 4096 for i in range(7))


def test_barrier_not_offered_is_refused(
    dom0: Hypervisor, runner: BlkifBackendRunner, blkif_run_dir: Path, image: Path
) -> None:
    back = BlkbackConfig(barrier=False)
    with RawBlkfront(blkif_run_dir, dom0, runner, image, back=back) as raw:
        assert dom0.store is not None
        assert dom0.store.read(f"{raw.backend}/{B.KEY_FEATURE_BARRIER}") == b"0"
        rsp = raw.request(encode_rw(B.BLKIF_OP_WRITE_BARRIER, 0, 0, []))
        assert rsp.status == B.BLKIF_RSP_EOPNOTSUPP


def test_producer_overflow_is_fatal_for_that_frontend_only(
    dom0: Hypervisor, runner: BlkifBackendRunner, blkif_run_dir: Path, image: Path, tmp_path: Path
) -> None:
    other_image = tmp_path / "other.img"
    other_image.write_bytes(bytes(1 << 20))
    with (
        RawBlkfront(blkif_run_dir, dom0, runner, image) as bad,
        BlkifStack(blkif_run_dir, other_image, runner=runner, dom0=dom0, devid=1) as good,
    ):
        bad.overflow()
        assert dom0.store is not None and bad.backend is not None
        assert wait_until(
            lambda: read_state(dom0.store, str(bad.backend)) is not XenbusState.CONNECTED,
            10,  # type: ignore[arg-type]
        )
        error = dom0.store.read(f"{error_dir(str(bad.backend))}/error")
        assert b"overflow" in error
        good.run(good.front.write(0, b"g" * 8192, True))
        assert good.run(good.front.read(0, 8192)) == b"g" * 8192
        assert other_image.read_bytes()[:8192] == b"g" * 8192
