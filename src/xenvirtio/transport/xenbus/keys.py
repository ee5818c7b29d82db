"""Key names and value codecs of virtio over XenBus (docs/xenbus-transport.md). Pure.

Every value the other end wrote is hostile. Decoders take the raw bytes XenStore
returned and accept only the canonical form the encoders produce: decimal numbers are
ASCII digits without sign, space or leading zero; hex numbers are lowercase digits
without ``0x`` or leading zero; byte strings are lowercase hex pairs. Anything else is a
`TransportKeyError` naming the key, so a peer can never make us guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from xenvirtio.hv.xenbus.errors import XenbusValueError
from xenvirtio.hv.xenbus.values import parse_uint
from xenvirtio.spec import virtio as S

TRANSPORT_VERSION: Final = 1
DEVTYPE: Final = "virtio"  # the XenBus device type: /local/domain/<fe>/device/virtio/<devid>

# -- backend directory ------------------------------------------------------------------
KEY_VERSIONS: Final = "versions"  # space-separated protocol versions the backend speaks
KEY_DEVICE_ID: Final = "device-id"
KEY_DEVICE_FEATURES: Final = "device-features"
KEY_MAX_QUEUES: Final = "max-queues"
KEY_QUEUE_MAX_SIZE: Final = "max-size"  # below queue-<n>/
KEY_CONFIG: Final = "config"
KEY_CONFIG_GENERATION: Final = "config-generation"
KEY_GRANT_USAGE: Final = "grant-usage"
KEY_MAX_MAPPED_PAGES: Final = "max-mapped-pages"
KEY_FEATURES_CHECKED: Final = "features-checked"
KEY_FEATURES_OK: Final = "features-ok"
KEY_NEEDS_RESET: Final = "needs-reset"
KEY_CONFIG_WRITE_ACK: Final = "config-write-ack"

# -- frontend directory -----------------------------------------------------------------
KEY_VERSION: Final = "version"
KEY_DRIVER_FEATURES: Final = "driver-features"
KEY_NUM_QUEUES: Final = "num-queues"
KEY_QUEUE_SIZE: Final = "size"  # below queue-<n>/
KEY_QUEUE_DESC: Final = "desc"
KEY_QUEUE_DRIVER: Final = "driver"
KEY_QUEUE_DEVICE: Final = "device"
KEY_QUEUE_EVTCHN: Final = "event-channel"
KEY_CONFIG_WRITE: Final = "config-write"
QUEUE_KEYS: Final = (
    KEY_QUEUE_SIZE,
    KEY_QUEUE_DESC,
    KEY_QUEUE_DRIVER,
    KEY_QUEUE_DEVICE,
    KEY_QUEUE_EVTCHN,
)

# -- limits -----------------------------------------------------------------------------
MAX_QUEUES_LIMIT: Final = 1024  # queues one device may have (virtio-net: 2 * 256 + 1)
CONFIG_MAX: Final = 1024  # bytes of device configuration space (2048 hex digits)
CONFIG_WRITE_MAX: Final = 8  # bytes one driver config write carries (natural widths)
U32_MAX: Final = 0xFFFF_FFFF
U64_MAX: Final = (1 << 64) - 1
EVTCHN_PORT_MAX: Final = (1 << 31) - 1  # evtchn_port_t; the hypervisor checks the rest
MAPPED_PAGES_LIMIT: Final = 1 << 20

_HEX64 = re.compile(rb"0|[1-9a-f][0-9a-f]{0,15}")
_HEX_BYTES = re.compile(rb"(?:[0-9a-f]{2})*")
_VERSIONS = re.compile(rb"[1-9][0-9]{0,3}(?: [1-9][0-9]{0,3}){0,15}")
_CONFIG_WRITE = re.compile(rb"(0|[1-9][0-9]{0,9}):(0|[1-9][0-9]{0,9}):((?:[0-9a-f]{2}){1,8})")


class TransportKeyError(XenbusValueError):
    """A key of the other end is missing or not in its canonical form."""


def queue_key(index: int, key: str) -> str:
    """``queue-<index>/<key>``."""
    return f"queue-{index}/{key}"


def require(raw: bytes | None, key: str) -> bytes:
    if raw is None:
        raise TransportKeyError(f"{key} is missing")
    return raw


def parse_dec(raw: bytes | None, key: str, maximum: int = U32_MAX, minimum: int = 0) -> int:
    """A canonical decimal in ``minimum..maximum``."""
    try:
        value = parse_uint(require(raw, key), key, maximum)
    except XenbusValueError as exc:
        raise TransportKeyError(str(exc)) from None
    if value < minimum:
        raise TransportKeyError(f"{key}: {value} is smaller than {minimum}")
    return value


def parse_flag(raw: bytes | None, key: str) -> bool:
    """``0`` or ``1``."""
    return parse_dec(raw, key, 1) == 1


def encode_hex64(value: int) -> str:
    if not 0 <= value <= U64_MAX:
        raise ValueError(f"{value!r} does not fit 64 bits")
    return f"{value:x}"


def parse_hex64(raw: bytes | None, key: str) -> int:
    """A canonical lowercase hex number of at most 64 bits (features, ring addresses)."""
    data = require(raw, key)
    if _HEX64.fullmatch(data) is None:
        raise TransportKeyError(f"{key}: {data[:40]!r} is not a canonical hex number")
    return int(data, 16)


def encode_bytes(data: bytes) -> str:
    return bytes(data).hex()


def parse_bytes(raw: bytes | None, key: str, maximum: int = CONFIG_MAX) -> bytes:
    """Lowercase hex pairs, at most ``maximum`` bytes (the empty string is no bytes)."""
    data = require(raw, key)
    if len(data) > 2 * maximum or _HEX_BYTES.fullmatch(data) is None:
        raise TransportKeyError(f"{key}: not at most {maximum} bytes of lowercase hex")
    return bytes.fromhex(data.decode("ascii"))


def encode_versions(versions: frozenset[int]) -> str:
    return " ".join(str(v) for v in sorted(versions))


def parse_versions(raw: bytes | None, key: str) -> frozenset[int]:
    data = require(raw, key)
    if _VERSIONS.fullmatch(data) is None:
        raise TransportKeyError(f"{key}: {data[:40]!r} is not a list of versions")
    return frozenset(int(v) for v in data.split())


@dataclass(frozen=True, slots=True)
class ConfigWrite:
    """One driver write of the configuration space: ``<seq>:<offset>:<hex data>``.

    ``seq`` tells writes apart (a watch may fire once for several writes, and a repeated
    write of the same bytes must still be acknowledged)."""

    seq: int
    offset: int
    data: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.seq <= U32_MAX or not 0 <= self.offset < CONFIG_MAX:
            raise ValueError("config write sequence or offset out of range")
        if not 1 <= len(self.data) <= CONFIG_WRITE_MAX:
            raise ValueError(f"a config write carries 1..{CONFIG_WRITE_MAX} bytes")

    def encode(self) -> str:
        return f"{self.seq}:{self.offset}:{self.data.hex()}"

    @classmethod
    def parse(cls, raw: bytes | None, key: str = KEY_CONFIG_WRITE) -> ConfigWrite:
        data = require(raw, key)
        match = _CONFIG_WRITE.fullmatch(data)
        if match is None:
            raise TransportKeyError(f"{key}: {data[:40]!r} is not <seq>:<offset>:<hex>")
        seq, offset = int(match[1]), int(match[2])
        if seq > U32_MAX or offset >= CONFIG_MAX:
            raise TransportKeyError(f"{key}: sequence or offset out of range")
        return cls(seq, offset, bytes.fromhex(match[3].decode("ascii")))


# Feature bits an event channel and a XenStore directory cannot carry: a kick has no
# payload (NOTIFICATION_DATA, NOTIF_CONFIG_DATA), there are no per-queue reset keys
# (RING_RESET) and no PCI function (SR_IOV). Never offered over XenBus.
TRANSPORT_UNSUPPORTED: Final = (
    1 << S.VIRTIO_F_NOTIFICATION_DATA
    | 1 << S.VIRTIO_F_NOTIF_CONFIG_DATA
    | 1 << S.VIRTIO_F_RING_RESET
    | 1 << S.VIRTIO_F_SR_IOV
)
ACCESS_PLATFORM: Final = 1 << S.VIRTIO_F_ACCESS_PLATFORM
