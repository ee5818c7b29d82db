"""Feature negotiation over XenBus: the transport's own bits around the device's. Pure.

The backend offers the device's features minus what XenBus cannot carry
(`TRANSPORT_UNSUPPORTED`), plus VIRTIO_F_ACCESS_PLATFORM when buffers are grant-DMA
addresses (``grant-usage`` = 1): the driver must then use the platform's DMA translation,
which on Xen is grant DMA, and a driver that does not accept the bit is refused
(virtio 1.2 6: "the device MAY fail to operate further if ACCESS_PLATFORM is not
accepted"). ACCESS_PLATFORM is a transport feature: the frontend adds it for the driver,
as Linux's virtio core keeps transport features a driver does not know about.
"""

from __future__ import annotations

from xenvirtio.spec import virtio as S
from xenvirtio.transport.xenbus.keys import ACCESS_PLATFORM, TRANSPORT_UNSUPPORTED
from xenvirtio.virtio.features import FeatureError, check_accepted

VERSION_1 = 1 << S.VIRTIO_F_VERSION_1


def transport_offer(device_features: int, grant_usage: bool) -> int:
    """``device-features``: what the backend publishes for a device offering
    ``device_features``."""
    offer = device_features & ~TRANSPORT_UNSUPPORTED
    return offer | ACCESS_PLATFORM if grant_usage else offer


def required_features(grant_usage: bool) -> int:
    """Bits a driver must accept: VERSION_1 (no legacy interface), ACCESS_PLATFORM
    with grant DMA."""
    return VERSION_1 | (ACCESS_PLATFORM if grant_usage else 0)


def refusal(offer: int, accepted: int, grant_usage: bool) -> str | None:
    """Why a backend refuses ``driver-features`` by the generic rules of virtio 1.2
    2.2 (subset of the offer, prerequisites, required bits); None if it does not."""
    try:
        check_accepted(offer, accepted, required=required_features(grant_usage))
    except FeatureError as exc:
        return str(exc)
    return None


def device_view(accepted: int, device_features: int) -> int:
    """The negotiated features as the device model sees them: ACCESS_PLATFORM is the
    transport's business unless the device offered it itself."""
    if device_features & ACCESS_PLATFORM:
        return accepted
    return accepted & ~ACCESS_PLATFORM


def driver_accepts(chosen: int, offer: int, grant_usage: bool) -> int:
    """What the frontend publishes for a driver that chose ``chosen``: with grant DMA it
    adds ACCESS_PLATFORM (its DMA port hands out grant-DMA addresses)."""
    if grant_usage and offer & ACCESS_PLATFORM:
        return chosen | ACCESS_PLATFORM
    return chosen
