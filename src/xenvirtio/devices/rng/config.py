"""Settings of a virtio-rng device (virtio 1.2 5.4): the ring features it offers, its
queue size, how much one buffer may receive, and an optional rate limit. The entropy
device has no feature bits and no configuration space of its own (5.4.3, 5.4.4)."""

from __future__ import annotations

from dataclasses import dataclass

from xenvirtio.devices.rng.ratelimit import RateLimit
from xenvirtio.spec import virtio as S
from xenvirtio.virtio.features import bit

# Ring features this device works with. It completes buffers in order, but IN_ORDER
# buys a one-queue device nothing; notification data is a transport matter.
DEFAULT_RING_FEATURES = (
    bit(S.VIRTIO_F_VERSION_1)
    | bit(S.VIRTIO_RING_F_INDIRECT_DESC)
    | bit(S.VIRTIO_RING_F_EVENT_IDX)
    | bit(S.VIRTIO_F_RING_PACKED)
    | bit(S.VIRTIO_F_RING_RESET)
)


@dataclass(frozen=True)
class RngConfig:
    """``max_fill``: bytes one buffer receives at most (5.4.6.1: the device MAY use less
    than the whole buffer), so a guest posting a huge chain cannot make the device draw
    gigabytes at once. ``rate_limit``: None for none. ``grant_quantum``: under a rate
    limit, the fewest bytes worth completing a buffer with (a buffer smaller than that
    still gets filled whole), so a slow rate does not turn into one interrupt per byte."""

    queue_size: int = 256
    max_fill: int = 64 * 1024
    rate_limit: RateLimit | None = None
    grant_quantum: int = 64
    ring_features: int = DEFAULT_RING_FEATURES

    def __post_init__(self) -> None:
        if not 1 <= self.queue_size <= S.VIRTQ_MAX_SIZE:
            raise ValueError("queue_size must be in 1..32768")
        if self.max_fill < 1 or self.grant_quantum < 1:
            raise ValueError("max_fill and grant_quantum must be at least 1")

    def offered_features(self) -> int:
        return self.ring_features | bit(S.VIRTIO_F_VERSION_1)
