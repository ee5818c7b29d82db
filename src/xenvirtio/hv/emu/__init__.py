"""emu: Xen's semantics in user space (domains are processes, RAM is a memfd).

A hypervisor daemon (:mod:`.daemon`) owns domains, grant tables, event channels and
ioreq servers; clients reach it through one socket per handle (:mod:`.client`). See
docs/emu.md. Only :mod:`xenvirtio.runtime` should pick this implementation.
"""

from xenvirtio.hv.emu.guest import EmuGuest, attach_guest
from xenvirtio.hv.emu.hypervisor import open_emu

__all__ = ["EmuGuest", "attach_guest", "open_emu"]
