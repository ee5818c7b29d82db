"""The device-model side of an ioreq server, over the generic ports only.

What QEMU's ``xen-hvm`` does: create a server for a guest, map its shared ioreq page
(``map_resource``), bind every vCPU's ``vp_eport``, and answer each ioreq the guest's
vCPUs raise: ``STATE_IOREQ_READY`` -> ``INPROCESS`` -> handler -> ``STATE_IORESP_READY``
and a notify. Runs unchanged on emu and on Xen.

Call order: ``IoreqServer(...)`` ``(map_* | set_state)*`` ``(fd-readable -> process)*``
``close``.

**Fairness.** One call of ``process`` answers at most ``budget`` ioreqs (default
`DEFAULT_BUDGET`). A guest whose vCPUs issue the next ioreq as soon as the last one is
answered would otherwise keep ``process`` looping, and a loop serving several guests
would serve no one else. When the budget runs out, ``backlog`` is True: ports already
taken from the event channel may wait, and the fd need not turn readable again for them,
so the caller's loop must call ``process`` again soon (after serving the others).
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable

from xenvirtio.hv.api.devicemodel import DeviceModel
from xenvirtio.hv.api.evtchn import Evtchn
from xenvirtio.hv.api.foreignmemory import PROT_READ, PROT_WRITE, ForeignMemory
from xenvirtio.spec.grant_table import XENMEM_resource_ioreq_server
from xenvirtio.spec.ioreq import (
    HVM_IOREQSRV_BUFIOREQ_OFF,
    IOREQ,
    IOREQ_READ,
    IOREQ_STATE_OFFSET,
    STATE_IOREQ_INPROCESS,
    STATE_IOREQ_READY,
    STATE_IORESP_READY,
    Ioreq,
    XENMEM_resource_ioreq_server_frame_ioreq,
    unpack_ioreq,
)

IoreqHandler = Callable[[Ioreq], int]
"""Serves one ioreq; returns the data of a read (ignored for a write)."""

DEFAULT_BUDGET = 32
"""ioreqs one ``process`` call answers at most, before it lets the caller serve others."""

_DATA_OFFSET = 8
_U64 = struct.Struct("<Q")


class IoreqServer:
    """One ioreq server of this device model for guest ``domid``."""

    def __init__(
        self,
        devicemodel: DeviceModel,
        foreign: ForeignMemory,
        evtchn: Evtchn,
        domid: int,
        *,
        handle_bufioreq: int = HVM_IOREQSRV_BUFIOREQ_OFF,
    ) -> None:
        self.dm = devicemodel
        self.evtchn = evtchn
        self.domid = domid
        self.port_to_vcpu: dict[int, int] = {}
        self.served = 0
        self.backlog = False  # the budget ran out: call `process` again soon
        self.id = devicemodel.create_ioreq_server(domid, handle_bufioreq)
        try:
            self.vcpus = devicemodel.nr_vcpus(domid)
            self.page = foreign.map_resource(
                domid,
                XENMEM_resource_ioreq_server,
                self.id,
                XENMEM_resource_ioreq_server_frame_ioreq(0),
                1,
                PROT_READ | PROT_WRITE,
            )
        except BaseException:
            self._destroy()
            raise
        try:
            for vcpu in range(self.vcpus):
                base = vcpu * IOREQ.size
                slot = unpack_ioreq(bytes(self.page.memory[base : base + IOREQ.size]))
                self.port_to_vcpu[evtchn.bind_interdomain(domid, slot.vp_eport)] = vcpu
        except BaseException:  # nothing of a half-made server may stay behind
            self.close()
            raise

    def map_io_range(self, is_mmio: bool, start: int, end: int) -> None:
        self.dm.map_io_range_to_ioreq_server(self.domid, self.id, is_mmio, start, end)

    def map_pcidev(self, segment: int, bus: int, device: int, function: int) -> None:
        self.dm.map_pcidev_to_ioreq_server(self.domid, self.id, segment, bus, device, function)

    def set_state(self, enabled: bool) -> None:
        self.dm.set_ioreq_server_state(self.domid, self.id, enabled)

    def fd(self) -> int:
        return self.evtchn.fd()

    def process(self, handler: IoreqHandler, budget: int = DEFAULT_BUDGET) -> int:
        """Answer the ioreqs waiting now, ``budget`` at most; returns how many were
        served. Sets ``backlog`` when it stopped because of the budget."""
        served = 0
        self.backlog = False
        while served < budget:
            port = self.evtchn.pending()
            if port is None:
                break
            vcpu = self.port_to_vcpu.get(port)
            if vcpu is not None and self._serve(vcpu, handler):
                self.evtchn.notify(port)
                served += 1
            self.evtchn.unmask(port)
        else:
            self.backlog = True
        self.served += served
        return served

    def _serve(self, vcpu: int, handler: IoreqHandler) -> bool:
        base = vcpu * IOREQ.size
        mem = self.page.memory
        req = unpack_ioreq(bytes(mem[base : base + IOREQ.size]))  # one copy, then decide
        if req.state != STATE_IOREQ_READY:
            return False
        mem[base + IOREQ_STATE_OFFSET] = (mem[base + IOREQ_STATE_OFFSET] & 0xF0) | (
            STATE_IOREQ_INPROCESS
        )
        result = handler(req)
        if req.dir == IOREQ_READ:
            _U64.pack_into(mem, base + _DATA_OFFSET, result & 0xFFFF_FFFF_FFFF_FFFF)
        # The response is published by the state byte, written last.
        mem[base + IOREQ_STATE_OFFSET] = (mem[base + IOREQ_STATE_OFFSET] & 0xF0) | (
            STATE_IORESP_READY
        )
        return True

    def close(self) -> None:
        for port in list(self.port_to_vcpu):
            with contextlib.suppress(OSError):
                self.evtchn.unbind(port)
        self.port_to_vcpu.clear()
        self.page.unmap()
        self._destroy()

    def _destroy(self) -> None:
        with contextlib.suppress(OSError):
            self.dm.destroy_ioreq_server(self.domid, self.id)
