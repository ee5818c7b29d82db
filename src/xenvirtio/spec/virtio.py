"""Constants and wire layouts from the VirtIO 1.2 specification (and nothing else).

All ring structures are little-endian (virtio 1.2 2.7 / 2.8, `le16`/`le32`/`le64`).
Names are the spec's, so this file can be read beside it.
"""

from __future__ import annotations

import struct
from enum import IntEnum, IntFlag
from typing import Final

# -- Device status field (virtio 1.2 2.1) -------------------------------------------------
VIRTIO_CONFIG_S_ACKNOWLEDGE: Final = 1
VIRTIO_CONFIG_S_DRIVER: Final = 2
VIRTIO_CONFIG_S_DRIVER_OK: Final = 4
VIRTIO_CONFIG_S_FEATURES_OK: Final = 8
VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET: Final = 64
VIRTIO_CONFIG_S_FAILED: Final = 128


class DeviceStatus(IntFlag):
    """Device status bits (virtio 1.2 2.1)."""

    ACKNOWLEDGE = VIRTIO_CONFIG_S_ACKNOWLEDGE
    DRIVER = VIRTIO_CONFIG_S_DRIVER
    DRIVER_OK = VIRTIO_CONFIG_S_DRIVER_OK
    FEATURES_OK = VIRTIO_CONFIG_S_FEATURES_OK
    DEVICE_NEEDS_RESET = VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET
    FAILED = VIRTIO_CONFIG_S_FAILED


# -- Feature bits (virtio 1.2 6, "Reserved Feature Bits"; 0-23 are device specific) -------
VIRTIO_F_NOTIFY_ON_EMPTY: Final = 24  # legacy only
VIRTIO_F_ANY_LAYOUT: Final = 27  # legacy only
VIRTIO_RING_F_INDIRECT_DESC: Final = 28
VIRTIO_RING_F_EVENT_IDX: Final = 29
VIRTIO_F_VERSION_1: Final = 32
VIRTIO_F_ACCESS_PLATFORM: Final = 33
VIRTIO_F_RING_PACKED: Final = 34
VIRTIO_F_IN_ORDER: Final = 35
VIRTIO_F_ORDER_PLATFORM: Final = 36
VIRTIO_F_SR_IOV: Final = 37
VIRTIO_F_NOTIFICATION_DATA: Final = 38
VIRTIO_F_NOTIF_CONFIG_DATA: Final = 39
VIRTIO_F_RING_RESET: Final = 40

# Bits 24..40 are the transport/ring ("reserved") range (virtio 1.2 6).
VIRTIO_TRANSPORT_F_START: Final = 24
VIRTIO_TRANSPORT_F_END: Final = 41

# The feature bits this project's ring code understands.
RING_FEATURES: Final = (
    (1 << VIRTIO_RING_F_INDIRECT_DESC)
    | (1 << VIRTIO_RING_F_EVENT_IDX)
    | (1 << VIRTIO_F_VERSION_1)
    | (1 << VIRTIO_F_ACCESS_PLATFORM)
    | (1 << VIRTIO_F_RING_PACKED)
    | (1 << VIRTIO_F_IN_ORDER)
    | (1 << VIRTIO_F_ORDER_PLATFORM)
    | (1 << VIRTIO_F_NOTIFICATION_DATA)
    | (1 << VIRTIO_F_RING_RESET)
)

# -- Device IDs (virtio 1.2 5) ------------------------------------------------------------


