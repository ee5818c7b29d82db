"""`EchoDevice`: a small device model for exercising transports without real devices.

Each queue copies the readable part of every buffer into its writable part (as much as
fits, at most ``max_len`` bytes), XOR-ed with a key the driver can set in the
configuration space, and returns it with the number of bytes written.

Configuration space (little-endian):

    0x00  le32  max_len   read-only: bytes echoed per buffer at most
    0x04  u8    xor_key   driver-writable
    0x08  le64  label     changed by the device (`set_label`), with a config interrupt
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING

from xenvirtio.spec import virtio as S
from xenvirtio.transport.api import ActivationContext, VirtioDevice
from xenvirtio.virtio.config import ConfigSpace
from xenvirtio.virtio.queue import DescriptorChain, DeviceQueue

ECHO_DEVICE_ID = 63  # unassigned in virtio 1.2 5; the largest id virtio-pci can encode
ECHO_CFG_MAX_LEN = 0x00
ECHO_CFG_XOR_KEY = 0x04
ECHO_CFG_LABEL = 0x08
ECHO_CFG_SIZE = 0x10
ECHO_FEATURES = (
    1 << S.VIRTIO_F_VERSION_1
    | 1 << S.VIRTIO_RING_F_EVENT_IDX
    | 1 << S.VIRTIO_RING_F_INDIRECT_DESC
    | 1 << S.VIRTIO_F_RING_PACKED
    | 1 << S.VIRTIO_F_RING_RESET
    | 1 << S.VIRTIO_F_NOTIFICATION_DATA
    | 1 << S.VIRTIO_F_NOTIF_CONFIG_DATA
)
_BATCH = 32


class EchoDevice:
    """Implements `xenvirtio.transport.api.VirtioDevice`.

    ``required`` are feature bits the device insists on: without them it refuses
    FEATURES_OK (as a grant-DMA-only backend refuses a driver without ACCESS_PLATFORM).
    """

    def __init__(
        self,
        *,
        features: int = ECHO_FEATURES,
        queues: int = 1,
        queue_size: int = 256,
        max_len: int = 4096,
        required: int = 0,
    ) -> None:
        self._features = features
        self._max_sizes = (queue_size,) * queues
        self.required = required
        initial = struct.pack("<IBxxxQ", max_len, 0, 0)
        self._config = ConfigSpace(initial, driver_writable=[(ECHO_CFG_XOR_KEY, 1)])
        self.max_len = max_len
        self.ctx: ActivationContext | None = None
        self.echoed = 0  # buffers returned since activation
        self.resets = 0
        self.queue_resets: list[int] = []

    # -- VirtioDevice ----------------------------------------------------------------------
    @property
    def device_id(self) -> int:
        return ECHO_DEVICE_ID

    @property
    def avail_features(self) -> int:
        return self._features

    @property
    def queue_max_sizes(self) -> Sequence[int]:
        return self._max_sizes

    @property
    def config(self) -> ConfigSpace:
        return self._config

    def accept_features(self, features: int) -> bool:
        return features & self.required == self.required

    def activate(self, ctx: ActivationContext) -> None:
        self.ctx = ctx
        self.echoed = 0

    def queue_notify(self, index: int) -> None:
        ctx = self.ctx
        if ctx is None:
            return
        queue = ctx.queues[index]
        if queue is not None:
            self._serve(ctx, index, queue)

    def queue_reset(self, index: int) -> None:
        self.queue_resets.append(index)

    def queue_enabled(self, index: int, queue: DeviceQueue) -> None:
        if self.ctx is not None:
            self._serve(self.ctx, index, queue)  # buffers may already be waiting

    def reset(self) -> None:
        self.ctx = None
        self.resets += 1

    # -- the device's own behaviour ------------------------------------------------------
    def _serve(self, ctx: ActivationContext, index: int, queue: DeviceQueue) -> None:
        """Echo every available buffer; bounded to four rounds of Queue Size so one
        kick cannot keep the device busy forever."""
        mem = ctx.mem
        key = self._config.read(ECHO_CFG_XOR_KEY, 1)[0]
        budget = 4 * queue.config.size
        while budget > 0:
            chains = queue.pop_batch(mem, min(_BATCH, budget))
            if not chains:
                break
            budget -= len(chains)
            queue.push_used_batch(mem, [(c, self._echo(ctx, c, key)) for c in chains])
            self.echoed += len(chains)
        if queue.needs_notify(mem):
            ctx.interrupt.trigger_queue(index)

    def _echo(self, ctx: ActivationContext, chain: DescriptorChain, key: int) -> int:
        n = min(chain.readable_len, chain.writable_len, self.max_len)
        data = chain.reader(ctx.mem).read(n)
        if key:
            data = bytes(b ^ key for b in data)
        chain.writer(ctx.mem).write(data)
        return n

    def set_label(self, label: int) -> bool:
        """Change the label; notify the driver if it changed and the device is active."""
        changed = self._config.update(ECHO_CFG_LABEL, struct.pack("<Q", label))
        if changed and self.ctx is not None:
            self.ctx.interrupt.trigger_config()
        return changed


if TYPE_CHECKING:
    _conforms: VirtioDevice = EchoDevice()
