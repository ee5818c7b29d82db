"""Which TAP offloads (``TUNSETOFFLOAD``) match which virtio-net features.

``TUNSETOFFLOAD`` tells the kernel what the *reader* of a TAP accepts. The device
model reads the backend TAP on behalf of the driver's receive side, so that TAP gets
the GUEST_* features; the guest driver reads the guest's TAP on behalf of the device's
transmit side, so that one gets CSUM and the HOST_* features. Frames written to a TAP may
carry any offload either way.
"""

from __future__ import annotations

from xenvirtio.netif.tap import TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN, TUN_F_UFO
from xenvirtio.spec import virtio_net as N

_GUEST = (
    (N.VIRTIO_NET_F_GUEST_CSUM, TUN_F_CSUM),
    (N.VIRTIO_NET_F_GUEST_TSO4, TUN_F_TSO4),
    (N.VIRTIO_NET_F_GUEST_TSO6, TUN_F_TSO6),
    (N.VIRTIO_NET_F_GUEST_ECN, TUN_F_TSO_ECN),
    (N.VIRTIO_NET_F_GUEST_UFO, TUN_F_UFO),
)
_HOST = (
    (N.VIRTIO_NET_F_CSUM, TUN_F_CSUM),
    (N.VIRTIO_NET_F_HOST_TSO4, TUN_F_TSO4),
    (N.VIRTIO_NET_F_HOST_TSO6, TUN_F_TSO6),
    (N.VIRTIO_NET_F_HOST_ECN, TUN_F_TSO_ECN),
    (N.VIRTIO_NET_F_HOST_UFO, TUN_F_UFO),
)


def _flags(features: int, table: tuple[tuple[int, int], ...]) -> int:
    flags = 0
    for feature, flag in table:
        if features >> feature & 1:
            flags |= flag
    return flags if flags & TUN_F_CSUM else 0  # the kernel refuses TSO without CSUM


def guest_offloads(features: int) -> int:
    """TUNSETOFFLOAD for the device model's TAP: what the driver takes on receive."""
    return _flags(features, _GUEST)


def host_offloads(features: int) -> int:
    """TUNSETOFFLOAD for the guest's TAP: what the device takes on transmit."""
    return _flags(features, _HOST)
