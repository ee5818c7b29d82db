"""`DeviceTransportCore`: the device-side state every virtio transport shares.

PCI's common configuration structure, MMIO's register file and (later) XenBus nodes are
three encodings of the same state: the status field, feature words selected by
``*_feature_select``, per-queue registers (size, enable, ring addresses, interrupt vector,
notify data, reset) and the configuration generation. This module holds that state, runs
the status machine of `xenvirtio.virtio.status`, and drives the device model:

- FEATURES_OK: the generic checks of virtio 1.2 2.2 plus ``device.accept_features``;
- DRIVER_OK: `QueueConfig` + device queues for the enabled queues, ``device.activate``;
- status 0: ``device.reset()`` and every register back to its reset value (2.4);
- RING_RESET: one queue back to its reset state (2.6.1);
- a `VirtqueueError` from the device: DEVICE_NEEDS_RESET plus a configuration change
  notification when DRIVER_OK is set (2.1.2).

Transports own the encoding and how interrupts travel (`InterruptSignals`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Protocol

from xenvirtio.mem.api import GuestMemory, GuestMemoryError
from xenvirtio.spec import virtio as S
from xenvirtio.spec.virtio import DeviceStatus
from xenvirtio.transport.api import ActivationContext, VirtioDevice
from xenvirtio.transport.events import (
    DeviceActivated,
    DeviceReset,
    EventQueue,
    NeedsReset,
    QueueNotified,
)
from xenvirtio.transport.queue_regs import ADDR_FIELDS, NO_VECTOR, QueueField, QueueRegs
from xenvirtio.virtio.config import ConfigAccessError
from xenvirtio.virtio.features import device_accepts
from xenvirtio.virtio.queue import (
    DeviceQueue,
    QueueConfig,
    QueueConfigError,
    RingFormat,
    VirtqueueError,
    make_device_queue,
)
from xenvirtio.virtio.status import DeviceState, DeviceStatusMachine, StatusInput

FEATURE_WORDS = 4  # driver feature words kept (bits 0..127); others are never offered
DEVICE_ERRORS = (VirtqueueError, GuestMemoryError, ConfigAccessError)


class InterruptSignals(Protocol):
    """How a transport delivers the interrupts the core decides on."""

    def queue_interrupt(self, index: int) -> None: ...

    def config_interrupt(self) -> None: ...

    def reset_interrupts(self) -> None:
        """Device reset: clear interrupt status (ISR / InterruptStatus)."""
        ...


class _Port:
    """The `Interrupt` a device gets at activation; dead after the next reset."""

    __slots__ = ("_core", "_epoch")

    def __init__(self, core: DeviceTransportCore, epoch: int) -> None:
        self._core, self._epoch = core, epoch

    def trigger_queue(self, index: int) -> None:
        core = self._core
        if core.epoch == self._epoch and 0 <= index < len(core.queues):
            core.signals.queue_interrupt(index)

    def trigger_config(self) -> None:
        if self._core.epoch == self._epoch:
            self._core.signals.config_interrupt()


class DeviceTransportCore:
    """Transport-independent device-side state for one device instance."""

    def __init__(
        self,
        device: VirtioDevice,
        mem: GuestMemory,
        signals: InterruptSignals,
        events: EventQueue,
        *,
        notify_data: Sequence[int] | None = None,
        unsupported_features: int = 0,
    ) -> None:
        """``notify_data[i]`` is queue i's ``queue_notify_data`` (default: i);
        ``unsupported_features`` are bits the transport cannot carry, never offered."""
        maxes = tuple(device.queue_max_sizes)
        if any(not 0 <= m <= S.VIRTQ_MAX_SIZE for m in maxes) or len(maxes) > 0xFFFF:
            raise ValueError("queue sizes must be 0..32768, at most 65535 queues")
        data = list(range(len(maxes))) if notify_data is None else [d & 0xFFFF for d in notify_data]
        if len(data) != len(maxes) or len(set(data)) != len(data):
            raise ValueError("notify_data needs one distinct value per queue")
        self.device = device
        self.mem = mem
        self.signals = signals
        self.events = events
        self.unsupported_features = unsupported_features
        self.machine = DeviceStatusMachine()
        self.queues = [QueueRegs(i, m, d) for i, (m, d) in enumerate(zip(maxes, data, strict=True))]
        self.epoch = 0
        self._ctx: ActivationContext | None = None
        self._generation = 0
        self._seen_generation = device.config.generation
        self._clear_registers()

    def _clear_registers(self) -> None:
        self.device_feature_select = 0
        self.driver_feature_select = 0
        self.driver_features = 0
        self.negotiated = 0
        self.queue_select = 0
        self.config_vector = NO_VECTOR
        for q in self.queues:
            q.clear()

    # -- whole device ------------------------------------------------------------------
    @property
    def status(self) -> int:
        return self.machine.status

    @property
    def activated(self) -> bool:
        return self._ctx is not None

    @property
    def context(self) -> ActivationContext | None:
        """What the device model was activated with, until the next reset."""
        return self._ctx

    def has(self, bit: int) -> bool:
        """Whether feature ``bit`` was negotiated (FEATURES_OK accepted)."""
        return bool(self.negotiated >> bit & 1)

    @property
    def offered(self) -> int:
        """The features offered: the device's, minus what the transport cannot carry."""
        return self.device.avail_features & ~self.unsupported_features

    def device_feature_word(self) -> int:
        return (self.offered >> (32 * self.device_feature_select)) & 0xFFFFFFFF

    def driver_feature_word(self) -> int:
        return (self.driver_features >> (32 * self.driver_feature_select)) & 0xFFFFFFFF

    def write_driver_feature_word(self, value: int) -> None:
        """Ignored once FEATURES_OK is set (the features are fixed) and for words past
        `FEATURE_WORDS`, which hold no offered bit."""
        sel = self.driver_feature_select
        if self.status & DeviceStatus.FEATURES_OK or not 0 <= sel < FEATURE_WORDS:
            return
        shift = 32 * sel
        self.driver_features &= ~(0xFFFFFFFF << shift)
        self.driver_features |= (value & 0xFFFFFFFF) << shift

    def write_status(self, value: int) -> None:
        """A driver write of the device status field."""
        value &= 0xFF
        before_state, before = self.machine.state, self.status
        verdict = True
        if value & DeviceStatus.FEATURES_OK and not before & DeviceStatus.FEATURES_OK:
            verdict = self._features_verdict()
        state = self.machine.write(value, verdict)
        if value == 0:
            self._reset()
            return
        if self.status & DeviceStatus.FEATURES_OK and not before & DeviceStatus.FEATURES_OK:
            self.negotiated = self.driver_features
        if state is DeviceState.DRIVER_OK and before_state is not DeviceState.DRIVER_OK:
            self._activate()
        elif state is DeviceState.PROTOCOL_ERROR and before_state is not state:
            self._report_reset_needed(before, f"status write {value:#x} in {before_state.value}")

    def _features_verdict(self) -> bool:
        """virtio 1.2 2.2.2 / 3.1.1 step 5: accept only a valid subset of the offer."""
        accepted = self.driver_features
        if not device_accepts(self.offered, accepted):
            return False
        return bool(self.device.accept_features(accepted))

    def _reset(self) -> None:
        self.epoch += 1  # the old Interrupt port goes dead
        self._ctx = None
        self.device.reset()
        self._clear_registers()
        self.signals.reset_interrupts()
        self.events.push(DeviceReset())

    def _activate(self) -> None:
        try:
            fmt = RingFormat.from_features(self.negotiated)
            queues = [self._build(q, fmt) if q.enable else None for q in self.queues]
        except DEVICE_ERRORS as err:
            self.needs_reset(f"queue setup: {err}")
            return
        ctx = ActivationContext(
            self.mem, queues, _Port(self, self.epoch), self.negotiated, self.needs_reset
        )
        self._ctx = ctx
        self.events.push(DeviceActivated(self.negotiated))
        try:
            self.device.activate(ctx)
        except DEVICE_ERRORS as err:
            self.needs_reset(f"activation: {err}")

    def _build(self, q: QueueRegs, fmt: RingFormat) -> DeviceQueue:
        if not 0 < q.size <= q.max_size:
            raise QueueConfigError(f"queue {q.index}: size {q.size} outside 1..{q.max_size}")
        cfg = QueueConfig(q.size, q.desc, q.driver, q.device, self.negotiated, q.index)
        return make_device_queue(fmt, cfg)

    def needs_reset(self, reason: str) -> None:
        """The device hit an error only a reset clears (virtio 1.2 2.1.2)."""
        machine = self.machine
        if machine.state in (DeviceState.RESET, DeviceState.FAILED):
            return  # nothing to report to: the driver has not found or has left the device
        before = machine.status
        if machine.state is not DeviceState.PROTOCOL_ERROR:
            machine.feed(StatusInput.DEVICE_ERROR)
        if not before & DeviceStatus.DEVICE_NEEDS_RESET:
            self._report_reset_needed(before, reason)

    def _report_reset_needed(self, before: int, reason: str) -> None:
        self.events.push(NeedsReset(reason))
        if before & DeviceStatus.DRIVER_OK:  # 2.1.2: then send a config notification
            self.signals.config_interrupt()

    # -- configuration space -------------------------------------------------------------
    def config_generation(self) -> int:
        """A counter that moves once per change the driver could observe (the flag
        scheme of virtio 1.2 4.1.4.3.1), so an 8-bit view cannot wrap back unseen
        between two reads."""
        gen = self.device.config.generation
        if gen != self._seen_generation:
            self._seen_generation = gen
            self._generation = (self._generation + 1) & 0xFFFFFFFF
        return self._generation

    def read_config(self, offset: int, size: int) -> int:
        self.config_generation()
        try:
            return int.from_bytes(self.device.config.read(offset, size), "little")
        except ConfigAccessError:
            return 0

    def write_config(self, offset: int, size: int, value: int) -> None:
        if not 1 <= size <= 8:
            return
        data = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        with contextlib.suppress(ConfigAccessError):
            self.device.config.driver_write(offset, data)

    def config_changed(self) -> None:
        """The device model changed its configuration outside activation's port."""
        if self.status & DeviceStatus.DRIVER_OK:
            self.signals.config_interrupt()

    # -- queues --------------------------------------------------------------------------
    def queue(self, index: int) -> QueueRegs | None:
        return self.queues[index] if 0 <= index < len(self.queues) else None

    def read_queue(self, index: int, field: QueueField) -> int:
        q = self.queue(index)
        if q is None:
            return NO_VECTOR if field is QueueField.VECTOR else 0
        if field in ADDR_FIELDS:
            attr, shift = ADDR_FIELDS[field]
            return int(getattr(q, attr)) >> shift & 0xFFFFFFFF
        if field is QueueField.ENABLE:
            return int(q.enable)
        if field is QueueField.RESET:
            return 0  # a queue reset completes synchronously
        return int(getattr(q, field.value))

    def write_queue(self, index: int, field: QueueField, value: int) -> None:
        q = self.queue(index)
        if q is None or field in (QueueField.MAX_SIZE, QueueField.NOTIFY_DATA):
            return
        if field is QueueField.RESET:
            if value & 1 and self.has(S.VIRTIO_F_RING_RESET):
                self._reset_queue(q)
        elif field is QueueField.ENABLE:
            self._write_enable(q, bool(value & 1))
        elif field is QueueField.VECTOR:
            q.vector = value & 0xFFFF
        elif q.enable:
            return  # 4.1.4.3.2 / 4.2.2.2: not while the queue is enabled
        elif field is QueueField.SIZE:
            q.size = value & 0xFFFF
        else:
            attr, shift = ADDR_FIELDS[field]
            old = int(getattr(q, attr))
            setattr(q, attr, (old & ~(0xFFFFFFFF << shift)) | (value & 0xFFFFFFFF) << shift)

    def _write_enable(self, q: QueueRegs, enable: bool) -> None:
        if enable == q.enable:
            return
        ctx = self._ctx
        if not enable:  # MMIO QueueReady = 0: stop using the queue (4.2.2.2)
            q.enable = False
            if ctx is not None and ctx.queues[q.index] is not None:
                ctx.queues[q.index] = None
                self.device.queue_reset(q.index)
            return
        q.enable = True
        if ctx is None or self.machine.state is not DeviceState.DRIVER_OK:
            return
        try:  # enabled after DRIVER_OK (after RING_RESET): bring it up now
            dq = self._build(q, RingFormat.from_features(self.negotiated))
            ctx.queues[q.index] = dq
            self.device.queue_enabled(q.index, dq)
        except DEVICE_ERRORS as err:
            self.needs_reset(f"queue {q.index} enable: {err}")

    def _reset_queue(self, q: QueueRegs) -> None:
        """virtio 1.2 2.6.1: the queue returns to its reset state; the device forgets
        it. Done at once, so ``queue_reset`` / QueueReset read back 0."""
        ctx = self._ctx
        if ctx is not None and ctx.queues[q.index] is not None:
            ctx.queues[q.index] = None
            self.device.queue_reset(q.index)
        q.clear()

    def queue_for_data(self, data: int) -> int | None:
        """The queue a notification value names: its low 16 bits are the vq index, or
        ``queue_notify_data`` with VIRTIO_F_NOTIF_CONFIG_DATA (virtio 1.2 2.9)."""
        vqn = data & 0xFFFF
        if self.has(S.VIRTIO_F_NOTIF_CONFIG_DATA):
            for q in self.queues:
                if q.notify_data == vqn:
                    return q.index
            return None
        return vqn if vqn < len(self.queues) else None

    def notify(self, index: int, data: int) -> bool:
        """An available buffer notification for queue ``index``. Forwarded to the
        device only while DRIVER_OK and the queue is enabled; returns whether it was."""
        ctx = self._ctx
        if (
            ctx is None
            or self.machine.state is not DeviceState.DRIVER_OK
            or not 0 <= index < len(ctx.queues)
            or ctx.queues[index] is None
        ):
            return False
        self.events.push(QueueNotified(index, data & 0xFFFFFFFF))
        try:
            self.device.queue_notify(index)
        except DEVICE_ERRORS as err:
            self.needs_reset(f"queue {index}: {err}")
        return True