class VirtioDeviceId(IntEnum):
    """Device type identifiers (virtio 1.2 5, "Device Types")."""

    NET = 1
    BLOCK = 2
    CONSOLE = 3
    ENTROPY = 4
    BALLOON = 5
    IOMEM = 6
    RPMSG = 7
    SCSI = 8
    TRANSPORT_9P = 9
    MAC80211_WLAN = 10
    RPROC_SERIAL = 11
    CAIF = 12
    MEMORY_BALLOON = 13
    GPU = 16
    TIMER = 17
    INPUT = 18
    SOCKET = 19
    CRYPTO = 20
    SIGNAL_DIST = 21
    PSTORE = 22
    IOMMU = 23
    MEMORY = 24
    SOUND = 25
    FS = 26
    PMEM = 27
    RPMB = 28
    MAC80211_HWSIM = 29
    VIDEO_ENCODER = 30
    VIDEO_DECODER = 31
    SCMI = 32
    NITRO_SEC_MOD = 33
    I2C_ADAPTER = 34
    WATCHDOG = 35
    CAN = 36
    PARAMETER_SERVER = 38
    AUDIO_POLICY = 39
    BLUETOOTH = 40
    GPIO = 41
    RDMA = 42


# -- Split virtqueue (virtio 1.2 2.7) -----------------------------------------------------
VIRTQ_DESC_F_NEXT: Final = 1
VIRTQ_DESC_F_WRITE: Final = 2
VIRTQ_DESC_F_INDIRECT: Final = 4
VIRTQ_AVAIL_F_NO_INTERRUPT: Final = 1
VIRTQ_USED_F_NO_NOTIFY: Final = 1

VIRTQ_MAX_SIZE: Final = 32768  # Queue Size is at most 32768 (virtio 1.2 2.7 / 2.8)

# Alignment requirements, virtio 1.2 2.7 table "Virtqueue Part Alignment".
VIRTQ_DESC_ALIGN: Final = 16
VIRTQ_AVAIL_ALIGN: Final = 2
VIRTQ_USED_ALIGN: Final = 4

# struct virtq_desc { le64 addr; le32 len; le16 flags; le16 next; }   (2.7.5)
VIRTQ_DESC: Final = struct.Struct("<QIHH")
VIRTQ_DESC_SIZE: Final = 16
# struct virtq_avail { le16 flags; le16 idx; le16 ring[size]; le16 used_event; }   (2.7.6)
VIRTQ_AVAIL_HEADER: Final = struct.Struct("<HH")
VIRTQ_AVAIL_ELEM: Final = struct.Struct("<H")
# struct virtq_used { le16 flags; le16 idx; virtq_used_elem ring[size]; le16 avail_event; }
VIRTQ_USED_HEADER: Final = struct.Struct("<HH")
# struct virtq_used_elem { le32 id; le32 len; }   (2.7.8)
VIRTQ_USED_ELEM: Final = struct.Struct("<II")
VIRTQ_USED_ELEM_SIZE: Final = 8
VIRTQ_U16: Final = struct.Struct("<H")

# -- Packed virtqueue (virtio 1.2 2.8) ----------------------------------------------------
VIRTQ_DESC_F_AVAIL: Final = 7  # bit number, as in the spec
VIRTQ_DESC_F_USED: Final = 15  # bit number
VIRTQ_PACKED_DESC_F_AVAIL: Final = 1 << VIRTQ_DESC_F_AVAIL
VIRTQ_PACKED_DESC_F_USED: Final = 1 << VIRTQ_DESC_F_USED

RING_EVENT_FLAGS_ENABLE: Final = 0x0
RING_EVENT_FLAGS_DISABLE: Final = 0x1
RING_EVENT_FLAGS_DESC: Final = 0x2

VIRTQ_PACKED_DESC_ALIGN: Final = 16
VIRTQ_PACKED_EVENT_ALIGN: Final = 4

# struct pvirtq_desc { le64 addr; le32 len; le16 id; le16 flags; }   (2.8.13)
PVIRTQ_DESC: Final = struct.Struct("<QIHH")
PVIRTQ_DESC_SIZE: Final = 16
# struct pvirtq_event_suppress { le16 desc (off:15, wrap:1); le16 flags (2 bits); }
PVIRTQ_EVENT_SUPPRESS: Final = struct.Struct("<HH")
PVIRTQ_EVENT_SUPPRESS_SIZE: Final = 4
