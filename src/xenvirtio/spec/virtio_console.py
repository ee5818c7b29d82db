"""Constants and wire layouts of the virtio console device (virtio 1.2 5.3).

All fields are little-endian. Field order of ``struct virtio_console_config`` is the
one virtio 1.2 5.3.4 gives (``cols`` first), which is also Linux's
``include/uapi/linux/virtio_console.h``.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import Final, NamedTuple

# -- Feature bits (5.3.3) -----------------------------------------------------------------
VIRTIO_CONSOLE_F_SIZE: Final = 0
VIRTIO_CONSOLE_F_MULTIPORT: Final = 1
VIRTIO_CONSOLE_F_EMERG_WRITE: Final = 2

FEATURE_NAMES: Final = {
    VIRTIO_CONSOLE_F_SIZE: "VIRTIO_CONSOLE_F_SIZE",
    VIRTIO_CONSOLE_F_MULTIPORT: "VIRTIO_CONSOLE_F_MULTIPORT",
    VIRTIO_CONSOLE_F_EMERG_WRITE: "VIRTIO_CONSOLE_F_EMERG_WRITE",
}

# -- Virtqueues (5.3.2) -------------------------------------------------------------------
RECEIVEQ_PORT0: Final = 0
TRANSMITQ_PORT0: Final = 1
CONTROL_RECEIVEQ: Final = 2
CONTROL_TRANSMITQ: Final = 3


def receiveq(port: int) -> int:
    """Queue index of ``port``'s receiveq (port 0: 0; port n >= 1: 2 + 2n)."""
    return RECEIVEQ_PORT0 if port == 0 else 2 + 2 * port


def transmitq(port: int) -> int:
    """Queue index of ``port``'s transmitq (port 0: 1; port n >= 1: 3 + 2n)."""
    return TRANSMITQ_PORT0 if port == 0 else 3 + 2 * port


# -- Device configuration layout (5.3.4) --------------------------------------------------
# struct virtio_console_config { le16 cols; le16 rows; le32 max_nr_ports; le32 emerg_wr; }
VIRTIO_CONSOLE_CONFIG: Final = struct.Struct("<HHII")
VIRTIO_CONSOLE_CONFIG_SIZE: Final = 12
VIRTIO_CONSOLE_CFG_COLS: Final = 0
VIRTIO_CONSOLE_CFG_ROWS: Final = 2
VIRTIO_CONSOLE_CFG_MAX_NR_PORTS: Final = 4
VIRTIO_CONSOLE_CFG_EMERG_WR: Final = 8


class VirtioConsoleConfig(NamedTuple):
    """``struct virtio_console_config``; ``emerg_wr`` is write-only (reads 0)."""

    cols: int = 0
    rows: int = 0
    max_nr_ports: int = 1
    emerg_wr: int = 0

    def pack(self) -> bytes:
        return VIRTIO_CONSOLE_CONFIG.pack(*self)

    @classmethod
    def unpack(cls, raw: bytes) -> VirtioConsoleConfig:
        return cls(*VIRTIO_CONSOLE_CONFIG.unpack(raw[:VIRTIO_CONSOLE_CONFIG_SIZE]))


# -- Control messages (5.3.6.2, used with VIRTIO_CONSOLE_F_MULTIPORT) ----------------------
# struct virtio_console_control { le32 id; le16 event; le16 value; }
VIRTIO_CONSOLE_CONTROL: Final = struct.Struct("<IHH")
# struct virtio_console_resize { le16 cols; le16 rows; }
VIRTIO_CONSOLE_RESIZE_MSG: Final = struct.Struct("<HH")
VIRTIO_CONSOLE_BAD_ID: Final = 0xFFFF_FFFF


class VirtioConsoleEvent(IntEnum):
    """``virtio_console_control.event``."""

    VIRTIO_CONSOLE_DEVICE_READY = 0
    VIRTIO_CONSOLE_DEVICE_ADD = 1
    VIRTIO_CONSOLE_DEVICE_REMOVE = 2
    VIRTIO_CONSOLE_PORT_READY = 3
    VIRTIO_CONSOLE_CONSOLE_PORT = 4
    VIRTIO_CONSOLE_RESIZE = 5
    VIRTIO_CONSOLE_PORT_OPEN = 6
    VIRTIO_CONSOLE_PORT_NAME = 7
