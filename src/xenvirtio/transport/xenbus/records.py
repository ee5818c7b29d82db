"""What each end publishes, as records: built, encoded to keys, parsed back. Pure.

- `BackendOffer`: the backend's directory before InitWait (device, features, queues,
  configuration space, how it reaches guest memory).
- `FrontendSetup`: the frontend's directory before Initialised (accepted features,
  each enabled queue's size, ring addresses and event channel).
- `BackendStatus`: what the frontend re-reads when the backend's directory changes.

The edge reads the keys `*.keys(...)` names in one XenStore transaction and hands the
raw values (None for a missing key) to `parse`; every check of the other end's values
happens there (docs/xenbus-transport.md, "What each end validates").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from xenvirtio.mem.grant_dma import XEN_GRANT_DMA_ADDR_OFF
from xenvirtio.spec import virtio as S
from xenvirtio.spec.xenbus_state import XenbusState
from xenvirtio.transport.xenbus import keys as K

Raw = Mapping[str, bytes | None]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class BackendOffer:
    """The backend's directory: what the device offers and how buffers are addressed."""

    device_id: int
    features: int
    queue_max_sizes: tuple[int, ...]
    config: bytes
    config_generation: int
    grant_usage: bool
    max_mapped_pages: int
    versions: frozenset[int] = frozenset({K.TRANSPORT_VERSION})

    def __post_init__(self) -> None:
        if not 1 <= len(self.queue_max_sizes) <= K.MAX_QUEUES_LIMIT:
            raise ValueError(f"a device has 1..{K.MAX_QUEUES_LIMIT} queues")
        if any(not 0 <= m <= S.VIRTQ_MAX_SIZE for m in self.queue_max_sizes):
            raise ValueError("queue sizes are 0..32768")
        if len(self.config) > K.CONFIG_MAX:
            raise ValueError(f"configuration space larger than {K.CONFIG_MAX} bytes")

    @staticmethod
    def keys(max_queues: int) -> list[str]:
        """Keys to read once ``max-queues`` is known."""
        fixed = [
            K.KEY_VERSIONS,
            K.KEY_DEVICE_ID,
            K.KEY_DEVICE_FEATURES,
            K.KEY_MAX_QUEUES,
            K.KEY_CONFIG,
            K.KEY_CONFIG_GENERATION,
            K.KEY_GRANT_USAGE,
            K.KEY_MAX_MAPPED_PAGES,
        ]
        return fixed + [K.queue_key(n, K.KEY_QUEUE_MAX_SIZE) for n in range(max_queues)]

    def entries(self) -> dict[str, str]:
        out = {
            K.KEY_VERSIONS: K.encode_versions(self.versions),
            K.KEY_DEVICE_ID: str(self.device_id),
            K.KEY_DEVICE_FEATURES: K.encode_hex64(self.features),
            K.KEY_MAX_QUEUES: str(len(self.queue_max_sizes)),
            K.KEY_CONFIG: K.encode_bytes(self.config),
            K.KEY_CONFIG_GENERATION: str(self.config_generation),
            K.KEY_GRANT_USAGE: str(int(self.grant_usage)),
            K.KEY_MAX_MAPPED_PAGES: str(self.max_mapped_pages),
        }
        for n, size in enumerate(self.queue_max_sizes):
            out[K.queue_key(n, K.KEY_QUEUE_MAX_SIZE)] = str(size)
        return out

    @classmethod
    def parse(cls, raw: Raw) -> BackendOffer:
        """Decode a backend directory; TransportKeyError on anything not canonical."""
        count = parse_max_queues(raw.get(K.KEY_MAX_QUEUES))
        return cls(
            device_id=K.parse_dec(raw.get(K.KEY_DEVICE_ID), K.KEY_DEVICE_ID),
            features=K.parse_hex64(raw.get(K.KEY_DEVICE_FEATURES), K.KEY_DEVICE_FEATURES),
            queue_max_sizes=tuple(
                K.parse_dec(raw.get(k), k, S.VIRTQ_MAX_SIZE)
                for k in (K.queue_key(n, K.KEY_QUEUE_MAX_SIZE) for n in range(count))
            ),
            config=K.parse_bytes(raw.get(K.KEY_CONFIG), K.KEY_CONFIG),
            config_generation=K.parse_dec(
                raw.get(K.KEY_CONFIG_GENERATION), K.KEY_CONFIG_GENERATION
            ),
            grant_usage=K.parse_flag(raw.get(K.KEY_GRANT_USAGE), K.KEY_GRANT_USAGE),
            max_mapped_pages=K.parse_dec(
                raw.get(K.KEY_MAX_MAPPED_PAGES), K.KEY_MAX_MAPPED_PAGES, K.MAPPED_PAGES_LIMIT, 1
            ),
            versions=K.parse_versions(raw.get(K.KEY_VERSIONS), K.KEY_VERSIONS),
        )


def parse_max_queues(raw: bytes | None) -> int:
    return K.parse_dec(raw, K.KEY_MAX_QUEUES, K.MAX_QUEUES_LIMIT, 1)


@dataclass(frozen=True, slots=True)
class QueueSetup:
    """One enabled queue as the frontend set it up."""

    index: int
    size: int
    desc: int
    driver: int
    device: int
    event_channel: int


def _grant_dma(addr: int) -> bool:
    return bool(addr & XEN_GRANT_DMA_ADDR_OFF)


