"""Event channel constants, from Xen's ``event_channel.h`` and ``xen.h``. Names only."""

from __future__ import annotations

from typing import Final

DOMID_SELF: Final = 0x7FF0
DOMID_FIRST_RESERVED: Final = 0x7FF0

# EVTCHNOP_status: the state of a port.
EVTCHNSTAT_closed: Final = 0
EVTCHNSTAT_unbound: Final = 1
EVTCHNSTAT_interdomain: Final = 2
EVTCHNSTAT_pirq: Final = 3
EVTCHNSTAT_virq: Final = 4
EVTCHNSTAT_ipi: Final = 5

# 2-level event channel ABI on a 64-bit guest: 64 * 64 ports; port 0 is never valid.
EVTCHN_2L_NR_CHANNELS: Final = 4096

# Virtual interrupts (xen.h); V = per-vCPU, G = global.
VIRQ_TIMER: Final = 0
VIRQ_DEBUG: Final = 1
VIRQ_CONSOLE: Final = 2
VIRQ_DOM_EXC: Final = 3  # G. (DOM0) exceptional event for some domain
VIRQ_TBUF: Final = 4
VIRQ_DEBUGGER: Final = 6
VIRQ_XENOPROF: Final = 7
VIRQ_CON_RING: Final = 8
VIRQ_PCPU_STATE: Final = 9
VIRQ_MEM_EVENT: Final = 10
VIRQ_ARGO: Final = 11
VIRQ_ENOMEM: Final = 12
VIRQ_XENPMU: Final = 13
NR_VIRQS: Final = 24
