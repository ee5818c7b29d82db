"""What the sans-I/O core asks the I/O side to do (returned by :class:`XenstoreCore`)."""

from __future__ import annotations

from dataclasses import dataclass

from xenvirtio.xenstore.wire import Packet


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``packet`` (a reply or an XS_WATCH_EVENT) on connection ``conn_id``."""

    conn_id: int
    packet: Packet


_SET_CONN_ID = vars(Send)["conn_id"].__set__
_SET_PACKET = vars(Send)["packet"].__set__


def send(conn_id: int, packet: Packet) -> Send:
    """``Send(conn_id, packet)`` without the frozen dataclass's ``__setattr__`` detour."""
    effect = object.__new__(Send)
    _SET_CONN_ID(effect, conn_id)
    _SET_PACKET(effect, packet)
    return effect


@dataclass(frozen=True)
class IntroduceDomain:
    """Attach domain ``domid``'s ring (page ``gfn``, event channel ``port``) as a connection.

    Also sent for a domain already introduced: the ring is to be reset and rebound.
    """

    domid: int
    gfn: int
    port: int


@dataclass(frozen=True)
class ReleaseDomain:
    """Detach domain ``domid``'s ring connection(s); the core already forgot them."""

    domid: int


@dataclass(frozen=True)
class CloseConnection:
    """Close connection ``conn_id`` (the core already forgot it)."""

    conn_id: int
    reason: str


Effect = Send | IntroduceDomain | ReleaseDomain | CloseConnection
