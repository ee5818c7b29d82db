"""xenvirtio: VirtIO on Xen.

Virtio device models and guest drivers carried over Xen's transports (XenBus for PV
guests, virtio-pci through ioreq servers for PV-on-HVM guests, virtio-mmio), on a
generic hypervisor interface with an emulated (`emu`) and a real (`xen`) implementation.
"""

__version__ = "0.1.0"
