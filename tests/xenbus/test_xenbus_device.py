"""XenbusDevice: two ends on their own connections to one in-memory XenStore."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from xenbus_fakes import FakeStore, FakeXenstore

from xenvirtio.hv.xenbus.client import create_device, gather, scatter, unplug_device
from xenvirtio.hv.xenbus.device import XenbusDevice, XenbusDriver
from xenvirtio.hv.xenbus.errors import LocalProtocolError, XenbusPathError
from xenvirtio.hv.xenbus.state import Role
from xenvirtio.hv.xenbus.values import parse_uint
from xenvirtio.spec.xenbus_state import XenbusState

S = XenbusState
ERROR_NODE = "/local/domain/0/error/backend/vif/5/0/error"


def _tag(dev: XenbusDevice) -> str:
    return "fe" if dev.role is Role.FRONTEND else "be"


class Recorder(XenbusDriver):
    """A toy ring driver: the frontend publishes ring-ref, the backend reads it."""

    def __init__(self, log: list[str], connect_at_once: bool = False) -> None:
        self.log = log
        self.connect_at_once = connect_at_once  # netfront: Connected right after setup
        self.ring_ref: int | None = None

    def setup(self, dev: XenbusDevice) -> None:
        self.log.append(f"{_tag(dev)}:setup")
        if dev.role is Role.FRONTEND:
            scatter(dev.xs, dev.nodename, {"ring-ref": 8, "event-channel": 3})
            if self.connect_at_once:
                dev.switch_state(S.CONNECTED)

    def connect(self, dev: XenbusDevice) -> None:
        self.log.append(f"{_tag(dev)}:connect")
        if dev.role is Role.BACKEND:
            values = gather(dev.xs, dev.otherend, "ring-ref", "event-channel")
            self.ring_ref = parse_uint(values["ring-ref"], "ring-ref", 0xFFFF_FFFF)

    def disconnect(self, dev: XenbusDevice) -> None:
        self.log.append(f"{_tag(dev)}:disconnect")

    def reconfigure(self, dev: XenbusDevice) -> None:
        self.log.append(f"{_tag(dev)}:reconfigure")

    def remove(self, dev: XenbusDevice) -> None:
        self.log.append(f"{_tag(dev)}:remove")


class Pair:
    def __init__(self, connect_at_once: bool = False) -> None:
        self.store = FakeStore()
        self.toolstack = self.store.connect()
        _, self.be_path = create_device(self.toolstack, 0, 5, "vif", 0)
        self.log: list[str] = []
        self.fe_xs, self.be_xs = self.store.connect(), self.store.connect()
        self.be = XenbusDevice.probe(
            self.be_xs, Role.BACKEND, str(self.be_path), Recorder(self.log)
        )
        fe_dir = "/local/domain/5/device/vif/0"
        self.fe = XenbusDevice.probe(
            self.fe_xs, Role.FRONTEND, fe_dir, Recorder(self.log, connect_at_once)
        )
        self.fe.watch()
        self.be.watch()

    def pump(self, choices: Iterable[bool] = ()) -> None:
        """Deliver watch events, picking the backend's connection when a choice is True."""
        ends = [(self.fe_xs, self.fe), (self.be_xs, self.be)]
        pending = list(choices)
        for _ in range(500):
            ready = [(xs, dev) for xs, dev in ends if xs.events]
            if not ready:
                return
            pick = pending.pop() if pending else False
            xs, dev = ready[-1] if pick and len(ready) > 1 else ready[0]
            event = xs.pop_event()
            assert event is not None
            dev.handle_watch_event(*event)
        raise AssertionError("events kept coming")

    @property
    def states(self) -> tuple[S, S]:
        return self.fe.state, self.be.state

    def stored(self) -> tuple[bytes, bytes]:
        fe_dir, be_dir = self.fe.nodename, self.be.nodename
        return self.toolstack.read(f"{fe_dir}/state"), self.toolstack.read(f"{be_dir}/state")


@given(st.lists(st.booleans(), max_size=30), st.booleans(), st.booleans())
def test_any_event_order_connects_closes_and_reconnects(
    order: list[bool], netfront_style: bool, backend_closes: bool
) -> None:
    pair = Pair(connect_at_once=netfront_style)
    pair.pump(order)
    assert pair.states == (S.INITIALISING, S.INITIALISING)  # the backend has not probed
    pair.be.switch_state(S.INIT_WAIT)
    pair.pump(order)
    assert pair.states == (S.CONNECTED, S.CONNECTED) and pair.stored() == (b"4", b"4")
    assert pair.be.driver.ring_ref == 8  # type: ignore[attr-defined]
    assert pair.log.count("fe:setup") == 1 and pair.log.count("be:connect") == 1

    (pair.be if backend_closes else pair.fe).switch_state(S.CLOSING)
    pair.pump(order)
    assert pair.states == (S.CLOSED, S.CLOSED) and pair.stored() == (b"6", b"6")
    assert "fe:remove" not in pair.log and "be:remove" not in pair.log  # still online

    pair.log.clear()
    pair.fe.switch_state(S.INITIALISING)  # re-probe
    pair.pump(order)
    assert pair.states == (S.CONNECTED, S.CONNECTED)
    assert pair.log.index("be:setup") < pair.log.index("be:connect")
    assert pair.fe.error is None and pair.be.error is None


