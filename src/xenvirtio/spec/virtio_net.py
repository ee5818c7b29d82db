"""Constants and wire layouts of the virtio network device (virtio 1.2 5.1).

All multi-byte fields are little-endian (VIRTIO_F_VERSION_1). With VERSION_1 the packet
header is always the 12-byte ``virtio_net_hdr`` including ``num_buffers`` (5.1.6), which
is also the header Linux's TAP exchanges once ``TUNSETVNETHDRSZ`` is 12.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import Final, NamedTuple

# -- Feature bits (5.1.3) -----------------------------------------------------------------
VIRTIO_NET_F_CSUM: Final = 0
VIRTIO_NET_F_GUEST_CSUM: Final = 1
VIRTIO_NET_F_CTRL_GUEST_OFFLOADS: Final = 2
VIRTIO_NET_F_MTU: Final = 3
VIRTIO_NET_F_MAC: Final = 5
VIRTIO_NET_F_GUEST_TSO4: Final = 7
VIRTIO_NET_F_GUEST_TSO6: Final = 8
VIRTIO_NET_F_GUEST_ECN: Final = 9
VIRTIO_NET_F_GUEST_UFO: Final = 10
VIRTIO_NET_F_HOST_TSO4: Final = 11
VIRTIO_NET_F_HOST_TSO6: Final = 12
VIRTIO_NET_F_HOST_ECN: Final = 13
VIRTIO_NET_F_HOST_UFO: Final = 14
VIRTIO_NET_F_MRG_RXBUF: Final = 15
VIRTIO_NET_F_STATUS: Final = 16
VIRTIO_NET_F_CTRL_VQ: Final = 17
VIRTIO_NET_F_CTRL_RX: Final = 18
VIRTIO_NET_F_CTRL_VLAN: Final = 19
VIRTIO_NET_F_CTRL_RX_EXTRA: Final = 20
VIRTIO_NET_F_GUEST_ANNOUNCE: Final = 21
VIRTIO_NET_F_MQ: Final = 22
VIRTIO_NET_F_CTRL_MAC_ADDR: Final = 23

FEATURE_NAMES: Final = {
    VIRTIO_NET_F_CSUM: "VIRTIO_NET_F_CSUM",
    VIRTIO_NET_F_GUEST_CSUM: "VIRTIO_NET_F_GUEST_CSUM",
    VIRTIO_NET_F_CTRL_GUEST_OFFLOADS: "VIRTIO_NET_F_CTRL_GUEST_OFFLOADS",
    VIRTIO_NET_F_MTU: "VIRTIO_NET_F_MTU",
    VIRTIO_NET_F_MAC: "VIRTIO_NET_F_MAC",
    VIRTIO_NET_F_GUEST_TSO4: "VIRTIO_NET_F_GUEST_TSO4",
    VIRTIO_NET_F_GUEST_TSO6: "VIRTIO_NET_F_GUEST_TSO6",
    VIRTIO_NET_F_GUEST_ECN: "VIRTIO_NET_F_GUEST_ECN",
    VIRTIO_NET_F_GUEST_UFO: "VIRTIO_NET_F_GUEST_UFO",
    VIRTIO_NET_F_HOST_TSO4: "VIRTIO_NET_F_HOST_TSO4",
    VIRTIO_NET_F_HOST_TSO6: "VIRTIO_NET_F_HOST_TSO6",
    VIRTIO_NET_F_HOST_ECN: "VIRTIO_NET_F_HOST_ECN",
    VIRTIO_NET_F_HOST_UFO: "VIRTIO_NET_F_HOST_UFO",
    VIRTIO_NET_F_MRG_RXBUF: "VIRTIO_NET_F_MRG_RXBUF",
    VIRTIO_NET_F_STATUS: "VIRTIO_NET_F_STATUS",
    VIRTIO_NET_F_CTRL_VQ: "VIRTIO_NET_F_CTRL_VQ",
    VIRTIO_NET_F_CTRL_RX: "VIRTIO_NET_F_CTRL_RX",
    VIRTIO_NET_F_CTRL_VLAN: "VIRTIO_NET_F_CTRL_VLAN",
    VIRTIO_NET_F_CTRL_RX_EXTRA: "VIRTIO_NET_F_CTRL_RX_EXTRA",
    VIRTIO_NET_F_GUEST_ANNOUNCE: "VIRTIO_NET_F_GUEST_ANNOUNCE",
    VIRTIO_NET_F_MQ: "VIRTIO_NET_F_MQ",
    VIRTIO_NET_F_CTRL_MAC_ADDR: "VIRTIO_NET_F_CTRL_MAC_ADDR",
}


def _bit(n: int) -> int:
    return 1 << n


# Feature bit requirements (5.1.3.1): feature -> features it needs. A bit that needs
# "one of" two others (ECN) is checked by the device model, not this map.
NET_DEPENDENCIES: Final = {
    VIRTIO_NET_F_GUEST_TSO4: _bit(VIRTIO_NET_F_GUEST_CSUM),
    VIRTIO_NET_F_GUEST_TSO6: _bit(VIRTIO_NET_F_GUEST_CSUM),
    VIRTIO_NET_F_GUEST_UFO: _bit(VIRTIO_NET_F_GUEST_CSUM),
    VIRTIO_NET_F_HOST_TSO4: _bit(VIRTIO_NET_F_CSUM),
    VIRTIO_NET_F_HOST_TSO6: _bit(VIRTIO_NET_F_CSUM),
    VIRTIO_NET_F_HOST_UFO: _bit(VIRTIO_NET_F_CSUM),
    VIRTIO_NET_F_CTRL_RX: _bit(VIRTIO_NET_F_CTRL_VQ),
    VIRTIO_NET_F_CTRL_VLAN: _bit(VIRTIO_NET_F_CTRL_VQ),
    VIRTIO_NET_F_CTRL_RX_EXTRA: _bit(VIRTIO_NET_F_CTRL_VQ),
    VIRTIO_NET_F_GUEST_ANNOUNCE: _bit(VIRTIO_NET_F_CTRL_VQ),
    VIRTIO_NET_F_MQ: _bit(VIRTIO_NET_F_CTRL_VQ),
    VIRTIO_NET_F_CTRL_MAC_ADDR: _bit(VIRTIO_NET_F_CTRL_VQ),
}

# -- Configuration layout (5.1.4) ---------------------------------------------------------
VIRTIO_NET_S_LINK_UP: Final = 1
VIRTIO_NET_S_ANNOUNCE: Final = 2

# struct virtio_net_config { u8 mac[6]; le16 status; le16 max_virtqueue_pairs; le16 mtu; }
# (speed/duplex and the RSS fields follow only with features this device does not offer)
VIRTIO_NET_CONFIG: Final = struct.Struct("<6sHHH")
VIRTIO_NET_CONFIG_SIZE: Final = VIRTIO_NET_CONFIG.size  # 12
CFG_MAC: Final = 0
CFG_STATUS: Final = 6
CFG_MAX_VIRTQUEUE_PAIRS: Final = 8
CFG_MTU: Final = 10

VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN: Final = 1
VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX: Final = 0x8000
VIRTIO_NET_MTU_MIN: Final = 68  # 5.1.4.1: mtu between 68 and 65535
VIRTIO_NET_MTU_MAX: Final = 65535


class VirtioNetConfig(NamedTuple):
    mac: bytes
    status: int
    max_virtqueue_pairs: int
    mtu: int

    def pack(self) -> bytes:
        return VIRTIO_NET_CONFIG.pack(self.mac, self.status, self.max_virtqueue_pairs, self.mtu)

    @classmethod
    def unpack(cls, raw: bytes) -> VirtioNetConfig:
        return cls(*VIRTIO_NET_CONFIG.unpack_from(raw))


# -- Packet header (5.1.6) ----------------------------------------------------------------
VIRTIO_NET_HDR_F_NEEDS_CSUM: Final = 1
VIRTIO_NET_HDR_F_DATA_VALID: Final = 2
VIRTIO_NET_HDR_F_RSC_INFO: Final = 4

VIRTIO_NET_HDR_GSO_NONE: Final = 0
VIRTIO_NET_HDR_GSO_TCPV4: Final = 1
VIRTIO_NET_HDR_GSO_UDP: Final = 3
VIRTIO_NET_HDR_GSO_TCPV6: Final = 4
VIRTIO_NET_HDR_GSO_UDP_L4: Final = 5
VIRTIO_NET_HDR_GSO_ECN: Final = 0x80

# struct virtio_net_hdr { u8 flags; u8 gso_type; le16 hdr_len; le16 gso_size;
#                         le16 csum_start; le16 csum_offset; le16 num_buffers; }
VIRTIO_NET_HDR: Final = struct.Struct("<BBHHHHH")
VIRTIO_NET_HDR_SIZE: Final = 12
HDR_NUM_BUFFERS: Final = 10  # offset of num_buffers
VIRTIO_NET_HDR_NUM_BUFFERS: Final = struct.Struct("<H")

# Frame sizes (5.1.6.3): Ethernet header, the largest packet with GSO (14 + 40 + 65535).
ETH_HLEN: Final = 14
VLAN_HLEN: Final = 4
ETH_ALEN: Final = 6
MAX_GSO_FRAME: Final = 65589
MIN_RX_BUFFER_GSO: Final = VIRTIO_NET_HDR_SIZE + MAX_GSO_FRAME  # 65601
MIN_RX_BUFFER: Final = VIRTIO_NET_HDR_SIZE + 1514  # 1526


class VirtioNetHdr(NamedTuple):
    flags: int = 0
    gso_type: int = VIRTIO_NET_HDR_GSO_NONE
    hdr_len: int = 0
    gso_size: int = 0
    csum_start: int = 0
    csum_offset: int = 0
    num_buffers: int = 0

    def pack(self) -> bytes:
        return VIRTIO_NET_HDR.pack(*self)

    @classmethod
    def unpack(cls, raw: bytes) -> VirtioNetHdr:
        return cls(*VIRTIO_NET_HDR.unpack_from(raw))


# -- Control virtqueue (5.1.6.5) ----------------------------------------------------------
# struct virtio_net_ctrl { u8 class; u8 command; u8 command-specific-data[]; u8 ack; }
VIRTIO_NET_CTRL_HDR: Final = struct.Struct("<BB")
VIRTIO_NET_OK: Final = 0
VIRTIO_NET_ERR: Final = 1


class VirtioNetCtrlClass(IntEnum):
    VIRTIO_NET_CTRL_RX = 0
    VIRTIO_NET_CTRL_MAC = 1
    VIRTIO_NET_CTRL_VLAN = 2
    VIRTIO_NET_CTRL_ANNOUNCE = 3
    VIRTIO_NET_CTRL_MQ = 4
    VIRTIO_NET_CTRL_GUEST_OFFLOADS = 5


# VIRTIO_NET_CTRL_RX commands; data: u8 on/off (PROMISC, ALLMULTI with CTRL_RX).
VIRTIO_NET_CTRL_RX_PROMISC: Final = 0
VIRTIO_NET_CTRL_RX_ALLMULTI: Final = 1
VIRTIO_NET_CTRL_RX_ALLUNI: Final = 2
VIRTIO_NET_CTRL_RX_NOMULTI: Final = 3
VIRTIO_NET_CTRL_RX_NOUNI: Final = 4
VIRTIO_NET_CTRL_RX_NOBCAST: Final = 5

# VIRTIO_NET_CTRL_MAC commands. TABLE_SET data: le32 entries, u8 macs[entries][6], twice
# (unicast, then multicast); ADDR_SET data: u8 mac[6].
VIRTIO_NET_CTRL_MAC_TABLE_SET: Final = 0
VIRTIO_NET_CTRL_MAC_ADDR_SET: Final = 1
VIRTIO_NET_CTRL_MAC_ENTRIES: Final = struct.Struct("<I")

VIRTIO_NET_CTRL_ANNOUNCE_ACK: Final = 0

# VIRTIO_NET_CTRL_MQ commands; VQ_PAIRS_SET data: le16 virtqueue_pairs.
VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET: Final = 0
VIRTIO_NET_CTRL_MQ_RSS_CONFIG: Final = 1
VIRTIO_NET_CTRL_MQ_HASH_CONFIG: Final = 2
VIRTIO_NET_CTRL_MQ_PAIRS: Final = struct.Struct("<H")


def rx_queue(pair: int) -> int:
    """receiveq(pair+1) is virtqueue 2*pair (5.1.2)."""
    return 2 * pair


def tx_queue(pair: int) -> int:
    """transmitq(pair+1) is virtqueue 2*pair + 1 (5.1.2)."""
    return 2 * pair + 1


def ctrl_queue(pairs: int) -> int:
    """controlq is virtqueue 2N, N = max_virtqueue_pairs (or 1 without MQ) (5.1.2)."""
    return 2 * pairs
