"""Where a partial checksum goes: ``csum_start``/``csum_offset`` from the headers.

netif carries a partial checksum as one flag (``NETTXF_csum_blank`` /
``NETRXF_csum_blank``) without offsets; the receiver finds the transport header itself,
as Linux's ``skb_checksum_setup`` does. TAP's vnet header needs the offsets. Ethernet
II with at most one 802.1Q tag, IPv4 (not a fragment) or IPv6 (hop-by-hop, routing and
destination-options headers walked, at most 8; a fragment header stops it), TCP or UDP.
Anything else has no place for a checksum: None, and the frame is dropped.
"""

from __future__ import annotations

from typing import Final

from xenvirtio.spec.netif import ETH_HLEN, VLAN_HLEN

ETH_P_IP: Final = 0x0800
ETH_P_IPV6: Final = 0x86DD
ETH_P_8021Q: Final = 0x8100
IPPROTO_TCP: Final = 6
IPPROTO_UDP: Final = 17
IPV6_EXT_HEADERS: Final = (0, 43, 60)  # hop-by-hop, routing, destination options
MAX_IPV6_EXT: Final = 8

CSUM_OFFSET: Final = {IPPROTO_TCP: 16, IPPROTO_UDP: 6}  # struct tcphdr.check, udphdr.check


def l3_start(frame: bytes) -> tuple[int, int] | None:
    """(ethertype, offset of the network header), past one VLAN tag."""
    if len(frame) < ETH_HLEN:
        return None
    proto = int.from_bytes(frame[12:14], "big")
    if proto != ETH_P_8021Q:
        return proto, ETH_HLEN
    if len(frame) < ETH_HLEN + VLAN_HLEN:
        return None
    return int.from_bytes(frame[16:18], "big"), ETH_HLEN + VLAN_HLEN


def _ipv4(frame: bytes, at: int) -> tuple[int, int] | None:
    if len(frame) < at + 20 or frame[at] >> 4 != 4:
        return None
    ihl = (frame[at] & 0xF) * 4
    frag = int.from_bytes(frame[at + 6 : at + 8], "big")
    if ihl < 20 or frag & 0x3FFF:  # MF or a fragment offset: no transport header here
        return None
    return frame[at + 9], at + ihl


def _ipv6(frame: bytes, at: int) -> tuple[int, int] | None:
    if len(frame) < at + 40 or frame[at] >> 4 != 6:
        return None
    nexthdr, at = frame[at + 6], at + 40
    for _ in range(MAX_IPV6_EXT):
        if nexthdr not in IPV6_EXT_HEADERS:
            return nexthdr, at
        if len(frame) < at + 8:
            return None
        nexthdr, at = frame[at], at + (frame[at + 1] + 1) * 8
    return None


def checksum_offsets(frame: bytes) -> tuple[int, int] | None:
    """(csum_start, csum_offset) of a TCP or UDP frame whose checksum is blank."""
    l3 = l3_start(frame)
    if l3 is None:
        return None
    proto, at = l3
    if proto == ETH_P_IP:
        l4 = _ipv4(frame, at)
    elif proto == ETH_P_IPV6:
        l4 = _ipv6(frame, at)
    else:
        return None
    if l4 is None or l4[0] not in CSUM_OFFSET:
        return None
    start, offset = l4[1], CSUM_OFFSET[l4[0]]
    if start + offset + 2 > len(frame):
        return None
    return start, offset
