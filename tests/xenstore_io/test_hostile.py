"""Hostile and broken clients: each gets an error reply or loses its own connection,
and another client is served all along (asserted after every case)."""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from xenvirtio.spec.xs_wire import XENSTORE_PAYLOAD_MAX
from xenvirtio.testing.xs_ring import LocalDomainConnector, ring_pair
from xenvirtio.xenstore.channel import RECV_SIZE
from xenvirtio.xenstore.client import XenstoreClient, XenstoreError
from xenvirtio.xenstore.wire import Packet, PacketDecoder

from .xs_io_helpers import (
    XS,
    DaemonProcess,
    InProcessDaemon,
    RawConnection,
    error_name,
    header,
    start_daemon,
)


@pytest.fixture
def bystander(xenstored: DaemonProcess) -> Iterator[XenstoreClient]:
    """A well-behaved client that must keep being served whatever the others do."""
    with XenstoreClient.connect(xenstored.socket) as xs:
        xs.write("/bystander", "still here")
        yield xs
        assert xs.read("/bystander") == b"still here"
        xs.write("/bystander/alive", str(time.monotonic()))
    assert xenstored.alive()


@pytest.mark.parametrize(
    "garbage",
    [
        header(XS.XS_READ, 1, 0, XENSTORE_PAYLOAD_MAX + 1),  # oversized len
        header(XS.XS_WRITE, 1, 0, 0xFFFF_FFFF) + b"x" * 100,
        b"\xff" * 64,  # random junk decodes as an absurd length
        b"GET / HTTP/1.1\r\nHost: xenstore\r\n\r\n",
    ],
)
def test_untrustworthy_stream_closes_only_that_connection(
    xenstored: DaemonProcess, bystander: XenstoreClient, garbage: bytes
) -> None:
    raw = RawConnection(xenstored.socket)
    raw.send(garbage)
    assert raw.closed_by_peer(), "the daemon kept a connection whose framing is broken"
    raw.close()
    assert bystander.read("/bystander") == b"still here"


def test_truncated_header_then_hangup(xenstored: DaemonProcess, bystander: XenstoreClient) -> None:
    raw = RawConnection(xenstored.socket)
    raw.send(header(XS.XS_READ, 1, 0, 10)[:9])
    assert bystander.read("/bystander") == b"still here"  # not blocked by a half header
    raw.close()
    assert bystander.read("/bystander") == b"still here"


def test_request_trickled_one_byte_at_a_time(
    xenstored: DaemonProcess, bystander: XenstoreClient
) -> None:
    raw = RawConnection(xenstored.socket)
    message = Packet.build(XS.XS_READ, 77, 0, "/bystander").encode()
    for i in range(len(message)):
        raw.send(message[i : i + 1])
        if i % 5 == 0:
            assert bystander.read("/bystander") == b"still here"
    reply = raw.packet()
    assert (reply.type, reply.req_id, reply.payload) == (XS.XS_READ, 77, b"still here")
    raw.close()


@pytest.mark.parametrize("msg_type", [999, XS.XS_WATCH_EVENT, XS.XS_ERROR, 20, XS.XS_INVALID])
def test_unknown_or_reply_only_types_get_an_error(
    xenstored: DaemonProcess, bystander: XenstoreClient, msg_type: int
) -> None:
    raw = RawConnection(xenstored.socket)
    reply = raw.request(msg_type, "/bystander", req_id=0xDEADBEEF)
    assert reply.req_id == 0xDEADBEEF and error_name(reply) in ("ENOSYS", "EINVAL")
    again = raw.request(XS.XS_READ, "/bystander")  # the connection is still usable
    assert again.payload == b"still here"
    raw.close()


@pytest.mark.parametrize(
    "path",
    ["", "//", "/a//b", "/trailing/", "/sp ace", "/\xe9", "/" + "x" * 3100, "/a\x01"],
)
def test_bad_paths_get_einval(
    xenstored: DaemonProcess, bystander: XenstoreClient, path: str
) -> None:
    raw = RawConnection(xenstored.socket)
    for msg_type in (XS.XS_READ, XS.XS_MKDIR, XS.XS_RM, XS.XS_DIRECTORY, XS.XS_GET_PERMS):
        reply = raw.request(msg_type, path)
        assert error_name(reply) == "EINVAL", (msg_type, path)
    raw.close()


@pytest.mark.parametrize(
    ("msg_type", "payload"),
    [
        (XS.XS_READ, b""),  # no argument at all
        (XS.XS_WRITE, b"/no-nul-so-no-value"),
        (XS.XS_WATCH, b"/only-a-path\0"),
        (XS.XS_SET_PERMS, b"/bystander\0q9\0"),
        (XS.XS_TRANSACTION_END, b"maybe\0"),
        (XS.XS_INTRODUCE, b"x\0y\0z\0"),
        (XS.XS_GET_DOMAIN_PATH, b""),
    ],
)
def test_malformed_arguments_get_an_error(
    xenstored: DaemonProcess, bystander: XenstoreClient, msg_type: int, payload: bytes
) -> None:
    raw = RawConnection(xenstored.socket)
    raw.send(Packet(msg_type, 5, 0, payload).encode())
    assert error_name(raw.packet()) in ("EINVAL", "ENOENT")
    raw.close()


def test_unknown_transaction_id(xenstored: DaemonProcess, bystander: XenstoreClient) -> None:
    raw = RawConnection(xenstored.socket)
    assert error_name(raw.request(XS.XS_READ, "/bystander", tx_id=4242)) == "ENOENT"
    raw.close()


