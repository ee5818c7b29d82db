"""Event channels as the hypervisor keeps them: per-domain port tables over eventfds.

A :class:`Channel` has two slots, one per end. Each slot owns an eventfd: the one its
port waits on. Both eventfds are made when the channel is offered
(``EVTCHNOP_alloc_unbound``), so the end that binds later (``bind_interdomain``) gets the
same pair and a notify is a single eventfd write from either side, with no hypervisor hop.

Closing one end leaves the other ``EVTCHNSTAT_unbound`` towards the closer's domain (as
Xen's ``evtchn_close`` does) and kicks it, so its owner wakes up and can look. The
closer's eventfd is kept for whoever binds that slot next; the channel and both
eventfds go when both ends are closed.

eventfd creation and signalling are injected (:class:`EventfdOps`) so the table logic is
testable without file descriptors.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from xenvirtio.hv.api.errors import HypervisorError
from xenvirtio.spec.event_channel import (
    EVTCHN_2L_NR_CHANNELS,
    NR_VIRQS,
    EVTCHNSTAT_closed,
    EVTCHNSTAT_interdomain,
    EVTCHNSTAT_pirq,
    EVTCHNSTAT_unbound,
    EVTCHNSTAT_virq,
)


@dataclass(frozen=True)
class EventfdOps:
    new: Callable[[], int]
    close: Callable[[int], None]
    signal: Callable[[int], None]
    drain: Callable[[int], None]


@dataclass
class Slot:
    efd: int
    domid: int | None = None  # the bound end's domain, or None while unbound
    port: int | None = None
    awaiting: int = 0  # the only domain allowed to bind this slot while unbound


@dataclass
class Channel:
    slots: tuple[Slot, Slot]


@dataclass
class PortEntry:
    """A port of one domain: one end of a channel, a VIRQ or a pirq."""

    channel: Channel | None = None
    side: int = 0
    virq: int | None = None
    pirq: int | None = None
    efd: int | None = None
    owner: int | None = None  # connection that bound it (None: the hypervisor's, claimable)


@dataclass
class PortTable:
    ports: dict[int, PortEntry] = field(default_factory=dict)
    virqs: dict[int, int] = field(default_factory=dict)  # virq -> port
    pirqs: dict[int, int] = field(default_factory=dict)  # pirq -> port

    def allocate(self) -> int:
        for port in range(1, EVTCHN_2L_NR_CHANNELS):
            if port not in self.ports:
                return port
        raise HypervisorError(errno.ENOSPC, "no free event channel port")


class EventChannels:
    """Every domain's ports."""

    def __init__(self, ops: EventfdOps) -> None:
        self.ops = ops
        self.tables: dict[int, PortTable] = {}

    def add_domain(self, domid: int) -> None:
        self.tables[domid] = PortTable()

    def table(self, domid: int) -> PortTable:
        table = self.tables.get(domid)
        if table is None:
            raise HypervisorError(errno.ESRCH, f"no domain {domid}")
        return table

    def entry(self, domid: int, port: int) -> PortEntry:
        entry = self.table(domid).ports.get(port)
        if entry is None:
            raise HypervisorError(errno.EINVAL, f"port {port} of domain {domid} is not bound")
        return entry

    def alloc_unbound(self, domid: int, remote_domid: int, owner: int | None) -> int:
        table = self.table(domid)
        self.table(remote_domid)
        port = table.allocate()
        mine, theirs = self.ops.new(), self.ops.new()
        channel = Channel((Slot(mine, domid, port), Slot(theirs, awaiting=remote_domid)))
        table.ports[port] = PortEntry(channel=channel, side=0, owner=owner)
        return port

    def bind_interdomain(
        self, domid: int, remote_domid: int, remote_port: int, owner: int | None
    ) -> int:
        table = self.table(domid)
        remote = self.table(remote_domid).ports.get(remote_port)
        if remote is None or remote.channel is None:
            raise HypervisorError(errno.EINVAL, f"port {remote_port} is not an unbound port")
        peer_side = 1 - remote.side
        slot = remote.channel.slots[peer_side]
        if slot.port is not None or slot.awaiting != domid:
            raise HypervisorError(
                errno.EINVAL,
                f"port {remote_port} of domain {remote_domid} is not offered to {domid}",
            )
        port = table.allocate()
        self.ops.drain(slot.efd)  # kicks sent while nobody was bound are not events
        slot.domid, slot.port = domid, port
        table.ports[port] = PortEntry(channel=remote.channel, side=peer_side, owner=owner)
        return port

    def bind_virq(self, domid: int, virq: int, owner: int | None) -> int:
        if not 0 <= virq < NR_VIRQS:
            raise HypervisorError(errno.EINVAL, f"no VIRQ {virq}")
        table = self.table(domid)
        if virq in table.virqs:
            raise HypervisorError(errno.EEXIST, f"VIRQ {virq} is already bound")
        port = table.allocate()
        table.ports[port] = PortEntry(virq=virq, efd=self.ops.new(), owner=owner)
        table.virqs[virq] = port
        return port

    def bind_pirq(self, domid: int, pirq: int, owner: int | None) -> int:
        """``EVTCHNOP_bind_pirq``: a port raised when ``pirq`` fires (the caller checks
        the pirq is the domain's)."""
        table = self.table(domid)
        if pirq in table.pirqs:
            raise HypervisorError(errno.EEXIST, f"pirq {pirq} is already bound")
        port = table.allocate()
        table.ports[port] = PortEntry(pirq=pirq, efd=self.ops.new(), owner=owner)
        table.pirqs[pirq] = port
        return port

    def raise_pirq(self, domid: int, pirq: int) -> bool:
        """Xen's ``send_guest_pirq``: False when no port is bound to ``pirq``."""
        table = self.tables.get(domid)
        port = table.pirqs.get(pirq) if table else None
        if table is None or port is None:
            return False
        efd = table.ports[port].efd
        assert efd is not None
        self.ops.signal(efd)
        return True

    def fds(self, domid: int, port: int) -> tuple[int, int | None]:
        """(eventfd this port waits on, eventfd its notify writes) of a bound port."""
        entry = self.entry(domid, port)
        if entry.channel is None:
            assert entry.efd is not None
            return entry.efd, None
        return entry.channel.slots[entry.side].efd, entry.channel.slots[1 - entry.side].efd

    def close(self, domid: int, port: int) -> None:
        table = self.table(domid)
        entry = table.ports.pop(port, None)
        if entry is None:
            raise HypervisorError(errno.EINVAL, f"port {port} is not bound")
        if entry.channel is None:
            assert entry.efd is not None
            if entry.pirq is not None:
                del table.pirqs[entry.pirq]
            else:
                assert entry.virq is not None
                del table.virqs[entry.virq]
            self.ops.close(entry.efd)
            return
        mine, other = entry.channel.slots[entry.side], entry.channel.slots[1 - entry.side]
        mine.domid, mine.port = None, None
        if other.port is None:
            self.ops.close(mine.efd)
            self.ops.close(other.efd)
            return
        mine.awaiting = domid  # Xen: the survivor becomes unbound towards the closer
        self.ops.drain(mine.efd)
        self.ops.signal(other.efd)

    def status(self, domid: int, port: int) -> tuple[int, int | None, int | None, int | None]:
        """(EVTCHNSTAT_*, remote domid, remote port, virq)."""
        entry = self.table(domid).ports.get(port)
        if entry is None:
            return EVTCHNSTAT_closed, None, None, None
        if entry.pirq is not None:
            return EVTCHNSTAT_pirq, None, None, None
        if entry.channel is None:
            return EVTCHNSTAT_virq, None, None, entry.virq
        other = entry.channel.slots[1 - entry.side]
        if other.port is None:
            return EVTCHNSTAT_unbound, other.awaiting, None, None
        return EVTCHNSTAT_interdomain, other.domid, other.port, None

    def notify(self, domid: int, port: int) -> None:
        """A notify issued by the hypervisor on behalf of ``domid`` (unmap notifications)."""
        entry = self.table(domid).ports.get(port)
        if entry is not None and entry.channel is not None:
            self.ops.signal(entry.channel.slots[1 - entry.side].efd)

    def raise_virq(self, domid: int, virq: int) -> None:
        table = self.tables.get(domid)
        port = table.virqs.get(virq) if table else None
        if table is not None and port is not None:
            efd = table.ports[port].efd
            assert efd is not None
            self.ops.signal(efd)

    def owned_by(self, domid: int, owner: int) -> Iterator[int]:
        table = self.tables.get(domid)
        if table is not None:
            yield from [p for p, e in table.ports.items() if e.owner == owner]

    def remove_domain(self, domid: int) -> None:
        """Close every port of ``domid`` (peers see them unbound) and forget the table."""
        table = self.tables.get(domid)
        if table is None:
            return
        for port in list(table.ports):
            self.close(domid, port)
        del self.tables[domid]

    def count(self) -> int:
        return sum(len(t.ports) for t in self.tables.values())
