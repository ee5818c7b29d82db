"""The xenstore ring: the sans-I/O page arithmetic, then client <-> daemon over a ring."""

from __future__ import annotations

import asyncio
import os
import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenvirtio.spec.xs_wire import (
    XENSTORE_CONNECTED,
    XENSTORE_ERROR_NONE,
    XENSTORE_ERROR_PROTO,
    XENSTORE_ERROR_RINGIDX,
    XENSTORE_IFACE_REQ_CONS,
    XENSTORE_IFACE_REQ_PROD,
    XENSTORE_IFACE_RSP_CONS,
    XENSTORE_IFACE_RSP_PROD,
    XENSTORE_RING_SIZE,
)
from xenvirtio.testing.xs_ring import LocalDomainConnector, LocalRingChannel, ring_pair
from xenvirtio.xenstore import aio
from xenvirtio.xenstore.client import XenstoreClient, XenstoreError
from xenvirtio.xenstore.ring import SERVER_FEATURES, RingError, Role, XenstoreRing
from xenvirtio.xenstore.wire import HEADER

from .xs_io_helpers import InProcessDaemon

U32 = struct.Struct("<I")


def page() -> memoryview:
    return memoryview(bytearray(4096))


def set_index(iface: memoryview, off: int, value: int) -> None:
    U32.pack_into(iface, off, value & 0xFFFF_FFFF)


def test_ring_carries_bytes_both_ways_with_wraparound() -> None:
    iface = page()
    for off in (XENSTORE_IFACE_REQ_CONS, XENSTORE_IFACE_REQ_PROD):
        set_index(iface, off, 0xFFFF_FF00)  # indices about to wrap past 2**32
    server, client = XenstoreRing(iface, Role.SERVER), XenstoreRing(iface, Role.CLIENT)
    data = bytes(range(256)) * 3
    assert client.write(data) == len(data)
    assert server.read() == data
    assert client.write(data * 2) == XENSTORE_RING_SIZE  # a full ring takes 1024
    assert client.space() == 0 and client.write(b"more") == 0
    assert server.read(100) == data[:100]
    assert client.space() == 100
    assert U32.unpack_from(iface, XENSTORE_IFACE_REQ_PROD)[0] < 0x1000  # wrapped
    assert server.write(b"reply") == 5 and client.read() == b"reply"


@given(
    start=st.integers(0, 0xFFFF_FFFF),
    chunks=st.lists(st.binary(min_size=1, max_size=700), max_size=20),
    reads=st.lists(st.integers(1, 1024), min_size=1, max_size=8),
)
def test_ring_is_a_lossless_fifo(start: int, chunks: list[bytes], reads: list[int]) -> None:
    iface = page()
    for off in (XENSTORE_IFACE_RSP_CONS, XENSTORE_IFACE_RSP_PROD):
        set_index(iface, off, start)
    server, client = XenstoreRing(iface, Role.SERVER), XenstoreRing(iface, Role.CLIENT)
    sent, received = b"".join(chunks), b""
    pending, turn = sent, 0
    while pending or len(received) < len(sent):
        taken = server.write(pending)
        pending = pending[taken:]
        received += client.read(reads[turn % len(reads)])
        turn += 1
    assert received == sent


@pytest.mark.parametrize("role", [Role.SERVER, Role.CLIENT])
@pytest.mark.parametrize("distance", [XENSTORE_RING_SIZE + 1, 0x8000_0000, 0xFFFF_FFFF])
def test_hostile_indices_are_refused(role: Role, distance: int) -> None:
    iface = page()
    ring = XenstoreRing(iface, role)
    prod_off = XENSTORE_IFACE_REQ_PROD if role is Role.SERVER else XENSTORE_IFACE_RSP_PROD
    cons_off = XENSTORE_IFACE_REQ_CONS if role is Role.CLIENT else XENSTORE_IFACE_RSP_CONS
    set_index(iface, prod_off, distance)  # the peer claims more than a ring holds
    with pytest.raises(RingError) as err:
        ring.read()
    assert err.value.code == XENSTORE_ERROR_RINGIDX
    set_index(iface, cons_off, (-distance) & 0xFFFF_FFFF)  # consumed what we never wrote
    with pytest.raises(RingError):
        ring.write(b"x")


