"""PCI configuration space names and numbers: the type 0 configuration header, the
capability list and the MSI-X capability (PCI Local Bus 3.0 6.1-6.8), with Linux's
``pci_regs.h`` names."""

from __future__ import annotations

from typing import Final

# -- Configuration space -------------------------------------------------------------------
PCI_CFG_SPACE_SIZE: Final = 256
PCI_CFG_SPACE_EXP_SIZE: Final = 4096  # what an ECAM / Xen PCI_CONFIG ioreq can address
PCI_STD_HEADER_SIZEOF: Final = 64

# Type 0 header (PCI 3.0 6.1).
PCI_VENDOR_ID: Final = 0x00
PCI_DEVICE_ID: Final = 0x02
PCI_COMMAND: Final = 0x04
PCI_STATUS: Final = 0x06
PCI_REVISION_ID: Final = 0x08
PCI_CLASS_PROG: Final = 0x09
PCI_CLASS_DEVICE: Final = 0x0A
PCI_CACHE_LINE_SIZE: Final = 0x0C
PCI_LATENCY_TIMER: Final = 0x0D
PCI_HEADER_TYPE: Final = 0x0E
PCI_BIST: Final = 0x0F
PCI_BASE_ADDRESS_0: Final = 0x10
PCI_CARDBUS_CIS: Final = 0x28
PCI_SUBSYSTEM_VENDOR_ID: Final = 0x2C
PCI_SUBSYSTEM_ID: Final = 0x2E
PCI_ROM_ADDRESS: Final = 0x30
PCI_CAPABILITY_LIST: Final = 0x34
PCI_INTERRUPT_LINE: Final = 0x3C
PCI_INTERRUPT_PIN: Final = 0x3D
PCI_NUM_BARS: Final = 6

PCI_HEADER_TYPE_NORMAL: Final = 0x00
PCI_HEADER_TYPE_MFD: Final = 0x80  # multi-function device
PCI_INTERRUPT_PIN_INTA: Final = 1

PCI_COMMAND_IO: Final = 0x0001
PCI_COMMAND_MEMORY: Final = 0x0002
PCI_COMMAND_MASTER: Final = 0x0004
PCI_COMMAND_PARITY: Final = 0x0040
PCI_COMMAND_SERR: Final = 0x0100
PCI_COMMAND_INTX_DISABLE: Final = 0x0400

PCI_STATUS_INTERRUPT: Final = 0x0008
PCI_STATUS_CAP_LIST: Final = 0x0010

PCI_BASE_ADDRESS_SPACE_IO: Final = 0x01
PCI_BASE_ADDRESS_MEM_TYPE_MASK: Final = 0x06
PCI_BASE_ADDRESS_MEM_TYPE_32: Final = 0x00
PCI_BASE_ADDRESS_MEM_TYPE_64: Final = 0x04
PCI_BASE_ADDRESS_MEM_PREFETCH: Final = 0x08
PCI_BASE_ADDRESS_MEM_MASK: Final = 0xFFFFFFF0
PCI_BASE_ADDRESS_IO_MASK: Final = 0xFFFFFFFC

# Class codes (class << 16 | subclass << 8 | prog-if), as virtio devices commonly use.
PCI_CLASS_STORAGE_SCSI: Final = 0x010000
PCI_CLASS_NETWORK_ETHERNET: Final = 0x020000
PCI_CLASS_COMMUNICATION_OTHER: Final = 0x078000
PCI_CLASS_OTHERS: Final = 0xFF0000

# -- Capabilities (PCI 3.0 6.7) ------------------------------------------------------------
PCI_CAP_LIST_ID: Final = 0
PCI_CAP_LIST_NEXT: Final = 1
PCI_CAP_ID_VNDR: Final = 0x09
PCI_CAP_ID_MSIX: Final = 0x11
PCI_CAP_MAX_WALK: Final = (PCI_CFG_SPACE_SIZE - PCI_STD_HEADER_SIZEOF) // 4  # 48 dwords

# MSI-X (PCI 3.0 6.8.2): capability, table entries, PBA.
PCI_MSIX_FLAGS: Final = 2  # Message Control
PCI_MSIX_FLAGS_QSIZE: Final = 0x07FF  # Table Size - 1
PCI_MSIX_FLAGS_MASKALL: Final = 0x4000  # Function Mask
PCI_MSIX_FLAGS_ENABLE: Final = 0x8000
PCI_MSIX_TABLE: Final = 4  # Table Offset / Table BIR
PCI_MSIX_PBA: Final = 8  # PBA Offset / PBA BIR
PCI_MSIX_TABLE_BIR: Final = 0x00000007
PCI_MSIX_TABLE_OFFSET: Final = 0xFFFFFFF8
PCI_CAP_MSIX_SIZEOF: Final = 12
PCI_MSIX_ENTRY_SIZE: Final = 16
PCI_MSIX_ENTRY_LOWER_ADDR: Final = 0
PCI_MSIX_ENTRY_UPPER_ADDR: Final = 4
PCI_MSIX_ENTRY_DATA: Final = 8
PCI_MSIX_ENTRY_VECTOR_CTRL: Final = 12
PCI_MSIX_ENTRY_CTRL_MASKBIT: Final = 0x1
PCI_MSIX_MAX_VECTORS: Final = 2048


def pci_bdf(bus: int, device: int, function: int) -> int:
    """bus:device.function packed as ``bus << 8 | device << 3 | function``."""
    return (bus & 0xFF) << 8 | (device & 0x1F) << 3 | (function & 0x7)
