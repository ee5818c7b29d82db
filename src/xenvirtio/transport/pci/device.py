"""`VirtioPciFunction`: a virtio device model served as a modern virtio-pci function.

Pure: the edge that receives the guest's accesses (Xen ``IOREQ_TYPE_PCI_CONFIG`` and
``IOREQ_TYPE_COPY`` ioreqs, or an in-process bus in tests) calls ``config_read`` /
``config_write`` and, after mapping an address to a BAR with ``decode``, ``bar_read`` /
``bar_write``; then it drains ``take_events()`` (`MsiMessage`, `InterruptLine`,
`BarDecodeChanged`, `QueueNotified`, `NeedsReset`, ...).

BAR 0 (memory, 64-bit unless ``bar64=False``, 32 KiB) holds every structure:

    0x0000  common configuration  (struct virtio_pci_common_cfg, 0x3c bytes)
    0x1000  ISR status            (1 byte, read-to-clear)
    0x2000  device configuration  (the device's ConfigSpace)
    0x3000  notifications         (queue i at 0x3000 + 4*i: notify_off_multiplier 4)
    0x4000  MSI-X table           (16 bytes per vector)
    0x6000  MSI-X PBA

Capability list: MSI-X, then virtio COMMON, NOTIFY, ISR, DEVICE (if the device has
configuration) and PCI_CFG (virtio 1.2 4.1.4).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from xenvirtio.mem.api import GuestMemory
from xenvirtio.spec import pci as P
from xenvirtio.spec import virtio_pci as VP
from xenvirtio.transport.api import VirtioDevice
from xenvirtio.transport.core import DeviceTransportCore
from xenvirtio.transport.events import EventQueue, InterruptLine, TransportEvent
from xenvirtio.transport.pci.caps import VirtioPciCap, VirtioPciCfgCap, VirtioPciNotifyCap
from xenvirtio.transport.pci.common_cfg import CommonCfg
from xenvirtio.transport.pci.config_space import BarSpec, Capability, PciConfigSpace, PciIdentity
from xenvirtio.transport.pci.msix import MsixCapability, MsixTable
from xenvirtio.transport.queue_regs import NO_VECTOR
from xenvirtio.transport.registers import access_ok, size_mask
from xenvirtio.virtio.queue import DeviceQueue

VIRTIO_BAR = 0
BAR_SIZE = 0x8000
COMMON_CFG_OFFSET = 0x0000
ISR_OFFSET = 0x1000
DEVICE_CFG_OFFSET = 0x2000
NOTIFY_OFFSET = 0x3000
MSIX_TABLE_OFFSET = 0x4000
MSIX_PBA_OFFSET = 0x6000
REGION_SIZE = 0x1000
NOTIFY_OFF_MULTIPLIER = 4  # a power of 2 and a multiple of 4 (4.1.4.4.1)
MAX_QUEUES = REGION_SIZE // NOTIFY_OFF_MULTIPLIER
MAX_VECTORS = (MSIX_PBA_OFFSET - MSIX_TABLE_OFFSET) // P.PCI_MSIX_ENTRY_SIZE

_CLASS_BY_DEVICE = {1: P.PCI_CLASS_NETWORK_ETHERNET, 2: P.PCI_CLASS_STORAGE_SCSI}
_CLASS_BY_DEVICE[3] = P.PCI_CLASS_COMMUNICATION_OTHER


class VirtioPciFunction:
    """One virtio-pci function around a `VirtioDevice` and the guest's memory."""

    def __init__(
        self,
        device: VirtioDevice,
        mem: GuestMemory,
        *,
        vectors: int | None = None,
        bar64: bool = True,
        class_code: int | None = None,
        subsystem_vendor_id: int = VP.VIRTIO_PCI_VENDOR_ID,
        subsystem_id: int | None = None,
        notify_data: Sequence[int] | None = None,
        wakeup: Callable[[], None] | None = None,
    ) -> None:
        nq = len(device.queue_max_sizes)
        if nq > MAX_QUEUES or device.config.size > REGION_SIZE:
            raise ValueError(f"at most {MAX_QUEUES} queues and 4 KiB of configuration")
        self.events = EventQueue(wakeup)
        self.core = DeviceTransportCore(device, mem, self, self.events, notify_data=notify_data)
        nvec = min(nq + 1, MAX_VECTORS) if vectors is None else vectors
        if not 1 <= nvec <= MAX_VECTORS:
            raise ValueError(f"MSI-X vectors must be 1..{MAX_VECTORS}")
        self.msix = MsixTable(nvec, self.events)
        self.common = CommonCfg(self.core, nvec, lambda index: index)
        self.isr = 0
        self._line = False
        pci_id = VP.virtio_pci_device_id(device.device_id)
        identity = PciIdentity(
            vendor_id=VP.VIRTIO_PCI_VENDOR_ID,
            device_id=pci_id,
            revision=VP.VIRTIO_PCI_MIN_REVISION,
            class_code=_CLASS_BY_DEVICE.get(device.device_id, P.PCI_CLASS_OTHERS)
            if class_code is None
            else class_code,
            subsystem_vendor_id=subsystem_vendor_id,
            subsystem_id=pci_id if subsystem_id is None else subsystem_id,
        )
        bar = BarSpec(VIRTIO_BAR, BAR_SIZE, mem64=bar64)
        self.cfg = PciConfigSpace(
            identity, [bar], self._capabilities(nq), self.events, self._command_changed
        )

    def _capabilities(self, nq: int) -> list[Capability]:
        b = VIRTIO_BAR
        caps: list[Capability] = [
            MsixCapability(self.msix, b, MSIX_TABLE_OFFSET, b, MSIX_PBA_OFFSET, self._msix_changed),
            VirtioPciCap(
                VP.VIRTIO_PCI_CAP_COMMON_CFG, b, COMMON_CFG_OFFSET, VP.VIRTIO_PCI_COMMON_CFG_SIZEOF
            ),
            VirtioPciNotifyCap(b, NOTIFY_OFFSET, max(nq, 1) * NOTIFY_OFF_MULTIPLIER, 4),
            VirtioPciCap(VP.VIRTIO_PCI_CAP_ISR_CFG, b, ISR_OFFSET, 1),
        ]
        size = self.core.device.config.size
        if size:
            caps.append(VirtioPciCap(VP.VIRTIO_PCI_CAP_DEVICE_CFG, b, DEVICE_CFG_OFFSET, size))
        caps.append(VirtioPciCfgCap(self.bar_read, self.bar_write))
        return caps

    # -- the edge's entry points ---------------------------------------------------------
    def take_events(self) -> list[TransportEvent]:
        return self.events.take()

    def decode(self, address: int, size: int) -> tuple[int, int] | None:
        """``(bar, offset)`` for a memory access at a guest-physical address, if this
        function claims it (memory decoding on, inside an assigned BAR)."""
        return self.cfg.decode(address, size)

    def config_read(self, offset: int, size: int) -> int:
        return self.cfg.read(offset, size)

    def config_write(self, offset: int, size: int, value: int) -> None:
        self.cfg.write(offset, size, value)

    def bar_read(self, bar: int, offset: int, size: int) -> int:
        if not access_ok(size):
            return 0
        if bar != VIRTIO_BAR or offset < 0 or offset + size > BAR_SIZE:
            return size_mask(size)
        region, off = divmod(offset, REGION_SIZE)
        if off + size > REGION_SIZE and region not in (4, 5):
            return 0  # spans two structures: nothing is described there
        if region == 0:
            return self.common.read(off, size)
        if region == 1:
            return self._isr_read(off, size)
        if region == 2:
            return self.core.read_config(off, size)
        if region in (4, 5):
            return self.msix.table_read(offset - MSIX_TABLE_OFFSET, size)
        if region == 6:
            return self.msix.pba_read(off, size)
        return 0  # notify region (write-only) and padding

    def bar_write(self, bar: int, offset: int, size: int, value: int) -> None:
        if not access_ok(size) or bar != VIRTIO_BAR or offset < 0 or offset + size > BAR_SIZE:
            return
        region, off = divmod(offset, REGION_SIZE)
        value &= size_mask(size)
        if off + size > REGION_SIZE and region not in (4, 5):
            return
        if region == 0:
            self.common.write(off, size, value)
        elif region == 2:
            self.core.write_config(off, size, value)
        elif region == 3:
            self.core.notify(off // NOTIFY_OFF_MULTIPLIER, value)
        elif region in (4, 5):
            self.msix.table_write(offset - MSIX_TABLE_OFFSET, size, value)

    # -- interrupts (InterruptSignals for the core) --------------------------------------
    def queue_interrupt(self, index: int) -> None:
        """virtio 1.2 4.1.5.4: MSI-X vector of the queue, or ISR bit 0 and INT#x."""
        if self.msix.enabled:
            q = self.core.queue(index)
            if q is not None and q.vector != NO_VECTOR:
                self.msix.fire(q.vector)
        else:
            self.isr |= VP.VIRTIO_PCI_ISR_QUEUE
            self._update_line()

    def config_interrupt(self) -> None:
        """virtio 1.2 4.1.5.5: ISR bit 1 always, then MSI-X or INT#x."""
        self.isr |= VP.VIRTIO_PCI_ISR_CONFIG
        if self.msix.enabled:
            if self.core.config_vector != NO_VECTOR:
                self.msix.fire(self.core.config_vector)
        else:
            self._update_line()

    def reset_interrupts(self) -> None:
        self.isr = 0
        self._update_line()

    def _isr_read(self, off: int, size: int) -> int:
        if off != 0:
            return 0
        value, self.isr = self.isr, 0  # 4.1.4.5.1: reset to 0 on driver read
        self._update_line()
        return value

    def _update_line(self) -> None:
        """INT#x follows ISR while MSI-X is off, unless Interrupt Disable is set."""
        active = bool(self.isr) and not self.msix.enabled
        self.cfg.interrupt_status = active
        line = active and not self.cfg.command & P.PCI_COMMAND_INTX_DISABLE
        if line != self._line:
            self._line = line
            self.events.push(InterruptLine(line))

    def _msix_changed(self) -> None:
        self._update_line()
        self.msix.deliver_pending()

    def _command_changed(self, old: int, new: int) -> None:
        self.msix.bus_master = bool(new & P.PCI_COMMAND_MASTER)
        self._update_line()
        self.msix.deliver_pending()

    # -- conveniences for the device side ------------------------------------------------
    @property
    def queues(self) -> list[DeviceQueue | None]:
        """The device queues handed to the model at activation (empty before)."""
        ctx = self.core.context
        return [] if ctx is None else ctx.queues