def test_peer_cannot_move_our_own_index() -> None:
    iface = page()
    server = XenstoreRing(iface, Role.SERVER)
    set_index(iface, XENSTORE_IFACE_REQ_PROD, 10)
    assert server.read() == bytes(10)
    set_index(iface, XENSTORE_IFACE_REQ_CONS, 0)  # the guest rewinds the daemon's cons
    assert server.read() == b""  # the private copy wins: nothing is read twice


def test_reconnect_protocol() -> None:
    iface = page()
    server, client = XenstoreRing(iface, Role.SERVER), XenstoreRing(iface, Role.CLIENT)
    server.start()
    assert server.server_features == SERVER_FEATURES
    client.write(b"half a message")
    server.set_error(XENSTORE_ERROR_PROTO)
    client.request_reconnect()
    assert server.reconnect_requested() and not client.connected()
    server.reset()
    assert client.connected() and server.error == XENSTORE_ERROR_NONE
    assert server.read() == b"" and client.write(b"fresh") == 5 and server.read() == b"fresh"
    with pytest.raises(RuntimeError):
        client.reset()


# --- client <-> daemon over a ring --------------------------------------------------------


def _domain_main(channel: object) -> int:
    """The forked 'domain': talks to the daemon only through its ring; exit status = result."""
    try:
        xs = XenstoreClient.over_ring(channel)  # type: ignore[arg-type]
        home = xs.get_domain_path(5)
        xs.write(f"{home}/data/small", "hello")
        big = bytes(range(256)) * 7  # 1792 bytes: every message wraps the 1 KiB ring
        xs.write(f"{home}/data/big", big)
        assert xs.read(f"{home}/data/big") == big
        assert xs.read("data/small") == b"hello"  # relative to the domain's home
        try:
            xs.write("/local/domain/0/steal", "x")
            return 3
        except XenstoreError as exc:
            if exc.name != "EACCES":
                return 4
        xs.watch(f"{home}/data", "w")
        events = xs.watch_events(timeout=5)
        assert next(events) == (f"{home}/data", "w")
        xs.write(f"{home}/data/done", "1")
        assert next(events) == (f"{home}/data/done", "w")
        return 0
    except BaseException:
        import traceback

        traceback.print_exc()
        return 1


def test_client_over_ring_across_fork(tmp_path: Path) -> None:
    connector = LocalDomainConnector()
    daemon_end, domain_end = ring_pair()
    connector.register(0x5000, 17, daemon_end)
    pid = os.fork()
    if pid == 0:  # the domain
        daemon_end.close()
        os._exit(_domain_main(domain_end))
    domain_end.close()
    with (
        InProcessDaemon(str(tmp_path / "sock"), connector) as d,
        XenstoreClient.connect(d.path) as dom0,
    ):
        dom0.mkdir("/local/domain/5")
        dom0.set_perms("/local/domain/5", ["n5"])
        dom0.introduce(5, 0x5000, 17)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert dom0.read("/local/domain/5/data/small") == b"hello"
        assert len(dom0.read("/local/domain/5/data/big")) == 1792
        assert d.call(lambda: 5 in d.daemon.domains)
        dom0.release(5)
        assert not d.call(lambda: 5 in d.daemon.domains)
        assert connector.attached[5].closed  # type: ignore[attr-defined]


def _attach(
    d: InProcessDaemon, dom0: XenstoreClient, connector: LocalDomainConnector, domid: int
) -> LocalRingChannel:
    daemon_end, domain_end = ring_pair()
    connector.register(domid, domid, daemon_end)
    dom0.introduce(domid, domid, domid)
    return domain_end


