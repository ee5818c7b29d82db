"""x86 MSI messages as Xen reads them, and Xen's HVM PCI INT#x routing (pure).

A PV-on-HVM guest (Linux ``xen_msi_compose_msg``) puts a *pirq* instead of a vector in
an MSI: vector 0, delivery mode ExtINT, the pirq's low 8 bits in the destination id and
bits 8..31 in the upper address. Xen's ``hvm_inject_msi`` takes it back out
(``((addr >> 32) & 0xffffff00) | dest``) and raises the event channel bound to it; a
non-zero vector is an ordinary LAPIC MSI. ``hvm_pci_intx_gsi`` is ``hvm/irq.h``'s
``hvm_pci_intx_gsi``: the GSI Xen's virtual PCI link gives a device's INT#x pin.
"""

from __future__ import annotations

from typing import Final

X86_MSI_BASE_ADDRESS_LOW: Final = 0xFEE0_0000
MSI_ADDR_DEST_ID_SHIFT: Final = 12
MSI_ADDR_DEST_ID_MASK: Final = 0x000F_F000
MSI_DATA_VECTOR_MASK: Final = 0xFF
MSI_DATA_DELIVERY_MODE_SHIFT: Final = 8
APIC_DELIVERY_MODE_EXTINT: Final = 7
# Pirqs are 32-bit in the message: 8 bits in the destination id, 24 in the upper address.
MAX_PIRQ: Final = (1 << 32) - 1


def pirq_msi_message(pirq: int) -> tuple[int, int]:
    """``(address, data)`` of an MSI that Xen turns into an event on ``pirq``'s channel
    (Linux ``xen_msi_compose_msg``)."""
    if not 0 < pirq <= MAX_PIRQ:
        raise ValueError(f"pirq {pirq} outside 1..{MAX_PIRQ:#x}")
    address = (
        X86_MSI_BASE_ADDRESS_LOW
        | (pirq & 0xFF) << MSI_ADDR_DEST_ID_SHIFT
        | (pirq >> 8) << 40  # address_hi bits 8..31: destid_8_31
    )
    return address, APIC_DELIVERY_MODE_EXTINT << MSI_DATA_DELIVERY_MODE_SHIFT


def msi_vector(data: int) -> int:
    return data & MSI_DATA_VECTOR_MASK


def msi_pirq(address: int, data: int) -> int | None:
    """The pirq an MSI names, as Xen's ``hvm_inject_msi`` reads it (None: a vector MSI,
    or pirq 0, which Xen does not route)."""
    if msi_vector(data):
        return None
    dest = (address & MSI_ADDR_DEST_ID_MASK) >> MSI_ADDR_DEST_ID_SHIFT
    pirq = ((address >> 32) & 0xFFFF_FF00) | dest
    return pirq if pirq > 0 else None


def hvm_pci_intx_gsi(device: int, intx: int) -> int:
    """The GSI Xen routes PCI device ``device``'s pin ``intx`` (0 = INTA) to."""
    return ((((device & 0x1F) << 2) + ((device & 0x1F) >> 3) + (intx & 3)) & 31) + 16
