"""Test helpers: a raw NBD client that can misbehave on purpose, and a served image."""

from __future__ import annotations

import contextlib
import os
import random
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from xenvirtio.nbd.file_backend import FileBackend
from xenvirtio.nbd.threaded import ThreadedNbdServer
from xenvirtio.spec.nbd import (
    HANDSHAKE,
    IHAVEOPT,
    NBD_REP_MAGIC,
    NBD_REQUEST_MAGIC,
    NBD_SIMPLE_REPLY_MAGIC,
    NBDMAGIC,
    OPTION_HEADER,
    OPTION_REPLY_HEADER,
    REQUEST,
    SIMPLE_REPLY,
    NbdClientFlag,
    NbdOpt,
    NbdRep,
)

C_FLAGS = NbdClientFlag.NBD_FLAG_C_FIXED_NEWSTYLE | NbdClientFlag.NBD_FLAG_C_NO_ZEROES


def go_data(name: bytes = b"", infos: tuple[int, ...] = ()) -> bytes:
    """NBD_OPT_INFO/GO option data."""
    packed = b"".join(struct.pack(">H", i) for i in infos)
    return struct.pack(">I", len(name)) + name + struct.pack(">H", len(infos)) + packed


def option(opt: int, data: bytes = b"", magic: int = IHAVEOPT, length: int | None = None) -> bytes:
    return OPTION_HEADER.pack(magic, opt, len(data) if length is None else length) + data


def request(
    command: int,
    handle: int,
    offset: int = 0,
    length: int = 0,
    flags: int = 0,
    data: bytes = b"",
    magic: int = NBD_REQUEST_MAGIC,
) -> bytes:
    return REQUEST.pack(magic, flags, command, handle, offset, length) + data


class RawClient:
    """A blocking NBD client speaking raw bytes, so tests can send anything at all."""

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_exact(self, size: int) -> bytes:
        out = bytearray()
        while len(out) < size:
            chunk = self.sock.recv(size - len(out))
            if not chunk:
                raise ConnectionError(f"closed after {len(out)} of {size} bytes")
            out += chunk
        return bytes(out)

    def closed_by_server(self) -> bool:
        """True once the server has closed the connection (EOF or reset), within the timeout."""
        try:
            while True:
                if not self.sock.recv(65536):
                    return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def greeting(self) -> int:
        magic, opt_magic, flags = HANDSHAKE.unpack(self.recv_exact(HANDSHAKE.size))
        assert (magic, opt_magic) == (NBDMAGIC, IHAVEOPT)
        return int(flags)

    def option_reply(self) -> tuple[int, int, bytes]:
        magic, opt, rep, length = OPTION_REPLY_HEADER.unpack(
            self.recv_exact(OPTION_REPLY_HEADER.size)
        )
        assert magic == NBD_REP_MAGIC
        return opt, rep, self.recv_exact(length)

    def replies_until_final(self) -> list[tuple[int, int, bytes]]:
        """Option replies up to the final one (NBD_REP_ACK or an error)."""
        replies = []
        while True:
            reply = self.option_reply()
            replies.append(reply)
            if reply[1] not in (NbdRep.NBD_REP_SERVER, NbdRep.NBD_REP_INFO):
                return replies

    def handshake(self, name: bytes = b"") -> None:
        """Greeting, client flags, NBD_OPT_GO: ready for requests."""
        self.greeting()
        self.send(struct.pack(">I", C_FLAGS) + option(NbdOpt.NBD_OPT_GO, go_data(name)))
        assert self.replies_until_final()[-1][1] == NbdRep.NBD_REP_ACK

    def reply(self, data_length: int = 0) -> tuple[int, int, bytes]:
        """One simple reply: (error, handle, data); data only when error is 0."""
        magic, error, handle = SIMPLE_REPLY.unpack(self.recv_exact(SIMPLE_REPLY.size))
        assert magic == NBD_SIMPLE_REPLY_MAGIC
        data = self.recv_exact(data_length) if error == 0 and data_length else b""
        return error, handle, data

    def call(self, *args: Any, data_length: int = 0, **kwargs: Any) -> tuple[int, bytes]:
        """Send one request, wait for its reply: (error, data)."""
        self.send(request(*args, **kwargs))
        error, handle, data = self.reply(data_length)
        assert handle == args[1]
        return error, data


def make_image(path: Path, size: int, seed: int = 0) -> bytes:
    """An image of ``size`` pseudo-random bytes; returns its contents."""
    data = random.Random(seed).randbytes(size)
    path.write_bytes(data)
    return data


@contextlib.contextmanager
def served(
    image: Path, *, read_only: bool = False, block_size: int = 1, **server_args: Any
) -> Iterator[ThreadedNbdServer]:
    """``image`` exported by our server on a socket beside it."""
    sock = image.with_suffix(".sock")
    with (
        FileBackend(image, read_only=read_only, block_size=block_size) as backend,
        ThreadedNbdServer(backend, sock, **server_args) as server,
    ):
        yield server
    assert not os.path.exists(sock), "socket left behind after shutdown"
