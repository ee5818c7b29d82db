"""The control virtqueue (virtio 1.2 5.1.6.5): commands parsed from the guest's bytes,
and the receive filter they program. Pure: the device model applies the parsed command
and does any I/O (TAP queues) itself.

    struct virtio_net_ctrl { u8 class; u8 command; u8 command-specific-data[]; u8 ack; }

`parse` copies nothing it does not check: every length is exact, a command whose
feature was not negotiated or whose data is malformed is `None` (answered
VIRTIO_NET_ERR), never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from xenvirtio.spec import virtio_net as N
from xenvirtio.spec.virtio_net import VirtioNetCtrlClass as C

BROADCAST = b"\xff" * 6
CTRL_MAX_BYTES = 2 + 2 * (4 + 6 * 1024)  # the largest command read: two 1024-entry tables


@dataclass(frozen=True, slots=True)
class RxMode:
    command: int  # VIRTIO_NET_CTRL_RX_PROMISC or _ALLMULTI
    on: bool


@dataclass(frozen=True, slots=True)
class MacTableSet:
    unicast: tuple[bytes, ...]
    multicast: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class MacAddrSet:
    mac: bytes


@dataclass(frozen=True, slots=True)
class VqPairsSet:
    pairs: int


@dataclass(frozen=True, slots=True)
class AnnounceAck:
    pass


Command = RxMode | MacTableSet | MacAddrSet | VqPairsSet | AnnounceAck


def _has(features: int, bit: int) -> bool:
    return bool(features >> bit & 1)


def parse(raw: bytes, features: int, max_pairs: int) -> Command | None:
    """The command in ``raw`` (class, command, data; the ack byte is not included)."""
    if len(raw) < 2:
        return None
    cls, cmd, data = raw[0], raw[1], raw[2:]
    if cls == C.VIRTIO_NET_CTRL_RX and _has(features, N.VIRTIO_NET_F_CTRL_RX):
        if cmd in (N.VIRTIO_NET_CTRL_RX_PROMISC, N.VIRTIO_NET_CTRL_RX_ALLMULTI) and len(data) == 1:
            return RxMode(cmd, bool(data[0]))
        return None
    if cls == C.VIRTIO_NET_CTRL_MAC:
        if cmd == N.VIRTIO_NET_CTRL_MAC_ADDR_SET and _has(features, N.VIRTIO_NET_F_CTRL_MAC_ADDR):
            return MacAddrSet(data) if len(data) == N.ETH_ALEN and not data[0] & 1 else None
        if cmd == N.VIRTIO_NET_CTRL_MAC_TABLE_SET and _has(features, N.VIRTIO_NET_F_CTRL_RX):
            return _mac_tables(data)
        return None
    if cls == C.VIRTIO_NET_CTRL_MQ and _has(features, N.VIRTIO_NET_F_MQ):
        if cmd == N.VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET and len(data) == 2:
            (pairs,) = N.VIRTIO_NET_CTRL_MQ_PAIRS.unpack(data)
            # 5.1.6.5.6.1: 0 or more than max_virtqueue_pairs is the driver's error.
            return VqPairsSet(pairs) if 1 <= pairs <= max_pairs else None
        return None
    if cls == C.VIRTIO_NET_CTRL_ANNOUNCE and _has(features, N.VIRTIO_NET_F_GUEST_ANNOUNCE):
        return AnnounceAck() if cmd == N.VIRTIO_NET_CTRL_ANNOUNCE_ACK and not data else None
    return None


def _mac_tables(data: bytes) -> MacTableSet | None:
    """Two tables, each ``le32 entries`` then ``entries`` 6-byte addresses (5.1.6.5.2.2)."""
    tables: list[tuple[bytes, ...]] = []
    pos = 0
    for _ in range(2):
        if pos + 4 > len(data):
            return None
        (entries,) = N.VIRTIO_NET_CTRL_MAC_ENTRIES.unpack_from(data, pos)
        pos += 4
        end = pos + entries * N.ETH_ALEN
        if end > len(data):
            return None
        tables.append(tuple(data[i : i + N.ETH_ALEN] for i in range(pos, end, N.ETH_ALEN)))
        pos = end
    if pos != len(data):
        return None
    return MacTableSet(tables[0], tables[1])


@dataclass
class RxFilter:
    """Which destination addresses the device passes to the driver (5.1.6.5.1-2).

    After reset: promiscuous (as QEMU starts; a driver with CTRL_RX turns it off),
    empty tables (5.1.6.5.2.1). A table given more than ``max_entries`` addresses
    accepts every address of its kind (the footnote to 5.1.6.5.2 allows it)."""

    mac: bytes
    max_entries: int = 64
    promisc: bool = True
    allmulti: bool = False
    unicast: frozenset[bytes] = field(default_factory=frozenset)
    multicast: frozenset[bytes] = field(default_factory=frozenset)
    all_unicast: bool = False
    all_multicast: bool = False

    def reset(self, mac: bytes) -> None:
        """The state after a device reset."""
        self.mac, self.promisc, self.allmulti = mac, True, False
        self.unicast = self.multicast = frozenset()
        self.all_unicast = self.all_multicast = False

    def set_tables(self, cmd: MacTableSet) -> None:
        self.all_unicast = len(cmd.unicast) > self.max_entries
        self.all_multicast = len(cmd.multicast) > self.max_entries
        self.unicast = frozenset() if self.all_unicast else frozenset(cmd.unicast)
        self.multicast = frozenset() if self.all_multicast else frozenset(cmd.multicast)

    def set_mode(self, cmd: RxMode) -> None:
        if cmd.command == N.VIRTIO_NET_CTRL_RX_PROMISC:
            self.promisc = cmd.on
        else:
            self.allmulti = cmd.on

    def accepts(self, dst: bytes) -> bool:
        """Whether a frame to ``dst`` reaches the driver."""
        if self.promisc or dst == BROADCAST:
            return True
        if dst[0] & 1:
            return self.allmulti or self.all_multicast or dst in self.multicast
        return dst == self.mac or self.all_unicast or dst in self.unicast
