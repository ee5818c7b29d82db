"""Settings of a virtio-console device (virtio 1.2 5.3): what it offers, its
configuration space, and the bound on host input waiting for the guest.

One port (port 0, a console): VIRTIO_CONSOLE_F_SIZE (``cols``/``rows``) and
VIRTIO_CONSOLE_F_EMERG_WRITE are offered; VIRTIO_CONSOLE_F_MULTIPORT is not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from xenvirtio.spec import virtio as S
from xenvirtio.spec import virtio_console as C
from xenvirtio.virtio.config import DriverWriteHook
from xenvirtio.virtio.features import bit

DEFAULT_RING_FEATURES = (
    bit(S.VIRTIO_F_VERSION_1)
    | bit(S.VIRTIO_RING_F_INDIRECT_DESC)
    | bit(S.VIRTIO_RING_F_EVENT_IDX)
    | bit(S.VIRTIO_F_RING_PACKED)
    | bit(S.VIRTIO_F_RING_RESET)
)
_U16_MAX = 0xFFFF


@dataclass(frozen=True)
class ConsoleConfig:
    """``cols``/``rows``: the initial console size (VIRTIO_CONSOLE_F_SIZE when ``size``).
    ``input_limit``: host input bytes held while the guest has no receive buffers
    posted; beyond it the host side must wait (the pty stops being read)."""

    cols: int = 80
    rows: int = 25
    size: bool = True
    emergency_write: bool = True
    queue_size: int = 256
    input_limit: int = 64 * 1024
    ring_features: int = DEFAULT_RING_FEATURES

    def __post_init__(self) -> None:
        if not (0 <= self.cols <= _U16_MAX and 0 <= self.rows <= _U16_MAX):
            raise ValueError("cols and rows must fit le16")
        if not 1 <= self.queue_size <= S.VIRTQ_MAX_SIZE:
            raise ValueError("queue_size must be in 1..32768")
        if self.input_limit < 1:
            raise ValueError("input_limit must be at least one byte")

    def offered_features(self) -> int:
        f = self.ring_features | bit(S.VIRTIO_F_VERSION_1)
        if self.size:
            f |= bit(C.VIRTIO_CONSOLE_F_SIZE)
        if self.emergency_write:
            f |= bit(C.VIRTIO_CONSOLE_F_EMERG_WRITE)
        return f

    def layout(self) -> C.VirtioConsoleConfig:
        # max_nr_ports is only valid with MULTIPORT; it reads 1 (the one port) anyway.
        return C.VirtioConsoleConfig(self.cols, self.rows, 1, 0)


def emergency_write_hook(on_emergency: Callable[[int], None]) -> DriverWriteHook:
    """The configuration space's `DriverWriteHook` wiring ``emerg_wr`` to ``on_emergency``.

    5.3.5.1: the device MUST allow a write to ``emerg_wr`` even on an unconfigured
    device, and SHOULD transmit its lower byte to an output; the field is write-only,
    so it always reads 0. Every other field is read-only for the driver."""

    def hook(offset: int, raw: bytes) -> bool:
        pos = C.VIRTIO_CONSOLE_CFG_EMERG_WR - offset
        if not 0 <= pos < len(raw):
            return False  # a write that misses the lower byte of emerg_wr does nothing
        on_emergency(raw[pos])
        return True

    return hook
