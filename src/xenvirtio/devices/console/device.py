"""The virtio-console device model (virtio 1.2 5.3), one port: the control plane a
transport drives (`VirtioDevice`) and the data plane between the port's two queues and
a host-side `PortBackend` (the pty edge in ``engine``, or a test double).

Threads: everything here runs on the device's thread: the transport's calls, and the
backend's (``receive``, ``resume_transmit``, ``resize``).

    call order: ( accept_features? activate ( queue_notify | receive | resume_transmit
                  | resize | queue_reset queue_enabled? )* )? reset ...
                connect / disconnect / receive / resize: at any time

Flow control, both ways, nothing dropped:

- host -> guest: ``receive(data)`` takes at most ``input_space`` bytes (bounded by
  ``input_limit``) and fills posted receive buffers with them; what does not fit waits in
  the device until the guest posts more. The backend stops reading its side while
  ``input_space`` is 0 and is told (``input_space_available``) when it grows again.
- guest -> host: transmit buffers are taken only while the backend is not
  ``send_blocked``; the rest stay on the ring (the guest's writes wait) until the backend
  calls ``resume_transmit``. A buffer is returned once all of it was handed over.

A buffer on the wrong queue (5.3.6.1) or a ring fault raises `VirtqueueError` out of
``queue_notify`` (the transport sets DEVICE_NEEDS_RESET); found while serving the
backend it goes through ``ctx.needs_reset``. Either way the device serves nothing more
until reset. Host input survives a device reset (it was never the guest's).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from xenvirtio.devices.console.config import ConsoleConfig, emergency_write_hook
from xenvirtio.devices.console.request import ReceiveBuffer, TransmitBuffer
from xenvirtio.mem.api import GuestMemory, GuestMemoryError
from xenvirtio.spec import virtio_console as C
from xenvirtio.spec.virtio import VirtioDeviceId
from xenvirtio.transport.api import ActivationContext, VirtioDevice
from xenvirtio.virtio.chain import Reader
from xenvirtio.virtio.config import ConfigSpace
from xenvirtio.virtio.queue import DescriptorChain, DeviceQueue, VirtqueueError

log = logging.getLogger(__name__)

TX_CHUNK = 4096  # bytes handed to the backend per call
EARLY_OUTPUT_LIMIT = 4096  # emergency bytes kept while no backend is connected


class PortBackend(Protocol):
    """The host side of the port."""

    def send(self, data: bytes) -> None:
        """Bytes the guest transmitted (or wrote to ``emerg_wr``); always accepted."""
        ...

    @property
    def send_blocked(self) -> bool:
        """True while the device should hold transmit buffers (output backlog full)."""
        ...

    def input_space_available(self) -> None:
        """The device can take input again (it may call this when it already could)."""
        ...


class VirtioConsoleDevice:
    """A one-port console. Implements `VirtioDevice`."""

    def __init__(self, config: ConsoleConfig | None = None) -> None:
        self.settings = config or ConsoleConfig()
        initial = self.settings.layout().pack()
        hook = emergency_write_hook(self._emergency) if self.settings.emergency_write else None
        self._config = ConfigSpace(initial, on_driver_write=hook)
        self._ctx: ActivationContext | None = None
        self._backend: PortBackend | None = None
        self._input = bytearray()
        self._early = bytearray()
        self._tx: tuple[DescriptorChain, Reader] | None = None
        self.broken = False
        self.dropped_buffers = 0  # receive buffers returned empty (no writable bytes)

    # ------------------------------------------------------------ VirtioDevice: control
    @property
    def device_id(self) -> int:
        return int(VirtioDeviceId.CONSOLE)

    @property
    def avail_features(self) -> int:
        return self.settings.offered_features()

    @property
    def queue_max_sizes(self) -> Sequence[int]:
        return [self.settings.queue_size] * 2  # receiveq0, transmitq0 (no MULTIPORT)

    @property
    def config(self) -> ConfigSpace:
        return self._config

    @property
    def active(self) -> bool:
        return self._ctx is not None

    def accept_features(self, features: int) -> bool:
        return True

    def activate(self, ctx: ActivationContext) -> None:
        self._ctx = ctx
        self.broken = False
        self._serve(ctx)  # input may be waiting, buffers may be posted already

    def reset(self) -> None:
        self._ctx = None
        self._tx = None
        self.broken = False

    def queue_reset(self, index: int) -> None:
        if index == C.TRANSMITQ_PORT0:
            self._tx = None

    def queue_enabled(self, index: int, queue: DeviceQueue) -> None:
        self.queue_notify(index)

    def queue_notify(self, index: int) -> None:
        ctx = self._ctx
        if ctx is None or self.broken:
            return
        work = {C.RECEIVEQ_PORT0: self._deliver, C.TRANSMITQ_PORT0: self._transmit}.get(index)
        if work is None:
            return
        try:
            work(ctx)
        except (VirtqueueError, GuestMemoryError):
            self.broken = True
            raise

    # ------------------------------------------------------------ the host side
    def connect(self, backend: PortBackend) -> None:
        """Attach the host side; output held meanwhile goes out now."""
        self._backend = backend
        if self._early:
            backend.send(bytes(self._early))
            self._early.clear()
        self._guarded(self._transmit)

    def disconnect(self) -> None:
        self._backend = None

    @property
    def input_space(self) -> int:
        return max(0, self.settings.input_limit - len(self._input))

    @property
    def input_pending(self) -> int:
        """Host input bytes the guest has not taken yet."""
        return len(self._input)

    def receive(self, data: bytes) -> int:
        """Host input for the guest; returns how many bytes were taken (the rest must be
        offered again after ``input_space_available``)."""
        taken = min(len(data), self.input_space)
        self._input += data[:taken]
        self._guarded(self._deliver)
        return taken

    def resume_transmit(self) -> None:
        """The backend can take output again."""
        self._guarded(self._transmit)

    @property
    def size(self) -> tuple[int, int]:
        """``(cols, rows)`` as the configuration space says."""
        cols, rows = struct.unpack("<HH", self._config.read(C.VIRTIO_CONSOLE_CFG_COLS, 4))
        return int(cols), int(rows)

    def resize(self, cols: int, rows: int) -> bool:
        """Change the console size; with VIRTIO_CONSOLE_F_SIZE negotiated the driver gets
        a configuration change notification (5.3.6 item 3). Returns whether it changed."""
        if not (0 <= cols <= 0xFFFF and 0 <= rows <= 0xFFFF):
            raise ValueError("cols and rows must fit le16")
        changed = self._config.update(C.VIRTIO_CONSOLE_CFG_COLS, struct.pack("<HH", cols, rows))
        ctx = self._ctx
        if changed and ctx is not None and ctx.features >> C.VIRTIO_CONSOLE_F_SIZE & 1:
            ctx.interrupt.trigger_config()
        return changed

    def _emergency(self, byte: int) -> None:
        backend = self._backend
        if backend is not None:
            backend.send(bytes((byte,)))
        elif len(self._early) < EARLY_OUTPUT_LIMIT:
            self._early.append(byte)

    # ------------------------------------------------------------ data plane
    def _guarded(self, work: Callable[[ActivationContext], None]) -> None:
        """Run ``work`` outside a transport call: errors go through ``needs_reset``."""
        ctx = self._ctx
        if ctx is None or self.broken:
            return
        try:
            work(ctx)
        except (VirtqueueError, GuestMemoryError) as err:
            self.broken = True
            ctx.needs_reset(f"virtio-console: {err}")

    def _serve(self, ctx: ActivationContext) -> None:
        self._deliver(ctx)
        self._transmit(ctx)

    @staticmethod
    def _pop(mem: GuestMemory, queue: DeviceQueue) -> DescriptorChain | None:
        """The next chain, re-checking after re-enabling notifications (2.7.10), so a
        buffer made available meanwhile is not left waiting for a kick."""
        chain = queue.pop(mem)
        if chain is None and queue.enable_notification(mem):
            chain = queue.pop(mem)
        return chain

    def _deliver(self, ctx: ActivationContext) -> None:
        """Move waiting input into receive buffers. Bounded to four rounds of Queue
        Size per call."""
        queue = ctx.queues[C.RECEIVEQ_PORT0]
        if queue is None or not self._input:
            return
        mem = ctx.mem
        used: list[tuple[DescriptorChain, int]] = []
        for _ in range(4 * queue.config.size):
            chain = self._pop(mem, queue) if self._input else None
            if chain is None:
                break
            buf = ReceiveBuffer.parse(chain)
            if buf.empty:
                self.dropped_buffers += 1
                used.append((chain, 0))
                continue
            n = min(len(self._input), buf.length)
            chain.writer(mem).write(memoryview(self._input)[:n])
            del self._input[:n]
            used.append((chain, n))
        self._complete(ctx, queue, C.RECEIVEQ_PORT0, used)
        if used and self._backend is not None and self.input_space:
            self._backend.input_space_available()

    def _transmit(self, ctx: ActivationContext) -> None:
        """Hand transmit buffers to the backend while it takes them. Bounded to four
        rounds of Queue Size chunks per call; the backend's ``send_blocked`` and
        ``resume_transmit`` pace the rest."""
        queue = ctx.queues[C.TRANSMITQ_PORT0]
        if queue is None:
            return
        mem = ctx.mem
        used: list[tuple[DescriptorChain, int]] = []
        for _ in range(4 * queue.config.size):
            backend = self._backend
            if backend is None or backend.send_blocked:
                break
            if self._tx is None:
                chain = self._pop(mem, queue)
                if chain is None:
                    break
                self._tx = (chain, TransmitBuffer.parse(chain).chain.reader(mem))
            chain, reader = self._tx
            n = min(reader.remaining, TX_CHUNK)
            if n:
                backend.send(reader.read(n))
            if not reader.remaining:
                used.append((chain, 0))  # the device wrote nothing into it
                self._tx = None
        self._complete(ctx, queue, C.TRANSMITQ_PORT0, used)

    @staticmethod
    def _complete(
        ctx: ActivationContext,
        queue: DeviceQueue,
        index: int,
        used: list[tuple[DescriptorChain, int]],
    ) -> None:
        if not used:
            return
        queue.push_used_batch(ctx.mem, used)
        if queue.needs_notify(ctx.mem):
            ctx.interrupt.trigger_queue(index)


if TYPE_CHECKING:
    _conforms: VirtioDevice = VirtioConsoleDevice()
