"""The XenBus helpers and XenbusDevice against the real XenStore daemon, over its socket.

One daemon per module (``xenvirtio xenstored`` in a subprocess); each test uses its own
frontend domid so tests do not see each other's devices. The frontend and the backend
each have their own connection, as two domains would.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from xenvirtio.hv.xenbus.client import (
    create_device,
    dev_fatal,
    gather,
    read_state,
    remove_device,
    scatter,
    switch_state,
    unplug_device,
)
from xenvirtio.hv.xenbus.device import XenbusDevice, XenbusDriver
from xenvirtio.hv.xenbus.paths import BackendPath
from xenvirtio.hv.xenbus.state import Role
from xenvirtio.hv.xenbus.values import parse_uint
from xenvirtio.spec.xenbus_state import XenbusState
from xenvirtio.testing.tools import require_tool
from xenvirtio.xenstore.client import XenstoreClient
from xenvirtio.xenstore.perms import Perm, PermKind

S = XenbusState
Clients = tuple[XenstoreClient, XenstoreClient, XenstoreClient]


@pytest.fixture(scope="module")
def socket_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = str(tmp_path_factory.mktemp("xs") / "socket")
    proc = subprocess.Popen(
        [sys.executable, "-m", "xenvirtio", "xenstored", "--socket", path],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(path):
            if proc.poll() is not None or time.monotonic() > deadline:
                _, err = proc.communicate(timeout=5)
                pytest.fail(f"xenstored did not start: {err.decode(errors='replace')}")
            time.sleep(0.02)
        yield path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture
def clients(socket_path: str) -> Iterator[Clients]:
    conns = [XenstoreClient.connect(socket_path) for _ in range(3)]
    try:
        yield conns[0], conns[1], conns[2]
    finally:
        for conn in conns:
            conn.close()


class Ring(XenbusDriver):
    """A toy ring driver: the frontend publishes ring-ref/event-channel, the backend reads."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.ring_ref: int | None = None

    def setup(self, dev: XenbusDevice) -> None:
        self.log.append("setup")
        if dev.role is Role.FRONTEND:
            scatter(dev.xs, dev.nodename, {"ring-ref": 8, "event-channel": 3})

    def connect(self, dev: XenbusDevice) -> None:
        self.log.append("connect")
        if dev.role is Role.BACKEND:
            values = gather(dev.xs, dev.otherend, "ring-ref", "event-channel")
            self.ring_ref = parse_uint(values["ring-ref"], "ring-ref")

    def disconnect(self, dev: XenbusDevice) -> None:
        self.log.append("disconnect")

    def remove(self, dev: XenbusDevice) -> None:
        self.log.append("remove")


