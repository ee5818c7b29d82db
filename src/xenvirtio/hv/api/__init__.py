"""The generic hypervisor interface: one narrow port per Xen tools library.

| port | Xen library | here |
|---|---|---|
| event channels | libxenevtchn | :class:`Evtchn` |
| map foreign grants | libxengnttab | :class:`Gnttab` |
| share own pages | libxengntshr | :class:`Gntshr` |
| map guest frames | libxenforeignmemory | :class:`ForeignMemory` |
| ioreq servers, IRQs | libxendevicemodel | :class:`DeviceModel` |
| domains | libxl / domctl | :class:`DomainControl` |
| XenStore | libxenstore | ``Hypervisor.store`` |

Implementations: ``xenvirtio.hv.emu`` (Xen emulated in user space) and, later,
``xenvirtio.hv.xen``. Only ``xenvirtio.runtime`` picks one. See docs/hypervisor-interface.md.
"""

from xenvirtio.hv.api.devicemodel import DeviceModel, IoreqServerInfo
from xenvirtio.hv.api.domctl import DomainControl, DomainInfo, DomainState, DomainType
from xenvirtio.hv.api.errors import (
    GrantError,
    HypervisorError,
    HypervisorPermissionError,
    hv_error,
)
from xenvirtio.hv.api.evtchn import Evtchn, EvtchnStatus, wait_pending
from xenvirtio.hv.api.foreignmemory import PROT_READ, PROT_WRITE, ForeignMemory
from xenvirtio.hv.api.gnttab import Gntshr, Gnttab, GrantCopySegment, GrantRef, UnmapNotify
from xenvirtio.hv.api.guest import (
    GrantTableFront,
    Guest,
    Interrupts,
    IrqEvent,
    StartInfo,
    VcpuIo,
)
from xenvirtio.hv.api.hypervisor import HandleOpener, Hypervisor
from xenvirtio.hv.api.ioreq_server import IoreqHandler, IoreqServer
from xenvirtio.hv.api.mapping import ForeignMapping, GrantMapping, MappedMemory, SharedPages

__all__ = [
    "PROT_READ",
    "PROT_WRITE",
    "DeviceModel",
    "DomainControl",
    "DomainInfo",
    "DomainState",
    "DomainType",
    "Evtchn",
    "EvtchnStatus",
    "ForeignMapping",
    "ForeignMemory",
    "Gntshr",
    "Gnttab",
    "GrantCopySegment",
    "GrantError",
    "GrantMapping",
    "GrantRef",
    "GrantTableFront",
    "Guest",
    "HandleOpener",
    "Hypervisor",
    "HypervisorError",
    "HypervisorPermissionError",
    "Interrupts",
    "IoreqHandler",
    "IoreqServer",
    "IoreqServerInfo",
    "IrqEvent",
    "MappedMemory",
    "SharedPages",
    "StartInfo",
    "UnmapNotify",
    "VcpuIo",
    "hv_error",
    "wait_pending",
]
