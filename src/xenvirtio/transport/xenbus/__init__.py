"""Virtio over XenBus: a virtio device in a backend domain, its driver in a PV guest.

The channel is made over XenStore (the XenBus handshake), each queue's kick and
used-buffer interrupt travel on its own event channel, and buffers are grant-DMA
addresses (or guest-physical ones for a privileged backend). The protocol is written
down in docs/xenbus-transport.md.

- pure: `keys` (names, codecs), `records` (what each end publishes), `negotiation`,
  `frontend_state` (the frontend's reactions, as a table), `memory` (`FrameMemory`);
- backend: `XenbusVirtioBackend` (one device) on a `BackendRunner` (many, one thread);
- frontend: `XenbusVirtioFrontend`, a `VirtioTransport` whose ``.dma`` (`GuestDmaPages`)
  are the pages shared with the backend.
"""

from xenvirtio.transport.xenbus.backend import XenbusVirtioBackend
from xenvirtio.transport.xenbus.backend_link import ConnectError
from xenvirtio.transport.xenbus.frontend import XenbusTransportError, XenbusVirtioFrontend
from xenvirtio.transport.xenbus.keys import DEVTYPE, TransportKeyError
from xenvirtio.transport.xenbus.runner import BackendRunner

__all__ = [
    "DEVTYPE",
    "BackendRunner",
    "ConnectError",
    "TransportKeyError",
    "XenbusTransportError",
    "XenbusVirtioBackend",
    "XenbusVirtioFrontend",
]
