"""The XenBus handshake as data: ``{(own state, input): Step}`` per role. Sans-I/O.

Rule 1: everything that decides which :class:`XenbusState` a device end moves to lives in
the tables below. Rule 2: this module never reads or writes XenStore; it returns a
:class:`Step` (the next state and the actions the device must run first) and the caller
does the I/O (:mod:`xenvirtio.hv.xenbus.device`).

An input is either :class:`Local` (this end's driver asks to switch, as
``xenbus_switch_state``) or :class:`Remote` (the other end's ``state`` was read). A pair
missing from the table is a protocol error: a local one raises
:class:`LocalProtocolError`; a remote one latches :class:`RemoteProtocolError` in
:attr:`XenbusStateMachine.error` and returns the fatal step (to ``Closing``), which the
caller carries out as ``xenbus_dev_fatal`` does. The latch clears when the device is
probed again (leaves ``Closed`` for ``Initialising``/``InitWait``).

The handshake follows Linux's frontends and backends (blkfront/blkback, netfront/netback):

- backend: Initialising -(probe done)-> InitWait -(fe Initialised|Connected)-> Connected
- frontend: Initialising -(be InitWait: set up rings)-> Initialised -(be Connected)-> Connected
- closing: either end goes Closing; the frontend answers Closed; the backend follows.
- reconnection: the frontend switches Closed -> Initialising; a Closed (or still Connected)
  backend answers InitWait (disconnecting first), and the handshake runs again.
- reconfiguration (either end may start it): the initiator goes Connected -> Reconfiguring;
  the responder applies the change and goes Reconfigured; the initiator reads the answer
  and returns to Connected; the responder follows. If both start at once the frontend
  yields and answers. netif's XDP negotiation is the frontend-initiated case.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

from xenvirtio.hv.xenbus.errors import LocalProtocolError, RemoteProtocolError, XenbusError
from xenvirtio.spec.xenbus_state import XenbusState

S = XenbusState


class Role(Enum):
    """Which end of the device this is. ``xenbus_probe_frontend.c`` vs ``_backend.c``."""

    FRONTEND = "frontend"
    BACKEND = "backend"

    @property
    def other(self) -> Role:
        return Role.BACKEND if self is Role.FRONTEND else Role.FRONTEND


class Action(Enum):
    """What the device must do (in order) before it may publish the step's next state."""

    SETUP = "setup"  # make this end's resources and publish them (fe: rings, evtchn)
    CONNECT = "connect"  # use the other end's published details (be: map rings, bind)
    DISCONNECT = "disconnect"  # undo SETUP/CONNECT; must be idempotent
    RECONFIGURE = "reconfigure"  # re-read the other end's configuration
    REMOVE = "remove"  # the other end's directory is gone: unregister this device
    REMOVE_IF_OFFLINE = "remove-if-offline"  # REMOVE if the toolstack set online=0


@dataclass(frozen=True)
class Local:
    """This end's driver asks to switch to ``target``."""

    target: XenbusState


@dataclass(frozen=True)
class Remote:
    """The other end's ``state`` key was read as ``state``."""

    state: XenbusState


Input = Local | Remote


@dataclass(frozen=True)
class Step:
    """The decision for one input: run ``actions`` in order, then publish ``next``."""

    next: XenbusState
    actions: tuple[Action, ...] = ()
    error: XenbusError | None = None  # set on the fatal path


Table = Mapping[tuple[XenbusState, Input], Step]

A = Action
_TEARDOWN = (A.DISCONNECT,)


def _stay(own: XenbusState, *remotes: XenbusState) -> dict[XenbusState, Step]:
    return {r: Step(own) for r in remotes}


def _closing_and_gone(role: Role) -> dict[XenbusState, Step]:
    """The other end closing or gone, seen from a state that has something to tear down."""
    if role is Role.FRONTEND:  # xenbus_frontend_closed(): the frontend answers Closed
        return {r: Step(S.CLOSED, _TEARDOWN) for r in (S.UNKNOWN, S.CLOSING, S.CLOSED)}
    return {  # the backend mirrors Closing, follows Closed, unregisters when the fe is gone
        S.CLOSING: Step(S.CLOSING, _TEARDOWN),
        S.CLOSED: Step(S.CLOSED, (A.DISCONNECT, A.REMOVE_IF_OFFLINE)),
        S.UNKNOWN: Step(S.CLOSED, (A.DISCONNECT, A.REMOVE)),
    }


