"""`VirtioPciDriver`: the guest side of a modern virtio-pci function, over a `PciBus`.

What Linux's ``virtio_pci_modern_dev.c`` does, in order: check the IDs (virtio 1.2
4.1.2.2), walk the capability list for the virtio structures (4.1.4; bounded, loops and
bad pointers end the walk), find the BAR addresses firmware assigned (see ``bios``), and,
if given an MSI route, program the MSI-X table: vector 0 for configuration changes and
one vector per queue while the table lasts, further queues sharing the last one.
Without an MSI route (or with a table of one vector) it uses INT#x and the ISR.

Call `handle_msi` for each MSI the guest's interrupt controller receives; `ack_interrupt`
then reports what it carried (MSI-X) or reads ISR status (INT#x).
"""

from __future__ import annotations

from collections.abc import Callable

from xenvirtio.spec import pci as P
from xenvirtio.spec import virtio as S
from xenvirtio.spec import virtio_pci as VP
from xenvirtio.transport.api import InterruptFlags
from xenvirtio.transport.dma import DmaPages, NoDmaMemoryError
from xenvirtio.transport.pci.bios import PciBus, read_bar_address
from xenvirtio.transport.pci.caps import CapabilityError, VirtioCapInfo, parse_virtio_cap
from xenvirtio.transport.registers import read_natural, write_natural

MsiRoute = Callable[[int], tuple[int, int]]
"""Vector number -> (message address, message data) the guest OS allocated for it."""

_WAIT_LIMIT = 1000  # reads of a self-clearing register before giving up


class PciProbeError(Exception):
    """Not a modern virtio-pci function, or one a driver cannot use."""


def find_capabilities(bus: PciBus, bdf: int) -> tuple[dict[int, VirtioCapInfo], int | None]:
    """The first virtio capability of each cfg_type, and the MSI-X capability offset."""
    if not bus.cfg_read(bdf, P.PCI_STATUS, 2) & P.PCI_STATUS_CAP_LIST:
        return {}, None
    virtio: dict[int, VirtioCapInfo] = {}
    msix: int | None = None
    seen: set[int] = set()
    pos = bus.cfg_read(bdf, P.PCI_CAPABILITY_LIST, 1) & ~3
    for _ in range(P.PCI_CAP_MAX_WALK):
        if pos < P.PCI_STD_HEADER_SIZEOF or pos in seen:
            break
        seen.add(pos)
        cap_id = bus.cfg_read(bdf, pos + P.PCI_CAP_LIST_ID, 1)
        if cap_id == P.PCI_CAP_ID_MSIX and msix is None:
            msix = pos
        elif cap_id == P.PCI_CAP_ID_VNDR:
            raw = b"".join(
                bus.cfg_read(bdf, pos + i, 4).to_bytes(4, "little")
                for i in range(0, VP.VIRTIO_PCI_NOTIFY_CAP_SIZEOF, 4)
                if pos + i + 4 <= P.PCI_CFG_SPACE_SIZE
            )
            try:
                info = parse_virtio_cap(pos, raw)
            except CapabilityError:
                info = None
            if info is not None and info.bar < P.PCI_NUM_BARS:  # 4.1.4.1: skip bad bar
                virtio.setdefault(info.cfg_type, info)
        pos = bus.cfg_read(bdf, pos + P.PCI_CAP_LIST_NEXT, 1) & ~3
    return virtio, msix


