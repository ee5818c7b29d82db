"""Harnesses that give the hypervisor conformance suites a dom0 and peer domains.

A harness offers ``hv`` (a privileged :class:`~xenvirtio.hv.api.Hypervisor`) and
``peer()`` (a new domain the test drives through :mod:`xenvirtio.testing.hv_peer`).
Another implementation plugs into the same suites by providing its own harness.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal, Protocol

from xenvirtio.hv.api import DomainType, Hypervisor
from xenvirtio.hv.emu import attach_guest, open_emu
from xenvirtio.testing.hv_peer import InProcessPeer, Peer, ProcessPeer, serve

EmuMode = Literal["inproc", "process"]


class HvHarness(Protocol):
    name: str
    hv: Hypervisor

    def peer(self, *, type: DomainType = "pv", vcpus: int = 1, memory_mb: int = 16) -> Peer: ...

    def destroy_peer(self, peer: Peer) -> None: ...

    def close(self) -> None: ...


class EmuHarness:
    """Peers on an emu host: in this process (``inproc``) or as domain processes."""

    def __init__(self, run_dir: str | os.PathLike[str], mode: EmuMode) -> None:
        self.name = f"emu-{mode}"
        self.run_dir = Path(run_dir)
        self.mode = mode
        self.hv = open_emu(self.run_dir)
        self._peers: list[Peer] = []
        self._count = 0
        self._listener: socket.socket | None = None
        self._path = self.run_dir / f"peers-{os.getpid()}-{id(self):x}.sock"
        if mode == "process":
            self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._listener.bind(str(self._path))
            self._listener.listen(16)
            self._listener.settimeout(30)

    def peer(self, *, type: DomainType = "pv", vcpus: int = 1, memory_mb: int = 16) -> Peer:
        self._count += 1
        name = f"peer-{os.getpid()}-{id(self) % 100000}-{self._count}"
        kernel = serve if self.mode == "process" else None
        domid = self.hv.domctl.create(
            memory_mb, vcpus, type, name=name, kernel=kernel, cmdline=str(self._path)
        )
        try:
            self.hv.domctl.unpause(domid)
            peer = self._attach(domid)
        except BaseException:
            self.hv.domctl.destroy(domid)
            raise
        self._peers.append(peer)
        return peer

    def _attach(self, domid: int) -> Peer:
        if self._listener is None:
            return InProcessPeer(attach_guest(self.run_dir, domid))
        sock, _ = self._listener.accept()
        sock.settimeout(60)
        hello = b""
        while not hello.endswith(b"\n"):
            chunk = sock.recv(1)
            if not chunk:
                raise ConnectionError(f"domain {domid} hung up before saying hello")
            hello += chunk
        if json.loads(hello)["domid"] != domid:
            raise ConnectionError("a different domain answered")
        return ProcessPeer(domid, sock)

    def destroy_peer(self, peer: Peer) -> None:
        peer.close()
        if peer in self._peers:
            self._peers.remove(peer)
        self.hv.domctl.destroy(peer.domid)

    def close(self) -> None:
        for peer in list(self._peers):
            with contextlib.suppress(OSError):
                self.destroy_peer(peer)
        self.hv.close()
        if self._listener is not None:
            self._listener.close()
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()


def wait_until(
    predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.01
) -> bool:
    """Poll ``predicate()`` until it is true or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def process_alive(pid: int | None) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    if pid is None:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