def _wait(predicate: Callable[[], bool], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_broken_ring_is_flagged_and_reconnect_recovers(tmp_path: Path) -> None:
    connector = LocalDomainConnector()
    with (
        InProcessDaemon(str(tmp_path / "sock"), connector) as d,
        XenstoreClient.connect(d.path) as dom0,
    ):
        bad = _attach(d, dom0, connector, 6)
        good = _attach(d, dom0, connector, 7)
        iface = bad.interface
        set_index(iface, XENSTORE_IFACE_REQ_PROD, 5000)  # impossible: > ring size ahead
        bad.notify()
        _wait(lambda: U32.unpack_from(iface, 2048 + 24)[0] == XENSTORE_ERROR_RINGIDX)
        with XenstoreClient.over_ring(good) as xs7:  # another domain is still served
            assert xs7.get_domain_path(7) == "/local/domain/7"
        assert dom0.read("/tool") == b""
        # The domain asks for a reconnect; the daemon resets the ring and serves it again.
        U32.pack_into(iface, 2048 + 20, 1)  # connection = XENSTORE_RECONNECT
        bad.notify()
        _wait(lambda: U32.unpack_from(iface, 2048 + 20)[0] == XENSTORE_CONNECTED)
        assert U32.unpack_from(iface, 2048 + 24)[0] == XENSTORE_ERROR_NONE
        with XenstoreClient.over_ring(bad) as xs6:
            assert xs6.get_domain_path(6) == "/local/domain/6"


def test_oversized_header_on_a_ring_sets_error_proto(tmp_path: Path) -> None:
    connector = LocalDomainConnector()
    with (
        InProcessDaemon(str(tmp_path / "sock"), connector) as d,
        XenstoreClient.connect(d.path) as dom0,
    ):
        channel = _attach(d, dom0, connector, 8)
        ring = XenstoreRing(channel.interface, Role.CLIENT)
        ring.write(HEADER.pack(2, 1, 0, 5000))
        channel.notify()
        _wait(lambda: ring.error == XENSTORE_ERROR_PROTO)
        assert dom0.is_domain_introduced(8)  # the domain stays; only its ring is ignored


def test_ring_flood_without_reading_is_throttled(tmp_path: Path) -> None:
    connector = LocalDomainConnector()
    with (
        InProcessDaemon(str(tmp_path / "sock"), connector) as d,
        XenstoreClient.connect(d.path) as dom0,
    ):
        channel = _attach(d, dom0, connector, 9)
        ring = XenstoreRing(channel.interface, Role.CLIENT)
        request = HEADER.pack(10, 1, 0, 2) + b"9\0"  # XS_GET_DOMAIN_PATH, 18 bytes
        sent = 0
        for _ in range(200):  # keep the request ring topped up; never read a reply
            while ring.space() >= len(request):
                sent += ring.write(request) // len(request)
            channel.notify()
            time.sleep(0.002)
        req_backlog = (
            U32.unpack_from(channel.interface, XENSTORE_IFACE_REQ_PROD)[0]
            - U32.unpack_from(channel.interface, XENSTORE_IFACE_REQ_CONS)[0]
        )
        assert req_backlog > 0, "the daemon kept consuming requests nobody reads replies to"
        assert ring.readable() == XENSTORE_RING_SIZE or ring.readable() > XENSTORE_RING_SIZE - 40
        cpu_before = d.call(time.thread_time)
        for _ in range(300):  # a kick storm while throttled must not spin the daemon
            channel.notify()
        time.sleep(0.3)
        assert d.call(time.thread_time) - cpu_before < 0.2
        assert dom0.read("/tool") == b""  # everyone else is served meanwhile
        replies = b""
        deadline = time.monotonic() + 10
        while len(replies) < sent * 32 and time.monotonic() < deadline:
            replies += ring.read()
            channel.notify()
            time.sleep(0.001)
        assert len(replies) == sent * 32  # 16-byte header + "/local/domain/9\0" each
        assert replies[16:32] == b"/local/domain/9\0"


def test_asyncio_client_over_ring(tmp_path: Path) -> None:
    connector = LocalDomainConnector()
    with (
        InProcessDaemon(str(tmp_path / "sock"), connector) as d,
        XenstoreClient.connect(d.path) as dom0,
    ):
        channel = _attach(d, dom0, connector, 10)
        dom0.mkdir("/local/domain/10")
        dom0.set_perms("/local/domain/10", ["n10"])

        async def domain() -> None:
            xs = await aio.XenstoreClient.over_ring(channel)
            big = b"y" * 1500
            await asyncio.gather(*(xs.write(f"k{n}", big) for n in range(8)))  # > ring size
            values = await asyncio.gather(*(xs.read(f"k{n}") for n in range(8)))
            assert values == [big] * 8
            await xs.watch("k0", "t")
            events = xs.watch_events(timeout=5)
            assert await anext(events) == ("k0", "t")  # relative watch, relative event
            await xs.close()

        asyncio.run(domain())
        assert dom0.read("/local/domain/10/k7") == b"y" * 1500
