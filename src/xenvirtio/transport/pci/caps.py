"""Virtio structure PCI capabilities (virtio 1.2 4.1.4): the vendor-specific
capabilities that say where the common configuration, notification, ISR and
device-specific structures live, and the VIRTIO_PCI_CAP_PCI_CFG access window.

Device side: capability objects for `PciConfigSpace`. Driver side: `parse_virtio_cap`,
which checks what it reads from a (possibly hostile or broken) device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from xenvirtio.spec import pci as P
from xenvirtio.spec import virtio_pci as VP
from xenvirtio.transport.pci.config_space import Capability

BarRead = Callable[[int, int, int], int]  # (bar, offset, size) -> value
BarWrite = Callable[[int, int, int, int], None]  # (bar, offset, size, value)


class VirtioPciCap(Capability):
    """struct virtio_pci_cap (+ extra bytes for the notify and pci_cfg variants)."""

    def __init__(
        self,
        cfg_type: int,
        bar: int,
        offset: int,
        length: int,
        *,
        cap_len: int = VP.VIRTIO_PCI_CAP_SIZEOF,
        cap_id: int = 0,
    ) -> None:
        super().__init__(P.PCI_CAP_ID_VNDR, cap_len)
        VP.VIRTIO_PCI_CAP.pack_into(
            self.image, 0, P.PCI_CAP_ID_VNDR, 0, cap_len, cfg_type, bar, cap_id, offset, length
        )
        self.cfg_type = cfg_type


class VirtioPciNotifyCap(VirtioPciCap):
    """struct virtio_pci_notify_cap: the notify structure and notify_off_multiplier."""

    def __init__(self, bar: int, offset: int, length: int, multiplier: int) -> None:
        super().__init__(
            VP.VIRTIO_PCI_CAP_NOTIFY_CFG,
            bar,
            offset,
            length,
            cap_len=VP.VIRTIO_PCI_NOTIFY_CAP_SIZEOF,
        )
        self.image[VP.VIRTIO_PCI_NOTIFY_CAP_MULT : VP.VIRTIO_PCI_NOTIFY_CAP_MULT + 4] = (
            multiplier.to_bytes(4, "little")
        )


class VirtioPciCfgCap(VirtioPciCap):
    """struct virtio_pci_cfg_cap: a window into the BARs through config space
    (virtio 1.2 4.1.4.9). ``cap.bar``, ``cap.offset``, ``cap.length`` and
    ``pci_cfg_data`` are driver-writable; touching ``pci_cfg_data`` performs the BAR
    access of ``cap.length`` (1, 2 or 4) bytes at ``cap.offset`` of ``cap.bar``."""

    def __init__(self, bar_read: BarRead, bar_write: BarWrite) -> None:
        super().__init__(VP.VIRTIO_PCI_CAP_PCI_CFG, 0, 0, 0, cap_len=VP.VIRTIO_PCI_CFG_CAP_SIZEOF)
        self._bar_read, self._bar_write = bar_read, bar_write
        self.wmask[VP.VIRTIO_PCI_CAP_BAR] = 0xFF
        self.wmask[VP.VIRTIO_PCI_CAP_OFFSET : VP.VIRTIO_PCI_CFG_CAP_SIZEOF] = b"\xff" * 12

    def _window(self) -> tuple[int, int, int] | None:
        img = self.image
        bar = img[VP.VIRTIO_PCI_CAP_BAR]
        off = int.from_bytes(img[VP.VIRTIO_PCI_CAP_OFFSET : VP.VIRTIO_PCI_CAP_OFFSET + 4], "little")
        size = int.from_bytes(
            img[VP.VIRTIO_PCI_CAP_LENGTH : VP.VIRTIO_PCI_CAP_LENGTH + 4], "little"
        )
        if size not in (1, 2, 4) or off % size:  # 4.1.4.9.2: aligned 1/2/4-byte accesses
            return None
        return bar, off, size

    @staticmethod
    def _touches_data(offset: int, size: int) -> bool:
        return offset < VP.VIRTIO_PCI_CFG_CAP_SIZEOF and offset + size > VP.VIRTIO_PCI_CFG_CAP_DATA

    def read(self, offset: int, size: int) -> bytes:
        window = self._window()
        if self._touches_data(offset, size) and window is not None:
            bar, off, length = window
            value = self._bar_read(bar, off, length)
            data = VP.VIRTIO_PCI_CFG_CAP_DATA
            self.image[data : data + length] = value.to_bytes(length, "little")
        return super().read(offset, size)

    def write(self, offset: int, data: bytes) -> None:
        super().write(offset, data)
        window = self._window()
        if self._touches_data(offset, len(data)) and window is not None:
            bar, off, length = window
            start = VP.VIRTIO_PCI_CFG_CAP_DATA
            value = int.from_bytes(self.image[start : start + length], "little")
            self._bar_write(bar, off, length, value)


# -------------------------------------------------------------------------- driver side


class CapabilityError(Exception):
    """A virtio capability a driver cannot use (too short, bad BAR, past the BAR)."""


@dataclass(frozen=True, slots=True)
class VirtioCapInfo:
    """What a driver reads from one virtio vendor capability."""

    position: int  # offset in config space
    cfg_type: int
    bar: int
    offset: int
    length: int
    extra: int  # notify_off_multiplier for NOTIFY_CFG, else 0


def parse_virtio_cap(position: int, raw: bytes) -> VirtioCapInfo:
    """Decode a vendor capability's bytes (at least 16, 20 for NOTIFY_CFG)."""
    if len(raw) < VP.VIRTIO_PCI_CAP_SIZEOF:
        raise CapabilityError(f"capability at {position:#x} shorter than 16 bytes")
    _, _, cap_len, cfg_type, bar, _, offset, length = VP.VIRTIO_PCI_CAP.unpack_from(raw)
    if cap_len < VP.VIRTIO_PCI_CAP_SIZEOF:
        raise CapabilityError(f"capability at {position:#x}: cap_len {cap_len} < 16")
    extra = 0
    if cfg_type == VP.VIRTIO_PCI_CAP_NOTIFY_CFG:
        if cap_len < VP.VIRTIO_PCI_NOTIFY_CAP_SIZEOF or len(raw) < VP.VIRTIO_PCI_NOTIFY_CAP_SIZEOF:
            raise CapabilityError("notify capability without notify_off_multiplier")
        mult = VP.VIRTIO_PCI_NOTIFY_CAP_MULT
        extra = int.from_bytes(raw[mult : mult + 4], "little")
    return VirtioCapInfo(position, cfg_type, bar, offset, length, extra)
