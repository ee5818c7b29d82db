"""`VirtioNetDriver`: the guest side of virtio-net over any `VirtioTransport`, joining
the device to the guest's network stack through a `GuestNic` (a TAP in the guest's
namespace).

Threads: construct it anywhere (it probes the device synchronously), then ``await
start()`` on the event loop that will run it; ``interrupt()`` may be called from any
thread and schedules the service work on that loop.

    guest stack -> guest TAP --read--> TxRing -> transmitqN -> device
    device -> receiveqN -> RxRing --writev--> guest TAP -> guest stack

Offloads: whatever the driver negotiated it tells the guest TAP (``TUNSETOFFLOAD`` from
CSUM/HOST_TSO*), so the guest's kernel hands over exactly the frames the device takes.
Link: STATUS's LINK_UP becomes the TAP's carrier; the MAC and MTU come from the
configuration space.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Final

from xenvirtio.drivers.net.control import ControlQueue, CtrlError
from xenvirtio.drivers.net.nic import GuestNic
from xenvirtio.drivers.net.rx import RxRing
from xenvirtio.drivers.net.tx import TxRing
from xenvirtio.netif.offload import host_offloads
from xenvirtio.spec import virtio as S
from xenvirtio.spec import virtio_net as N
from xenvirtio.transport.api import InterruptFlags, VirtioTransport
from xenvirtio.transport.dma import DmaBuffer, DmaMemory, DmaPool
from xenvirtio.transport.probe import (
    attach_queue,
    kick,
    probe,
    queue_footprint,
    read_config_consistent,
)
from xenvirtio.virtio.features import bit
from xenvirtio.virtio.queue import DriverQueue, IndirectPool, RingFormat

log = logging.getLogger(__name__)
C = N.VirtioNetCtrlClass

DEFAULT_RING_FEATURES: Final = (
    bit(S.VIRTIO_RING_F_INDIRECT_DESC)
    | bit(S.VIRTIO_RING_F_EVENT_IDX)
    | bit(S.VIRTIO_F_RING_PACKED)
)
NET_FEATURES: Final = sum(
    bit(f)
    for f in (
        N.VIRTIO_NET_F_CSUM,
        N.VIRTIO_NET_F_GUEST_CSUM,
        N.VIRTIO_NET_F_MTU,
        N.VIRTIO_NET_F_MAC,
        N.VIRTIO_NET_F_GUEST_TSO4,
        N.VIRTIO_NET_F_GUEST_TSO6,
        N.VIRTIO_NET_F_GUEST_ECN,
        N.VIRTIO_NET_F_HOST_TSO4,
        N.VIRTIO_NET_F_HOST_TSO6,
        N.VIRTIO_NET_F_HOST_ECN,
        N.VIRTIO_NET_F_MRG_RXBUF,
        N.VIRTIO_NET_F_STATUS,
        N.VIRTIO_NET_F_CTRL_VQ,
        N.VIRTIO_NET_F_CTRL_RX,
        N.VIRTIO_NET_F_CTRL_MAC_ADDR,
        N.VIRTIO_NET_F_GUEST_ANNOUNCE,
        N.VIRTIO_NET_F_MQ,
    )
)
MAX_RECONNECTS: Final = 3
_GUEST_GSO = bit(N.VIRTIO_NET_F_GUEST_TSO4) | bit(N.VIRTIO_NET_F_GUEST_TSO6)
_HOST_GSO = bit(N.VIRTIO_NET_F_HOST_TSO4) | bit(N.VIRTIO_NET_F_HOST_TSO6)


def _mac_text(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


class VirtioNetDriver:
    """A guest NIC. ``dma`` is where rings and buffers go (None: the transport's own DMA
    pages); ``ring_features`` limits the ring features it may accept; ``exclude`` drops
    device features it would otherwise accept (e.g. MRG_RXBUF)."""

    def __init__(
        self,
        transport: VirtioTransport,
        dma: DmaMemory | None,
        nic: GuestNic,
        *,
        ring_features: int = DEFAULT_RING_FEATURES,
        exclude: int = 0,
        queue_size: int = 256,
        rx_buf_size: int = 8192,
        tx_buffers: int = 128,
        auto_reconnect: bool = False,
    ) -> None:
        dma = dma if dma is not None else DmaPool.for_transport(transport)
        self._transport, self._dma, self._mem, self.nic = transport, dma, dma.memory, nic
        wanted = bit(S.VIRTIO_F_VERSION_1) | bit(S.VIRTIO_F_ACCESS_PLATFORM) | NET_FEATURES
        self._wanted = (wanted | ring_features) & ~exclude
        self._queue_size, self._rx_buf_size, self._tx_buffers = queue_size, rx_buf_size, tx_buffers
        self._blocks: list[DmaBuffer] = []
        self.rx: list[RxRing] = []
        self.tx: list[TxRing] = []
        self.ctrl: ControlQueue | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._service_scheduled = False
        self._tx_waiting: set[int] = set()
        self.features = 0
        self.mac = b""
        self.mtu = 1500
        self.link_up = True
        self.broken = False
        self.announces = 0
        self.reconnects = 0
        self.auto_reconnect = auto_reconnect
        self.features = probe(transport, self._wanted, self._configure, N.NET_DEPENDENCIES)

    def has(self, feature: int) -> bool:
        return bool(self.features >> feature & 1)

    # ---------------------------------------------------------------- set-up (3.1.1 step 7)
    def _configure(self, features: int) -> None:
        self.features = features
        cfg = N.VirtioNetConfig.unpack(
            read_config_consistent(self._transport, 0, N.VIRTIO_NET_CONFIG_SIZE)
        )
        mq = bool(features >> N.VIRTIO_NET_F_MQ & 1)
        max_pairs = cfg.max_virtqueue_pairs if mq else 1
        pairs = max(1, min(max_pairs, len(self.nic.fds)))
        for pair in range(pairs):
            self.rx.append(self._rx_ring(pair, features))
            self.tx.append(self._tx_ring(pair, features))
        if features >> N.VIRTIO_NET_F_CTRL_VQ & 1:
            queue = self._queue(N.ctrl_queue(max_pairs), features, 64, indirect=False)
            self.ctrl = ControlQueue(queue, self._mem, self._alloc(4096))
        self._configure_nic(cfg, features)

    def _alloc(self, size: int, align: int = 4096) -> DmaBuffer:
        block = self._dma.alloc(size, align)
        self._blocks.append(block)
        return block

    def _queue(self, index: int, features: int, size: int, indirect: bool) -> DriverQueue[object]:
        qsize = min(size, self._transport.queue_max_size(index))
        if RingFormat.from_features(features) is RingFormat.SPLIT:
            qsize = 1 << (qsize.bit_length() - 1)
        ring = self._alloc(queue_footprint(features, 0, qsize))
        pool = None
        if indirect and features >> S.VIRTIO_RING_F_INDIRECT_DESC & 1:
            table = self._alloc(IndirectPool.bytes_needed(4, qsize), 16)
            pool = IndirectPool(table.addr, 4, qsize)
        return attach_queue(self._transport, self._mem, index, features, ring.addr, qsize, pool)

    def _rx_ring(self, pair: int, features: int) -> RxRing:
        if features >> N.VIRTIO_NET_F_MRG_RXBUF & 1:
            size = self._rx_buf_size
        else:  # 5.1.6.3.1: without MRG_RXBUF every buffer holds the largest frame
            size = N.MIN_RX_BUFFER_GSO if features & _GUEST_GSO else N.MIN_RX_BUFFER + 9000
        queue = self._queue(N.rx_queue(pair), features, self._queue_size, indirect=False)
        count = queue.config.size
        block = self._alloc(count * size)
        return RxRing(queue, self._mem, block, size, self.nic.fds[pair], features)

    def _tx_ring(self, pair: int, features: int) -> TxRing:
        frame = N.MAX_GSO_FRAME if features & _HOST_GSO else 65535
        size = (N.VIRTIO_NET_HDR_SIZE + frame + 63) & ~63
        queue = self._queue(N.tx_queue(pair), features, self._queue_size, indirect=False)
        count = min(self._tx_buffers, queue.config.size)
        block = self._alloc(count * size)
        return TxRing(queue, self._mem, block, size, self.nic.fds[pair])

    def _configure_nic(self, cfg: N.VirtioNetConfig, features: int) -> None:
        self.nic.set_offload(host_offloads(features))
        if features >> N.VIRTIO_NET_F_MAC & 1:
            self.mac = cfg.mac  # 5.1.4.2: MUST use it
            self.nic.set_mac(_mac_text(cfg.mac))
        if features >> N.VIRTIO_NET_F_MTU & 1 and cfg.mtu >= N.VIRTIO_NET_MTU_MIN:
            self.mtu = cfg.mtu
            self.nic.set_mtu(cfg.mtu)
        self._apply_status(cfg.status)

    # ---------------------------------------------------------------- start
    async def start(self) -> None:
        """Bind to the running loop, post receive buffers, program the control plane
        (queue pairs, RX mode) and start reading the guest's TAP."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        for rx in self.rx:
            rx.fill()
            kick(self._transport, rx.queue, self._mem)
        for tx in self.tx:
            tx.queue.disable_cb(self._mem)  # reaped on the next round instead
        await self._program()
        for pair in range(len(self.tx)):
            self._loop.add_reader(self.nic.fds[pair], self._pump, pair)

    async def _program(self) -> None:
        if len(self.rx) > 1:
            pairs = N.VIRTIO_NET_CTRL_MQ_PAIRS.pack(len(self.rx))
            await self.command(C.VIRTIO_NET_CTRL_MQ, N.VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, pairs)
        if self.has(N.VIRTIO_NET_F_CTRL_RX):
            # A TAP does not tell us its multicast memberships: all multicast, own MAC.
            await self.command(C.VIRTIO_NET_CTRL_RX, N.VIRTIO_NET_CTRL_RX_PROMISC, b"\0")
            await self.command(C.VIRTIO_NET_CTRL_RX, N.VIRTIO_NET_CTRL_RX_ALLMULTI, b"\1")

    async def command(self, cls: int, cmd: int, data: bytes) -> None:
        """One control command; raises `CtrlError` on VIRTIO_NET_ERR."""
        ctrl = self.ctrl
        if ctrl is None:
            raise CtrlError("no control queue negotiated")
        await ctrl.command(cls, cmd, data, lambda: kick(self._transport, ctrl.queue, self._mem))

    async def set_mac(self, mac: bytes) -> None:
        """VIRTIO_NET_CTRL_MAC_ADDR_SET, then the guest TAP's address."""
        await self.command(C.VIRTIO_NET_CTRL_MAC, N.VIRTIO_NET_CTRL_MAC_ADDR_SET, mac)
        self.mac = mac
        self.nic.set_mac(_mac_text(mac))

    # ---------------------------------------------------------------- transmit
    def _pump(self, pair: int) -> None:
        """The guest's TAP has frames for queue ``pair``."""
        tx = self.tx[pair]
        if self.broken:
            return
        tx.reap()
        added, _ = tx.pump()
        if added:
            kick(self._transport, tx.queue, self._mem)
            tx.reap()  # a device on this thread has already sent them
        if tx.stalled and self._loop is not None:
            self._loop.remove_reader(self.nic.fds[pair])  # until buffers come back
            self._tx_waiting.add(pair)
            if tx.queue.enable_cb(self._mem):
                self._loop.call_soon(self._resume_tx)

    def _resume_tx(self) -> None:
        for pair in list(self._tx_waiting):
            tx = self.tx[pair]
            tx.reap()
            if not tx.stalled and self._loop is not None:
                self._tx_waiting.discard(pair)
                tx.queue.disable_cb(self._mem)
                self._loop.add_reader(self.nic.fds[pair], self._pump, pair)
                self._loop.call_soon(self._pump, pair)

    # ---------------------------------------------------------------- interrupts
    def interrupt(self) -> None:
        """The device interrupted (any thread). The work runs later on the loop."""
        loop = self._loop
        if loop is None or self._service_scheduled:
            return
        self._service_scheduled = True
        if threading.get_ident() == self._loop_thread:
            loop.call_soon(self.service)
        else:
            loop.call_soon_threadsafe(self.service)

    def service(self) -> None:
        """Acknowledge, then: configuration change, control answers, received frames
        (delivered, buffers reposted), transmit buffers back."""
        self._service_scheduled = False
        if self.broken:
            return
        flags = self._transport.ack_interrupt()
        if flags & InterruptFlags.CONFIG:
            self._config_changed()
        if self.ctrl is not None:
            self.ctrl.complete()
        for rx in self.rx:
            while True:
                rx.collect()
                if not rx.queue.enable_cb(self._mem):
                    break
            if rx.fill():
                kick(self._transport, rx.queue, self._mem)
        if self._tx_waiting:
            self._resume_tx()

    def _config_changed(self) -> None:
        if self._transport.get_status() & S.VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET:
            log.warning("virtio-net: device needs a reset")
            self._stop_reading()
            self.broken = True
            self.nic.set_carrier(False)
            if self.auto_reconnect and self.reconnects < MAX_RECONNECTS:
                self.reconnect()
            return
        raw = read_config_consistent(self._transport, 0, N.VIRTIO_NET_CONFIG_SIZE)
        self._apply_status(N.VirtioNetConfig.unpack(raw).status)

    def _apply_status(self, status: int) -> None:
        if self.has(N.VIRTIO_NET_F_STATUS):  # without it the link is up (5.1.4.2)
            self.link_up = bool(status & N.VIRTIO_NET_S_LINK_UP)
        self.nic.set_carrier(self.link_up)
        if status & N.VIRTIO_NET_S_ANNOUNCE and self.has(N.VIRTIO_NET_F_GUEST_ANNOUNCE):
            self.announces += 1
            if self._loop is not None:
                self._loop.create_task(self._announce_ack())

    async def _announce_ack(self) -> None:
        try:
            await self.command(C.VIRTIO_NET_CTRL_ANNOUNCE, N.VIRTIO_NET_CTRL_ANNOUNCE_ACK, b"")
        except CtrlError as err:
            log.warning("virtio-net: announce ack failed: %s", err)

    # ---------------------------------------------------------------- reconnect
    def reconnect(self) -> None:
        """Reset the device and set it up again from scratch (after DEVICE_NEEDS_RESET
        or a device restart); frames in flight are lost, as on a real NIC reset. Call on
        the loop thread."""
        self._stop_reading()
        self._transport.reset()
        self._release()
        self.reconnects += 1
        self.features = probe(self._transport, self._wanted, self._configure, N.NET_DEPENDENCIES)
        self.broken = False
        if self._loop is not None:
            self._loop.create_task(self.start())

    def _release(self) -> None:
        for block in self._blocks:
            self._dma.free(block)
        self._blocks.clear()
        self.rx.clear()
        self.tx.clear()
        self.ctrl = None

    # ---------------------------------------------------------------- shutdown
    def _stop_reading(self) -> None:
        if self._loop is not None:
            for pair in range(len(self.tx)):
                self._loop.remove_reader(self.nic.fds[pair])
        self._tx_waiting.clear()

    def close(self) -> None:
        """Reset the device (it stops using our memory), then free the DMA memory."""
        self._stop_reading()
        try:
            self._transport.reset()
        finally:
            self._release()
            self.broken = True

    def stats(self) -> dict[str, object]:
        return {
            "tx_frames": sum(t.frames for t in self.tx),
            "tx_bytes": sum(t.bytes for t in self.tx),
            "rx_frames": sum(r.frames for r in self.rx),
            "rx_bytes": sum(r.bytes for r in self.rx),
            "rx_dropped": [r.dropped for r in self.rx],
        }
