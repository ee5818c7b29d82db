"""The pure parts of virtio-net: transmit header checks, receive header rewriting, control
commands and the receive filter (virtio 1.2 5.1.6)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenvirtio.devices.net import ctrl as C
from xenvirtio.devices.net.config import NetConfig
from xenvirtio.devices.net.header import TxDrop, TxLimits, check_tx, rx_from_tap, tx_to_tap
from xenvirtio.netif.offload import guest_offloads, host_offloads
from xenvirtio.netif.tap import TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6
from xenvirtio.spec import virtio_net as N
from xenvirtio.spec.virtio_net import VirtioNetHdr as H

ALL = NetConfig().offered_features()
NONE = 0
LIMITS = TxLimits(ALL, 1518)
TCP4 = dict(flags=1, gso_type=N.VIRTIO_NET_HDR_GSO_TCPV4, hdr_len=66, gso_size=1448)


@pytest.mark.parametrize(
    ("hdr", "length", "limits", "verdict"),
    [
        (H(), 60, LIMITS, None),
        (H(), 13, LIMITS, TxDrop.RUNT),
        (H(), 1518, LIMITS, None),
        (H(), 1519, LIMITS, TxDrop.OVERSIZED),
        (H(**TCP4, csum_start=34, csum_offset=16), 65000, LIMITS, None),
        (H(**TCP4, csum_start=34, csum_offset=16), 65590, LIMITS, TxDrop.OVERSIZED),
        (H(**TCP4, csum_start=34, csum_offset=16), 65000, TxLimits(NONE, 1518), TxDrop.GSO_TYPE),
        (H(flags=1, gso_type=2, gso_size=1), 9000, LIMITS, TxDrop.GSO_TYPE),
        (H(flags=1, gso_type=N.VIRTIO_NET_HDR_GSO_UDP, gso_size=1), 9000, LIMITS, TxDrop.GSO_TYPE),
        (H(gso_type=N.VIRTIO_NET_HDR_GSO_ECN), 60, LIMITS, TxDrop.GSO_TYPE),
        (H(flags=0, gso_type=1, gso_size=1448), 9000, LIMITS, TxDrop.GSO_FIELDS),
        (H(flags=1, gso_type=1, gso_size=0), 9000, LIMITS, TxDrop.GSO_FIELDS),
        (H(flags=1, csum_start=34, csum_offset=16), 60, TxLimits(NONE, 1518), TxDrop.CSUM),
        (H(flags=1, csum_start=34, csum_offset=16), 52, LIMITS, None),
        (H(flags=1, csum_start=34, csum_offset=16), 51, LIMITS, TxDrop.CSUM_RANGE),
        (H(flags=1, csum_start=0xFFFF, csum_offset=0xFFFF), 60, LIMITS, TxDrop.CSUM_RANGE),
        (H(hdr_len=61), 60, LIMITS, TxDrop.HDR_LEN),
    ],
)
def test_check_tx(hdr: H, length: int, limits: TxLimits, verdict: TxDrop | None) -> None:
    assert check_tx(hdr, length, limits) is verdict


def test_ecn_needs_host_ecn() -> None:
    hdr = H(flags=1, gso_type=N.VIRTIO_NET_HDR_GSO_TCPV4 | N.VIRTIO_NET_HDR_GSO_ECN, gso_size=9)
    assert check_tx(hdr, 9000, LIMITS) is None
    no_ecn = TxLimits(ALL & ~(1 << N.VIRTIO_NET_F_HOST_ECN), 1518)
    assert check_tx(hdr, 9000, no_ecn) is TxDrop.ECN


@given(raw=st.binary(min_size=12, max_size=12), length=st.integers(0, 70000))
def test_accepted_headers_are_safe_for_the_tap(raw: bytes, length: int) -> None:
    """Whatever the guest writes: an accepted frame's checksum and header offsets lie
    inside it, and what reaches the TAP has no DATA_VALID and num_buffers 0."""
    hdr = H.unpack(raw)
    if check_tx(hdr, length, LIMITS) is not None:
        return
    out = H.unpack(tx_to_tap(hdr))
    assert out.flags & ~N.VIRTIO_NET_HDR_F_NEEDS_CSUM == 0 and out.num_buffers == 0
    assert 14 <= length <= N.MAX_GSO_FRAME and out.hdr_len <= length
    if out.flags:
        assert out.csum_start + out.csum_offset + 2 <= length
    if out.gso_type == N.VIRTIO_NET_HDR_GSO_NONE:
        assert length <= 1518


def test_tx_to_tap_clears_data_valid() -> None:
    out = H.unpack(tx_to_tap(H(flags=N.VIRTIO_NET_HDR_F_DATA_VALID, csum_start=5, num_buffers=3)))
    assert out == H()


def test_rx_from_tap_follows_features() -> None:
    gso = H(flags=1, gso_type=N.VIRTIO_NET_HDR_GSO_TCPV6, gso_size=1400, csum_start=54).pack()
    out = rx_from_tap(gso, ALL, 3)
    assert out is not None and H.unpack(out).num_buffers == 3 and H.unpack(out).gso_size == 1400
    assert rx_from_tap(gso, ALL & ~(1 << N.VIRTIO_NET_F_GUEST_TSO6), 1) is None
    valid = H(flags=N.VIRTIO_NET_HDR_F_DATA_VALID).pack()
    assert H.unpack(rx_from_tap(valid, NONE, 1) or b"").flags == 0  # 5.1.6.4.2: zero
    assert rx_from_tap(H(flags=1, csum_start=34, csum_offset=16).pack(), NONE, 1) is None
    assert rx_from_tap(H(gso_type=9).pack(), ALL, 1) is None


def test_offload_flags_match_features() -> None:
    assert guest_offloads(ALL) & (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) == 0x7
    assert host_offloads(ALL) & 0x7 == 0x7
    assert host_offloads(1 << N.VIRTIO_NET_F_HOST_TSO4) == 0  # never TSO without CSUM
    assert guest_offloads(0) == host_offloads(0) == 0


def mac_table(uni: list[bytes], multi: list[bytes]) -> bytes:
    out = struct.pack("<I", len(uni)) + b"".join(uni)
    return out + struct.pack("<I", len(multi)) + b"".join(multi)


def test_ctrl_parse() -> None:
    rx, mac = C.C.VIRTIO_NET_CTRL_RX, C.C.VIRTIO_NET_CTRL_MAC
    assert C.parse(bytes([rx, 0, 1]), ALL, 1) == C.RxMode(0, True)
    assert C.parse(bytes([rx, 0, 1]), NONE, 1) is None  # CTRL_RX not negotiated
    assert C.parse(bytes([rx, 0]), ALL, 1) is None
    assert C.parse(bytes([rx, 7, 1]), ALL, 1) is None
    a, m = b"\x02" + bytes(5), b"\x01\x00\x5e\x00\x00\x01"
    table = C.parse(bytes([mac, 0]) + mac_table([a], [m]), ALL, 1)
    assert table == C.MacTableSet((a,), (m,))
    assert C.parse(bytes([mac, 0]) + mac_table([a], [m])[:-1], ALL, 1) is None
    assert C.parse(bytes([mac, 0]) + mac_table([a], [m]) + b"x", ALL, 1) is None
    assert C.parse(bytes([mac, 0]) + struct.pack("<I", 0xFFFFFFFF), ALL, 1) is None
    assert C.parse(bytes([mac, 1]) + a, ALL, 1) == C.MacAddrSet(a)
    assert C.parse(bytes([mac, 1]) + m, ALL, 1) is None  # multicast is no station address
    mq = bytes([C.C.VIRTIO_NET_CTRL_MQ, 0])
    mq_features = ALL | 1 << N.VIRTIO_NET_F_MQ
    assert C.parse(mq + b"\x02\x00", mq_features, 4) == C.VqPairsSet(2)
    assert C.parse(mq + b"\x00\x00", mq_features, 4) is None
    assert C.parse(mq + b"\x05\x00", mq_features, 4) is None
    assert C.parse(bytes([3, 0]), ALL, 1) == C.AnnounceAck()
    assert C.parse(b"", ALL, 1) is None


@given(raw=st.binary(max_size=64))
def test_ctrl_parse_never_raises(raw: bytes) -> None:
    C.parse(raw, ALL | 1 << N.VIRTIO_NET_F_MQ, 4)


def test_rx_filter() -> None:
    me, other = b"\x02\x00\x00\x00\x00\x01", b"\x02\x00\x00\x00\x00\x02"
    group = b"\x33\x33\x00\x00\x00\x01"
    f = C.RxFilter(me, max_entries=2)
    assert f.accepts(other)  # promiscuous after reset
    f.set_mode(C.RxMode(N.VIRTIO_NET_CTRL_RX_PROMISC, False))
    assert f.accepts(me) and f.accepts(C.BROADCAST)
    assert not f.accepts(other) and not f.accepts(group)
    f.set_tables(C.MacTableSet((other,), (group,)))
    assert f.accepts(other) and f.accepts(group)
    f.set_tables(C.MacTableSet((), ()))
    f.set_mode(C.RxMode(N.VIRTIO_NET_CTRL_RX_ALLMULTI, True))
    assert f.accepts(group) and not f.accepts(other)
    f.set_tables(C.MacTableSet(tuple(bytes([2, 0, 0, 0, 1, i]) for i in range(3)), ()))
    assert f.accepts(other)  # overflowing table: every unicast address
    f.reset(me)
    assert f.promisc and not f.unicast


def test_config_validation() -> None:
    assert NetConfig().config_space(b"\x02" * 6, True)[6:8] == b"\x01\x00"
    for bad in (
        dict(mtu=67),
        dict(max_pairs=0),
        dict(mac=b"\x01" * 6),
        dict(max_pairs=2, ctrl=False),
    ):
        with pytest.raises(ValueError):
            NetConfig(**bad)  # type: ignore[arg-type]
