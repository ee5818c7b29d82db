"""How a virtio frontend follows its backend's XenBus state, as data. Pure.

A virtio frontend moves its own state only when its driver asks (reset, DRIVER_OK,
FAILED), never by itself as blkfront does on seeing InitWait: the driver decides when
rings exist. What it must decide alone is how to read the backend's state:

| own \\ backend | Connected | Initialising, InitWait | anything else |
|---|---|---|---|
| Initialising | stay | stay | stay |
| Initialised | connect | stay | lost |
| Connected | stay | lost | lost |
| Closed | stay | stay | stay |

``connect``: publish Connected (DRIVER_OK is complete). ``lost``: the backend dropped
the connection (closed it, failed, or restarted and came back Closed); the frontend goes
Closed and shows DEVICE_NEEDS_RESET, and its driver resets.
"""

from __future__ import annotations

from enum import Enum

from xenvirtio.spec.xenbus_state import XenbusState

S = XenbusState


class Reaction(Enum):
    STAY = "stay"
    CONNECT = "connect"
    LOST = "lost"


_WAITING = frozenset({S.INITIALISING, S.INIT_WAIT})

REACTIONS: dict[tuple[XenbusState, XenbusState], Reaction] = {}
for _be in S:
    REACTIONS[(S.INITIALISING, _be)] = Reaction.STAY
    REACTIONS[(S.CLOSED, _be)] = Reaction.STAY
    REACTIONS[(S.INITIALISED, _be)] = (
        Reaction.CONNECT
        if _be is S.CONNECTED
        else Reaction.STAY
        if _be in _WAITING
        else Reaction.LOST
    )
    REACTIONS[(S.CONNECTED, _be)] = Reaction.STAY if _be is S.CONNECTED else Reaction.LOST


def react(own: XenbusState, backend: XenbusState) -> Reaction:
    """The frontend's reaction to seeing ``backend`` while in ``own``; a frontend in a
    state it never uses (a stale one from an earlier life) treats the device as lost."""
    return REACTIONS.get((own, backend), Reaction.LOST)


# Backend states in which it holds nothing of ours (no mapping, no bound port).
_BACKEND_IDLE = frozenset({S.UNKNOWN, S.INITIALISING, S.INIT_WAIT, S.CLOSED})


def reset_needs_handshake(own: XenbusState, backend: XenbusState) -> bool:
    """Whether a reset must go through Closed: unless this end never published
    anything (Initialising) and the backend holds nothing, it must, so the backend
    drops its mappings before the rings are reused (virtio 1.2 2.4)."""
    return not (own is S.INITIALISING and backend in _BACKEND_IDLE)


def reset_complete(backend: XenbusState) -> bool:
    """The backend has let go of everything (it answers our Closed with Closed; a gone
    backend directory holds nothing either)."""
    return backend in (S.CLOSED, S.UNKNOWN)
