"""Settings of a virtio-net device: what it offers, its configuration space, and the frame
limits its queues are checked against once features are negotiated (virtio 1.2 5.1.3,
5.1.4, 5.1.6)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from xenvirtio.spec import virtio as S
from xenvirtio.spec import virtio_net as N
from xenvirtio.virtio.features import bit

# Ring features this device model works with. No IN_ORDER: receive buffers of a dropped
# frame are reused for the next one, and the control queue completes on its own.
DEFAULT_RING_FEATURES = (
    bit(S.VIRTIO_F_VERSION_1)
    | bit(S.VIRTIO_RING_F_INDIRECT_DESC)
    | bit(S.VIRTIO_RING_F_EVENT_IDX)
    | bit(S.VIRTIO_F_RING_PACKED)
    | bit(S.VIRTIO_F_RING_RESET)
)
# Offloads both ways: partial checksums and TSO (v4, v6, with ECN), passed through the TAP.
OFFLOAD_FEATURES = sum(
    bit(f)
    for f in (
        N.VIRTIO_NET_F_CSUM,
        N.VIRTIO_NET_F_GUEST_CSUM,
        N.VIRTIO_NET_F_GUEST_TSO4,
        N.VIRTIO_NET_F_GUEST_TSO6,
        N.VIRTIO_NET_F_GUEST_ECN,
        N.VIRTIO_NET_F_HOST_TSO4,
        N.VIRTIO_NET_F_HOST_TSO6,
        N.VIRTIO_NET_F_HOST_ECN,
    )
)
CTRL_FEATURES = sum(
    bit(f)
    for f in (
        N.VIRTIO_NET_F_CTRL_VQ,
        N.VIRTIO_NET_F_CTRL_RX,
        N.VIRTIO_NET_F_CTRL_MAC_ADDR,
        N.VIRTIO_NET_F_GUEST_ANNOUNCE,
    )
)
GUEST_GSO = bit(N.VIRTIO_NET_F_GUEST_TSO4) | bit(N.VIRTIO_NET_F_GUEST_TSO6)
GUEST_GSO |= bit(N.VIRTIO_NET_F_GUEST_UFO)


def random_mac() -> bytes:
    """A locally administered unicast address (IEEE 802 9.2: bit 1 set, bit 0 clear)."""
    raw = bytearray(os.urandom(6))
    raw[0] = (raw[0] & 0xFC) | 0x02
    return bytes(raw)


def mac_text(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def parse_mac(text: str) -> bytes:
    raw = bytes(int(part, 16) for part in text.split(":"))
    if len(raw) != N.ETH_ALEN:
        raise ValueError(f"bad MAC address {text!r}")
    return raw


@dataclass(frozen=True)
class NetConfig:
    """A device's settings. ``max_pairs`` > 1 offers VIRTIO_NET_F_MQ (one TAP queue per
    pair); ``offloads`` offers checksum and TSO offload both ways; ``ctrl`` the control
    queue with RX mode, MAC filtering, MAC address and announce commands."""

    mac: bytes = b"\x02\x00\x00\x00\x00\x01"
    mtu: int = 1500
    max_pairs: int = 1
    queue_size: int = 256
    link_up: bool = True
    offloads: bool = True
    mrg_rxbuf: bool = True
    ctrl: bool = True
    max_mac_entries: int = 64  # per table; more switches that table to "accept all"
    ring_features: int = DEFAULT_RING_FEATURES

    def __post_init__(self) -> None:
        if len(self.mac) != N.ETH_ALEN or self.mac[0] & 1:
            raise ValueError("mac must be a 6-byte unicast address")
        if not N.VIRTIO_NET_MTU_MIN <= self.mtu <= N.VIRTIO_NET_MTU_MAX:
            raise ValueError("mtu must be in 68..65535 (virtio 1.2 5.1.4.1)")
        if not 1 <= self.max_pairs <= N.VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX:
            raise ValueError("max_pairs must be in 1..0x8000")
        if self.max_pairs > 1 and not self.ctrl:
            raise ValueError("multiqueue needs the control queue (VIRTIO_NET_F_MQ)")
        if not 2 <= self.queue_size <= S.VIRTQ_MAX_SIZE:
            raise ValueError("queue_size must be in 2..32768")

    def offered_features(self) -> int:
        f = self.ring_features | bit(S.VIRTIO_F_VERSION_1)
        f |= bit(N.VIRTIO_NET_F_MAC) | bit(N.VIRTIO_NET_F_MTU) | bit(N.VIRTIO_NET_F_STATUS)
        if self.offloads:
            f |= OFFLOAD_FEATURES
        if self.mrg_rxbuf:
            f |= bit(N.VIRTIO_NET_F_MRG_RXBUF)
        if self.ctrl:
            f |= CTRL_FEATURES
        if self.max_pairs > 1:
            f |= bit(N.VIRTIO_NET_F_MQ)
        return f

    @property
    def num_queues(self) -> int:
        """receiveq/transmitq pairs, then the control queue if offered (5.1.2)."""
        return 2 * self.max_pairs + (1 if self.ctrl else 0)

    def config_space(self, mac: bytes, link_up: bool, announce: bool = False) -> bytes:
        status = (N.VIRTIO_NET_S_LINK_UP if link_up else 0) | (
            N.VIRTIO_NET_S_ANNOUNCE if announce else 0
        )
        return N.VirtioNetConfig(mac, status, self.max_pairs, self.mtu).pack()

    def max_tx_frame(self, gso: bool) -> int:
        """Largest frame (without the virtio header) transmitq accepts (5.1.4.1: mtu plus
        the Ethernet header, a VLAN tag allowed; 5.1.6.3: 65589 with GSO)."""
        return N.MAX_GSO_FRAME if gso else self.mtu + N.ETH_HLEN + N.VLAN_HLEN

    def rx_room(self, features: int) -> int:
        """Receive buffer bytes one frame may need, header included (5.1.6.3)."""
        frame = N.MAX_GSO_FRAME if features & GUEST_GSO else self.mtu + N.ETH_HLEN + N.VLAN_HLEN
        return N.VIRTIO_NET_HDR_SIZE + frame
