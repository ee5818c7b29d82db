"""Virtio over PCI names and numbers (virtio 1.2 4.1, ``virtio_pci.h`` names): IDs, the
vendor capability types and layouts, ``struct virtio_pci_common_cfg`` offsets, ISR bits."""

from __future__ import annotations

import struct
from typing import Final

VIRTIO_PCI_VENDOR_ID: Final = 0x1AF4
VIRTIO_PCI_DEVICE_ID_BASE: Final = 0x1040  # + virtio device id (4.1.2)
VIRTIO_PCI_DEVICE_ID_MAX: Final = 0x107F
VIRTIO_PCI_MIN_REVISION: Final = 1  # non-transitional devices (4.1.2.1)

VIRTIO_PCI_CAP_COMMON_CFG: Final = 1
VIRTIO_PCI_CAP_NOTIFY_CFG: Final = 2
VIRTIO_PCI_CAP_ISR_CFG: Final = 3
VIRTIO_PCI_CAP_DEVICE_CFG: Final = 4
VIRTIO_PCI_CAP_PCI_CFG: Final = 5
VIRTIO_PCI_CAP_SHARED_MEMORY_CFG: Final = 8
VIRTIO_PCI_CAP_VENDOR_CFG: Final = 9

# struct virtio_pci_cap { u8 cap_vndr, cap_next, cap_len, cfg_type, bar, id, padding[2];
#                         le32 offset; le32 length; }   (4.1.4)
VIRTIO_PCI_CAP: Final = struct.Struct("<BBBBBBxxII")
VIRTIO_PCI_CAP_SIZEOF: Final = 16
VIRTIO_PCI_CAP_VNDR: Final = 0
VIRTIO_PCI_CAP_NEXT: Final = 1
VIRTIO_PCI_CAP_LEN: Final = 2
VIRTIO_PCI_CAP_CFG_TYPE: Final = 3
VIRTIO_PCI_CAP_BAR: Final = 4
VIRTIO_PCI_CAP_ID: Final = 5
VIRTIO_PCI_CAP_OFFSET: Final = 8
VIRTIO_PCI_CAP_LENGTH: Final = 12
# struct virtio_pci_notify_cap { struct virtio_pci_cap cap; le32 notify_off_multiplier; }
VIRTIO_PCI_NOTIFY_CAP_MULT: Final = 16
VIRTIO_PCI_NOTIFY_CAP_SIZEOF: Final = 20
# struct virtio_pci_cfg_cap { struct virtio_pci_cap cap; u8 pci_cfg_data[4]; }
VIRTIO_PCI_CFG_CAP_DATA: Final = 16
VIRTIO_PCI_CFG_CAP_SIZEOF: Final = 20

# struct virtio_pci_common_cfg field offsets (4.1.4.3).
VIRTIO_PCI_COMMON_DFSELECT: Final = 0x00  # device_feature_select
VIRTIO_PCI_COMMON_DF: Final = 0x04  # device_feature
VIRTIO_PCI_COMMON_GFSELECT: Final = 0x08  # driver_feature_select
VIRTIO_PCI_COMMON_GF: Final = 0x0C  # driver_feature
VIRTIO_PCI_COMMON_MSIX: Final = 0x10  # config_msix_vector
VIRTIO_PCI_COMMON_NUMQ: Final = 0x12  # num_queues
VIRTIO_PCI_COMMON_STATUS: Final = 0x14  # device_status
VIRTIO_PCI_COMMON_CFGGENERATION: Final = 0x15  # config_generation
VIRTIO_PCI_COMMON_Q_SELECT: Final = 0x16
VIRTIO_PCI_COMMON_Q_SIZE: Final = 0x18
VIRTIO_PCI_COMMON_Q_MSIX: Final = 0x1A
VIRTIO_PCI_COMMON_Q_ENABLE: Final = 0x1C
VIRTIO_PCI_COMMON_Q_NOFF: Final = 0x1E  # queue_notify_off
VIRTIO_PCI_COMMON_Q_DESCLO: Final = 0x20
VIRTIO_PCI_COMMON_Q_DESCHI: Final = 0x24
VIRTIO_PCI_COMMON_Q_AVAILLO: Final = 0x28  # queue_driver
VIRTIO_PCI_COMMON_Q_AVAILHI: Final = 0x2C
VIRTIO_PCI_COMMON_Q_USEDLO: Final = 0x30  # queue_device
VIRTIO_PCI_COMMON_Q_USEDHI: Final = 0x34
VIRTIO_PCI_COMMON_Q_NDATA: Final = 0x38  # queue_notify_data
VIRTIO_PCI_COMMON_Q_RESET: Final = 0x3A  # queue_reset
VIRTIO_PCI_COMMON_CFG_SIZEOF: Final = 0x3C

VIRTIO_PCI_ISR_QUEUE: Final = 0x1  # ISR status bits (4.1.4.5)
VIRTIO_PCI_ISR_CONFIG: Final = 0x2
VIRTIO_MSI_NO_VECTOR: Final = 0xFFFF


def virtio_pci_device_id(virtio_id: int) -> int:
    """PCI Device ID of a non-transitional device (4.1.2): 0x1040 + virtio device id."""
    return VIRTIO_PCI_DEVICE_ID_BASE + virtio_id
