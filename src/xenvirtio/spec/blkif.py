"""Xen's block interface, ``xen/include/public/io/blkif.h``: constants and wire layouts
(x86_64 ABI, ``protocol`` = ``x86_64-abi``).

Every request occupies one 112-byte ring entry (``sizeof(struct blkif_request)``); its
first byte, ``operation``, says which layout the rest has. A response is 16 bytes.
"""

from __future__ import annotations

import struct
from typing import Final

# --- operations (blkif.h "BLKIF_OP_*") -----------------------------------------------
BLKIF_OP_READ: Final = 0
BLKIF_OP_WRITE: Final = 1
BLKIF_OP_WRITE_BARRIER: Final = 2  # feature-barrier
BLKIF_OP_FLUSH_DISKCACHE: Final = 3  # feature-flush-cache
BLKIF_OP_RESERVED_1: Final = 4
BLKIF_OP_DISCARD: Final = 5  # feature-discard
BLKIF_OP_INDIRECT: Final = 6  # feature-max-indirect-segments

# --- response status ----------------------------------------------------------------
BLKIF_RSP_EOPNOTSUPP: Final = -2
BLKIF_RSP_ERROR: Final = -1
BLKIF_RSP_OKAY: Final = 0

# --- limits -------------------------------------------------------------------------
BLKIF_MAX_SEGMENTS_PER_REQUEST: Final = 11
BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST: Final = 8
BLKIF_DISCARD_SECURE: Final = 1 << 0
XEN_PAGE_SIZE: Final = 4096
SECTOR_SIZE: Final = 512  # blkif_sector_t units, whatever sector-size says
SECTORS_PER_PAGE: Final = XEN_PAGE_SIZE // SECTOR_SIZE

# --- "info" bits (VDISK_* of Linux's xen-blkfront) ----------------------------------
VDISK_CDROM: Final = 0x1
VDISK_REMOVABLE: Final = 0x2
VDISK_READONLY: Final = 0x4

XEN_IO_PROTO_ABI_X86_64: Final = "x86_64-abi"
XEN_IO_PROTO_ABI_X86_32: Final = "x86_32-abi"
XEN_IO_PROTO_ABI_NATIVE: Final = XEN_IO_PROTO_ABI_X86_64

# --- layouts ------------------------------------------------------------------------
# struct blkif_request_segment { grant_ref_t gref; uint8_t first_sect, last_sect; }
SEGMENT: Final = struct.Struct("<IBB2x")
SEGMENTS_PER_INDIRECT_FRAME: Final = XEN_PAGE_SIZE // SEGMENT.size  # 512

# struct blkif_request: operation, nr_segments, handle, id, sector_number, seg[11]
REQUEST_HEADER: Final = struct.Struct("<BBH4xQQ")
REQUEST_SIZE: Final = REQUEST_HEADER.size + BLKIF_MAX_SEGMENTS_PER_REQUEST * SEGMENT.size

# struct blkif_request_discard: operation, flag, handle, id, sector_number, nr_sectors
DISCARD: Final = struct.Struct("<BBH4xQQQ")

# struct blkif_request_indirect: operation, indirect_op, nr_segments, id, sector_number,
# handle, indirect_grefs[8]  (64 bytes)
INDIRECT: Final = struct.Struct("<BBH4xQQH2x8I4x")

# struct blkif_response: id, operation, status
RESPONSE: Final = struct.Struct("<QBxh4x")

assert REQUEST_SIZE == 112 and INDIRECT.size == 64 and RESPONSE.size == 16

# --- XenStore keys (blkif.h "Backend/Frontend XenBus Nodes") ------------------------
KEY_SECTORS: Final = "sectors"
KEY_SECTOR_SIZE: Final = "sector-size"
KEY_PHYSICAL_SECTOR_SIZE: Final = "physical-sector-size"
KEY_INFO: Final = "info"
KEY_FEATURE_FLUSH_CACHE: Final = "feature-flush-cache"
KEY_FEATURE_BARRIER: Final = "feature-barrier"
KEY_FEATURE_DISCARD: Final = "feature-discard"
KEY_DISCARD_GRANULARITY: Final = "discard-granularity"
KEY_DISCARD_ALIGNMENT: Final = "discard-alignment"
KEY_DISCARD_SECURE: Final = "discard-secure"
KEY_FEATURE_PERSISTENT: Final = "feature-persistent"
KEY_FEATURE_MAX_INDIRECT_SEGMENTS: Final = "feature-max-indirect-segments"
KEY_MULTI_QUEUE_MAX_QUEUES: Final = "multi-queue-max-queues"
KEY_MULTI_QUEUE_NUM_QUEUES: Final = "multi-queue-num-queues"
KEY_MAX_RING_PAGE_ORDER: Final = "max-ring-page-order"
KEY_RING_PAGE_ORDER: Final = "ring-page-order"
KEY_RING_REF: Final = "ring-ref"
KEY_EVENT_CHANNEL: Final = "event-channel"
KEY_PROTOCOL: Final = "protocol"
KEY_MODE: Final = "mode"
KEY_PARAMS: Final = "params"
