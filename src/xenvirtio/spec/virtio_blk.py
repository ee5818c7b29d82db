"""Constants and wire layouts of the virtio block device (virtio 1.2 5.2).

All fields are little-endian. Sizes and sectors on the wire are in 512-byte units
whatever the device's block size (5.2.5: ``blk_size`` "does not affect the units used in
the protocol").
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import Final, NamedTuple

# -- Feature bits (5.2.3) -----------------------------------------------------------------
VIRTIO_BLK_F_SIZE_MAX: Final = 1
VIRTIO_BLK_F_SEG_MAX: Final = 2
VIRTIO_BLK_F_GEOMETRY: Final = 4
VIRTIO_BLK_F_RO: Final = 5
VIRTIO_BLK_F_BLK_SIZE: Final = 6
VIRTIO_BLK_F_FLUSH: Final = 9
VIRTIO_BLK_F_TOPOLOGY: Final = 10
VIRTIO_BLK_F_CONFIG_WCE: Final = 11
VIRTIO_BLK_F_MQ: Final = 12
VIRTIO_BLK_F_DISCARD: Final = 13
VIRTIO_BLK_F_WRITE_ZEROES: Final = 14
VIRTIO_BLK_F_LIFETIME: Final = 15
VIRTIO_BLK_F_SECURE_ERASE: Final = 16
VIRTIO_BLK_F_ZONED: Final = 17

FEATURE_NAMES: Final = {
    VIRTIO_BLK_F_SIZE_MAX: "VIRTIO_BLK_F_SIZE_MAX",
    VIRTIO_BLK_F_SEG_MAX: "VIRTIO_BLK_F_SEG_MAX",
    VIRTIO_BLK_F_GEOMETRY: "VIRTIO_BLK_F_GEOMETRY",
    VIRTIO_BLK_F_RO: "VIRTIO_BLK_F_RO",
    VIRTIO_BLK_F_BLK_SIZE: "VIRTIO_BLK_F_BLK_SIZE",
    VIRTIO_BLK_F_FLUSH: "VIRTIO_BLK_F_FLUSH",
    VIRTIO_BLK_F_TOPOLOGY: "VIRTIO_BLK_F_TOPOLOGY",
    VIRTIO_BLK_F_CONFIG_WCE: "VIRTIO_BLK_F_CONFIG_WCE",
    VIRTIO_BLK_F_MQ: "VIRTIO_BLK_F_MQ",
    VIRTIO_BLK_F_DISCARD: "VIRTIO_BLK_F_DISCARD",
    VIRTIO_BLK_F_WRITE_ZEROES: "VIRTIO_BLK_F_WRITE_ZEROES",
    VIRTIO_BLK_F_LIFETIME: "VIRTIO_BLK_F_LIFETIME",
    VIRTIO_BLK_F_SECURE_ERASE: "VIRTIO_BLK_F_SECURE_ERASE",
    VIRTIO_BLK_F_ZONED: "VIRTIO_BLK_F_ZONED",
}

# -- Units --------------------------------------------------------------------------------
SECTOR_SHIFT: Final = 9
SECTOR_SIZE: Final = 1 << SECTOR_SHIFT
VIRTIO_BLK_ID_BYTES: Final = 20  # GET_ID: NUL-padded ASCII, no NUL when 20 long (5.2.6)


# -- Requests (5.2.6) ---------------------------------------------------------------------
class VirtioBlkType(IntEnum):
    """``virtio_blk_req.type``."""

    VIRTIO_BLK_T_IN = 0
    VIRTIO_BLK_T_OUT = 1
    VIRTIO_BLK_T_FLUSH = 4
    VIRTIO_BLK_T_GET_ID = 8
    VIRTIO_BLK_T_GET_LIFETIME = 10
    VIRTIO_BLK_T_DISCARD = 11
    VIRTIO_BLK_T_WRITE_ZEROES = 13
    VIRTIO_BLK_T_SECURE_ERASE = 14


class VirtioBlkStatus(IntEnum):
    """The final ``status`` byte of a request."""

    VIRTIO_BLK_S_OK = 0
    VIRTIO_BLK_S_IOERR = 1
    VIRTIO_BLK_S_UNSUPP = 2


# struct virtio_blk_req { le32 type; le32 reserved; le64 sector; u8 data[]; u8 status; }
VIRTIO_BLK_REQ_HEADER: Final = struct.Struct("<IIQ")
VIRTIO_BLK_REQ_HEADER_SIZE: Final = 16
VIRTIO_BLK_STATUS_SIZE: Final = 1

# struct virtio_blk_discard_write_zeroes { le64 sector; le32 num_sectors; le32 flags; }
VIRTIO_BLK_DISCARD_WRITE_ZEROES: Final = struct.Struct("<QII")
VIRTIO_BLK_DISCARD_WRITE_ZEROES_SIZE: Final = 16
VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP: Final = 1  # flags.unmap (bit 0); bits 1..31 reserved


# -- Configuration layout (5.2.4) ---------------------------------------------------------
# struct virtio_blk_config up to and including unused1[3] (the secure erase and zoned
# fields belong to features this device does not offer).
VIRTIO_BLK_CONFIG: Final = struct.Struct("<QIIHBBIBBHIBBHIIIIIB3x")
VIRTIO_BLK_CONFIG_SIZE: Final = 60

# Offsets of the fields a driver reads on its own (multi-field reads use the struct).
OFF_CAPACITY: Final = 0
OFF_WRITEBACK: Final = 32
OFF_NUM_QUEUES: Final = 34


class VirtioBlkConfig(NamedTuple):
    """``struct virtio_blk_config`` (through ``write_zeroes_may_unmap``), field by field."""

    capacity: int = 0  # 512-byte sectors
    size_max: int = 0
    seg_max: int = 0
    cylinders: int = 0
    heads: int = 0
    sectors: int = 0
    blk_size: int = SECTOR_SIZE
    physical_block_exp: int = 0
    alignment_offset: int = 0
    min_io_size: int = 0
    opt_io_size: int = 0
    writeback: int = 0
    unused0: int = 0  # 5.2.5.2: MUST be 0
    num_queues: int = 1
    max_discard_sectors: int = 0
    max_discard_seg: int = 0
    discard_sector_alignment: int = 0
    max_write_zeroes_sectors: int = 0
    max_write_zeroes_seg: int = 0
    write_zeroes_may_unmap: int = 0

    def pack(self) -> bytes:
        return VIRTIO_BLK_CONFIG.pack(*self)

    @classmethod
    def unpack(cls, raw: bytes) -> VirtioBlkConfig:
        """Decode ``raw`` (at least `VIRTIO_BLK_CONFIG_SIZE` bytes)."""
        return cls(*VIRTIO_BLK_CONFIG.unpack_from(raw))


assert VIRTIO_BLK_CONFIG.size == VIRTIO_BLK_CONFIG_SIZE
assert VIRTIO_BLK_REQ_HEADER.size == VIRTIO_BLK_REQ_HEADER_SIZE
assert VIRTIO_BLK_DISCARD_WRITE_ZEROES.size == VIRTIO_BLK_DISCARD_WRITE_ZEROES_SIZE
