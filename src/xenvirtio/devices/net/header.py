"""The ``virtio_net_hdr`` in both directions, as pure functions (virtio 1.2 5.1.6).

Transmit: the guest wrote the header, so it is hostile. `check_tx` takes the copied
header and the frame length and returns why the frame must be dropped (or None);
`tx_to_tap` gives the header the TAP gets, with every bit the guest may not set cleared.
The TAP (Linux ``virtio_net_hdr_to_skb``) checks the frame against the header again; we
never rely on that, because a header the kernel accepts can still be one the negotiated
features forbid.

Receive: the header comes from the kernel through the TAP. `rx_from_tap` keeps only what
the negotiated features allow the device to tell the driver and sets ``num_buffers``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from xenvirtio.spec import virtio_net as N
from xenvirtio.spec.virtio_net import VirtioNetHdr

_GSO_FEATURE_TX = {
    N.VIRTIO_NET_HDR_GSO_TCPV4: N.VIRTIO_NET_F_HOST_TSO4,
    N.VIRTIO_NET_HDR_GSO_TCPV6: N.VIRTIO_NET_F_HOST_TSO6,
    N.VIRTIO_NET_HDR_GSO_UDP: N.VIRTIO_NET_F_HOST_UFO,
}
_GSO_FEATURE_RX = {
    N.VIRTIO_NET_HDR_GSO_TCPV4: N.VIRTIO_NET_F_GUEST_TSO4,
    N.VIRTIO_NET_HDR_GSO_TCPV6: N.VIRTIO_NET_F_GUEST_TSO6,
    N.VIRTIO_NET_HDR_GSO_UDP: N.VIRTIO_NET_F_GUEST_UFO,
}


class TxDrop(Enum):
    """Why a transmitted frame was dropped (counted per reason)."""

    SHORT_CHAIN = "chain shorter than virtio_net_hdr"
    RUNT = "frame shorter than an Ethernet header"
    OVERSIZED = "frame larger than mtu + Ethernet header (or 65589 with GSO)"
    GSO_TYPE = "gso_type unknown or not negotiated"
    ECN = "VIRTIO_NET_HDR_GSO_ECN without VIRTIO_NET_F_HOST_ECN"
    GSO_FIELDS = "GSO without NEEDS_CSUM or with gso_size 0"
    CSUM = "NEEDS_CSUM without VIRTIO_NET_F_CSUM"
    CSUM_RANGE = "csum_start/csum_offset outside the frame"
    HDR_LEN = "hdr_len larger than the frame"
    LINK_DOWN = "link down"
    TAP_ERROR = "the TAP refused the frame"


@dataclass(frozen=True, slots=True)
class TxLimits:
    """What the negotiated features allow on transmitq."""

    features: int
    max_frame: int  # gso_type NONE
    max_gso_frame: int = N.MAX_GSO_FRAME

    def has(self, feature: int) -> bool:
        return bool(self.features >> feature & 1)


def check_tx(hdr: VirtioNetHdr, frame_len: int, limits: TxLimits) -> TxDrop | None:
    """Why this transmitted frame must be dropped, or None (virtio 1.2 5.1.6.2.1-2)."""
    if frame_len < N.ETH_HLEN:
        return TxDrop.RUNT
    gso = hdr.gso_type & ~N.VIRTIO_NET_HDR_GSO_ECN
    if gso == N.VIRTIO_NET_HDR_GSO_NONE:
        if hdr.gso_type & N.VIRTIO_NET_HDR_GSO_ECN:
            return TxDrop.GSO_TYPE
        if frame_len > limits.max_frame:
            return TxDrop.OVERSIZED
    else:
        feature = _GSO_FEATURE_TX.get(gso)
        if feature is None or not limits.has(feature):
            return TxDrop.GSO_TYPE
        if hdr.gso_type & N.VIRTIO_NET_HDR_GSO_ECN and not limits.has(N.VIRTIO_NET_F_HOST_ECN):
            return TxDrop.ECN
        # 5.1.6.2.1: gso_type other than NONE MUST come with NEEDS_CSUM and a gso_size.
        if not hdr.flags & N.VIRTIO_NET_HDR_F_NEEDS_CSUM or hdr.gso_size == 0:
            return TxDrop.GSO_FIELDS
        if frame_len > limits.max_gso_frame:
            return TxDrop.OVERSIZED
    if hdr.flags & N.VIRTIO_NET_HDR_F_NEEDS_CSUM:
        if not limits.has(N.VIRTIO_NET_F_CSUM):
            return TxDrop.CSUM
        # The checksum (2 bytes at csum_start + csum_offset) must lie inside the frame.
        if hdr.csum_start + hdr.csum_offset + 2 > frame_len:
            return TxDrop.CSUM_RANGE
    if hdr.hdr_len > frame_len:
        return TxDrop.HDR_LEN
    return None


def tx_to_tap(hdr: VirtioNetHdr) -> bytes:
    """The header handed to the TAP. DATA_VALID and RSC_INFO are cleared (the driver
    MUST NOT set them, 5.1.6.2.1): the kernel would otherwise take DATA_VALID as
    "checksum verified" and let a guest slip frames with bad checksums past the host.
    csum fields are zeroed without NEEDS_CSUM (the device MUST NOT use them), and
    ``num_buffers`` is 0."""
    flags = hdr.flags & N.VIRTIO_NET_HDR_F_NEEDS_CSUM
    if flags:
        return hdr._replace(flags=flags, num_buffers=0).pack()
    return hdr._replace(flags=0, csum_start=0, csum_offset=0, num_buffers=0).pack()


def rx_from_tap(raw: bytes, features: int, num_buffers: int) -> bytes | None:
    """The header the driver gets for a frame the TAP gave us, or None when the frame
    uses an offload the driver did not negotiate (it is dropped: 5.1.6.4.2 forbids
    passing it; with matching TUNSETOFFLOAD the kernel never sends one)."""
    hdr = VirtioNetHdr.unpack(raw)
    gso = hdr.gso_type & ~N.VIRTIO_NET_HDR_GSO_ECN
    if gso != N.VIRTIO_NET_HDR_GSO_NONE:
        feature = _GSO_FEATURE_RX.get(gso)
        if feature is None or not features >> feature & 1:
            return None
        if hdr.gso_type & N.VIRTIO_NET_HDR_GSO_ECN and not (
            features >> N.VIRTIO_NET_F_GUEST_ECN & 1
        ):
            return None
    elif hdr.gso_type:
        return None
    if features >> N.VIRTIO_NET_F_GUEST_CSUM & 1:
        flags = hdr.flags & (N.VIRTIO_NET_HDR_F_NEEDS_CSUM | N.VIRTIO_NET_HDR_F_DATA_VALID)
    else:
        if hdr.flags & N.VIRTIO_NET_HDR_F_NEEDS_CSUM:
            return None  # a partial checksum the driver cannot finish
        flags = 0  # 5.1.6.4.2: without GUEST_CSUM, flags MUST be zero
    return hdr._replace(flags=flags, num_buffers=num_buffers).pack()