@dataclass(frozen=True, slots=True)
class FrontendSetup:
    """The frontend's directory at Initialised: accepted features and its queues."""

    version: int
    features: int
    num_queues: int
    queues: tuple[QueueSetup, ...]

    @staticmethod
    def keys(num_queues: int) -> list[str]:
        """Keys to read once ``num-queues`` is known."""
        fixed = [K.KEY_VERSION, K.KEY_DRIVER_FEATURES, K.KEY_NUM_QUEUES]
        return fixed + [K.queue_key(n, k) for n in range(num_queues) for k in K.QUEUE_KEYS]

    def entries(self) -> dict[str, str]:
        out = {
            K.KEY_VERSION: str(self.version),
            K.KEY_DRIVER_FEATURES: K.encode_hex64(self.features),
            K.KEY_NUM_QUEUES: str(self.num_queues),
        }
        for q in self.queues:
            out[K.queue_key(q.index, K.KEY_QUEUE_SIZE)] = str(q.size)
            out[K.queue_key(q.index, K.KEY_QUEUE_DESC)] = K.encode_hex64(q.desc)
            out[K.queue_key(q.index, K.KEY_QUEUE_DRIVER)] = K.encode_hex64(q.driver)
            out[K.queue_key(q.index, K.KEY_QUEUE_DEVICE)] = K.encode_hex64(q.device)
            out[K.queue_key(q.index, K.KEY_QUEUE_EVTCHN)] = str(q.event_channel)
        return out

    @classmethod
    def parse(cls, raw: Raw, offer: BackendOffer) -> FrontendSetup:
        """Decode and check a frontend directory against our own ``offer``."""
        version = K.parse_dec(raw.get(K.KEY_VERSION), K.KEY_VERSION)
        if version not in offer.versions:
            raise K.TransportKeyError(f"{K.KEY_VERSION}: version {version} is not offered")
        features = K.parse_hex64(raw.get(K.KEY_DRIVER_FEATURES), K.KEY_DRIVER_FEATURES)
        count = parse_num_queues(raw.get(K.KEY_NUM_QUEUES), len(offer.queue_max_sizes))
        queues = tuple(
            q for q in (_parse_queue(raw, n, offer) for n in range(count)) if q is not None
        )
        ports = [q.event_channel for q in queues]
        if len(set(ports)) != len(ports):
            raise K.TransportKeyError("two queues name the same event channel")
        return cls(version, features, count, queues)


def parse_num_queues(raw: bytes | None, max_queues: int) -> int:
    return K.parse_dec(raw, K.KEY_NUM_QUEUES, max_queues, 1)


def _parse_queue(raw: Raw, n: int, offer: BackendOffer) -> QueueSetup | None:
    """Queue ``n``: absent (all its keys missing: not enabled) or complete and valid."""
    names = [K.queue_key(n, k) for k in K.QUEUE_KEYS]
    present = [raw.get(name) is not None for name in names]
    if not any(present):
        return None
    if not all(present):
        missing = [name for name, p in zip(names, present, strict=True) if not p]
        raise K.TransportKeyError(f"queue {n} is incomplete: {', '.join(missing)} missing")
    size_key, desc_key, driver_key, device_key, port_key = names
    maximum = offer.queue_max_sizes[n]
    if not maximum:
        raise K.TransportKeyError(f"queue {n} does not exist (max-size 0)")
    size = K.parse_dec(raw.get(size_key), size_key, maximum, 1)
    addrs = [K.parse_hex64(raw.get(k), k) for k in (desc_key, driver_key, device_key)]
    for key, addr in zip((desc_key, driver_key, device_key), addrs, strict=True):
        if _grant_dma(addr) != offer.grant_usage:
            kind = "a grant-DMA" if offer.grant_usage else "a guest-physical"
            raise K.TransportKeyError(f"{key}: {addr:#x} is not {kind} address")
    port = K.parse_dec(raw.get(port_key), port_key, K.EVTCHN_PORT_MAX, 1)
    return QueueSetup(n, size, addrs[0], addrs[1], addrs[2], port)


@dataclass(frozen=True, slots=True)
class BackendStatus:
    """The backend keys a frontend follows while running (one transaction's view)."""

    state: XenbusState
    needs_reset: bool
    config_generation: int | None  # None: not published yet
    config: bytes | None
    features_checked: int | None
    features_ok: bool | None
    config_write_ack: int | None

    KEYS = (
        K.KEY_NEEDS_RESET,
        K.KEY_CONFIG_GENERATION,
        K.KEY_CONFIG,
        K.KEY_FEATURES_CHECKED,
        K.KEY_FEATURES_OK,
        K.KEY_CONFIG_WRITE_ACK,
    )

    @classmethod
    def parse(cls, state: XenbusState, raw: Raw) -> BackendStatus:
        """Every key may be missing (not yet written); present ones must be canonical."""

        def opt(key: str, parse: Callable[[bytes, str], T]) -> T | None:
            value = raw.get(key)
            return None if value is None else parse(value, key)

        return cls(
            state=state,
            needs_reset=bool(opt(K.KEY_NEEDS_RESET, K.parse_flag)),
            config_generation=opt(K.KEY_CONFIG_GENERATION, K.parse_dec),
            config=opt(K.KEY_CONFIG, K.parse_bytes),
            features_checked=opt(K.KEY_FEATURES_CHECKED, K.parse_hex64),
            features_ok=opt(K.KEY_FEATURES_OK, K.parse_flag),
            config_write_ack=opt(K.KEY_CONFIG_WRITE_ACK, K.parse_dec),
        )
