"""`VirtioMmioDevice`: a virtio device model behind the virtio-mmio register layout,
version 2 (virtio 1.2 4.2).

Pure: the edge serving the guest's MMIO window (Xen ``IOREQ_TYPE_COPY`` ioreqs on Arm or
x86, or an in-process bus in tests) calls ``read`` / ``write`` with offsets into the
window and drains ``take_events()``: `InterruptLine` follows InterruptStatus (a level
interrupt: asserted while any bit is set, until InterruptACK clears them), plus
`QueueNotified`, `NeedsReset`, `DeviceActivated`, `DeviceReset`.

Control registers answer only 32-bit aligned accesses (4.2.2.2: the driver MUST use
them); any other access to them reads 0 and writes nothing. The device configuration
at 0x100 takes any width. Nothing raises.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from xenvirtio.mem.api import GuestMemory
from xenvirtio.spec import virtio as S
from xenvirtio.spec import virtio_mmio as M
from xenvirtio.transport.api import VirtioDevice
from xenvirtio.transport.core import DeviceTransportCore
from xenvirtio.transport.events import EventQueue, InterruptLine, TransportEvent
from xenvirtio.transport.queue_regs import QueueField
from xenvirtio.transport.registers import access_ok

DEFAULT_VENDOR_ID = 0x1AF4  # the virtio vendor id, as PCI uses it
_NO_REGION = 0xFFFFFFFF  # 4.2.2: length -1 / base ~0 for an unused SHM id
_Q = QueueField
_QUEUE_WRITES = {
    M.VIRTIO_MMIO_QUEUE_NUM: _Q.SIZE,
    M.VIRTIO_MMIO_QUEUE_READY: _Q.ENABLE,
    M.VIRTIO_MMIO_QUEUE_DESC_LOW: _Q.DESC_LO,
    M.VIRTIO_MMIO_QUEUE_DESC_HIGH: _Q.DESC_HI,
    M.VIRTIO_MMIO_QUEUE_AVAIL_LOW: _Q.DRIVER_LO,
    M.VIRTIO_MMIO_QUEUE_AVAIL_HIGH: _Q.DRIVER_HI,
    M.VIRTIO_MMIO_QUEUE_USED_LOW: _Q.DEVICE_LO,
    M.VIRTIO_MMIO_QUEUE_USED_HIGH: _Q.DEVICE_HI,
    M.VIRTIO_MMIO_QUEUE_RESET: _Q.RESET,
}


class VirtioMmioDevice:
    """One virtio-mmio device window around a `VirtioDevice` and the guest's memory.

    ``shm_regions`` maps a shared memory region id to ``(base, length)`` (4.2.2, SHMSel).
    """

    def __init__(
        self,
        device: VirtioDevice,
        mem: GuestMemory,
        *,
        vendor_id: int = DEFAULT_VENDOR_ID,
        shm_regions: Mapping[int, tuple[int, int]] | None = None,
        wakeup: Callable[[], None] | None = None,
    ) -> None:
        self.events = EventQueue(wakeup)
        # virtio-mmio has no queue_notify_data register to carry NOTIF_CONFIG_DATA
        self.core = DeviceTransportCore(
            device, mem, self, self.events, unsupported_features=1 << S.VIRTIO_F_NOTIF_CONFIG_DATA
        )
        self.vendor_id = vendor_id & 0xFFFFFFFF
        self.shm_regions = dict(shm_regions or {})
        self.shm_sel = 0
        self.interrupt_status = 0
        self._line = False
        config_end = M.VIRTIO_MMIO_CONFIG + device.config.size
        self.region_size = max(M.VIRTIO_MMIO_REGION_SIZE, (config_end + 0xFF) & ~0xFF)
        core = self.core
        self._readers: dict[int, Callable[[], int]] = {
            M.VIRTIO_MMIO_MAGIC_VALUE: lambda: M.VIRTIO_MMIO_MAGIC,
            M.VIRTIO_MMIO_VERSION: lambda: M.VIRTIO_MMIO_VERSION_2,
            M.VIRTIO_MMIO_DEVICE_ID: lambda: device.device_id,
            M.VIRTIO_MMIO_VENDOR_ID: lambda: self.vendor_id,
            M.VIRTIO_MMIO_DEVICE_FEATURES: core.device_feature_word,
            M.VIRTIO_MMIO_QUEUE_NUM_MAX: lambda: core.read_queue(core.queue_select, _Q.MAX_SIZE),
            M.VIRTIO_MMIO_QUEUE_READY: lambda: core.read_queue(core.queue_select, _Q.ENABLE),
            M.VIRTIO_MMIO_INTERRUPT_STATUS: lambda: self.interrupt_status,
            M.VIRTIO_MMIO_STATUS: lambda: core.status,
            M.VIRTIO_MMIO_SHM_LEN_LOW: lambda: self._shm(1, 0),
            M.VIRTIO_MMIO_SHM_LEN_HIGH: lambda: self._shm(1, 32),
            M.VIRTIO_MMIO_SHM_BASE_LOW: lambda: self._shm(0, 0),
            M.VIRTIO_MMIO_SHM_BASE_HIGH: lambda: self._shm(0, 32),
            M.VIRTIO_MMIO_QUEUE_RESET: lambda: core.read_queue(core.queue_select, _Q.RESET),
            M.VIRTIO_MMIO_CONFIG_GENERATION: core.config_generation,
        }

    # -- the edge's entry points ---------------------------------------------------------
    def take_events(self) -> list[TransportEvent]:
        return self.events.take()

    def read(self, offset: int, size: int) -> int:
        if not access_ok(size) or offset < 0 or offset + size > self.region_size:
            return 0
        if offset >= M.VIRTIO_MMIO_CONFIG:
            return self.core.read_config(offset - M.VIRTIO_MMIO_CONFIG, size)
        if size != 4 or offset % 4 or offset + size > M.VIRTIO_MMIO_CONFIG:
            return 0
        reader = self._readers.get(offset)
        return reader() & 0xFFFFFFFF if reader is not None else 0  # write-only: 0

    def write(self, offset: int, size: int, value: int) -> None:
        if not access_ok(size) or offset < 0 or offset + size > self.region_size:
            return
        if offset >= M.VIRTIO_MMIO_CONFIG:
            self.core.write_config(offset - M.VIRTIO_MMIO_CONFIG, size, value)
            return
        if size != 4 or offset % 4 or offset + size > M.VIRTIO_MMIO_CONFIG:
            return
        self._write_register(offset, value & 0xFFFFFFFF)

    def _write_register(self, offset: int, value: int) -> None:
        core = self.core
        field = _QUEUE_WRITES.get(offset)
        if field is not None:
            core.write_queue(core.queue_select, field, value)
        elif offset == M.VIRTIO_MMIO_QUEUE_NOTIFY:
            index = core.queue_for_data(value)
            if index is not None:
                core.notify(index, value)
        elif offset == M.VIRTIO_MMIO_INTERRUPT_ACK:
            self.interrupt_status &= ~value
            self._update_line()
        elif offset == M.VIRTIO_MMIO_STATUS:
            core.write_status(value)
        elif offset == M.VIRTIO_MMIO_DEVICE_FEATURES_SEL:
            core.device_feature_select = value
        elif offset == M.VIRTIO_MMIO_DRIVER_FEATURES_SEL:
            core.driver_feature_select = value
        elif offset == M.VIRTIO_MMIO_DRIVER_FEATURES:
            core.write_driver_feature_word(value)
        elif offset == M.VIRTIO_MMIO_QUEUE_SEL:
            core.queue_select = value
        elif offset == M.VIRTIO_MMIO_SHM_SEL:
            self.shm_sel = value
        # read-only registers ignore writes

    def _shm(self, which: int, shift: int) -> int:
        region = self.shm_regions.get(self.shm_sel)
        if region is None:
            return _NO_REGION
        return (region[which] >> shift) & 0xFFFFFFFF

    # -- interrupts (InterruptSignals for the core) --------------------------------------
    def queue_interrupt(self, index: int) -> None:
        self.interrupt_status |= M.VIRTIO_MMIO_INT_VRING
        self._update_line()

    def config_interrupt(self) -> None:
        self.interrupt_status |= M.VIRTIO_MMIO_INT_CONFIG
        self._update_line()

    def reset_interrupts(self) -> None:
        """4.2.2.1: a reset clears InterruptStatus."""
        self.interrupt_status = 0
        self._update_line()

    def _update_line(self) -> None:
        line = bool(self.interrupt_status)
        if line != self._line:
            self._line = line
            self.events.push(InterruptLine(line))

    @property
    def line(self) -> bool:
        """Whether the interrupt line is asserted."""
        return self._line
