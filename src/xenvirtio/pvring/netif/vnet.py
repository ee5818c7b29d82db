"""netif packet metadata <-> the TAP's ``virtio_net_hdr`` (both ends expose a TAP).

netif says "checksum blank" and "GSO type and size"; the vnet header says where the
checksum goes and which GSO type. Transmit flags a frontend may not pass on are
cleared: ``NETTXF_data_validated`` would make the host take the guest's word that its
checksums are right (the virtio-net device clears DATA_VALID for the same reason).
"""

from __future__ import annotations

from xenvirtio.pvring.netif.csum import checksum_offsets
from xenvirtio.pvring.netif.rx import RxMeta, RxPacket
from xenvirtio.pvring.netif.tx import TxPacket
from xenvirtio.spec import netif as N
from xenvirtio.spec import virtio_net as V
from xenvirtio.spec.virtio_net import VirtioNetHdr

_TO_VIRTIO = {
    N.XEN_NETIF_GSO_TYPE_TCPV4: V.VIRTIO_NET_HDR_GSO_TCPV4,
    N.XEN_NETIF_GSO_TYPE_TCPV6: V.VIRTIO_NET_HDR_GSO_TCPV6,
}
_TO_NETIF = {v: k for k, v in _TO_VIRTIO.items()}


def _partial(frame: bytes, gso: tuple[int, int] | None) -> VirtioNetHdr | None:
    offsets = checksum_offsets(frame)
    if offsets is None:
        return None
    start, offset = offsets
    hdr = VirtioNetHdr(V.VIRTIO_NET_HDR_F_NEEDS_CSUM, csum_start=start, csum_offset=offset)
    if gso is not None:
        gso_type, gso_size = gso
        hdr = hdr._replace(
            gso_type=_TO_VIRTIO[gso_type], gso_size=gso_size, hdr_len=start + offset + 2
        )
    return hdr


def tx_vnet_header(pkt: TxPacket, frame: bytes) -> bytes | str:
    """The header to write a transmitted frame with, or why it is dropped."""
    if not pkt.flags & N.NETTXF_csum_blank:
        return VirtioNetHdr().pack()
    hdr = _partial(frame, pkt.gso)
    return "no TCP/UDP checksum to complete" if hdr is None else hdr.pack()


def rx_meta(raw_hdr: bytes, *, gso_tcpv4: bool, gso_tcpv6: bool) -> RxMeta | None:
    """What to tell the frontend about a frame the TAP gave with ``raw_hdr``; None when
    it uses an offload the frontend did not ask for (dropped)."""
    hdr = VirtioNetHdr.unpack(raw_hdr)
    flags = 0
    if hdr.flags & V.VIRTIO_NET_HDR_F_NEEDS_CSUM:
        flags = N.NETRXF_csum_blank | N.NETRXF_data_validated  # as Linux netback
    elif hdr.flags & V.VIRTIO_NET_HDR_F_DATA_VALID:
        flags = N.NETRXF_data_validated
    if hdr.gso_type == V.VIRTIO_NET_HDR_GSO_NONE:
        return RxMeta(flags)
    gso_type = _TO_NETIF.get(hdr.gso_type)
    allowed = {N.XEN_NETIF_GSO_TYPE_TCPV4: gso_tcpv4, N.XEN_NETIF_GSO_TYPE_TCPV6: gso_tcpv6}
    if gso_type is None or not allowed[gso_type] or not hdr.gso_size:
        return None
    return RxMeta(flags, gso_type, hdr.gso_size)


def rx_vnet_header(pkt: RxPacket, frame: bytes) -> bytes | None:
    """The header the frontend writes a received frame to its TAP with; None when a
    partial checksum has no place in the frame (dropped)."""
    if pkt.flags & N.NETRXF_csum_blank:
        hdr = _partial(frame, pkt.gso)
        return None if hdr is None else hdr.pack()
    if pkt.gso is not None:
        return None  # GSO needs a partial checksum
    if pkt.flags & N.NETRXF_data_validated:
        return VirtioNetHdr(V.VIRTIO_NET_HDR_F_DATA_VALID).pack()
    return VirtioNetHdr().pack()
