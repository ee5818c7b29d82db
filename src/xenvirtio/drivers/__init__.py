"""Guest-side drivers: each talks to a `VirtioTransport` and never learns which transport
(PCI, MMIO, XenBus) is underneath."""
