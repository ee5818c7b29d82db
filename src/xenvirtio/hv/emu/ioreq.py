"""ioreq servers as the hypervisor keeps them: claimed ranges and routing (pure), plus
the shared pages (a memfd: page 0 the buffered ring, page 1 the ``shared_iopage``).

Routing follows Xen's ``ioreq_server_select``: the first *enabled* server of the
target domain whose range set holds the address wins; nothing found means the access
is unclaimed (reads give all ones).
"""

from __future__ import annotations

import bisect
import errno
import mmap
import os
from dataclasses import dataclass, field

from xenvirtio.hv.api.errors import HypervisorError
from xenvirtio.spec.grant_table import XEN_PAGE_SIZE
from xenvirtio.spec.ioreq import (
    IOREQ,
    IOREQ_TYPE_COPY,
    IOREQ_TYPE_PCI_CONFIG,
    IOREQ_TYPE_PIO,
    IOREQ_VP_EPORT_OFFSET,
    XEN_DMOP_IO_RANGE_MEMORY,
    XEN_DMOP_IO_RANGE_PCI,
    XEN_DMOP_IO_RANGE_PORT,
)

MAX_NR_IOREQ_SERVERS = 8
MAX_NR_IO_RANGES = 256
IOREQ_PAGES = 2  # frame 0: buffered ioreq page, frame 1: synchronous ioreq page


class RangeSet:
    """Disjoint, non-touching inclusive ranges, like Xen's rangeset."""

    def __init__(self) -> None:
        self.ranges: list[tuple[int, int]] = []

    def add(self, start: int, end: int) -> None:
        if start > end:
            raise HypervisorError(errno.EINVAL, "range start is past its end")
        if any(s <= end and start <= e for s, e in self.ranges):
            raise HypervisorError(errno.EEXIST, f"range {start:#x}-{end:#x} overlaps a mapped one")
        if len(self.ranges) >= MAX_NR_IO_RANGES:
            raise HypervisorError(errno.ENOMEM, "too many ranges")
        # Merge with touching neighbours, as Xen's rangeset does.
        keep = []
        for s, e in self.ranges:
            if e + 1 == start:
                start = s
            elif end + 1 == s:
                end = e
            else:
                keep.append((s, e))
        bisect.insort(keep, (start, end))
        self.ranges = keep

    def remove(self, start: int, end: int) -> None:
        for index, (s, e) in enumerate(self.ranges):
            if s <= start and end <= e and start <= end:
                pieces = [(s, start - 1)] if s < start else []
                pieces += [(end + 1, e)] if end < e else []
                self.ranges[index : index + 1] = pieces
                return
        raise HypervisorError(errno.ENOENT, f"range {start:#x}-{end:#x} is not mapped")

    def __contains__(self, value: int) -> bool:
        index = bisect.bisect_right(self.ranges, (value, 1 << 64)) - 1
        return index >= 0 and self.ranges[index][0] <= value <= self.ranges[index][1]


def _range_type(ioreq_type: int) -> int | None:
    return {
        IOREQ_TYPE_PIO: XEN_DMOP_IO_RANGE_PORT,
        IOREQ_TYPE_COPY: XEN_DMOP_IO_RANGE_MEMORY,
        IOREQ_TYPE_PCI_CONFIG: XEN_DMOP_IO_RANGE_PCI,
    }.get(ioreq_type)


@dataclass
class IoreqServerState:
    id: int
    token: int  # unique over the daemon's life, so a guest's cache cannot confuse servers
    target: int
    emulator: int  # the device model's domain
    conn_id: int
    bufioreq: int
    vp_ports: list[int]
    buf_port: int | None = None
    enabled: bool = False
    fd: int = -1
    pages: mmap.mmap | None = None
    ranges: dict[int, RangeSet] = field(
        default_factory=lambda: {
            XEN_DMOP_IO_RANGE_PORT: RangeSet(),
            XEN_DMOP_IO_RANGE_MEMORY: RangeSet(),
            XEN_DMOP_IO_RANGE_PCI: RangeSet(),
        }
    )

    def make_pages(self) -> None:
        self.fd = os.memfd_create(f"ioreq-{self.target}-{self.id}", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, IOREQ_PAGES * XEN_PAGE_SIZE)
        self.pages = mmap.mmap(self.fd, IOREQ_PAGES * XEN_PAGE_SIZE, flags=mmap.MAP_SHARED)
        for vcpu, port in enumerate(self.vp_ports):
            offset = XEN_PAGE_SIZE + vcpu * IOREQ.size + IOREQ_VP_EPORT_OFFSET
            self.pages[offset : offset + 4] = port.to_bytes(4, "little")

    def claims(self, ioreq_type: int, addr: int) -> bool:
        kind = _range_type(ioreq_type)
        if kind is None or not self.enabled:
            return False
        key = addr >> 32 if kind == XEN_DMOP_IO_RANGE_PCI else addr
        return key in self.ranges[kind]

    def release(self) -> None:
        if self.pages is not None:
            self.pages.close()
            self.pages = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def select_server(
    servers: list[IoreqServerState], ioreq_type: int, addr: int
) -> IoreqServerState | None:
    """The server that gets this access (lowest id first), or None."""
    for server in sorted(servers, key=lambda s: s.id):
        if server.claims(ioreq_type, addr):
            return server
    return None
