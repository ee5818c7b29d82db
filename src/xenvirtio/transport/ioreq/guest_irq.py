"""`GuestIrqRouter`: how a PV-on-HVM guest receives the interrupts a device model raises.

MSI-X (see `xenvirtio.spec.msi`): for each vector the guest takes a pirq
(``PHYSDEVOP_get_free_pirq``: `Interrupts.get_free_pirq`), binds it to an event channel
(``EVTCHNOP_bind_pirq``: `Evtchn.bind_pirq`) and programs the vector's entry with the
message that names the pirq (Linux ``xen_msi_compose_msg``). When the device model
injects that message, the hypervisor (Xen's ``hvm_inject_msi``) reads the pirq back out
and raises the bound channel; the router runs the vector's handler. A message with a
vector is an ordinary LAPIC MSI: it arrives on the virtual interrupt controller
(`Interrupts.take`) and goes to the handler bound to that vector.

INT#x and GSIs: the pin of PCI device ``d`` reaches GSI ``hvm_pci_intx_gsi(d, pin)``; a
virtio-mmio line is its own GSI (SPI on Arm). The router maps the GSI to a pirq
(``PHYSDEVOP_map_pirq``, MAP_PIRQ_TYPE_GSI) and binds that too, as Linux's
``xen_register_pirq`` does on a PV-on-HVM guest: the hypervisor raises the channel when
the line rises. Handlers of a level interrupt must make the device drop it (read ISR).

The router owns one event channel handle for its pirqs; watch `fds` (or call `pump`).
"""

from __future__ import annotations

import contextlib
import select
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from xenvirtio.hv.api.evtchn import Evtchn
from xenvirtio.hv.api.guest import Guest, Interrupts, IrqEvent
from xenvirtio.spec.msi import hvm_pci_intx_gsi, msi_vector, pirq_msi_message

MsiHandler = Callable[[int, int], None]  # (address, data) of the message that arrived
LineHandler = Callable[[], None]


@dataclass
class IrqCounts:
    msi: int = 0  # pirq events of MSIs
    vector_msi: int = 0
    lines: int = 0  # pirq events of GSIs (rising levels)
    spurious: int = 0  # controller events nothing claims
    per_port: dict[int, int] = field(default_factory=dict)


class PirqMsiRoute:
    """A `MsiRoute` for `VirtioPciDriver`: each vector gets a pirq bound to an event
    channel; an event there goes to ``handler(address, data)`` with the vector's message
    (set it once the driver exists: events before that are kept and replayed)."""

    def __init__(self, router: GuestIrqRouter) -> None:
        self.router = router
        self.handler: MsiHandler | None = None
        self.pirqs: dict[int, int] = {}  # vector -> pirq
        self.ports: dict[int, int] = {}  # vector -> event channel port
        self._early: list[tuple[int, int]] = []

    def __call__(self, vector: int) -> tuple[int, int]:
        if vector not in self.pirqs:
            pirq = self.router.interrupts.get_free_pirq()
            message = pirq_msi_message(pirq)
            self.pirqs[vector] = pirq
            self.ports[vector] = self.router.bind_pirq(pirq, lambda: self._deliver(*message))
        return pirq_msi_message(self.pirqs[vector])

    def _deliver(self, address: int, data: int) -> None:
        if self.handler is None:
            self._early.append((address, data))
            return
        self.handler(address, data)

    def set_handler(self, handler: MsiHandler) -> None:
        self.handler = handler
        early, self._early = self._early, []
        for address, data in early:
            handler(address, data)

    def release(self) -> None:
        for port in self.ports.values():
            self.router.unbind(port)
        for pirq in self.pirqs.values():
            self.router.interrupts.unmap_pirq(pirq)
        self.pirqs.clear()
        self.ports.clear()


