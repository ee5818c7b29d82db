"""The ioreq interface between Xen and a device model, from Xen's ``hvm/ioreq.h``,
``hvm/dm_op.h``, ``hvm/hvm_op.h`` and ``memory.h``.

Names, numbers and the ``struct ioreq`` layout; :func:`pack_ioreq` / :func:`unpack_ioreq`
are pure conversions so a page can be read and written field for field.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

IOREQ_READ: Final = 1
IOREQ_WRITE: Final = 0

STATE_IOREQ_NONE: Final = 0
STATE_IOREQ_READY: Final = 1
STATE_IOREQ_INPROCESS: Final = 2
STATE_IORESP_READY: Final = 3

IOREQ_TYPE_PIO: Final = 0
IOREQ_TYPE_COPY: Final = 1  # MMIO
IOREQ_TYPE_PCI_CONFIG: Final = 2
IOREQ_TYPE_TIMEOFFSET: Final = 7
IOREQ_TYPE_INVALIDATE: Final = 8

# struct ioreq { u64 addr; u64 data; u32 count; u32 size; u32 vp_eport; u16 _pad0;
#                u8 state:4, data_is_ptr:1, dir:1, df:1, _pad1:1; u8 type; }  (32 bytes)
IOREQ: Final = struct.Struct("<QQIIIHBB")
IOREQ_STATE_OFFSET: Final = 30  # the byte holding state:4 .. df:1
IOREQ_VP_EPORT_OFFSET: Final = 24

# struct shared_iopage { struct ioreq vcpu_ioreq[]; }: one slot per vCPU, one page.
SHARED_IOPAGE_MAX_VCPUS: Final = 4096 // IOREQ.size

IOREQ_BUFFER_SLOT_NUM: Final = 511

# handle_bufioreq of XEN_DMOP_create_ioreq_server (hvm_op.h).
HVM_IOREQSRV_BUFIOREQ_OFF: Final = 0
HVM_IOREQSRV_BUFIOREQ_LEGACY: Final = 1
HVM_IOREQSRV_BUFIOREQ_ATOMIC: Final = 2

# XEN_DMOP_map_io_range_to_ioreq_server types.
XEN_DMOP_IO_RANGE_PORT: Final = 0
XEN_DMOP_IO_RANGE_MEMORY: Final = 1
XEN_DMOP_IO_RANGE_PCI: Final = 2

# Frames of XENMEM_resource_ioreq_server.
XENMEM_resource_ioreq_server_frame_bufioreq: Final = 0


def XENMEM_resource_ioreq_server_frame_ioreq(n: int) -> int:
    """Frame number of the n-th synchronous ioreq page of a server."""
    return 1 + n


def XEN_DMOP_PCI_SBDF(s: int, b: int, d: int, f: int) -> int:
    """A PCI segment/bus/device/function packed as dm_op.h does."""
    return ((s & 0xFFFF) << 16) | ((b & 0xFF) << 8) | ((d & 0x1F) << 3) | (f & 0x07)


def pci_config_addr(sbdf: int, reg: int) -> int:
    """``addr`` of an IOREQ_TYPE_PCI_CONFIG ioreq: the SBDF in the top half, register below."""
    return (sbdf << 32) | reg


@dataclass(frozen=True)
class Ioreq:
    """One ``struct ioreq``, decoded."""

    addr: int
    data: int
    count: int
    size: int
    vp_eport: int
    state: int
    data_is_ptr: bool
    dir: int
    df: bool
    type: int


def pack_ioreq(req: Ioreq) -> bytes:
    """The 32 bytes of ``req`` in Xen's layout (bit-fields allocated from the low bit)."""
    bits = (
        (req.state & 0xF) | (int(req.data_is_ptr) << 4) | ((req.dir & 1) << 5) | (int(req.df) << 6)
    )
    return IOREQ.pack(
        req.addr, req.data, req.count, req.size, req.vp_eport, 0, bits, req.type & 0xFF
    )


def unpack_ioreq(raw: bytes | bytearray | memoryview) -> Ioreq:
    """Decode 32 bytes (copy them first if they live in shared memory)."""
    addr, data, count, size, vp_eport, _pad0, bits, type_ = IOREQ.unpack(raw)
    return Ioreq(
        addr=addr,
        data=data,
        count=count,
        size=size,
        vp_eport=vp_eport,
        state=bits & 0xF,
        data_is_ptr=bool(bits & 0x10),
        dir=(bits >> 5) & 1,
        df=bool(bits & 0x40),
        type=type_,
    )
