"""The pure netif core: ring geometry, transmit packet assembly and validation, the
receive layout and its reassembly, checksum offsets, vnet header mapping."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenvirtio.pvring.netif.codecs import (
    RX_REQUEST_CODEC,
    RX_RESPONSE_CODEC,
    TX_REQUEST_CODEC,
    TX_RESPONSE_CODEC,
    ExtraInfo,
    RxResponse,
    TxRequest,
    encode_extra,
    encode_rx_response,
    encode_tx_request,
    gso_extra,
)
from xenvirtio.pvring.netif.csum import checksum_offsets
from xenvirtio.pvring.netif.rx import RxAssembler, RxMeta, rx_layout, rx_slots
from xenvirtio.pvring.netif.tx import TxAssembler, TxFatal, TxLimits, TxPacket
from xenvirtio.pvring.netif.vnet import rx_meta, rx_vnet_header, tx_vnet_header
from xenvirtio.pvring.ring import ring_size
from xenvirtio.spec import netif as N
from xenvirtio.spec import virtio_net as V
from xenvirtio.spec.virtio_net import VirtioNetHdr

LIMITS = TxLimits()
MORE, EXTRA, CSUM = N.NETTXF_more_data, N.NETTXF_extra_info, N.NETTXF_csum_blank


def req(gref: int, size: int, flags: int = 0, offset: int = 0, rid: int = 0) -> bytes:
    return encode_tx_request(TxRequest(gref, offset, flags, rid, size))


def extra(kind: int, flags: int = 0, payload: bytes = bytes(6)) -> bytes:
    return encode_extra(ExtraInfo(kind, flags, payload), N.TX_SLOT_SIZE)


def feed_all(slots: list[bytes], limits: TxLimits = LIMITS) -> list[TxPacket]:
    asm = TxAssembler(limits)
    return [p for s in slots if (p := asm.feed(s)) is not None]


def test_ring_geometry_matches_netif_h() -> None:
    assert ring_size(TX_REQUEST_CODEC, TX_RESPONSE_CODEC) == 256  # NET_TX_RING_SIZE
    assert ring_size(RX_REQUEST_CODEC, RX_RESPONSE_CODEC) == 256  # NET_RX_RING_SIZE


def test_multi_slot_gso_packet() -> None:
    total = 9000
    slots = [
        req(7, total, CSUM | MORE | EXTRA, offset=100, rid=1),
        encode_extra(gso_extra(1448, N.XEN_NETIF_GSO_TYPE_TCPV4), N.TX_SLOT_SIZE),
        req(8, 4096, MORE, rid=2),
        req(9, 4000, 0, rid=3),
    ]
    (pkt,) = feed_all(slots)
    assert pkt.error is None
    assert pkt.pieces == [(7, 100, 904), (8, 0, 4096), (9, 0, 4000)]
    assert pkt.gso == (N.XEN_NETIF_GSO_TYPE_TCPV4, 1448)
    assert pkt.responses(N.NETIF_RSP_OKAY) == [
        (1, 0), (0, N.NETIF_RSP_NULL), (2, 0), (3, 0)
    ]  # fmt: skip


def test_partial_packet_waits_for_its_last_slot() -> None:
    asm = TxAssembler(LIMITS)
    assert asm.feed(req(1, 1400, MORE)) is None and asm.partial
    pkt = asm.feed(req(2, 1000))
    assert pkt is not None and pkt.error is None and not asm.partial


@pytest.mark.parametrize(
    ("slots", "reason"),
    [
        ([req(1, 10)], "runt"),
        ([req(1, 2000)], "packet of 2000 bytes"),
        ([req(1, 200, offset=4000)], "crosses its page"),
        ([req(1, 100, MORE), req(2, 200)], "exceed the packet size"),
        ([req(1, 19 * 100, MORE), *[req(2, 100, MORE)] * 17, req(3, 100)], "19 data slots"),
        ([req(1, 1000, EXTRA), extra(1, 0, struct.pack("<HBxH", 1448, 9, 0))], "GSO type 9"),
        ([req(1, 1000, EXTRA | CSUM), extra(1, 0, struct.pack("<HBxH", 0, 1, 0))], "GSO size 0"),
        ([req(1, 1000, EXTRA), extra(1, 0, struct.pack("<HBxH", 1448, 1, 0))], "partial"),
    ],
    ids=["runt", "oversized", "offset", "sizes", "slots", "gso-type", "gso-size", "gso-csum"],
)
def test_bad_packets_are_dropped(slots: list[bytes], reason: str) -> None:
    (pkt,) = feed_all(slots)
    assert pkt.error is not None and reason in pkt.error
    assert len(pkt.responses(N.NETIF_RSP_ERROR)) == len(slots)


@pytest.mark.parametrize(
    "slots",
    [
        [req(1, 100, EXTRA), extra(0)],
        [req(1, 100, EXTRA), extra(N.XEN_NETIF_EXTRA_TYPE_MAX)],
        [req(1, 100, EXTRA), extra(1, 1), extra(1, 1)],
        [req(1, 40 * 100, MORE), *[req(2, 100, MORE)] * 30],
    ],
    ids=["type-none", "type-max", "repeated", "endless-chain"],
)
def test_broken_slot_streams_are_fatal(slots: list[bytes]) -> None:
    with pytest.raises(TxFatal):
        feed_all(slots)


def test_multicast_request() -> None:
    mac = bytes.fromhex("01005e000001")
    (pkt,) = feed_all([req(1, 0, EXTRA), extra(N.XEN_NETIF_EXTRA_TYPE_MCAST_ADD, 0, mac)])
    assert pkt.error is None and pkt.mcast == (N.XEN_NETIF_EXTRA_TYPE_MCAST_ADD, mac)


@given(st.lists(st.binary(min_size=12, max_size=12), max_size=60))
def test_any_slot_bytes_give_packets_or_fatal(slots: list[bytes]) -> None:
    asm = TxAssembler(LIMITS)
    answered = 0
    try:
        for s in slots:
            pkt = asm.feed(s)
            if pkt is not None:
                answered += len(pkt.responses(N.NETIF_RSP_OKAY))
                if pkt.error is None and pkt.mcast is None:
                    assert all(off + n <= N.XEN_PAGE_SIZE and n >= 0 for _, off, n in pkt.pieces)
                    assert pkt.size >= N.ETH_HLEN
    except TxFatal:
        return
    assert answered <= len(slots)  # one response per consumed slot, never more


@given(
    st.integers(N.ETH_HLEN, N.XEN_NETIF_MAX_TX_SIZE),
    st.sampled_from([0, N.XEN_NETIF_GSO_TYPE_TCPV4, N.XEN_NETIF_GSO_TYPE_TCPV6]),
    st.sampled_from([0, N.NETRXF_data_validated, N.NETRXF_csum_blank | N.NETRXF_data_validated]),
)
def test_rx_layout_reassembles(frame_len: int, gso_type: int, flags: int) -> None:
    meta = RxMeta(flags, gso_type, 1448 if gso_type else 0)
    n = rx_slots(frame_len, meta)
    assert n <= 18 + 1
    ids = [(40 + i) % 256 for i in range(n)]
    lengths, slots = rx_layout(frame_len, meta, ids)
    assert sum(lengths) == frame_len and len(slots) == n
    asm = RxAssembler()
    out = [asm.feed(raw, 40 + i, ids[i]) for i, raw in enumerate(slots)]
    pkt = out[-1]
    assert pkt is not None and not any(out[:-1])
    assert pkt.error is None and pkt.size == frame_len and pkt.flags & flags == flags
    assert pkt.gso == ((gso_type, 1448) if gso_type else None)


def test_rx_assembler_drops_lies() -> None:
    asm = RxAssembler()
    bad_id = asm.feed(encode_rx_response(RxResponse(5, 0, 0, 100)), 0, 0)
    assert bad_id is not None and bad_id.error and "id" in bad_id.error
    negative = asm.feed(encode_rx_response(RxResponse(1, 0, 0, -1)), 1, 1)
    assert negative is not None and negative.error
    past = asm.feed(encode_rx_response(RxResponse(2, 4000, 0, 200)), 2, 2)
    assert past is not None and past.error and "page" in past.error


def test_rx_assembler_bounds_endless_chains() -> None:
    asm = RxAssembler()
    for i in range(1000):
        pkt = asm.feed(
            encode_rx_response(RxResponse(i % 256, 0, N.NETRXF_more_data, 10)), i, i % 256
        )
        assert pkt is None
    assert asm._pkt is not None and len(asm._pkt.frags) <= 19


def ipv4_tcp(payload: int = 20, proto: int = 6, frag: int = 0) -> bytes:
    ip = bytes([0x45, 0, 0, 40, 0, 0]) + frag.to_bytes(2, "big") + bytes([64, proto]) + bytes(10)
    return bytes(12) + b"\x08\x00" + ip + bytes(20 + payload)


def test_checksum_offsets() -> None:
    assert checksum_offsets(ipv4_tcp()) == (34, 16)
    assert checksum_offsets(ipv4_tcp(proto=17)) == (34, 6)
    assert checksum_offsets(ipv4_tcp(proto=1)) is None
    assert checksum_offsets(ipv4_tcp(frag=0x2000)) is None  # MF: a fragment
    vlan = bytes(12) + b"\x81\x00\x00\x05" + ipv4_tcp()[12:]
    assert checksum_offsets(vlan) == (38, 16)
    # IPv6 with a hop-by-hop header (8 bytes) before UDP
    ip6 = bytes([0x60, 0, 0, 0, 0, 16, 0, 64]) + bytes(32)
    hop = bytes([17, 0]) + bytes(6)
    assert checksum_offsets(bytes(12) + b"\x86\xdd" + ip6 + hop + bytes(8)) == (62, 6)
    assert checksum_offsets(bytes(12) + b"\x08\x06" + bytes(28)) is None  # ARP


@given(st.binary(max_size=200))
def test_checksum_offsets_any_bytes(frame: bytes) -> None:
    offsets = checksum_offsets(frame)
    if offsets is not None:
        assert offsets[0] + offsets[1] + 2 <= len(frame)


def test_vnet_mapping() -> None:
    frame = ipv4_tcp(2000)
    gso = TxPacket(TxRequest(1, 0, CSUM | N.NETTXF_data_validated, 0, len(frame)))
    gso.extras[1] = gso_extra(1448, N.XEN_NETIF_GSO_TYPE_TCPV4)
    hdr = tx_vnet_header(gso, frame)
    assert isinstance(hdr, bytes)
    v = VirtioNetHdr.unpack(hdr)
    assert v.flags == V.VIRTIO_NET_HDR_F_NEEDS_CSUM  # data_validated never reaches the TAP
    assert (v.gso_type, v.gso_size, v.csum_start, v.csum_offset) == (1, 1448, 34, 16)
    plain = TxPacket(TxRequest(1, 0, N.NETTXF_data_validated, 0, len(frame)))
    assert VirtioNetHdr.unpack(tx_vnet_header(plain, frame)).flags == 0  # type: ignore[arg-type]
    arp = TxPacket(TxRequest(1, 0, CSUM, 0, 42))
    assert isinstance(tx_vnet_header(arp, bytes(12) + b"\x08\x06" + bytes(28)), str)
    tso6 = VirtioNetHdr(V.VIRTIO_NET_HDR_F_NEEDS_CSUM, V.VIRTIO_NET_HDR_GSO_TCPV6, 0, 1428)
    assert rx_meta(tso6.pack(), gso_tcpv4=True, gso_tcpv6=False) is None
    meta = rx_meta(tso6.pack(), gso_tcpv4=False, gso_tcpv6=True)
    assert meta == RxMeta(N.NETRXF_csum_blank | N.NETRXF_data_validated, 2, 1428)
    assert rx_meta(VirtioNetHdr(V.VIRTIO_NET_HDR_F_DATA_VALID).pack(), gso_tcpv4=False,
                   gso_tcpv6=False) == RxMeta(N.NETRXF_data_validated)  # fmt: skip


def test_rx_vnet_header() -> None:
    from xenvirtio.pvring.netif.rx import RxPacket

    frame = ipv4_tcp(100)
    pkt = RxPacket(N.NETRXF_csum_blank | N.NETRXF_data_validated, gso=(1, 1448))
    v = VirtioNetHdr.unpack(rx_vnet_header(pkt, frame) or b"")
    assert (v.flags, v.gso_type, v.gso_size, v.csum_start) == (1, 1, 1448, 34)
    assert rx_vnet_header(RxPacket(0, gso=(1, 1448)), frame) is None  # GSO needs csum_blank
    valid = rx_vnet_header(RxPacket(N.NETRXF_data_validated), frame) or b""
    assert VirtioNetHdr.unpack(valid).flags == V.VIRTIO_NET_HDR_F_DATA_VALID
