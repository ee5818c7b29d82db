"""virtio-blk through ioreqs: the device model in dom0 serves an image file, the HVM
guest's driver writes a seeded pattern, flushes and reads the disk back; dom0 then
checks the image file holds exactly what the guest wrote. Over virtio-pci (MSI-X, split
rings) and virtio-mmio (GSI, packed rings)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from ioreq_support import MMIO_BASE, MMIO_GSI, PCI_SLOT, hvm_guest, report, wait_exit

from xenvirtio.devices.blk.backing import BlockFile
from xenvirtio.devices.blk.config import BlkConfig
from xenvirtio.devices.blk.device import VirtioBlkDevice
from xenvirtio.devices.blk.engine import ThreadPoolEngine
from xenvirtio.hv.api import Hypervisor
from xenvirtio.transport.ioreq import DeviceModelHost, HostThread

BLK_KERNEL = "xenvirtio.testing.ioreq_guest_blk:blk_kernel"
DISK = 2 << 20
SERIAL = "ioreq-disk-1"


def serve_disk(host: DeviceModelHost, domid: int, kind: str, device: VirtioBlkDevice) -> None:
    guest = host.add_guest(domid)
    if kind == "mmio":
        guest.add_mmio(device, base=MMIO_BASE, gsi=MMIO_GSI)
    else:
        guest.add_pci(device, slot=PCI_SLOT)
    guest.enable()


@pytest.mark.parametrize(("kind", "packed"), [("pci-msix", False), ("mmio", True)])
def test_blk_verified_io(
    hv: Hypervisor, dm: HostThread, tmp_path: Path, kind: str, packed: bool
) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(DISK))
    engine = ThreadPoolEngine(4)
    backing = BlockFile(image)
    device = VirtioBlkDevice(backing, BlkConfig(serial=SERIAL), engine)
    args = {"kind": kind, "base": MMIO_BASE, "gsi": MMIO_GSI, "seed": 3, "writes": 48}
    try:
        with hvm_guest(hv, f"blk-{kind}", BLK_KERNEL, {**args, "packed": packed}, 32) as domid:
            dm.call(serve_disk, dm.host, domid, kind, device)
            hv.domctl.unpause(domid)
            wait_exit(hv, domid)
            result = report(hv, domid, "result")
            dm.call(dm.host.remove_guest, domid)
    finally:
        engine.close()
        backing.close()
    assert result["size"] == DISK and result["serial"] == SERIAL
    assert result["packed"] is packed
    assert result["interrupts"] > 0
    on_disk = image.read_bytes()
    assert on_disk != bytes(DISK)
    assert hashlib.sha256(on_disk).hexdigest() == result["sha256"]
