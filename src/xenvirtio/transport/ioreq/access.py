"""What one Xen ioreq asks for, decoded (pure: no I/O).

A ``struct ioreq`` (``hvm/ioreq.h``) is written by the hypervisor, but its fields come
from what the guest's vCPU did, so the device model treats them as untrusted:

- ``IOREQ_TYPE_PCI_CONFIG``: ``addr`` carries the function's SBDF in its upper 32 bits
  (``XEN_DMOP_PCI_SBDF`` layout: segment << 16 | bus << 8 | device << 3 | function) and
  the register offset in the lower 32 (Xen's ``ioreq_server_select`` builds it so from a
  CF8/CFC or ECAM access); ``size`` is 1, 2 or 4.
- ``IOREQ_TYPE_COPY`` (MMIO) and ``IOREQ_TYPE_PIO``: ``count`` repetitions of a
  ``size``-byte access, element ``i`` at ``addr + i * size`` (``addr - i * size`` with
  ``df``, the x86 direction flag of a ``rep movs``/``ins``/``outs``). With
  ``data_is_ptr`` clear, ``data`` is the value itself; with it set, ``data`` is the
  guest-physical address of a buffer of ``count`` elements (walked the same direction)
  that the device model reads from (writes) or fills (reads).

`check_access` names what is wrong with an ioreq the device model will not carry out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from xenvirtio.spec.ioreq import (
    IOREQ_READ,
    IOREQ_TYPE_COPY,
    IOREQ_TYPE_PCI_CONFIG,
    IOREQ_TYPE_PIO,
    Ioreq,
)

ACCESS_SIZES: Final = (1, 2, 4, 8)
PCI_CONFIG_SIZES: Final = (1, 2, 4)
# Xen clamps a rep to what fits in one page (hvmemul_do_io); a larger count never comes
# from a well-behaved hypervisor, so it is refused instead of looped over.
MAX_REPS: Final = 4096
ADDRESS_MASK: Final = (1 << 64) - 1


def ones(size: int) -> int:
    """All-ones of ``size`` bytes (what an unclaimed read returns); 8 bytes at most."""
    return (1 << (8 * min(max(size, 0), 8))) - 1


@dataclass(frozen=True, slots=True)
class PciConfigTarget:
    """The function and register an ``IOREQ_TYPE_PCI_CONFIG`` ioreq addresses."""

    sbdf: int
    reg: int


def pci_config_target(addr: int) -> PciConfigTarget:
    """Split ``addr`` as Xen builds it: SBDF << 32 | register."""
    return PciConfigTarget((addr >> 32) & 0xFFFF_FFFF, addr & 0xFFFF_FFFF)


def element_address(base: int, size: int, index: int, df: bool) -> int:
    """Address of element ``index`` of a rep, walking down when ``df`` is set."""
    step = -size if df else size
    return (base + index * step) & ADDRESS_MASK


def check_access(req: Ioreq) -> str | None:
    """Why the device model refuses ``req`` (None: carry it out)."""
    if req.type == IOREQ_TYPE_PCI_CONFIG:
        if req.size not in PCI_CONFIG_SIZES:
            return f"PCI config access of {req.size} bytes"
        if req.data_is_ptr or req.count != 1:
            return "PCI config access with a rep or a data pointer"
        return None
    if req.type not in (IOREQ_TYPE_COPY, IOREQ_TYPE_PIO):
        return f"ioreq type {req.type} is not an access"
    if req.size not in ACCESS_SIZES:
        return f"access of {req.size} bytes"
    if not 1 <= req.count <= MAX_REPS:
        return f"rep count {req.count} outside 1..{MAX_REPS}"
    return None


def is_read(req: Ioreq) -> bool:
    return req.dir == IOREQ_READ
