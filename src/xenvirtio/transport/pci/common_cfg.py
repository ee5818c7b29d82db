"""struct virtio_pci_common_cfg (virtio 1.2 4.1.4.3) over `DeviceTransportCore`.

64-bit queue addresses are two 32-bit fields (4.1.3: low part, then high part, each
accessible on its own). Read-only fields ignore writes; queue fields address the queue
``queue_select`` names, and a queue that does not exist reads 0 (``queue_size`` 0 is
"unavailable"). The MSI-X vector fields read back NO_VECTOR when the driver asked for a
vector outside the table (4.1.5.1.2: a mapping failure).
"""

from __future__ import annotations

from collections.abc import Callable

from xenvirtio.spec import virtio_pci as VP
from xenvirtio.transport.core import DeviceTransportCore
from xenvirtio.transport.queue_regs import NO_VECTOR, QueueField
from xenvirtio.transport.registers import Field, Layout

_Q = QueueField
# (name, offset, size, queue field or None for device-wide fields)
_FIELDS: tuple[tuple[str, int, int, QueueField | None], ...] = (
    ("device_feature_select", VP.VIRTIO_PCI_COMMON_DFSELECT, 4, None),
    ("device_feature", VP.VIRTIO_PCI_COMMON_DF, 4, None),
    ("driver_feature_select", VP.VIRTIO_PCI_COMMON_GFSELECT, 4, None),
    ("driver_feature", VP.VIRTIO_PCI_COMMON_GF, 4, None),
    ("config_msix_vector", VP.VIRTIO_PCI_COMMON_MSIX, 2, None),
    ("num_queues", VP.VIRTIO_PCI_COMMON_NUMQ, 2, None),
    ("device_status", VP.VIRTIO_PCI_COMMON_STATUS, 1, None),
    ("config_generation", VP.VIRTIO_PCI_COMMON_CFGGENERATION, 1, None),
    ("queue_select", VP.VIRTIO_PCI_COMMON_Q_SELECT, 2, None),
    ("queue_size", VP.VIRTIO_PCI_COMMON_Q_SIZE, 2, _Q.SIZE),
    ("queue_msix_vector", VP.VIRTIO_PCI_COMMON_Q_MSIX, 2, _Q.VECTOR),
    ("queue_enable", VP.VIRTIO_PCI_COMMON_Q_ENABLE, 2, _Q.ENABLE),
    ("queue_notify_off", VP.VIRTIO_PCI_COMMON_Q_NOFF, 2, None),
    ("queue_desc_lo", VP.VIRTIO_PCI_COMMON_Q_DESCLO, 4, _Q.DESC_LO),
    ("queue_desc_hi", VP.VIRTIO_PCI_COMMON_Q_DESCHI, 4, _Q.DESC_HI),
    ("queue_driver_lo", VP.VIRTIO_PCI_COMMON_Q_AVAILLO, 4, _Q.DRIVER_LO),
    ("queue_driver_hi", VP.VIRTIO_PCI_COMMON_Q_AVAILHI, 4, _Q.DRIVER_HI),
    ("queue_device_lo", VP.VIRTIO_PCI_COMMON_Q_USEDLO, 4, _Q.DEVICE_LO),
    ("queue_device_hi", VP.VIRTIO_PCI_COMMON_Q_USEDHI, 4, _Q.DEVICE_HI),
    ("queue_notify_data", VP.VIRTIO_PCI_COMMON_Q_NDATA, 2, _Q.NOTIFY_DATA),
    ("queue_reset", VP.VIRTIO_PCI_COMMON_Q_RESET, 2, _Q.RESET),
)
COMMON_CFG_LAYOUT = Layout(
    [Field(name, off, size) for name, off, size, _ in _FIELDS], VP.VIRTIO_PCI_COMMON_CFG_SIZEOF
)
_QUEUE_FIELDS = {name: qf for name, _, _, qf in _FIELDS if qf is not None}


class CommonCfg:
    """The common configuration structure of one function.

    ``notify_off(index)`` gives ``queue_notify_off``; ``vectors`` is the MSI-X table size.
    """

    def __init__(
        self, core: DeviceTransportCore, vectors: int, notify_off: Callable[[int], int]
    ) -> None:
        self.core = core
        self.vectors = vectors
        self.notify_off = notify_off
        self._getters: dict[str, Callable[[], int]] = {
            "device_feature_select": lambda: core.device_feature_select,
            "device_feature": core.device_feature_word,
            "driver_feature_select": lambda: core.driver_feature_select,
            "driver_feature": core.driver_feature_word,
            "config_msix_vector": lambda: core.config_vector,
            "num_queues": lambda: len(core.queues),
            "device_status": lambda: core.status,
            "config_generation": lambda: core.config_generation() & 0xFF,
            "queue_select": lambda: core.queue_select,
            "queue_notify_off": self._notify_off,
        }

    def read(self, offset: int, size: int) -> int:
        return COMMON_CFG_LAYOUT.read(offset, size, self._get)

    def write(self, offset: int, size: int, value: int) -> None:
        COMMON_CFG_LAYOUT.write(offset, size, value, self._get, self._put)

    def _vector(self, value: int) -> int:
        return value if value < self.vectors else NO_VECTOR

    def _get(self, f: Field) -> int:
        core = self.core
        qf = _QUEUE_FIELDS.get(f.name)
        if qf is not None:
            if qf is QueueField.SIZE and core.queue(core.queue_select) is None:
                return 0
            return core.read_queue(core.queue_select, qf)
        return self._getters[f.name]()

    def _notify_off(self) -> int:
        core = self.core
        return self.notify_off(core.queue_select) if core.queue(core.queue_select) else 0

    def _put(self, f: Field, value: int) -> None:
        core = self.core
        name = f.name
        qf = _QUEUE_FIELDS.get(name)
        if qf is QueueField.VECTOR:
            core.write_queue(core.queue_select, qf, self._vector(value))
        elif qf is QueueField.ENABLE:
            if value & 1:  # 4.1.4.3.2: the driver MUST NOT write 0 to queue_enable
                core.write_queue(core.queue_select, qf, 1)
        elif qf is not None:
            core.write_queue(core.queue_select, qf, value)
        elif name == "device_feature_select":
            core.device_feature_select = value
        elif name == "driver_feature_select":
            core.driver_feature_select = value
        elif name == "driver_feature":
            core.write_driver_feature_word(value)
        elif name == "config_msix_vector":
            core.config_vector = self._vector(value)
        elif name == "device_status":
            core.write_status(value)
        elif name == "queue_select":
            core.queue_select = value
        # device_feature, num_queues, config_generation, queue_notify_off: read-only