def test_reconfigure_from_either_end() -> None:
    pair = Pair()
    pair.be.switch_state(S.INIT_WAIT)
    pair.pump()
    for initiator, responder in ((pair.fe, pair.be), (pair.be, pair.fe)):
        pair.log.clear()
        initiator.switch_state(S.RECONFIGURING)
        pair.pump()
        assert pair.states == (S.CONNECTED, S.CONNECTED)
        assert pair.log == [
            f"{_tag(responder)}:reconfigure",
            f"{_tag(initiator)}:reconfigure",
        ]


def test_toolstack_unplug_removes_the_backend() -> None:
    pair = Pair()
    pair.be.switch_state(S.INIT_WAIT)
    pair.pump()
    unplug_device(pair.toolstack, pair.be_path)
    pair.pump()
    assert pair.fe.state is S.CLOSED and pair.be.state is S.CLOSED
    assert "be:remove" in pair.log and pair.be.removed
    assert pair.be.handle_watch_event(f"{pair.fe.nodename}/state", pair.be.token) is None


def test_hostile_frontend_garbage_state_is_fatal_not_a_crash() -> None:
    pair = Pair()
    pair.be.switch_state(S.INIT_WAIT)
    pair.pump()
    pair.fe_xs.write(f"{pair.fe.nodename}/state", b"\xff" * 3000)
    pair.be.handle_watch_event(*_last(pair.be_xs))
    assert pair.be.state is S.CLOSING and pair.be.error is not None
    assert pair.toolstack.read(ERROR_NODE).startswith(b"22 ")
    assert pair.log[-1] == "be:disconnect"
    pair.pump()  # the frontend sees Closing and closes (its Closed repairs the garbage)
    assert pair.states == (S.CLOSED, S.CLOSED) and pair.stored() == (b"6", b"6")
    assert pair.be.error is not None  # latched until a re-probe


def test_hostile_frontend_bad_transition_is_fatal() -> None:
    pair = Pair()
    pair.be.switch_state(S.INIT_WAIT)
    pair.pump()
    pair.fe_xs.write(f"{pair.fe.nodename}/state", b"2")  # a frontend never uses InitWait
    pair.be.handle_watch_event(*_last(pair.be_xs))
    assert pair.be.state is S.CLOSING
    assert b"InitWait" in pair.toolstack.read(ERROR_NODE)
    assert "be:disconnect" in pair.log


def test_bad_ring_ref_fails_the_backend_connect() -> None:
    pair = Pair()
    scatter(pair.fe_xs, pair.fe.nodename, {"ring-ref": "-1", "event-channel": 3})
    pair.fe.driver.setup = lambda dev: None  # type: ignore[method-assign]
    pair.be.switch_state(S.INIT_WAIT)
    pair.pump()
    # fatal: Closing; the frontend closes; the backend follows to Closed and stays there.
    assert pair.states == (S.CLOSED, S.CLOSED) and pair.be.error is not None
    assert pair.be.driver.ring_ref is None  # type: ignore[attr-defined]
    assert b"connect" in pair.toolstack.read(ERROR_NODE)


def test_frontend_gone_removes_the_backend() -> None:
    pair = Pair()
    pair.be.switch_state(S.INIT_WAIT)
    pair.pump()
    pair.toolstack.rm(pair.fe.nodename)
    pair.pump()
    assert pair.be.state is S.CLOSED and pair.be.removed and "be:remove" in pair.log


def test_local_misuse_raises() -> None:
    pair = Pair()
    with pytest.raises(LocalProtocolError):
        pair.fe.switch_state(S.INIT_WAIT)


@pytest.mark.parametrize(
    "key, value",
    [
        ("frontend", "/local/domain/6/device/vif/0"),  # another domain's device
        ("frontend", "/local/domain/5/device/vif/1"),  # another device
        ("frontend", "/local/domain/5/device/vif/0/../../x"),
        ("frontend-id", "6"),
        ("frontend-id", "five"),
    ],
)
def test_probe_checks_the_other_end_pointer(key: str, value: str) -> None:
    store = FakeStore()
    xs = store.connect()
    _, be = create_device(xs, 0, 5, "vif", 0)
    xs.write(f"{be}/{key}", value)
    with pytest.raises((XenbusPathError, ValueError)):
        XenbusDevice.probe(xs, Role.BACKEND, str(be), None)


def _last(xs: FakeXenstore) -> tuple[str, str]:
    event = None
    while xs.events:
        event = xs.pop_event()
    assert event is not None
    return event