def test_disconnect_mid_transaction(xenstored: DaemonProcess, bystander: XenstoreClient) -> None:
    for _ in range(15):  # more than the per-connection transaction quota, if leaked
        raw = RawConnection(xenstored.socket)
        tx_id = int(raw.request(XS.XS_TRANSACTION_START, "").payload.rstrip(b"\0"))
        assert raw.request(XS.XS_WRITE, "/h/tx", b"uncommitted", tx_id=tx_id).type == XS.XS_WRITE
        raw.close()  # gone without TRANSACTION_END
    assert not bystander.exists("/h/tx")
    with bystander.transaction() as t:
        t.write("/h/tx", "committed")
    assert bystander.read("/h/tx") == b"committed"


def test_request_flood_without_reading_is_throttled(
    xenstored: DaemonProcess, bystander: XenstoreClient
) -> None:
    flood = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    flood.connect(xenstored.socket)
    flood.setblocking(False)
    request = Packet.build(XS.XS_READ, 1, 0, "/bystander").encode()
    sent = 0
    deadline = time.monotonic() + 10
    burst = request * 256
    while time.monotonic() < deadline:  # send until the daemon stops taking requests
        try:
            sent += flood.send(burst)
        except BlockingIOError:
            time.sleep(0.05)
            try:
                flood.send(request)
            except BlockingIOError:
                break
            sent += len(request)
    else:
        pytest.fail("the daemon kept reading requests whose replies nobody reads")
    for _ in range(50):  # throttling one connection does not slow the others
        assert bystander.read("/bystander") == b"still here"
    flood.setblocking(True)
    flood.settimeout(10)
    decoder = PacketDecoder()
    expected, replies = sent // len(request), 0
    assert expected > 1000  # far beyond the outstanding quota: the kernel holds the rest
    while replies < expected:  # every whole request that went in gets its reply, in order
        data = flood.recv(1 << 20)
        assert data, f"connection closed after {replies} of {expected} replies"
        decoder.feed(data)
        while (packet := decoder.next_packet()) is not None:
            assert (packet.type, packet.payload) == (XS.XS_READ, b"still here")
            replies += 1
    flood.close()


def test_watcher_that_never_reads_is_dropped(tmp_path: Path) -> None:
    daemon = start_daemon(tmp_path, "--max-backlog", "65536")
    try:
        with (
            XenstoreClient.connect(daemon.socket) as writer,
            XenstoreClient.connect(daemon.socket) as bystander,
        ):
            lazy = RawConnection(daemon.socket)
            long_path = "/w/" + "n" * 200
            writer.write(long_path, "")
            lazy.request(XS.XS_WATCH, long_path, "tok")
            for n in range(6000):  # ~1.4 MB of events, never read
                writer.write(long_path, str(n))
                if lazy_closed(lazy):
                    break
            assert lazy_closed(lazy, timeout=5), "an unread watch backlog grew without bound"
            assert bystander.read(long_path) != b""
        assert daemon.alive()
    finally:
        assert daemon.stop() == 0


def lazy_closed(raw: RawConnection, timeout: float = 0.0) -> bool:
    """Whether the daemon has hung up on ``raw``, without reading what it sent."""
    poller = select.poll()
    poller.register(raw.sock.fileno(), select.POLLRDHUP)
    return bool(poller.poll(int(timeout * 1000)))


def test_unprivileged_domain_is_refused(tmp_path: Path) -> None:
    connector = LocalDomainConnector()
    daemon_end, domain_end = ring_pair()
    connector.register(1, 2, daemon_end)
    with (
        InProcessDaemon(str(tmp_path / "sock"), connector) as d,
        XenstoreClient.connect(d.path) as dom0,
    ):
        dom0.write("/secret", "dom0 only")
        dom0.introduce(3, 1, 2)
        with XenstoreClient.over_ring(domain_end) as guest:
            for action in (
                lambda: guest.read("/secret"),
                lambda: guest.write("/secret", "mine"),
                lambda: guest.rm("/secret"),
                lambda: guest.set_perms("/secret", ["b3"]),
                lambda: guest.introduce(4, 1, 1),
                lambda: guest.release(0),
                lambda: guest.control("check"),
            ):
                with pytest.raises(XenstoreError) as err:
                    action()
                assert err.value.name == "EACCES"
            assert guest.get_domain_path(3) == "/local/domain/3"
        assert dom0.read("/secret") == b"dom0 only"


def test_slow_reader_cannot_grow_daemon_buffers(tmp_path: Path) -> None:
    with InProcessDaemon(str(tmp_path / "sock")) as d:
        with XenstoreClient.connect(d.path) as xs:
            xs.write("/slow", "v")
        request = Packet.build(XS.XS_READ, 1, 0, "/slow").encode()
        total = 40000
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(d.path)
        sender = threading.Thread(target=sock.sendall, args=(request * total,))
        sender.start()

        def buffered() -> int:
            conns = d.daemon.connections.values()
            return max(c._decoder.buffered + c.backlog for c in conns)

        worst, reads, reply_size = 0, 0, 16 + 1
        received = 0
        time.sleep(0.3)  # everything backs up: both socket buffers fill, the daemon throttles
        while received < total * reply_size:
            chunk = sock.recv(1024)  # then a slow reader: small reads, sampled often
            assert chunk
            received += len(chunk)
            reads += 1
            if reads % 10 == 0:
                worst = max(worst, d.call(buffered))
        sender.join(timeout=10)
        sock.close()
        assert worst <= RECV_SIZE + 16 + 4096 + 20 * reply_size
