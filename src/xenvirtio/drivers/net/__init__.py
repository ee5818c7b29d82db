"""virtio-net guest driver (virtio 1.2 5.1) over any `VirtioTransport`, exposing the NIC
as a TAP in the guest's network namespace. See ``docs/virtio-net.md``."""

from xenvirtio.drivers.net.control import CtrlError
from xenvirtio.drivers.net.driver import VirtioNetDriver
from xenvirtio.drivers.net.nic import GuestNic, TapNic

__all__ = ["CtrlError", "GuestNic", "TapNic", "VirtioNetDriver"]