class GuestIrqRouter:
    """One guest's interrupt routing: pirq event channels and the interrupt controller."""

    def __init__(
        self, interrupts: Interrupts, evtchn: Evtchn, *, owns_evtchn: bool = False
    ) -> None:
        self.interrupts = interrupts
        self.evtchn = evtchn
        self._owns_evtchn = owns_evtchn
        self._port_handlers: dict[int, list[LineHandler]] = {}
        self._line_ports: set[int] = set()
        self._gsi_port: dict[int, int] = {}
        self._vector: dict[int, MsiHandler] = {}
        self.counts = IrqCounts()

    @classmethod
    def of_guest(cls, guest: Guest) -> GuestIrqRouter:
        """A router with an event channel handle of its own (closed by `close`)."""
        return cls(guest.interrupts, guest.hypervisor.open_evtchn(), owns_evtchn=True)

    # -- binding (what the guest kernel's interrupt setup does) -----------------------
    def bind_pirq(self, pirq: int, handler: LineHandler) -> int:
        """``EVTCHNOP_bind_pirq``: ``handler`` runs on each event; returns the port."""
        port = self.evtchn.bind_pirq(pirq)
        self._port_handlers[port] = [handler]
        return port

    def unbind(self, port: int) -> None:
        if self._port_handlers.pop(port, None) is not None:
            self.evtchn.unbind(port)

    def bind_vector(self, vector: int, handler: MsiHandler) -> None:
        self._vector[vector & 0xFF] = handler

    def bind_gsi(self, gsi: int, handler: LineHandler) -> None:
        """Run ``handler`` when GSI ``gsi`` rises (a shared line: every handler runs)."""
        port = self._gsi_port.get(gsi)
        if port is None:
            port = self.bind_pirq(self.interrupts.map_pirq_gsi(gsi), handler)
            self._gsi_port[gsi] = port
            self._line_ports.add(port)
        else:
            self._port_handlers[port].append(handler)

    def bind_pci_intx(self, bdf: int, pin: int, handler: LineHandler) -> int:
        """Handle INT#x ``pin`` (0 = INTA) of the function at ``bdf``; returns its GSI."""
        gsi = hvm_pci_intx_gsi((bdf >> 3) & 0x1F, pin)
        self.bind_gsi(gsi, handler)
        return gsi

    def msi_route(self) -> PirqMsiRoute:
        return PirqMsiRoute(self)

    # -- delivery ----------------------------------------------------------------------
    def fds(self) -> list[int]:
        """Readable when `poll` has work: the pirq channels and the controller."""
        return [self.evtchn.fd(), self.interrupts.fd()]

    def poll(self) -> int:
        """Run the handlers of every event waiting now; returns how many."""
        delivered = 0
        while (port := self.evtchn.pending()) is not None:
            delivered += self._port_event(port)
            self.evtchn.unmask(port)
        ready, _, _ = select.select([self.interrupts.fd()], [], [], 0)
        if ready:
            delivered += self.dispatch(self.interrupts.take())
        return delivered

    def _port_event(self, port: int) -> int:
        handlers = self._port_handlers.get(port)
        if not handlers:
            return 0
        if port in self._line_ports:
            self.counts.lines += 1
        else:
            self.counts.msi += 1
        self.counts.per_port[port] = self.counts.per_port.get(port, 0) + 1
        for handler in list(handlers):
            handler()
        return 1

    def dispatch(self, events: Iterable[IrqEvent]) -> int:
        """Run the handlers of interrupt-controller ``events`` (vector MSIs; lines no
        pirq was mapped for have no handler here); returns how many were delivered."""
        delivered = 0
        for event in events:
            handler = self._vector.get(msi_vector(event.data)) if event.kind == "msi" else None
            if handler is None:
                self.counts.spurious += 1
                continue
            self.counts.vector_msi += 1
            handler(event.addr, event.data)
            delivered += 1
        return delivered

    def pump(self, timeout: float | None = 0.0) -> int:
        """Wait up to ``timeout`` s for interrupts and run their handlers."""
        ready, _, _ = select.select(self.fds(), [], [], timeout)
        return self.poll() if ready else 0

    def wait_for(self, done: Callable[[], bool], timeout: float) -> bool:
        """Pump until ``done()`` holds (True) or ``timeout`` s pass (False)."""
        deadline = time.monotonic() + timeout
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.pump(min(remaining, 0.5))
        return True

    def close(self) -> None:
        if self._owns_evtchn:
            with contextlib.suppress(OSError):
                self.evtchn.close()
