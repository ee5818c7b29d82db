"""What a virtio-blk driver puts on the wire, and what it learns from the device. Pure.

`DiskInfo` is the negotiated disk (configuration space read under a stable generation,
interpreted by the negotiated features, virtio 1.2 5.2.5); the helpers build request
headers and discard / write-zeroes segments within the device's limits, and map a
status byte to an errno.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from dataclasses import dataclass

from xenvirtio.spec import virtio_blk as B

_S = B.VirtioBlkStatus
DATA_OFFSET = 512  # where a request's data starts in its DMA buffer (header +0, status +16)


@dataclass(frozen=True, slots=True)
class DiskInfo:
    """The device as negotiated. Limits of features not negotiated are 0 / None."""

    capacity: int  # 512-byte sectors
    block_size: int
    read_only: bool
    flush: bool
    discard: bool
    write_zeroes: bool
    num_queues: int
    size_max: int | None = None
    seg_max: int | None = None
    max_discard_sectors: int = 0
    max_discard_seg: int = 0
    max_write_zeroes_sectors: int = 0
    max_write_zeroes_seg: int = 0
    write_zeroes_may_unmap: bool = False

    @classmethod
    def from_config(cls, cfg: B.VirtioBlkConfig, features: int) -> DiskInfo:
        def has(bit: int) -> bool:
            return bool(features >> bit & 1)

        block = cfg.blk_size if has(B.VIRTIO_BLK_F_BLK_SIZE) else B.SECTOR_SIZE
        if block < B.SECTOR_SIZE or block & (block - 1):
            block = B.SECTOR_SIZE  # nonsense from the device: fall back to sectors
        discard, zeroes = has(B.VIRTIO_BLK_F_DISCARD), has(B.VIRTIO_BLK_F_WRITE_ZEROES)
        return cls(
            capacity=cfg.capacity,
            block_size=block,
            read_only=has(B.VIRTIO_BLK_F_RO),
            flush=has(B.VIRTIO_BLK_F_FLUSH),
            discard=discard and cfg.max_discard_sectors > 0 and cfg.max_discard_seg > 0,
            write_zeroes=zeroes
            and cfg.max_write_zeroes_sectors > 0
            and cfg.max_write_zeroes_seg > 0,
            num_queues=max(1, cfg.num_queues) if has(B.VIRTIO_BLK_F_MQ) else 1,
            size_max=cfg.size_max or None if has(B.VIRTIO_BLK_F_SIZE_MAX) else None,
            seg_max=cfg.seg_max or None if has(B.VIRTIO_BLK_F_SEG_MAX) else None,
            max_discard_sectors=cfg.max_discard_sectors if discard else 0,
            max_discard_seg=cfg.max_discard_seg if discard else 0,
            max_write_zeroes_sectors=cfg.max_write_zeroes_sectors if zeroes else 0,
            max_write_zeroes_seg=cfg.max_write_zeroes_seg if zeroes else 0,
            write_zeroes_may_unmap=zeroes and bool(cfg.write_zeroes_may_unmap),
        )

    @property
    def size(self) -> int:
        """Bytes, whole logical blocks only."""
        return (self.capacity << B.SECTOR_SHIFT) // self.block_size * self.block_size


def header(rtype: int, sector: int = 0) -> bytes:
    """``struct virtio_blk_req`` up to ``data`` (``reserved`` is 0)."""
    return B.VIRTIO_BLK_REQ_HEADER.pack(rtype, 0, sector)


def chunks(offset: int, length: int, max_bytes: int) -> Iterator[tuple[int, int]]:
    """``(offset, length)`` pieces of at most ``max_bytes``."""
    end = offset + length
    while offset < end:
        n = min(max_bytes, end - offset)
        yield offset, n
        offset += n


def range_requests(
    offset: int, length: int, max_sectors: int, max_seg: int, unmap: bool
) -> list[bytes]:
    """The data of the DISCARD / WRITE_ZEROES requests covering ``[offset, +length)``:
    segments of at most ``max_sectors`` sectors, at most ``max_seg`` per request."""
    flags = B.VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP if unmap else 0
    pack = B.VIRTIO_BLK_DISCARD_WRITE_ZEROES.pack
    max_bytes = max_sectors << B.SECTOR_SHIFT
    segs = [
        pack(off >> B.SECTOR_SHIFT, n >> B.SECTOR_SHIFT, flags)
        for off, n in chunks(offset, length, max_bytes)
    ]
    return [b"".join(segs[i : i + max_seg]) for i in range(0, len(segs), max_seg)]


def status_errno(status: int) -> int | None:
    """None for VIRTIO_BLK_S_OK; EOPNOTSUPP for UNSUPP; EIO for IOERR and anything a
    device should never have written."""
    if status == _S.VIRTIO_BLK_S_OK:
        return None
    if status == _S.VIRTIO_BLK_S_UNSUPP:
        return errno.EOPNOTSUPP
    return errno.EIO


def parse_id(raw: bytes) -> str:
    """The GET_ID string: NUL-padded ASCII, no NUL when it is 20 bytes long."""
    return raw.split(b"\0", 1)[0].decode("ascii", "replace")
