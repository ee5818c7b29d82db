"""How interrupts travel from a device model to a PV-on-HVM guest (pure: no I/O).

**MSI to an event channel.** A Xen HVM guest that runs PV drivers (Linux
``xen_hvm_setup_msi_irqs``) does not give an MSI-X vector an APIC vector. It asks Xen
for a *pirq* (``PHYSDEVOP_get_free_pirq``, MAP_PIRQ_TYPE_MSI), binds the pirq to an event
channel (``EVTCHNOP_bind_pirq``) and programs the MSI-X entry with a message that carries
the pirq instead of a vector (``xen_msi_compose_msg``):

    address = 0xFEE00000 | (pirq & 0xff) << 12 | (pirq >> 8) << 40   (destination id bits)
    data    = APIC_DELIVERY_MODE_EXTINT << 8                          (vector 0)

The device model just delivers the message it finds in the table
(``xendevicemodel_inject_msi``). Xen's ``hvm_inject_msi`` sees vector 0, takes the pirq
back out of the address (``((addr >> 32) & 0xffffff00) | dest``) and sends the event on
the channel bound to it. A message with a non-zero vector is an ordinary LAPIC MSI.

**INT#x to a GSI.** ``xendevicemodel_set_pci_intx_level(device, intx)`` asserts the pin of
a function; Xen's virtual PCI link maps it to GSI ``hvm_pci_intx_gsi(device, intx)``. A
virtio-mmio device's line is a GSI (x86) or SPI (Arm) of its own:
``xendevicemodel_set_irq_level``.
"""

from xenvirtio.spec.msi import (
    APIC_DELIVERY_MODE_EXTINT,
    MAX_PIRQ,
    MSI_ADDR_DEST_ID_MASK,
    MSI_ADDR_DEST_ID_SHIFT,
    MSI_DATA_DELIVERY_MODE_SHIFT,
    MSI_DATA_VECTOR_MASK,
    X86_MSI_BASE_ADDRESS_LOW,
    hvm_pci_intx_gsi,
    msi_pirq,
    msi_vector,
    pirq_msi_message,
)

__all__ = [
    "APIC_DELIVERY_MODE_EXTINT",
    "MAX_PIRQ",
    "MSI_ADDR_DEST_ID_MASK",
    "MSI_ADDR_DEST_ID_SHIFT",
    "MSI_DATA_DELIVERY_MODE_SHIFT",
    "MSI_DATA_VECTOR_MASK",
    "X86_MSI_BASE_ADDRESS_LOW",
    "hvm_pci_intx_gsi",
    "msi_pirq",
    "msi_vector",
    "pirq_msi_message",
]