class Ends:
    """A device created by a toolstack connection, with both ends on their own."""

    def __init__(
        self, toolstack: XenstoreClient, fe_xs: XenstoreClient, be_xs: XenstoreClient, fe: int
    ) -> None:
        self.toolstack, self.fe_xs, self.be_xs = toolstack, fe_xs, be_xs
        fe_path, self.be_path = create_device(toolstack, 0, fe, "vif", 0, {"mac": "m"}, {})
        self.be = XenbusDevice.probe(be_xs, Role.BACKEND, str(self.be_path), Ring())
        self.fe = XenbusDevice.probe(fe_xs, Role.FRONTEND, str(fe_path), Ring())
        self.fe.watch()
        self.be.watch()

    def pump_until(self, done: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, (self.fe.state, self.be.state)
            for xs, dev in ((self.fe_xs, self.fe), (self.be_xs, self.be)):
                for path, token in xs.watch_events(timeout=0.01):
                    dev.handle_watch_event(path, token)

    def stored(self) -> tuple[S, S]:
        return read_state(self.toolstack, self.fe.nodename), read_state(
            self.toolstack, self.be.nodename
        )

    def settle(self, fe: S, be: S) -> None:
        self.pump_until(
            lambda: self.stored() == (fe, be) and (self.fe.state, self.be.state) == (fe, be)
        )


def test_handshake_close_and_reconnect(clients: Clients) -> None:
    ends = Ends(*clients, fe=11)
    ends.be.switch_state(S.INIT_WAIT)
    ends.settle(S.CONNECTED, S.CONNECTED)
    assert ends.be.driver.ring_ref == 8  # type: ignore[attr-defined]

    ends.fe.switch_state(S.CLOSING)
    ends.settle(S.CLOSED, S.CLOSED)
    assert "remove" not in ends.be.driver.log  # type: ignore[attr-defined]

    ends.fe.switch_state(S.INITIALISING)  # re-probe
    ends.settle(S.CONNECTED, S.CONNECTED)
    assert ends.be.driver.log.count("connect") == 2  # type: ignore[attr-defined]

    unplug_device(ends.toolstack, ends.be_path)  # as libxl: online=0, Closing
    ends.pump_until(lambda: ends.be.removed)
    assert ends.stored() == (S.CLOSED, S.CLOSED)
    remove_device(ends.toolstack, ends.be_path)
    assert not ends.toolstack.exists(ends.fe.nodename)
    assert not ends.toolstack.exists(ends.be.nodename)


def test_permissions_are_libxl_s(clients: Clients, socket_path: str) -> None:
    xs = clients[0]
    fe, be = create_device(
        xs, 0, 12, "vbd", 51712, {"params": "disk.img"}, {"virtual-device": 51712}
    )
    frontend_perms = [Perm(12, PermKind.NONE), Perm(0, PermKind.READ)]
    backend_perms = [Perm(0, PermKind.NONE), Perm(12, PermKind.READ)]
    for key in ("", "/state", "/backend", "/backend-id", "/virtual-device"):
        assert xs.get_perms(f"{fe}{key}") == frontend_perms, key
    for key in ("", "/state", "/frontend", "/frontend-id", "/online", "/params"):
        assert xs.get_perms(f"{be}{key}") == backend_perms, key
    # Xen's own xenstore-ls sees the same layout: `key = "value" . . . (perms)` lines.
    for directory, perms, keys in (
        (be, "(n0,r12)", {"frontend", "frontend-id", "online", "state", "params"}),
        (fe, "(n12,r0)", {"backend", "backend-id", "state", "virtual-device"}),
    ):
        out = subprocess.run(
            [require_tool("xenstore-ls"), "-p", str(directory)],
            env={**os.environ, "XENSTORED_PATH": socket_path},
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
        lines = out.splitlines()
        assert {line.split(" = ")[0] for line in lines} == keys
        assert all(line.endswith(perms) for line in lines), out
    remove_device(xs, be)


def test_dev_fatal_writes_the_error_node(clients: Clients) -> None:
    xs = clients[0]
    _, be = create_device(xs, 0, 13, "vif", 1)
    dev_fatal(xs, str(be), 22, "bad ring-ref")
    assert xs.read("/local/domain/0/error/backend/vif/13/1/error") == b"22 bad ring-ref"
    assert read_state(xs, str(be)) is S.CLOSING
    assert switch_state(xs, str(be), S.CLOSING) is False  # unchanged: not written again
    remove_device(xs, be)
    assert not xs.exists("/local/domain/0/error/backend/vif/13")


def test_hostile_frontend_is_contained(clients: Clients) -> None:
    ends = Ends(*clients, fe=14)
    ends.be.switch_state(S.INIT_WAIT)
    ends.settle(S.CONNECTED, S.CONNECTED)
    ends.fe_xs.write(f"{ends.fe.nodename}/state", b"4; rm -rf /\xff")  # garbage
    ends.pump_until(lambda: ends.be.state is not S.CONNECTED)
    assert ends.be.error is not None
    error = ends.toolstack.read("/local/domain/0/error/backend/vif/14/0/error")
    assert error.startswith(b"22 ")
    ends.settle(S.CLOSED, S.CLOSED)  # the frontend sees Closing and closes cleanly

    # a bad transition: the (hostile) frontend jumps to InitWait, which frontends never use
    ends.fe.switch_state(S.INITIALISING)
    ends.settle(S.CONNECTED, S.CONNECTED)
    assert ends.be.error is None  # the re-probe cleared the latch
    ends.fe_xs.write(f"{ends.fe.nodename}/state", b"2")
    ends.pump_until(lambda: ends.be.error is not None)
    assert b"InitWait" in ends.toolstack.read("/local/domain/0/error/backend/vif/14/0/error")

    ends.settle(S.CLOSED, S.CLOSED)

    # bad keys: a ring-ref that is not a number fails the backend's connect, not the process
    ends.fe.driver.setup = lambda dev: None  # type: ignore[method-assign]
    scatter(ends.fe_xs, ends.fe.nodename, {"ring-ref": "0x8"})
    ends.fe.switch_state(S.INITIALISING)
    error_node = "/local/domain/0/error/backend/vif/14/0/error"
    ends.pump_until(lambda: b"connect" in ends.toolstack.read(error_node))
    assert ends.be.error is not None and "ring-ref" in str(ends.be.error)
    ends.settle(S.CLOSED, S.CLOSED)
    assert ends.be.driver.log.count("connect") == 3  # type: ignore[attr-defined]
    remove_device(ends.toolstack, BackendPath(0, "vif", 14, 0))


def test_asyncio_helpers(socket_path: str) -> None:
    from xenvirtio.hv.xenbus import aio
    from xenvirtio.xenstore.aio import XenstoreClient as AsyncClient

    async def scenario() -> None:
        async with await AsyncClient.connect(socket_path) as xs:
            with XenstoreClient.connect(socket_path) as sync_xs:
                _, be = create_device(sync_xs, 0, 15, "vif", 0)
            directory = str(be)
            assert await aio.read_state(xs, directory) is S.INITIALISING
            assert await aio.switch_state(xs, directory, S.INIT_WAIT) is True
            assert await aio.switch_state(xs, directory, S.INIT_WAIT) is False
            await aio.scatter(xs, directory, {"feature-x": 1, "name": "n"})
            assert await aio.gather(xs, directory, "feature-x", "name") == {
                "feature-x": "1",
                "name": "n",
            }
            watched = await aio.watch_otherend(xs, directory, "t")
            async for path, token in xs.watch_events(timeout=5):
                assert (path, token) == (watched, "t")
                break
            await aio.dev_fatal(xs, directory, 19, "no such device")
            assert await aio.read_state_strict(xs, directory) is S.CLOSING
            error = await xs.read("/local/domain/0/error/backend/vif/15/0/error")
            assert error == b"19 no such device"
            with XenstoreClient.connect(socket_path) as sync_xs:
                remove_device(sync_xs, be)

    asyncio.run(scenario())
