"""Fixtures and helpers for the XenStore daemon, client and interop tests.

``xenstored``: the real daemon, ``.venv/bin/xenvirtio xenstored``, as a subprocess on a
private socket (torn down with SIGTERM). ``InProcessDaemon``: the daemon on an event loop
in a thread of the test process, for tests that attach rings or look inside.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from xenvirtio.spec.xs_wire import XsdSockmsgType
from xenvirtio.xenstore.channel import DomainConnector
from xenvirtio.xenstore.connection import Limits
from xenvirtio.xenstore.daemon import XenstoreDaemon
from xenvirtio.xenstore.wire import HEADER, Packet, PacketDecoder

T = TypeVar("T")
XENVIRTIO = str(Path(sys.executable).with_name("xenvirtio"))
XS = XsdSockmsgType


@dataclass
class DaemonProcess:
    """A running ``xenvirtio xenstored``."""

    proc: subprocess.Popen[bytes]
    socket: str
    pid_file: str

    @property
    def env(self) -> dict[str, str]:
        return dict(os.environ, XENSTORED_PATH=self.socket)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


def start_daemon(directory: Path, *extra: str) -> DaemonProcess:
    sock, pid_file = str(directory / "socket"), str(directory / "xenstored.pid")
    proc = subprocess.Popen(
        [XENVIRTIO, "xenstored", "--socket", sock, "--pid-file", pid_file, *extra],
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while not _accepts(sock):
        if proc.poll() is not None:
            pytest.fail(f"xenvirtio xenstored exited with {proc.returncode}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("xenvirtio xenstored did not create its socket")
        time.sleep(0.02)
    return DaemonProcess(proc, sock, pid_file)


def _accepts(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


class InProcessDaemon:
    """``XenstoreDaemon`` on its own event loop thread."""

    def __init__(
        self, path: str, connector: DomainConnector | None = None, limits: Limits | None = None
    ) -> None:
        self.path = path
        self.daemon = XenstoreDaemon(connector=connector, limits=limits)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="xenstored", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def main() -> None:
            await self.daemon.start(self.path)
            await self.daemon.wait_stopped()

        self.loop.run_until_complete(main())

    def __enter__(self) -> InProcessDaemon:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not os.path.exists(self.path):
            assert time.monotonic() < deadline, "in-process daemon did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.daemon.stop)
        self._thread.join(timeout=10)
        self.loop.close()

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the daemon's loop and return its result."""

        async def wrapper() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(timeout=10)


# --- raw wire access --------------------------------------------------------------------


class RawConnection:
    """A unix socket speaking raw xs_wire, for feeding the daemon what no client would."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.sock.settimeout(10)
        self.decoder = PacketDecoder()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, type_: int, *args: bytes | str, req_id: int = 7, tx_id: int = 0) -> Packet:
        self.send(Packet.build(type_, req_id, tx_id, *args).encode())
        return self.packet()

    def packet(self, timeout: float = 10) -> Packet:
        self.sock.settimeout(timeout)
        while (packet := self.decoder.next_packet()) is None:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("daemon closed the connection")
            self.decoder.feed(data)
        return packet

    def closed_by_peer(self, timeout: float = 10) -> bool:
        """Whether the daemon closes us (EOF) within ``timeout``; drains what it sent."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
        except (TimeoutError, BlockingIOError):
            return False
        except ConnectionResetError:
            return True
        return True

    def close(self) -> None:
        self.sock.close()


def header(type_: int, req_id: int, tx_id: int, length: int) -> bytes:
    return HEADER.pack(type_, req_id, tx_id, length)


def error_name(packet: Packet) -> str:
    assert packet.type == XS.XS_ERROR, packet
    return packet.payload.rstrip(b"\0").decode()
