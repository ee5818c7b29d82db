"""virtio-net device model (virtio 1.2 5.1) over a TAP: see ``docs/virtio-net.md``."""

from xenvirtio.devices.net.backend import NetBackend, Reactor, TapBackend
from xenvirtio.devices.net.config import NetConfig
from xenvirtio.devices.net.device import VirtioNetDevice
from xenvirtio.devices.net.header import TxDrop, TxLimits, check_tx, rx_from_tap, tx_to_tap
from xenvirtio.devices.net.stats import NetStats

__all__ = [
    "NetBackend",
    "NetConfig",
    "NetStats",
    "Reactor",
    "TapBackend",
    "TxDrop",
    "TxLimits",
    "VirtioNetDevice",
    "check_tx",
    "rx_from_tap",
    "tx_to_tap",
]
