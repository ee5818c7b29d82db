"""Settings of a virtio-blk device: what it offers, its configuration space, and the
limits its requests are checked against once features are negotiated (virtio 1.2 5.2.3,
5.2.4)."""

from __future__ import annotations

from dataclasses import dataclass

from xenvirtio.devices.blk.request import RequestLimits
from xenvirtio.spec import virtio as S
from xenvirtio.spec import virtio_blk as B
from xenvirtio.virtio.features import bit

# The ring features this device model works with (it completes out of order, so no
# IN_ORDER; notification data is a transport matter).
DEFAULT_RING_FEATURES = (
    bit(S.VIRTIO_F_VERSION_1)
    | bit(S.VIRTIO_RING_F_INDIRECT_DESC)
    | bit(S.VIRTIO_RING_F_EVENT_IDX)
    | bit(S.VIRTIO_F_RING_PACKED)
    | bit(S.VIRTIO_F_RING_RESET)
)
_MAX_SECTORS_FIELD = 0xFFFF_FFFF


@dataclass(frozen=True)
class BlkConfig:
    """A device's settings. ``num_queues`` > 1 offers VIRTIO_BLK_F_MQ (give one queue
    per guest vCPU); ``serial`` answers GET_ID (at most 20 ASCII bytes); ``blk_size`` is
    the logical block size (a power of two >= 512). ``flush=False`` offers no FLUSH, and
    the device then makes every write stable before completing it."""

    read_only: bool = False
    num_queues: int = 1
    queue_size: int = 256
    serial: str = ""
    flush: bool = True
    discard: bool = True
    write_zeroes: bool = True
    blk_size: int = B.SECTOR_SIZE
    physical_block_exp: int = 0
    min_io_size: int = 1
    opt_io_size: int = 0
    size_max: int = 1 << 20
    seg_max: int | None = None  # default: queue_size - 2 (header and status)
    max_discard_sectors: int = 0x3F_FFFF  # 2 GiB - 512
    max_discard_seg: int = 32
    max_write_zeroes_sectors: int = 0x3F_FFFF
    max_write_zeroes_seg: int = 32
    ring_features: int = DEFAULT_RING_FEATURES

    def __post_init__(self) -> None:
        if not 1 <= self.num_queues <= 0xFFFF:
            raise ValueError("num_queues must be in 1..65535")
        if self.queue_size < 3 or self.queue_size > S.VIRTQ_MAX_SIZE:
            raise ValueError("queue_size must be in 3..32768")
        if self.blk_size < B.SECTOR_SIZE or self.blk_size & (self.blk_size - 1):
            raise ValueError("blk_size must be a power of two >= 512")
        if len(self.serial_bytes) > B.VIRTIO_BLK_ID_BYTES:
            raise ValueError("serial is longer than 20 bytes")
        limits = (self.max_discard_sectors, self.max_write_zeroes_sectors, self.size_max)
        if any(not 0 < v <= _MAX_SECTORS_FIELD for v in limits):
            raise ValueError("size and sector limits must fit le32 and be > 0")
        if min(self.max_discard_seg, self.max_write_zeroes_seg, self.effective_seg_max) < 1:
            raise ValueError("segment limits must be >= 1")

    @property
    def serial_bytes(self) -> bytes:
        return self.serial.encode("ascii")

    @property
    def effective_seg_max(self) -> int:
        return self.queue_size - 2 if self.seg_max is None else self.seg_max

    def offered_features(self) -> int:
        f = self.ring_features | bit(S.VIRTIO_F_VERSION_1)
        f |= bit(B.VIRTIO_BLK_F_SIZE_MAX) | bit(B.VIRTIO_BLK_F_SEG_MAX)
        f |= bit(B.VIRTIO_BLK_F_BLK_SIZE) | bit(B.VIRTIO_BLK_F_TOPOLOGY)
        options = (
            (self.read_only, B.VIRTIO_BLK_F_RO),
            (self.flush, B.VIRTIO_BLK_F_FLUSH),
            (self.num_queues > 1, B.VIRTIO_BLK_F_MQ),
            (self.discard and not self.read_only, B.VIRTIO_BLK_F_DISCARD),
            (self.write_zeroes and not self.read_only, B.VIRTIO_BLK_F_WRITE_ZEROES),
        )
        for enabled, feature in options:
            if enabled:
                f |= bit(feature)
        return f

    def config_space(self, disk_bytes: int) -> B.VirtioBlkConfig:
        """The configuration layout for a disk of ``disk_bytes`` (whole blocks only)."""
        return B.VirtioBlkConfig(
            capacity=(disk_bytes // self.blk_size * self.blk_size) >> B.SECTOR_SHIFT,
            size_max=self.size_max,
            seg_max=self.effective_seg_max,
            blk_size=self.blk_size,
            physical_block_exp=self.physical_block_exp,
            min_io_size=self.min_io_size,
            opt_io_size=self.opt_io_size,
            num_queues=self.num_queues,
            max_discard_sectors=self.max_discard_sectors,
            max_discard_seg=self.max_discard_seg,
            discard_sector_alignment=self.blk_size >> B.SECTOR_SHIFT,
            max_write_zeroes_sectors=self.max_write_zeroes_sectors,
            max_write_zeroes_seg=self.max_write_zeroes_seg,
            write_zeroes_may_unmap=1,
        )

    def limits(self, capacity: int, features: int) -> RequestLimits:
        """What requests are checked against once ``features`` are negotiated."""

        def has(feature: int) -> bool:
            return bool(features >> feature & 1)

        return RequestLimits(
            capacity=capacity,
            read_only=self.read_only,
            blk_size=self.blk_size,
            flush=has(B.VIRTIO_BLK_F_FLUSH),
            discard=has(B.VIRTIO_BLK_F_DISCARD),
            write_zeroes=has(B.VIRTIO_BLK_F_WRITE_ZEROES),
            writethrough=not has(B.VIRTIO_BLK_F_FLUSH),
            seg_max=self.effective_seg_max if has(B.VIRTIO_BLK_F_SEG_MAX) else None,
            size_max=self.size_max if has(B.VIRTIO_BLK_F_SIZE_MAX) else None,
            max_discard_sectors=self.max_discard_sectors,
            max_discard_seg=self.max_discard_seg,
            max_write_zeroes_sectors=self.max_write_zeroes_sectors,
            max_write_zeroes_seg=self.max_write_zeroes_seg,
        )
