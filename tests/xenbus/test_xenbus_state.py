"""The XenBus state tables: every (state, input) pair of each role, and their shape."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenvirtio.hv.xenbus.errors import LocalProtocolError, RemoteProtocolError
from xenvirtio.hv.xenbus.state import (
    ALL_INPUTS,
    TABLES,
    Action,
    Local,
    Remote,
    Role,
    Step,
    XenbusStateMachine,
    lookup,
)
from xenvirtio.spec.xenbus_state import XenbusState

S = XenbusState
ALL_PAIRS = [(role, state, event) for role in Role for state in S for event in ALL_INPUTS]


def test_enum_matches_xenbus_h() -> None:
    # /usr/include/xen/io/xenbus.h, enum xenbus_state
    assert [(s.xen_name, int(s)) for s in S] == [
        ("Unknown", 0),
        ("Initialising", 1),
        ("InitWait", 2),
        ("Initialised", 3),
        ("Connected", 4),
        ("Closing", 5),
        ("Closed", 6),
        ("Reconfiguring", 7),
        ("Reconfigured", 8),
    ]


@given(st.sampled_from(ALL_PAIRS))
def test_every_pair_follows_the_table(pair: tuple[Role, S, Local | Remote]) -> None:
    role, state, event = pair
    machine = XenbusStateMachine(role, state)
    step = TABLES[role].get((state, event))
    if isinstance(event, Local):
        if event.target is state:  # xenbus_switch_state: switching to the same state is a no-op
            assert machine.switch(event.target) == Step(state)
        elif step is None:
            with pytest.raises(LocalProtocolError):
                machine.switch(event.target)
            assert machine.state is state
        else:
            assert machine.switch(event.target) == step
            assert machine.state is event.target
            assert step.actions == ()
    else:
        got = machine.otherend_changed(event.state)
        assert machine.otherend is event.state
        if step is None:  # not allowed: latched, and the fatal path
            assert isinstance(got.error, RemoteProtocolError)
            assert machine.error is got.error
            assert got.actions == (Action.DISCONNECT,)
            expected = state if state in (S.CLOSING, S.CLOSED) else S.CLOSING
            assert got.next is expected and machine.state is expected
        else:
            assert got == step and machine.state is step.next and machine.error is None
    assert lookup(role, state, event) == (
        Step(state) if isinstance(event, Local) and event.target is state else step
    )


@pytest.mark.parametrize("role", list(Role))
def test_closing_never_leads_back_up(role: Role) -> None:
    """Once closing, the remote inputs only lead to Closing/Closed (the fatal path holds)."""
    for (state, event), step in TABLES[role].items():
        if state in (S.CLOSING,) and isinstance(event, Remote):
            assert step.next in (S.CLOSING, S.CLOSED), (state, event, step)


@pytest.mark.parametrize("role", list(Role))
def test_disconnect_precedes_setup_and_remove_only_when_other_end_gone(role: Role) -> None:
    for (_state, event), step in TABLES[role].items():
        acts = step.actions
        if Action.SETUP in acts and Action.DISCONNECT in acts:
            assert acts.index(Action.DISCONNECT) < acts.index(Action.SETUP)
        if Action.REMOVE in acts:
            assert role is Role.BACKEND and event == Remote(S.UNKNOWN)
        if Action.REMOVE_IF_OFFLINE in acts:
            assert role is Role.BACKEND and event == Remote(S.CLOSED)


def test_frontend_never_uses_initwait_and_backend_never_initialised() -> None:
    assert not any(k[0] is S.INIT_WAIT for k in TABLES[Role.FRONTEND])
    assert not any(k[0] is S.INITIALISED for k in TABLES[Role.BACKEND])
    # ...so seeing the peer there is a protocol error from every connected state.
    for state in (S.CONNECTED, S.CLOSING, S.CLOSED):
        assert lookup(Role.BACKEND, state, Remote(S.INIT_WAIT)) is None


def _walk(fe: XenbusStateMachine, be: XenbusStateMachine) -> list[tuple[str, Action]]:
    """Let each side see the other's current state until neither moves (bounded)."""
    log: list[tuple[str, Action]] = []
    for _ in range(20):
        moved = False
        for me, other, name in ((be, fe, "be"), (fe, be, "fe")):
            before = me.state
            step = me.otherend_changed(other.state)
            assert step.error is None, step.error
            log += [(name, a) for a in step.actions]
            moved |= me.state is not before
        if not moved:
            return log
    raise AssertionError("did not settle")


def test_handshake_close_reconnect_and_reconfigure_between_two_machines() -> None:
    fe, be = XenbusStateMachine(Role.FRONTEND), XenbusStateMachine(Role.BACKEND)
    be.switch(S.INIT_WAIT)
    log = _walk(fe, be)
    assert (fe.state, be.state) == (S.CONNECTED, S.CONNECTED)
    assert log == [("fe", Action.SETUP), ("be", Action.CONNECT), ("fe", Action.CONNECT)]

    fe.switch(S.RECONFIGURING)  # netif's XDP negotiation: the frontend asks
    log = _walk(fe, be)
    assert (fe.state, be.state) == (S.CONNECTED, S.CONNECTED)
    assert log == [("be", Action.RECONFIGURE), ("fe", Action.RECONFIGURE)]

    be.switch(S.RECONFIGURING)  # ... and the backend may ask too
    log = _walk(fe, be)
    assert (fe.state, be.state) == (S.CONNECTED, S.CONNECTED)
    assert log == [("fe", Action.RECONFIGURE), ("be", Action.RECONFIGURE)]

    be.switch(S.CLOSING)
    log = _walk(fe, be)
    assert (fe.state, be.state) == (S.CLOSED, S.CLOSED)
    assert ("fe", Action.DISCONNECT) in log and ("be", Action.REMOVE_IF_OFFLINE) in log

    fe.switch(S.INITIALISING)  # re-probe
    log = _walk(fe, be)
    assert (fe.state, be.state) == (S.CONNECTED, S.CONNECTED)
    assert log[0] == ("be", Action.SETUP)


def test_error_latches_until_reprobe() -> None:
    be = XenbusStateMachine(Role.BACKEND, S.CONNECTED)
    step = be.otherend_changed(S.INIT_WAIT)
    first = be.error
    assert step.error is first and be.state is S.CLOSING
    be.otherend_changed(S.INIT_WAIT)  # a second error does not replace the first
    assert be.error is first and be.state is S.CLOSING
    assert be.otherend_changed(S.CONNECTED).next is S.CLOSING  # no way back up
    be.otherend_changed(S.CLOSED)
    assert be.state is S.CLOSED and be.error is first
    be.otherend_changed(S.INITIALISING)  # the frontend re-probes: a new life
    assert be.state is S.INIT_WAIT and be.error is None


def test_fail_from_closed_stays_closed() -> None:
    fe = XenbusStateMachine(Role.FRONTEND, S.CLOSED)
    step = fe.fail("ring-ref is garbage")
    assert step.next is S.CLOSED and str(fe.error) == "ring-ref is garbage"
