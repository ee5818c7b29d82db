"""The virtio-net device model: the control plane a transport drives (`VirtioDevice`),
the control queue, link state; the data plane is `RxPath`/`TxPath` per queue pair.

Threads: everything runs on the device's thread, the one its `Reactor` (an asyncio loop)
calls back on; the transport calls it there too.

    call order: ( accept_features? activate ( queue_notify | readable callbacks
                  | queue_reset queue_enabled? | set_link | announce )* )? reset ...

A bad frame or header is dropped and counted (`stats`); a ring fault, a receive buffer
shorter than the header or a control command without an ack byte is a protocol error:
the device latches ``broken`` and asks for DEVICE_NEEDS_RESET; other devices sharing the
loop and the bridge are unaffected.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from xenvirtio.devices.net import ctrl as C
from xenvirtio.devices.net.backend import NetBackend, Reactor
from xenvirtio.devices.net.config import NetConfig
from xenvirtio.devices.net.header import TxLimits
from xenvirtio.devices.net.rx import RxPath
from xenvirtio.devices.net.stats import NetStats
from xenvirtio.devices.net.tx import TxPath
from xenvirtio.mem.api import GuestMemory, GuestMemoryError
from xenvirtio.spec import virtio_net as N
from xenvirtio.spec.virtio import VirtioDeviceId
from xenvirtio.transport.api import ActivationContext
from xenvirtio.virtio.config import ConfigSpace
from xenvirtio.virtio.features import device_accepts
from xenvirtio.virtio.queue import DescriptorChain, DeviceQueue, VirtqueueError

log = logging.getLogger(__name__)


class CtrlAckError(VirtqueueError):
    """A control command with no device-writable byte for its ack (5.1.6.5)."""


def _ecn_ok(features: int) -> bool:
    """GUEST_ECN / HOST_ECN need TSO4 or TSO6 of the same direction (5.1.3.1)."""

    def has(bit: int) -> bool:
        return bool(features >> bit & 1)

    guest = has(N.VIRTIO_NET_F_GUEST_TSO4) or has(N.VIRTIO_NET_F_GUEST_TSO6)
    host = has(N.VIRTIO_NET_F_HOST_TSO4) or has(N.VIRTIO_NET_F_HOST_TSO6)
    return (guest or not has(N.VIRTIO_NET_F_GUEST_ECN)) and (
        host or not has(N.VIRTIO_NET_F_HOST_ECN)
    )


class VirtioNetDevice:
    """A virtio-net NIC whose wire is ``backend``. Implements `VirtioDevice`."""

    def __init__(
        self, backend: NetBackend, reactor: Reactor, config: NetConfig | None = None
    ) -> None:
        settings = config or NetConfig()
        if backend.queues < settings.max_pairs:
            raise ValueError(f"backend has {backend.queues} queues, {settings.max_pairs} needed")
        self.settings = settings
        self.backend = backend
        self.stats = NetStats()
        self.mac = settings.mac
        self.link_up = settings.link_up
        self.announce_pending = False
        self._config = ConfigSpace(settings.config_space(self.mac, self.link_up))
        self._features = settings.offered_features()
        self._ctx: ActivationContext | None = None
        self.filter = C.RxFilter(self.mac, settings.max_mac_entries)
        pairs = range(settings.max_pairs)
        self.rx = [RxPath(p, backend, reactor, self.stats, self.filter, self._fail) for p in pairs]
        self.tx = [TxPath(p, backend, reactor, self.stats, self._fail) for p in pairs]
        self.active_pairs = 1
        self.broken = False
        backend.set_link(self.link_up)

    # ------------------------------------------------------------ VirtioDevice: control
    @property
    def device_id(self) -> int:
        return int(VirtioDeviceId.NET)

    @property
    def avail_features(self) -> int:
        return self._features

    @property
    def queue_max_sizes(self) -> Sequence[int]:
        return [self.settings.queue_size] * self.settings.num_queues

    @property
    def config(self) -> ConfigSpace:
        return self._config

    @property
    def features(self) -> int:
        return self._ctx.features if self._ctx is not None else 0

    def accept_features(self, features: int) -> bool:
        ok = device_accepts(self._features, features, dependencies=N.NET_DEPENDENCIES)
        return ok and _ecn_ok(features)

    def activate(self, ctx: ActivationContext) -> None:
        self._ctx = ctx
        self.broken = False
        self.backend.set_offload(ctx.features)
        self.filter.reset(self.mac)
        self.active_pairs = 1
        self.backend.set_active_queues(1)
        for pair in range(self.settings.max_pairs):
            self.rx[pair].active = pair == 0
            for index in (N.rx_queue(pair), N.tx_queue(pair)):
                queue = ctx.queues[index]
                if queue is not None:
                    self.queue_enabled(index, queue)

    def reset(self) -> None:
        self._stop_all()
        self._ctx = None
        self.broken = False

    def queue_reset(self, index: int) -> None:
        path = self._path(index)
        if path is not None:
            path.stop()

    def queue_enabled(self, index: int, queue: DeviceQueue) -> None:
        ctx = self._ctx
        pair, is_tx = divmod(index, 2)
        if ctx is None or pair >= self.settings.max_pairs or index == self._ctrl_index():
            return
        if is_tx:
            limits = TxLimits(ctx.features, self.settings.max_tx_frame(False))
            self.tx[pair].start(ctx, queue, limits)
            self.tx[pair].link_up = self.link_up
        else:
            self.rx[pair].start(ctx, queue, self.settings.rx_room(ctx.features))

    def _path(self, index: int) -> RxPath | TxPath | None:
        pair, is_tx = divmod(index, 2)
        if pair >= self.settings.max_pairs or index == self._ctrl_index():
            return None
        return self.tx[pair] if is_tx else self.rx[pair]

    def _ctrl_index(self) -> int:
        """controlq is 2N, N = max_virtqueue_pairs only when MQ was negotiated (5.1.2)."""
        if not self.features >> N.VIRTIO_NET_F_CTRL_VQ & 1:
            return -1
        mq = self.features >> N.VIRTIO_NET_F_MQ & 1
        return N.ctrl_queue(self.settings.max_pairs if mq else 1)

    # ------------------------------------------------------------ data plane
    def queue_notify(self, index: int) -> None:
        ctx = self._ctx
        if ctx is None or self.broken or not 0 <= index < len(ctx.queues):
            return
        if index == self._ctrl_index():
            queue = ctx.queues[index]
            if queue is not None:
                self._serve_ctrl(ctx, index, queue)
            return
        path = self._path(index)
        if path is not None:
            path.kick()

    def _fail(self, reason: str) -> None:
        log.warning("%s", reason)
        self.broken = True
        ctx = self._ctx
        self._stop_all()
        if ctx is not None:
            ctx.needs_reset(reason)

    def _stop_all(self) -> None:
        for rx in self.rx:
            rx.stop()
        for tx in self.tx:
            tx.stop()

    # ------------------------------------------------------------ control queue
    def _serve_ctrl(self, ctx: ActivationContext, index: int, queue: DeviceQueue) -> None:
        mem = ctx.mem
        try:
            for _ in range(queue.config.size):
                chain = queue.pop(mem)
                if chain is None:
                    break
                queue.push_used(mem, chain, self._ctrl_one(ctx, chain))
            if queue.needs_notify(mem):
                ctx.interrupt.trigger_queue(index)
        except (VirtqueueError, GuestMemoryError):
            self.broken = True
            raise  # the transport sets DEVICE_NEEDS_RESET

    def _ctrl_one(self, ctx: ActivationContext, chain: DescriptorChain) -> int:
        if chain.writable_len < 1:
            raise CtrlAckError("control command without an ack byte")
        ack = N.VIRTIO_NET_ERR
        if chain.readable_len <= C.CTRL_MAX_BYTES:
            raw = chain.reader(ctx.mem).read(chain.readable_len)
            command = C.parse(raw, ctx.features, self.settings.max_pairs)
            if command is not None:
                ack = self._apply(ctx.mem, command)
        if ack == N.VIRTIO_NET_OK:
            self.stats.ctrl_ok += 1
        else:
            self.stats.ctrl_err += 1
        chain.writer(ctx.mem).write(bytes((ack,)))
        return 1

    def _apply(self, mem: GuestMemory, command: C.Command) -> int:
        """Carry out a parsed command before its buffer is used (5.1.6.5.x)."""
        if isinstance(command, C.RxMode):
            self.filter.set_mode(command)
        elif isinstance(command, C.MacTableSet):
            self.filter.set_tables(command)
        elif isinstance(command, C.MacAddrSet):
            self.mac = self.filter.mac = command.mac
            self._config.update(N.CFG_MAC, command.mac)  # 5.1.6.5.2.1: before the ack
        elif isinstance(command, C.VqPairsSet):
            self._set_pairs(command.pairs)
        else:
            self.announce_pending = False
            self._update_status(notify=False)
        return N.VIRTIO_NET_OK

    def _set_pairs(self, pairs: int) -> None:
        self.active_pairs = pairs
        self.backend.set_active_queues(pairs)
        for pair, rx in enumerate(self.rx):
            rx.set_active(pair < pairs)

    # ------------------------------------------------------------ link and announce
    def set_link(self, up: bool) -> None:
        """Carrier on or off: the backend's, and STATUS's LINK_UP with a configuration
        change notification (5.1.4)."""
        self.link_up = up
        for tx in self.tx:
            tx.link_up = up
        self.backend.set_link(up)
        self._update_status(notify=True)

    def announce(self) -> bool:
        """Ask the driver to announce itself (after a migration); False when the driver
        did not negotiate VIRTIO_NET_F_GUEST_ANNOUNCE."""
        if not self.features >> N.VIRTIO_NET_F_GUEST_ANNOUNCE & 1:
            return False
        self.announce_pending = True
        self._update_status(notify=True)
        return True

    def _update_status(self, notify: bool) -> None:
        status = N.VIRTIO_NET_S_LINK_UP if self.link_up else 0
        if self.announce_pending:
            status |= N.VIRTIO_NET_S_ANNOUNCE
        changed = self._config.update(N.CFG_STATUS, N.VIRTIO_NET_CTRL_MQ_PAIRS.pack(status))
        ctx = self._ctx
        if changed and notify and ctx is not None:
            ctx.interrupt.trigger_config()
