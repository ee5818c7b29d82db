"""libxenevtchn: event channels, one handle per ``xenevtchn_open``.

Call order of a handle (cpython asyncio style): ``open (bind* | notify | pending |
unmask | unbind | status)* close``. A port returned by :meth:`Evtchn.pending` stays
masked until :meth:`Evtchn.unmask`; events that arrive meanwhile are latched, as in Xen.
"""

from __future__ import annotations

import select
from dataclasses import dataclass
from typing import Protocol

from xenvirtio.spec.event_channel import (
    EVTCHNSTAT_closed,
    EVTCHNSTAT_interdomain,
    EVTCHNSTAT_unbound,
)


@dataclass(frozen=True)
class EvtchnStatus:
    """``EVTCHNOP_status`` of one port (``xc_evtchn_status`` in libxenctrl).

    When the other end of an interdomain channel is closed (its domain unbound the port
    or was destroyed) this end reverts to ``EVTCHNSTAT_unbound`` with ``remote_domid``
    still naming that domain, exactly as Xen does.
    """

    state: int
    remote_domid: int | None = None
    remote_port: int | None = None
    virq: int | None = None

    @property
    def connected(self) -> bool:
        return self.state == EVTCHNSTAT_interdomain

    @property
    def closed(self) -> bool:
        return self.state in (EVTCHNSTAT_closed, EVTCHNSTAT_unbound)


class Evtchn(Protocol):
    """A libxenevtchn handle (``xenevtchn_handle``)."""

    def fd(self) -> int:
        """``xenevtchn_fd``: one descriptor for the whole handle; readable when
        :meth:`pending` has something to return (use with selectors / asyncio)."""
        ...

    def bind_unbound_port(self, remote_domid: int) -> int:
        """``xenevtchn_bind_unbound_port``: a new local port that only ``remote_domid``
        may connect to with :meth:`bind_interdomain`."""
        ...

    def bind_interdomain(self, remote_domid: int, remote_port: int) -> int:
        """``xenevtchn_bind_interdomain``: connect to ``remote_port`` of ``remote_domid``,
        which must be unbound and offered to this domain (else EINVAL)."""
        ...

    def bind_virq(self, virq: int) -> int:
        """``xenevtchn_bind_virq``: a port that fires on virtual IRQ ``virq``."""
        ...

    def bind_pirq(self, pirq: int) -> int:
        """``EVTCHNOP_bind_pirq`` (a guest kernel's call; libxenevtchn has none): a port
        raised when ``pirq`` fires. EINVAL unless the domain took or mapped the pirq
        (``Interrupts.get_free_pirq`` / ``map_pirq_gsi``), EEXIST if already bound."""
        ...

    def notify(self, port: int) -> None:
        """``xenevtchn_notify``: send an event to the other end of ``port``."""
        ...

    def unbind(self, port: int) -> None:
        """``xenevtchn_unbind``: close ``port``; the other end sees it unbound."""
        ...

    def pending(self) -> int | None:
        """``xenevtchn_pending``: the next port with an event (now masked), or None."""
        ...

    def unmask(self, port: int) -> None:
        """``xenevtchn_unmask``: deliver events on ``port`` again."""
        ...

    def status(self, port: int) -> EvtchnStatus:
        """``xc_evtchn_status`` for a port of this domain."""
        ...

    def close(self) -> None:
        """``xenevtchn_close``: unbind every port of this handle."""
        ...


def wait_pending(evtchn: Evtchn, timeout: float | None) -> int | None:
    """Block until :meth:`Evtchn.pending` has a port (or ``timeout`` seconds pass)."""
    port = evtchn.pending()
    if port is not None:
        return port
    ready, _, _ = select.select([evtchn.fd()], [], [], timeout)
    return evtchn.pending() if ready else None


__all__ = [
    "EVTCHNSTAT_closed",
    "EVTCHNSTAT_interdomain",
    "EVTCHNSTAT_unbound",
    "Evtchn",
    "EvtchnStatus",
    "wait_pending",
]