# Frontend reactions to the backend's state, by own state. Unlisted pairs are errors.
_FRONTEND_REMOTE: dict[XenbusState, dict[XenbusState, Step]] = {
    S.INITIALISING: _stay(S.INITIALISING, S.UNKNOWN, S.INITIALISING, S.INITIALISED, S.CLOSED)
    | {
        S.INIT_WAIT: Step(S.INITIALISED, (A.SETUP,)),
        # A backend still Connected from an earlier life: set up and connect at once.
        S.CONNECTED: Step(S.CONNECTED, (A.SETUP, A.CONNECT)),
        S.CLOSING: Step(S.CLOSED, _TEARDOWN),
    },
    S.INITIALISED: _stay(S.INITIALISED, S.INITIALISING, S.INIT_WAIT, S.INITIALISED)
    | {S.CONNECTED: Step(S.CONNECTED, (A.CONNECT,))}
    | _closing_and_gone(Role.FRONTEND),
    # A frontend may connect as soon as it has set up (netfront): the backend is then
    # still in InitWait until it sees us.
    S.CONNECTED: _stay(
        S.CONNECTED, S.INITIALISING, S.INIT_WAIT, S.INITIALISED, S.CONNECTED, S.RECONFIGURED
    )
    | {S.RECONFIGURING: Step(S.RECONFIGURED, (A.RECONFIGURE,))}
    | _closing_and_gone(Role.FRONTEND),
    S.RECONFIGURING: _stay(S.RECONFIGURING, S.INITIALISING, S.INITIALISED, S.CONNECTED)
    | {
        S.RECONFIGURED: Step(S.CONNECTED, (A.RECONFIGURE,)),
        S.RECONFIGURING: Step(S.RECONFIGURED, (A.RECONFIGURE,)),  # both started: fe yields
    }
    | _closing_and_gone(Role.FRONTEND),
    S.RECONFIGURED: _stay(S.RECONFIGURED, S.INITIALISING, S.INITIALISED, S.RECONFIGURING)
    | {S.CONNECTED: Step(S.CONNECTED)}
    | _closing_and_gone(Role.FRONTEND),
    S.CLOSING: _stay(
        S.CLOSING,
        S.INITIALISING,
        S.INIT_WAIT,
        S.INITIALISED,
        S.CONNECTED,
        S.RECONFIGURING,
        S.RECONFIGURED,
    )
    | _closing_and_gone(Role.FRONTEND),
    # Closed is quiet; reconnecting is the frontend's own choice (Local Initialising).
    S.CLOSED: _stay(S.CLOSED, *(s for s in S)),
}

# Backend reactions to the frontend's state. A frontend never uses InitWait.
_BE_RESTART = Step(S.INIT_WAIT, (A.DISCONNECT, A.SETUP))  # frontend re-probed while up
_BACKEND_REMOTE: dict[XenbusState, dict[XenbusState, Step]] = {
    S.INITIALISING: _stay(S.INITIALISING, S.INITIALISING, S.INITIALISED, S.CONNECTED)
    | _closing_and_gone(Role.BACKEND),
    S.INIT_WAIT: _stay(S.INIT_WAIT, S.INITIALISING)
    | {r: Step(S.CONNECTED, (A.CONNECT,)) for r in (S.INITIALISED, S.CONNECTED)}
    | _closing_and_gone(Role.BACKEND),
    S.CONNECTED: _stay(S.CONNECTED, S.INITIALISED, S.CONNECTED, S.RECONFIGURED)
    | {
        S.INITIALISING: _BE_RESTART,
        S.RECONFIGURING: Step(S.RECONFIGURED, (A.RECONFIGURE,)),
    }
    | _closing_and_gone(Role.BACKEND),
    S.RECONFIGURING: _stay(S.RECONFIGURING, S.INITIALISED, S.CONNECTED, S.RECONFIGURING)
    | {S.INITIALISING: _BE_RESTART, S.RECONFIGURED: Step(S.CONNECTED, (A.RECONFIGURE,))}
    | _closing_and_gone(Role.BACKEND),
    S.RECONFIGURED: _stay(S.RECONFIGURED, S.RECONFIGURING)
    | {S.INITIALISING: _BE_RESTART, S.CONNECTED: Step(S.CONNECTED)}
    | _closing_and_gone(Role.BACKEND),
    S.CLOSING: _stay(
        S.CLOSING,
        S.INITIALISING,
        S.INITIALISED,
        S.CONNECTED,
        S.RECONFIGURING,
        S.RECONFIGURED,
        S.CLOSING,
    )
    | {k: v for k, v in _closing_and_gone(Role.BACKEND).items() if k is not S.CLOSING},
    S.CLOSED: _stay(
        S.CLOSED,
        S.INITIALISED,
        S.CONNECTED,
        S.CLOSING,
        S.CLOSED,
        S.RECONFIGURING,
        S.RECONFIGURED,
    )
    | {
        S.INITIALISING: Step(S.INIT_WAIT, (A.SETUP,)),  # "prepare for reconnect" (blkback)
        S.UNKNOWN: Step(S.CLOSED, (A.REMOVE,)),
    },
}

