"""The asyncio NBD server over real Unix sockets: concurrency, hostile clients, shutdown."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from nbd_support import C_FLAGS, RawClient, make_image, option, request, served

from xenvirtio.nbd.backend import BlockIOError
from xenvirtio.nbd.file_backend import FileBackend
from xenvirtio.nbd.server import NbdServer
from xenvirtio.nbd.threaded import ThreadedNbdServer
from xenvirtio.spec.nbd import NbdCmd, NbdCmdFlag, NbdError, NbdOpt, NbdRep

SIZE = 1 << 20
CMD = NbdCmd


@pytest.fixture
def image(tmp_path: Path) -> tuple[Path, bytes]:
    path = tmp_path / "disk.img"
    return path, make_image(path, SIZE)


def assert_serves(client: RawClient, contents: bytes, handle: int = 0xABC) -> None:
    error, data = client.call(CMD.NBD_CMD_READ, handle, 8192, 4096, data_length=4096)
    assert error == 0 and data == contents[8192 : 8192 + 4096]


# --- one bad client, the others unaffected ---


def _flags(c: RawClient) -> None:
    c.greeting()
    c.send(struct.pack(">I", 0xFF))


def _option_magic(c: RawClient) -> None:
    c.greeting()
    c.send(struct.pack(">I", C_FLAGS) + option(NbdOpt.NBD_OPT_LIST, magic=0x1234))


def _huge_option(c: RawClient) -> None:
    c.greeting()
    c.send(struct.pack(">I", C_FLAGS) + option(NbdOpt.NBD_OPT_GO, length=0xFFFF_FFF0))


def _oversize_write(c: RawClient) -> None:
    c.handshake()
    c.send(request(CMD.NBD_CMD_WRITE, 1, 0, 0xFFFF_0000))


def _request_magic(c: RawClient) -> None:
    c.handshake()
    c.send(request(CMD.NBD_CMD_READ, 1, 0, 512, magic=0xDEADBEEF))


def _unknown_export(c: RawClient) -> None:
    c.greeting()
    c.send(struct.pack(">I", C_FLAGS) + option(NbdOpt.NBD_OPT_EXPORT_NAME, b"missing"))


@pytest.mark.parametrize(
    "misbehave",
    [_flags, _option_magic, _huge_option, _oversize_write, _request_magic, _unknown_export],
)
def test_a_protocol_violation_closes_only_that_connection(
    image: tuple[Path, bytes], misbehave: Callable[[RawClient], None]
) -> None:
    path, contents = image
    with served(path) as server, RawClient(server.path) as good:
        good.handshake()
        with RawClient(server.path) as bad:
            misbehave(bad)
            assert bad.closed_by_server()
        assert_serves(good, contents)
        with RawClient(server.path) as fresh:
            fresh.handshake()
            assert_serves(fresh, contents)


@pytest.mark.parametrize(
    "cut",
    [
        request(CMD.NBD_CMD_READ, 1, 0, 512)[:13],  # truncated mid-request
        request(CMD.NBD_CMD_WRITE, 1, 0, 65536, data=b"\xee" * 1000),  # disconnect mid-write
        b"\x00\x00",  # mid client flags (sent instead of a handshake below)
    ],
)
def test_a_client_vanishing_mid_message_changes_nothing(
    image: tuple[Path, bytes], cut: bytes
) -> None:
    path, contents = image
    with served(path) as server, RawClient(server.path) as good:
        good.handshake()
        with RawClient(server.path) as bad:
            if len(cut) == 2:
                bad.greeting()
            else:
                bad.handshake()
            bad.send(cut)
        assert_serves(good, contents)
        error, data = good.call(CMD.NBD_CMD_READ, 2, 0, 65536, data_length=65536)
        assert error == 0 and data == contents[:65536]  # the partial write never landed
    assert path.read_bytes() == contents


@pytest.mark.parametrize(
    ("wire", "error"),
    [
        (request(77, 1), NbdError.NBD_EINVAL),
        (request(CMD.NBD_CMD_READ, 1, SIZE - 512, 1024), NbdError.NBD_EINVAL),
        (request(CMD.NBD_CMD_WRITE, 1, SIZE, 512, data=bytes(512)), NbdError.NBD_ENOSPC),
        (request(CMD.NBD_CMD_READ, 1, 0, 64 << 20), NbdError.NBD_EOVERFLOW),
        (request(CMD.NBD_CMD_READ, 1, 3, 512), NbdError.NBD_EINVAL),
    ],
)
def test_bad_requests_get_error_replies_on_a_live_connection(
    image: tuple[Path, bytes], wire: bytes, error: int
) -> None:
    path, contents = image
    with served(path, block_size=512) as server, RawClient(server.path) as client:
        client.handshake()
        client.send(wire)
        assert client.reply() == (error, 1, b"")
        assert_serves(client, contents)
    assert path.read_bytes() == contents


def test_read_only_export_answers_writes_with_eperm(image: tuple[Path, bytes]) -> None:
    path, contents = image
    with served(path, read_only=True) as server, RawClient(server.path) as client:
        client.handshake()
        assert client.call(CMD.NBD_CMD_WRITE, 1, 0, 512, data=b"x" * 512)[0] == NbdError.NBD_EPERM
        assert client.call(CMD.NBD_CMD_TRIM, 2, 0, 512)[0] == NbdError.NBD_EPERM
        assert client.call(CMD.NBD_CMD_FLUSH, 3) == (0, b"")
        assert_serves(client, contents)
    assert path.read_bytes() == contents


# --- concurrency ---


class SlowBackend(FileBackend):
    """Reads at offset 0 take a while; counts how many operations overlap."""

    def __init__(self, path: Path, delay: float) -> None:
        super().__init__(path)
        self.delay = delay
        self.active = self.peak = 0

    async def read(self, offset: int, length: int) -> bytes | bytearray | memoryview:
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await asyncio.sleep(self.delay if offset == 0 else 0.01)
            if offset == 12288:
                raise RuntimeError("a backend bug")
            if offset == 16384:
                raise BlockIOError(errno.ENOSPC)
            return await super().read(offset, length)
        finally:
            self.active -= 1


def test_replies_come_back_out_of_order_matched_by_handle(image: tuple[Path, bytes]) -> None:
    path, contents = image
    with (
        SlowBackend(path, delay=0.5) as backend,
        ThreadedNbdServer(backend, path.with_suffix(".sock")) as server,
        RawClient(server.path) as client,
    ):
        client.handshake()
        client.send(
            request(CMD.NBD_CMD_READ, 1, 0, 4096) + request(CMD.NBD_CMD_READ, 2, 4096, 4096)
        )
        first, second = client.reply(4096), client.reply(4096)
    assert (first[1], second[1]) == (2, 1)
    assert first[2] == contents[4096:8192] and second[2] == contents[:4096]


def test_in_flight_requests_are_bounded_per_connection(image: tuple[Path, bytes]) -> None:
    path, _ = image
    with (
        SlowBackend(path, delay=0.05) as backend,
        ThreadedNbdServer(backend, path.with_suffix(".sock"), max_in_flight=4) as server,
        RawClient(server.path) as client,
    ):
        client.handshake()
        client.send(b"".join(request(CMD.NBD_CMD_READ, h, 0, 512) for h in range(40)))
        handles = sorted(client.reply(512)[1] for _ in range(40))
        assert handles == list(range(40))
        assert backend.peak == 4


def test_in_flight_payload_bytes_are_bounded_per_connection(image: tuple[Path, bytes]) -> None:
    path, contents = image
    with (
        SlowBackend(path, delay=0.05) as backend,
        ThreadedNbdServer(backend, path.with_suffix(".sock"), max_in_flight_bytes=8192) as server,
        RawClient(server.path) as client,
    ):
        client.handshake()
        client.send(b"".join(request(CMD.NBD_CMD_READ, h, 0, 4096) for h in range(12)))
        replies = [client.reply(4096) for _ in range(12)]
        assert sorted(r[1] for r in replies) == list(range(12))
        assert all(r[2] == contents[:4096] for r in replies)
        assert backend.peak == 2


def test_backend_failures_become_error_replies(image: tuple[Path, bytes]) -> None:
    path, contents = image
    with (
        SlowBackend(path, delay=0.0) as backend,
        ThreadedNbdServer(backend, path.with_suffix(".sock")) as server,
        RawClient(server.path) as client,
    ):
        client.handshake()
        assert client.call(CMD.NBD_CMD_READ, 1, 12288, 512) == (NbdError.NBD_EIO, b"")
        assert client.call(CMD.NBD_CMD_READ, 2, 16384, 512) == (NbdError.NBD_ENOSPC, b"")
        assert_serves(client, contents)


def test_many_clients_at_once_see_each_others_writes(image: tuple[Path, bytes]) -> None:
    path, _ = image
    with served(path) as server:
        clients = [RawClient(server.path) for _ in range(6)]
        try:
            for i, c in enumerate(clients):
                c.handshake()
                c.send(request(CMD.NBD_CMD_WRITE, i, i * 4096, 4096, data=bytes([i + 1]) * 4096))
            assert [c.reply()[:2] for c in clients] == [(0, i) for i in range(6)]
            for i, c in enumerate(clients):
                other = (i + 1) % 6
                _, data = c.call(CMD.NBD_CMD_READ, 9, other * 4096, 4096, data_length=4096)
                assert data == bytes([other + 1]) * 4096
        finally:
            for c in clients:
                c.close()


def test_max_connections_turns_away_the_extra_client(image: tuple[Path, bytes]) -> None:
    path, contents = image
    with served(path, max_connections=1) as server, RawClient(server.path) as first:
        first.handshake()
        with RawClient(server.path) as second:
            assert second.closed_by_server()
        assert_serves(first, contents)


# --- flush, FUA, disconnects ---


def test_flush_and_fua_reach_the_file_with_fdatasync(
    image: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = image
    synced: list[int] = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (synced.append(fd), real(fd))[1])
    with served(path) as server, RawClient(server.path) as client:
        client.handshake()
        assert client.call(CMD.NBD_CMD_WRITE, 1, 0, 4096, data=b"\x11" * 4096) == (0, b"")
        assert synced == []
        assert client.call(CMD.NBD_CMD_FLUSH, 2) == (0, b"")
        assert len(synced) == 1
        assert path.read_bytes()[:4096] == b"\x11" * 4096
        fua = NbdCmdFlag.NBD_CMD_FLAG_FUA
        assert client.call(CMD.NBD_CMD_WRITE, 3, 4096, 512, fua, data=b"\x22" * 512) == (0, b"")
        assert len(synced) == 2
        assert client.call(CMD.NBD_CMD_WRITE_ZEROES, 4, 0, 512, fua) == (0, b"")
        assert len(synced) == 3
    data = path.read_bytes()
    assert data[:512] == bytes(512) and data[512:4096] == b"\x11" * 3584
    assert data[4096:4608] == b"\x22" * 512


def test_disc_answers_what_is_in_flight_then_closes(image: tuple[Path, bytes]) -> None:
    path, contents = image
    with (
        SlowBackend(path, delay=0.3) as backend,
        ThreadedNbdServer(backend, path.with_suffix(".sock")) as server,
        RawClient(server.path) as client,
    ):
        client.handshake()
        client.send(request(CMD.NBD_CMD_READ, 1, 0, 4096) + request(CMD.NBD_CMD_DISC, 2))
        assert client.reply(4096) == (0, 1, contents[:4096])
        assert client.closed_by_server()


def test_abort_is_acknowledged(image: tuple[Path, bytes]) -> None:
    path, _ = image
    with served(path) as server, RawClient(server.path) as client:
        client.greeting()
        client.send(struct.pack(">I", C_FLAGS) + option(NbdOpt.NBD_OPT_ABORT))
        assert client.option_reply() == (NbdOpt.NBD_OPT_ABORT, NbdRep.NBD_REP_ACK, b"")
        assert client.closed_by_server()


# --- listeners and shutdown ---


def test_shutdown_closes_clients_and_removes_the_socket(image: tuple[Path, bytes]) -> None:
    path, _ = image
    with served(path) as server:
        client = RawClient(server.path)
        client.handshake()
    assert client.closed_by_server()  # `served` also checks the socket file is gone
    client.close()


def test_stale_socket_is_replaced_but_live_ones_and_files_are_not(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    make_image(image, SIZE)
    stale = tmp_path / "stale.sock"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(stale))
    dead.close()  # bound, never listened: connect() is refused
    with FileBackend(image) as backend, ThreadedNbdServer(backend, stale) as server:
        with RawClient(server.path) as client:
            client.handshake()
        with pytest.raises(FileExistsError, match="listening"):
            server.call(NbdServer(backend).start_unix(stale))
        with pytest.raises(FileExistsError, match="not a socket"):
            server.call(NbdServer(backend).start_unix(image))
    assert image.exists() and not stale.exists()


def test_tcp_listener_on_loopback(image: tuple[Path, bytes]) -> None:
    path, contents = image
    with served(path) as server:
        assert server.server is not None
        port = server.call(server.server.start_tcp())
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            client = RawClient.__new__(RawClient)
            client.sock = sock
            client.handshake()
            assert_serves(client, contents)
