"""`VirtioMmioDriver`: the guest side of a virtio-mmio device (version 2), over an
`MmioBus` port (on Xen: the guest's loads and stores to the window, which become ioreqs
to the device model).

Discovery (4.2.3.1.1): a window whose MagicValue is not "virt" or whose Version is not 2
is not one we drive (`MmioProbeError`); DeviceID 0 is a placeholder that `probe_mmio`
skips silently, as the spec requires.
"""

from __future__ import annotations

from typing import Protocol

from xenvirtio.spec import virtio as S
from xenvirtio.spec import virtio_mmio as M
from xenvirtio.transport.api import InterruptFlags
from xenvirtio.transport.dma import DmaPages, NoDmaMemoryError
from xenvirtio.transport.registers import read_natural, write_natural

_WAIT_LIMIT = 1000
_MAX_QUEUES = 1024  # MMIO has no queue count: probe QueueNumMax up to this bound


class MmioBus(Protocol):
    """Guest-physical memory-mapped I/O, one access at a time."""

    def read(self, address: int, size: int) -> int: ...

    def write(self, address: int, size: int, value: int) -> None: ...


class MmioProbeError(Exception):
    """Not a virtio-mmio version 2 device, or one that misbehaves."""


def probe_mmio(bus: MmioBus, base: int) -> VirtioMmioDriver | None:
    """A driver for the window at ``base``, or None for a DeviceID 0 placeholder."""
    if bus.read(base + M.VIRTIO_MMIO_DEVICE_ID, 4) == 0:
        return None
    return VirtioMmioDriver(bus, base)


