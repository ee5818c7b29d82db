"""netback's reading of the frontend's keys (``connect`` and ``connect_data_rings`` of
Linux's netback ``xenbus.c``), strictly: canonical decimal, within the offer.

Raises `ValueError` (the device fails with ``dev_fatal``) when ``request-rx-copy`` or
``feature-rx-notify`` is not 1, ``multi-queue-num-queues`` is 0 or above the offer, a
queue's ring reference or event channel is missing, or split event channels are used
though not offered.
"""

from __future__ import annotations

from dataclasses import dataclass

from xenvirtio.devices.netif.vif import VifConfig
from xenvirtio.hv.xenbus.ops import XenstoreOps, read_optional
from xenvirtio.hv.xenbus.values import parse_uint
from xenvirtio.spec import netif as N

PORT_MAX = 0x7FFFFFFF
GREF_MAX = 0xFFFFFFFF


@dataclass(frozen=True)
class QueueKeys:
    tx_ring_ref: int
    rx_ring_ref: int
    ports: tuple[int, int]  # (tx, rx); equal without split event channels


@dataclass(frozen=True)
class FrontendKeys:
    queues: tuple[QueueKeys, ...]
    sg: bool
    gso_tcpv4: bool
    gso_tcpv6: bool
    csum: bool  # the frontend takes partial checksums (IPv4 and IPv6)
    mcast_control: bool


def _uint(xs: XenstoreOps, path: str, maximum: int, default: int | None = None) -> int:
    raw = read_optional(xs, path)
    if raw is None:
        if default is None:
            raise ValueError(f"{path} missing")
        return default
    return parse_uint(raw, path, maximum)


def _flag(xs: XenstoreOps, fe: str, key: str, default: int = 0) -> bool:
    return bool(_uint(xs, f"{fe}/{key}", 1, default))


def read_frontend(xs: XenstoreOps, fe: str, config: VifConfig) -> FrontendKeys:
    if not _flag(xs, fe, N.KEY_REQUEST_RX_COPY):
        raise ValueError("request-rx-copy is mandatory (no page flipping)")
    if not _flag(xs, fe, N.KEY_FEATURE_RX_NOTIFY):
        raise ValueError("feature-rx-notify is mandatory")
    nq = _uint(xs, f"{fe}/{N.KEY_MULTI_QUEUE_NUM_QUEUES}", config.max_queues, 1)
    if nq < 1:
        raise ValueError("multi-queue-num-queues 0")
    dirs = [fe] if nq == 1 else [f"{fe}/queue-{q}" for q in range(nq)]
    no_csum = _flag(xs, fe, N.KEY_FEATURE_NO_CSUM_OFFLOAD)
    ipv6_csum = _flag(xs, fe, N.KEY_FEATURE_IPV6_CSUM_OFFLOAD)
    return FrontendKeys(
        queues=tuple(_queue(xs, d, config) for d in dirs),
        sg=_flag(xs, fe, N.KEY_FEATURE_SG),
        gso_tcpv4=_flag(xs, fe, N.KEY_FEATURE_GSO_TCPV4),
        gso_tcpv6=_flag(xs, fe, N.KEY_FEATURE_GSO_TCPV6),
        csum=not no_csum and ipv6_csum,
        mcast_control=config.multicast_control and _flag(xs, fe, N.KEY_REQUEST_MULTICAST_CONTROL),
    )


def _queue(xs: XenstoreOps, qdir: str, config: VifConfig) -> QueueKeys:
    tx = _uint(xs, f"{qdir}/{N.KEY_TX_RING_REF}", GREF_MAX)
    rx = _uint(xs, f"{qdir}/{N.KEY_RX_RING_REF}", GREF_MAX)
    single = read_optional(xs, f"{qdir}/{N.KEY_EVENT_CHANNEL}")
    if single is not None:
        port = parse_uint(single, N.KEY_EVENT_CHANNEL, PORT_MAX)
        return QueueKeys(tx, rx, (port, port))
    if not config.split_event_channels:
        raise ValueError(f"{qdir}: event-channel missing (split event channels not offered)")
    tx_port = _uint(xs, f"{qdir}/{N.KEY_EVENT_CHANNEL_TX}", PORT_MAX)
    rx_port = _uint(xs, f"{qdir}/{N.KEY_EVENT_CHANNEL_RX}", PORT_MAX)
    return QueueKeys(tx, rx, (tx_port, rx_port))
