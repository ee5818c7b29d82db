"""Rep accesses end to end on emu (``rep movs/ins/outs``): ``count`` elements walked up
or down (``df``), the data as a value or in guest memory (``data_is_ptr``), each rep one
ioreq that the device model carries out element by element through its mapping of the
guest's RAM."""

from __future__ import annotations

import dataclasses
import errno
import struct

import pytest
from ioreq_fakes import ScratchDevice
from ioreq_support import MMIO_BASE, MMIO_GSI

from xenvirtio.hv.api import Hypervisor, HypervisorError
from xenvirtio.hv.emu import attach_guest
from xenvirtio.hv.emu.host import HostStatus
from xenvirtio.spec.grant_table import XEN_PAGE_SIZE
from xenvirtio.spec.ioreq import IOREQ_READ, IOREQ_TYPE_COPY, IOREQ_WRITE
from xenvirtio.spec.virtio_mmio import VIRTIO_MMIO_CONFIG, VIRTIO_MMIO_MAGIC_VALUE
from xenvirtio.testing.echo_device import ECHO_DEVICE_ID
from xenvirtio.transport.ioreq import DeviceModelHost, GuestServer, HostThread

MAGIC = 0x7472_6976  # "virt"
CONFIG = MMIO_BASE + VIRTIO_MMIO_CONFIG
UNCLAIMED = 0x0300_0000


def serve(host: DeviceModelHost, domid: int) -> GuestServer:
    guest = host.add_guest(domid)
    guest.add_mmio(ScratchDevice(), base=MMIO_BASE, gsi=MMIO_GSI)
    guest.enable()
    return guest


def words(raw: bytes | memoryview) -> list[int]:
    return list(struct.unpack(f"<{len(raw) // 4}I", raw))


def test_reps_with_values_and_guest_buffers(
    hv: Hypervisor, dm: HostThread, emu_host: HostStatus
) -> None:
    domid = hv.domctl.create(16, 1, "hvm", name="rep")
    guest = attach_guest(emu_host.run_dir, domid)
    io, mem = guest.vcpu_io, guest.memory
    try:
        server = dm.call(serve, dm.host, domid)
        (gfn,) = guest.alloc_pages(1)
        buf = gfn * XEN_PAGE_SIZE
        # rep ins: magic, version, device id, vendor id into the buffer, walking up
        io.access(IOREQ_TYPE_COPY, MMIO_BASE, 4, IOREQ_READ, buf, count=4, data_is_ptr=True)
        head = words(mem[buf : buf + 16])
        assert head[0] == MAGIC and head[1] == 2 and head[2] == ECHO_DEVICE_ID
        # the same walking down (df): element i at 0xc - 4i lands at buf+0x3c - 4i
        top = buf + 0x3C
        io.access(
            IOREQ_TYPE_COPY, MMIO_BASE + 0xC, 4, IOREQ_READ, top, count=4, df=True, data_is_ptr=True
        )
        assert words(mem[top - 12 : top + 4]) == head
        # rep outs from guest memory into the device's configuration, then read it back
        pattern = struct.pack("<4I", 0x11111111, 0x22222222, 0x33333333, 0x44444444)
        mem[buf + 0x100 : buf + 0x110] = pattern
        io.access(IOREQ_TYPE_COPY, CONFIG, 4, IOREQ_WRITE, buf + 0x100, count=4, data_is_ptr=True)
        io.access(IOREQ_TYPE_COPY, CONFIG, 2, IOREQ_READ, buf + 0x200, count=8, data_is_ptr=True)
        assert bytes(mem[buf + 0x200 : buf + 0x210]) == pattern
        # a rep with the value itself (rep stos): every element gets it; a read rep
        # returns the last element's value
        io.access(IOREQ_TYPE_COPY, CONFIG, 4, IOREQ_WRITE, 0xABCD_0123, count=4)
        assert io.access(IOREQ_TYPE_COPY, CONFIG + 12, 4, IOREQ_READ, count=2, df=True) == (
            0xABCD_0123
        )
        read_back = io.access(IOREQ_TYPE_COPY, CONFIG + 8, 8, IOREQ_READ)
        assert read_back == 0xABCD_0123_ABCD_0123
        stats = dm.call(lambda: dataclasses.replace(server.dispatcher.stats))
        assert stats.copy == 7  # one ioreq per rep, not per element
        assert stats.refused == stats.device_errors == stats.unclaimed == 0
        # nobody claims this: a rep read with a buffer fills it with ones
        io.access(IOREQ_TYPE_COPY, UNCLAIMED, 2, IOREQ_READ, buf + 0x300, count=3, data_is_ptr=True)
        assert bytes(mem[buf + 0x300 : buf + 0x306]) == b"\xff" * 6
        assert bytes(mem[buf + 0x306 : buf + 0x308]) == bytes(2)
        for bad in (
            {"count": 0},
            {"count": 4097},
            {"data": len(mem) - 4, "count": 2, "data_is_ptr": True},
            {"data": 4, "count": 3, "df": True, "data_is_ptr": True},
        ):
            args = {"data": 0, **bad}
            with pytest.raises(HypervisorError) as err:
                io.access(IOREQ_TYPE_COPY, MMIO_BASE, 4, IOREQ_READ, **args)  # type: ignore[arg-type]
            assert err.value.errno == errno.EINVAL
        assert io.access(IOREQ_TYPE_COPY, MMIO_BASE + VIRTIO_MMIO_MAGIC_VALUE, 4, IOREQ_READ) == (
            MAGIC
        )
    finally:
        dm.call(dm.host.remove_guest, domid)
        guest.close()
        hv.domctl.destroy(domid)