class VirtioMmioDriver:
    """A guest driver's `VirtioTransport` over one virtio-mmio window."""

    def __init__(self, bus: MmioBus, base: int, *, dma: DmaPages | None = None) -> None:
        self.bus, self.base = bus, base
        self._dma = dma
        magic = self._r(M.VIRTIO_MMIO_MAGIC_VALUE)
        if magic != M.VIRTIO_MMIO_MAGIC:
            raise MmioProbeError(f"{base:#x}: bad magic {magic:#x}")
        version = self._r(M.VIRTIO_MMIO_VERSION)
        if version != M.VIRTIO_MMIO_VERSION_2:
            raise MmioProbeError(f"{base:#x}: version {version} (only 2 is supported)")
        self._device_id = self._r(M.VIRTIO_MMIO_DEVICE_ID)
        if self._device_id == 0:
            raise MmioProbeError(f"{base:#x}: DeviceID 0 is a placeholder")
        self.vendor_id = self._r(M.VIRTIO_MMIO_VENDOR_ID)
        self._features = 0
        self._num_queues: int | None = None

    def _r(self, offset: int) -> int:
        return self.bus.read(self.base + offset, 4)

    def _w(self, offset: int, value: int) -> None:
        self.bus.write(self.base + offset, 4, value & 0xFFFFFFFF)

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
        for word in range(2):  # 4.2.2.2: select before reading DeviceFeatures
            self._w(M.VIRTIO_MMIO_DEVICE_FEATURES_SEL, word)
            features |= self._r(M.VIRTIO_MMIO_DEVICE_FEATURES) << (32 * word)
        return features

    def set_features(self, features: int) -> None:
        for word in range(2):
            self._w(M.VIRTIO_MMIO_DRIVER_FEATURES_SEL, word)
            self._w(M.VIRTIO_MMIO_DRIVER_FEATURES, features >> (32 * word))
        self._features = features

    def get_status(self) -> int:
        return self._r(M.VIRTIO_MMIO_STATUS) & 0xFF

    def set_status(self, status: int) -> None:
        self._w(M.VIRTIO_MMIO_STATUS, status)

    def reset(self) -> None:
        self.set_status(0)
        for _ in range(_WAIT_LIMIT):
            if self.get_status() == 0:
                break
        else:
            raise MmioProbeError("device did not complete its reset")
        self._features = 0

    def read_config(self, offset: int, size: int) -> bytes:
        if offset < 0 or size < 0:
            raise ValueError("negative config offset or size")
        return read_natural(self.bus.read, self.base + M.VIRTIO_MMIO_CONFIG + offset, size)

    def write_config(self, offset: int, data: bytes) -> None:
        if offset < 0:
            raise ValueError("negative config offset")
        write_natural(self.bus.write, self.base + M.VIRTIO_MMIO_CONFIG + offset, data)

    @property
    def config_generation(self) -> int:
        return self._r(M.VIRTIO_MMIO_CONFIG_GENERATION)

    @property
    def num_queues(self) -> int:
        """Queues up to the first one whose QueueNumMax reads 0 (cached)."""
        if self._num_queues is None:
            count = 0
            while count < _MAX_QUEUES and self.queue_max_size(count):
                count += 1
            self._num_queues = count
        return self._num_queues

    def queue_max_size(self, index: int) -> int:
        self._w(M.VIRTIO_MMIO_QUEUE_SEL, index)
        return self._r(M.VIRTIO_MMIO_QUEUE_NUM_MAX)

    def setup_queue(self, index: int, size: int, desc: int, driver: int, device: int) -> None:
        self._w(M.VIRTIO_MMIO_QUEUE_SEL, index)
        if self._r(M.VIRTIO_MMIO_QUEUE_READY):  # 4.2.3.2: the queue must not be in use
            raise MmioProbeError(f"queue {index} is already in use")
        self._w(M.VIRTIO_MMIO_QUEUE_NUM, size)
        for low, addr in (
            (M.VIRTIO_MMIO_QUEUE_DESC_LOW, desc),
            (M.VIRTIO_MMIO_QUEUE_AVAIL_LOW, driver),
            (M.VIRTIO_MMIO_QUEUE_USED_LOW, device),
        ):
            self._w(low, addr)
            self._w(low + 4, addr >> 32)

    def enable_queue(self, index: int) -> None:
        self._w(M.VIRTIO_MMIO_QUEUE_SEL, index)
        self._w(M.VIRTIO_MMIO_QUEUE_READY, 1)

    def queue_enabled(self, index: int) -> bool:
        self._w(M.VIRTIO_MMIO_QUEUE_SEL, index)
        return bool(self._r(M.VIRTIO_MMIO_QUEUE_READY))

    def disable_queue(self, index: int) -> None:
        """4.2.2.2: write 0 to QueueReady and read it back."""
        self._w(M.VIRTIO_MMIO_QUEUE_SEL, index)
        self._w(M.VIRTIO_MMIO_QUEUE_READY, 0)
        if self._r(M.VIRTIO_MMIO_QUEUE_READY):
            raise MmioProbeError(f"queue {index} did not stop")

    def reset_queue(self, index: int) -> None:
        self._w(M.VIRTIO_MMIO_QUEUE_SEL, index)
        self._w(M.VIRTIO_MMIO_QUEUE_RESET, 1)
        for _ in range(_WAIT_LIMIT):
            if not self._r(M.VIRTIO_MMIO_QUEUE_RESET):
                return
        raise MmioProbeError(f"queue {index} reset did not complete")

    def notify(self, index: int, data: int | None = None) -> None:
        """4.2.3.3: the queue index, or the VIRTIO_F_NOTIFICATION_DATA value."""
        if data is None or not self._features >> S.VIRTIO_F_NOTIFICATION_DATA & 1:
            self._w(M.VIRTIO_MMIO_QUEUE_NOTIFY, index)
        else:
            self._w(M.VIRTIO_MMIO_QUEUE_NOTIFY, (data & ~0xFFFF) | index)

    def ack_interrupt(self) -> InterruptFlags:
        status = self._r(M.VIRTIO_MMIO_INTERRUPT_STATUS)
        if status:
            self._w(M.VIRTIO_MMIO_INTERRUPT_ACK, status)
        return InterruptFlags(status & 3)

    def shm_region(self, shm_id: int) -> tuple[int, int] | None:
        """``(base, length)`` of shared memory region ``shm_id``, None if absent."""
        self._w(M.VIRTIO_MMIO_SHM_SEL, shm_id)
        length = self._r(M.VIRTIO_MMIO_SHM_LEN_LOW) | self._r(M.VIRTIO_MMIO_SHM_LEN_HIGH) << 32
        if length == (1 << 64) - 1:
            return None
        base = self._r(M.VIRTIO_MMIO_SHM_BASE_LOW) | self._r(M.VIRTIO_MMIO_SHM_BASE_HIGH) << 32
        return base, length