# Switches this end's own driver may ask for (besides switching to the current state,
# which is a no-op as in xenbus_switch_state). Closing/Closed are reachable from anywhere
# a connection may exist; Closed -> Initialising is a re-probe.
_FRONTEND_LOCAL: dict[XenbusState, tuple[XenbusState, ...]] = {
    S.UNKNOWN: (S.INITIALISING,),
    S.INITIALISING: (S.INITIALISED, S.CONNECTED, S.CLOSING, S.CLOSED),
    S.INITIALISED: (S.CONNECTED, S.CLOSING, S.CLOSED),
    S.CONNECTED: (S.RECONFIGURING, S.CLOSING, S.CLOSED),
    S.RECONFIGURING: (S.CONNECTED, S.CLOSING, S.CLOSED),
    S.RECONFIGURED: (S.CONNECTED, S.CLOSING, S.CLOSED),
    S.CLOSING: (S.CLOSED,),
    S.CLOSED: (S.INITIALISING,),
}
_BACKEND_LOCAL: dict[XenbusState, tuple[XenbusState, ...]] = {
    S.UNKNOWN: (S.INITIALISING,),
    S.INITIALISING: (S.INIT_WAIT, S.CLOSING, S.CLOSED),
    S.INIT_WAIT: (S.CLOSING, S.CLOSED),
    S.CONNECTED: (S.RECONFIGURING, S.CLOSING, S.CLOSED),
    S.RECONFIGURING: (S.CONNECTED, S.CLOSING, S.CLOSED),
    S.RECONFIGURED: (S.CONNECTED, S.CLOSING, S.CLOSED),
    S.CLOSING: (S.CLOSED,),
    S.CLOSED: (S.INITIALISING,),
}


def _build(
    local: Mapping[XenbusState, Iterable[XenbusState]],
    remote: Mapping[XenbusState, Mapping[XenbusState, Step]],
) -> dict[tuple[XenbusState, Input], Step]:
    table: dict[tuple[XenbusState, Input], Step] = {}
    for own, targets in local.items():
        table.update({(own, Local(t)): Step(t) for t in targets})
    for own, row in remote.items():
        table.update({(own, Remote(r)): step for r, step in row.items()})
    return table


TABLES: Mapping[Role, Table] = {
    Role.FRONTEND: _build(_FRONTEND_LOCAL, _FRONTEND_REMOTE),
    Role.BACKEND: _build(_BACKEND_LOCAL, _BACKEND_REMOTE),
}

ALL_INPUTS: tuple[Input, ...] = tuple(Local(s) for s in S) + tuple(Remote(s) for s in S)

# Leaving Closed this way is a new probe: it clears a latched error.
_REPROBE_STATES = frozenset({S.INITIALISING, S.INIT_WAIT})


def lookup(role: Role, state: XenbusState, event: Input) -> Step | None:
    """The table's step for ``(state, event)``, or None if the pair is not allowed.

    A local switch to the current state is always allowed and does nothing.
    """
    if isinstance(event, Local) and event.target is state:
        return Step(state)
    return TABLES[role].get((state, event))


def fatal_step(state: XenbusState, error: XenbusError) -> Step:
    """The fatal path: tear down and go Closing (already Closing/Closed: stay)."""
    target = state if state in (S.CLOSING, S.CLOSED) else S.CLOSING
    return Step(target, _TEARDOWN, error)


class XenbusStateMachine:
    """One end's state and latched error. Feed it inputs; it returns what to do.

    Call order: ``switch(target)`` when this end's driver changes its mind;
    ``otherend_changed(state)`` each time the other end's ``state`` is read; ``fail(msg)``
    when an action failed. Each returns the :class:`Step` to carry out; :attr:`state` is
    already the step's ``next`` when it returns.
    """

    def __init__(self, role: Role, state: XenbusState = S.INITIALISING) -> None:
        self.role = role
        self.state = state
        self.otherend: XenbusState | None = None  # last state read from the other end
        self.error: XenbusError | None = None

    def switch(self, target: XenbusState) -> Step:
        """This end's driver asks to switch to ``target``; a bad request raises."""
        step = lookup(self.role, self.state, Local(target))
        if step is None:
            raise LocalProtocolError(
                f"{self.role.value} may not switch {self.state.xen_name} -> {target.xen_name}"
            )
        return self._enter(step)

    def otherend_changed(self, remote: XenbusState) -> Step:
        """The other end was seen in ``remote``: react, or latch the error and go fatal."""
        self.otherend = remote
        step = lookup(self.role, self.state, Remote(remote))
        if step is None:
            error = RemoteProtocolError(
                f"{self.role.other.value} in {remote.xen_name} while the "
                f"{self.role.value} is {self.state.xen_name}"
            )
            return self.fail(error)
        return self._enter(step)

    def fail(self, error: XenbusError | str) -> Step:
        """Latch ``error`` (the first one wins) and take the fatal path."""
        if isinstance(error, str):
            error = XenbusError(error)
        if self.error is None:
            self.error = error
        return self._enter(fatal_step(self.state, error))

    def _enter(self, step: Step) -> Step:
        if self.state is S.CLOSED and step.next in _REPROBE_STATES:
            self.error = None
        self.state = step.next
        return step