class VirtioPciDriver:
    """A guest driver's `VirtioTransport` over one virtio-pci function."""

    def __init__(
        self, bus: PciBus, bdf: int, *, msi: MsiRoute | None = None, dma: DmaPages | None = None
    ) -> None:
        self.bus, self.bdf = bus, bdf
        self._dma = dma
        vendor = bus.cfg_read(bdf, P.PCI_VENDOR_ID, 2)
        pci_id = bus.cfg_read(bdf, P.PCI_DEVICE_ID, 2)
        if vendor != VP.VIRTIO_PCI_VENDOR_ID or not (
            VP.VIRTIO_PCI_DEVICE_ID_BASE <= pci_id <= VP.VIRTIO_PCI_DEVICE_ID_MAX
        ):
            raise PciProbeError(f"{bdf:#x}: {vendor:04x}:{pci_id:04x} is not modern virtio")
        self._device_id = pci_id - VP.VIRTIO_PCI_DEVICE_ID_BASE
        caps, self._msix_cap = find_capabilities(bus, bdf)
        self.common = self._locate(
            caps, VP.VIRTIO_PCI_CAP_COMMON_CFG, VP.VIRTIO_PCI_COMMON_CFG_SIZEOF
        )
        self.isr = self._locate(caps, VP.VIRTIO_PCI_CAP_ISR_CFG, 1)
        self.notify_base = self._locate(caps, VP.VIRTIO_PCI_CAP_NOTIFY_CFG, 2)
        self.notify_multiplier = caps[VP.VIRTIO_PCI_CAP_NOTIFY_CFG].extra
        dev = caps.get(VP.VIRTIO_PCI_CAP_DEVICE_CFG)
        self.device_cfg = self._locate(caps, VP.VIRTIO_PCI_CAP_DEVICE_CFG, 0) if dev else None
        self.device_cfg_len = dev.length if dev else 0
        self._features = 0
        self._notify_off: dict[int, int] = {}
        self._notify_data: dict[int, int] = {}
        self._pending = InterruptFlags.NONE
        self._vectors: dict[tuple[int, int], int] = {}  # (address, data) -> vector
        self.msix_table = 0  # guest-physical address of the MSI-X table, once set up
        self.msix_vectors = self._setup_msix(msi) if msi is not None else 0

    def _locate(self, caps: dict[int, VirtioCapInfo], cfg_type: int, min_len: int) -> int:
        info = caps.get(cfg_type)
        if info is None:
            raise PciProbeError(f"{self.bdf:#x}: no virtio capability of type {cfg_type}")
        if info.length < min_len:
            raise PciProbeError(f"{self.bdf:#x}: capability type {cfg_type} too short")
        base = read_bar_address(self.bus, self.bdf, info.bar)
        if not base:
            raise PciProbeError(f"{self.bdf:#x}: BAR {info.bar} is not assigned")
        return base + info.offset

    # -- register access -----------------------------------------------------------------
    def _cr(self, offset: int, size: int) -> int:
        return self.bus.mmio_read(self.common + offset, size)

    def _cw(self, offset: int, size: int, value: int) -> None:
        self.bus.mmio_write(self.common + offset, size, value)

    def _cfg16(self, offset: int) -> int:
        return self.bus.cfg_read(self.bdf, offset, 2)

    # -- MSI-X -----------------------------------------------------------------------------
    def _setup_msix(self, msi: MsiRoute) -> int:
        """Program and enable the MSI-X table; returns the vectors used (0: INT#x)."""
        cap = self._msix_cap
        if cap is None:
            return 0
        ctrl = self._cfg16(cap + P.PCI_MSIX_FLAGS)
        table_size = (ctrl & P.PCI_MSIX_FLAGS_QSIZE) + 1
        if table_size < 2:  # 4.1.5.1.2: MAY fall back to INT#x with a single vector
            return 0
        tbl = self.bus.cfg_read(self.bdf, cap + P.PCI_MSIX_TABLE, 4)
        table = read_bar_address(self.bus, self.bdf, tbl & P.PCI_MSIX_TABLE_BIR)
        table += tbl & P.PCI_MSIX_TABLE_OFFSET
        used = min(table_size, self.num_queues + 1)
        flags = cap + P.PCI_MSIX_FLAGS
        self.bus.cfg_write(self.bdf, flags, 2, P.PCI_MSIX_FLAGS_ENABLE | P.PCI_MSIX_FLAGS_MASKALL)
        for vector in range(used):
            addr, data = msi(vector)
            entry = table + vector * P.PCI_MSIX_ENTRY_SIZE
            self.bus.mmio_write(entry + P.PCI_MSIX_ENTRY_LOWER_ADDR, 4, addr & 0xFFFFFFFF)
            self.bus.mmio_write(entry + P.PCI_MSIX_ENTRY_UPPER_ADDR, 4, addr >> 32)
            self.bus.mmio_write(entry + P.PCI_MSIX_ENTRY_DATA, 4, data)
            self.bus.mmio_write(entry + P.PCI_MSIX_ENTRY_VECTOR_CTRL, 4, 0)
            self._vectors[(addr, data)] = vector
        self.bus.cfg_write(self.bdf, flags, 2, P.PCI_MSIX_FLAGS_ENABLE)
        command = self._cfg16(P.PCI_COMMAND) | P.PCI_COMMAND_INTX_DISABLE
        self.bus.cfg_write(self.bdf, P.PCI_COMMAND, 2, command)
        self.msix_table = table
        return used

    def queue_vector(self, index: int) -> int:
        """The vector this driver maps queue ``index`` to (NO_VECTOR without MSI-X)."""
        if not self.msix_vectors:
            return VP.VIRTIO_MSI_NO_VECTOR
        return min(1 + index, self.msix_vectors - 1)

    def handle_msi(self, address: int, data: int) -> bool:
        """An MSI arrived; returns whether it was one of this function's vectors."""
        vector = self._vectors.get((address, data))
        if vector is None:
            return False
        self._pending |= InterruptFlags.CONFIG if vector == 0 else InterruptFlags.QUEUE
        return True

    def _set_config_vector(self) -> None:
        if self.msix_vectors:
            self._cw(VP.VIRTIO_PCI_COMMON_MSIX, 2, 0)
            if self._cr(VP.VIRTIO_PCI_COMMON_MSIX, 2) != 0:
                raise PciProbeError("device refused the configuration MSI-X vector")

    # -- VirtioTransport -----------------------------------------------------------------
    @property
    def device_id(self) -> int:
        return self._device_id

    @property
    def dma(self) -> DmaPages:
        """The DMA window the guest OS gave this driver (``dma=``)."""
        if self._dma is None:
            raise NoDmaMemoryError("no DMA memory was given to this transport")
        return self._dma

    def get_features(self) -> int:
        features = 0
        for word in range(2):
            self._cw(VP.VIRTIO_PCI_COMMON_DFSELECT, 4, word)
            features |= self._cr(VP.VIRTIO_PCI_COMMON_DF, 4) << (32 * word)
        return features

    def set_features(self, features: int) -> None:
        for word in range(2):
            self._cw(VP.VIRTIO_PCI_COMMON_GFSELECT, 4, word)
            self._cw(VP.VIRTIO_PCI_COMMON_GF, 4, (features >> (32 * word)) & 0xFFFFFFFF)
        self._features = features

    def get_status(self) -> int:
        return self._cr(VP.VIRTIO_PCI_COMMON_STATUS, 1)

    def set_status(self, status: int) -> None:
        self._cw(VP.VIRTIO_PCI_COMMON_STATUS, 1, status)

    def reset(self) -> None:
        """4.1.4.3.2: write 0, then wait for device_status to read 0."""
        self.set_status(0)
        for _ in range(_WAIT_LIMIT):
            if self.get_status() == 0:
                break
        else:
            raise PciProbeError("device did not complete its reset")
        self._features = 0
        self._notify_off.clear()
        self._notify_data.clear()
        self._pending = InterruptFlags.NONE
        self._set_config_vector()  # vectors are unmapped by a reset (4.1.5.1.2)

    def read_config(self, offset: int, size: int) -> bytes:
        if self.device_cfg is None or offset < 0 or offset + size > self.device_cfg_len:
            raise ValueError(f"config [{offset}, +{size}) outside {self.device_cfg_len} bytes")
        return read_natural(self.bus.mmio_read, self.device_cfg + offset, size)

    def write_config(self, offset: int, data: bytes) -> None:
        if self.device_cfg is None or offset < 0 or offset + len(data) > self.device_cfg_len:
            raise ValueError("config write outside the device configuration")
        write_natural(self.bus.mmio_write, self.device_cfg + offset, data)

    @property
    def config_generation(self) -> int:
        return self._cr(VP.VIRTIO_PCI_COMMON_CFGGENERATION, 1)

    @property
    def num_queues(self) -> int:
        return self._cr(VP.VIRTIO_PCI_COMMON_NUMQ, 2)

    def _select(self, index: int) -> None:
        self._cw(VP.VIRTIO_PCI_COMMON_Q_SELECT, 2, index)

    def queue_max_size(self, index: int) -> int:
        if not 0 <= index < self.num_queues:
            return 0
        self._select(index)
        return self._cr(VP.VIRTIO_PCI_COMMON_Q_SIZE, 2)

    def setup_queue(self, index: int, size: int, desc: int, driver: int, device: int) -> None:
        self._select(index)
        self._cw(VP.VIRTIO_PCI_COMMON_Q_SIZE, 2, size)
        for off, addr in (
            (VP.VIRTIO_PCI_COMMON_Q_DESCLO, desc),
            (VP.VIRTIO_PCI_COMMON_Q_AVAILLO, driver),
            (VP.VIRTIO_PCI_COMMON_Q_USEDLO, device),
        ):
            self._cw(off, 4, addr & 0xFFFFFFFF)
            self._cw(off + 4, 4, addr >> 32)
        vector = self.queue_vector(index)
        if vector != VP.VIRTIO_MSI_NO_VECTOR:
            self._cw(VP.VIRTIO_PCI_COMMON_Q_MSIX, 2, vector)
            if self._cr(VP.VIRTIO_PCI_COMMON_Q_MSIX, 2) != vector:  # 4.1.5.1.2: verify
                raise PciProbeError(f"device refused MSI-X vector {vector} for queue {index}")
        self._notify_off[index] = self._cr(VP.VIRTIO_PCI_COMMON_Q_NOFF, 2)
        self._notify_data[index] = self._cr(VP.VIRTIO_PCI_COMMON_Q_NDATA, 2)

    def enable_queue(self, index: int) -> None:
        self._select(index)
        self._cw(VP.VIRTIO_PCI_COMMON_Q_ENABLE, 2, 1)

    def queue_enabled(self, index: int) -> bool:
        self._select(index)
        return bool(self._cr(VP.VIRTIO_PCI_COMMON_Q_ENABLE, 2))

    def reset_queue(self, index: int) -> None:
        """virtio 1.2 2.6.1 / 4.1.4.3.2: write 1 to queue_reset, wait for it to read 0."""
        self._select(index)
        self._cw(VP.VIRTIO_PCI_COMMON_Q_RESET, 2, 1)
        for _ in range(_WAIT_LIMIT):
            if not self._cr(VP.VIRTIO_PCI_COMMON_Q_RESET, 2):
                return
        raise PciProbeError(f"queue {index} reset did not complete")

    def notify(self, index: int, data: int | None = None) -> None:
        """4.1.5.2: write at cap.offset + queue_notify_off * notify_off_multiplier."""
        off = self._notify_off.get(index, index)
        addr = self.notify_base + off * self.notify_multiplier
        config_data = self._features >> S.VIRTIO_F_NOTIF_CONFIG_DATA & 1
        vqn = self._notify_data.get(index, index) if config_data else index
        if data is None:
            self.bus.mmio_write(addr, 2, vqn)
        else:
            self.bus.mmio_write(addr, 4, (data & ~0xFFFF) | vqn)

    def ack_interrupt(self) -> InterruptFlags:
        if self.msix_vectors:
            flags, self._pending = self._pending, InterruptFlags.NONE
            return flags
        return InterruptFlags(self.bus.mmio_read(self.isr, 1) & 3)
