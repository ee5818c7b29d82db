"""Feature negotiation (virtio 1.2 2.2, 6): what a device offers, what a driver accepts.

Pure functions over 64-bit (or wider) feature masks. Dependencies between features are
data: `RING_DEPENDENCIES` for the reserved bits, plus a device type's own map.
"""

from __future__ import annotations

from collections.abc import Mapping

from xenvirtio.spec import virtio as S


def bit(n: int) -> int:
    return 1 << n


# feature -> features it requires (virtio 1.2 2.2.1: a driver MUST NOT accept a feature
# which requires another feature which was not accepted).
RING_DEPENDENCIES: Mapping[int, int] = {
    # Packed rings, in-order, notification data, ring reset, access/order platform only
    # exist for modern (VERSION_1) devices (virtio 1.2 6).
    S.VIRTIO_F_RING_PACKED: bit(S.VIRTIO_F_VERSION_1),
    S.VIRTIO_F_IN_ORDER: bit(S.VIRTIO_F_VERSION_1),
    S.VIRTIO_F_NOTIFICATION_DATA: bit(S.VIRTIO_F_VERSION_1),
    S.VIRTIO_F_NOTIF_CONFIG_DATA: bit(S.VIRTIO_F_VERSION_1),
    S.VIRTIO_F_RING_RESET: bit(S.VIRTIO_F_VERSION_1),
    S.VIRTIO_F_ACCESS_PLATFORM: bit(S.VIRTIO_F_VERSION_1),
    S.VIRTIO_F_ORDER_PLATFORM: bit(S.VIRTIO_F_VERSION_1),
    S.VIRTIO_F_SR_IOV: bit(S.VIRTIO_F_VERSION_1),
}

_NAMES = {
    S.VIRTIO_F_NOTIFY_ON_EMPTY: "VIRTIO_F_NOTIFY_ON_EMPTY",
    S.VIRTIO_F_ANY_LAYOUT: "VIRTIO_F_ANY_LAYOUT",
    S.VIRTIO_RING_F_INDIRECT_DESC: "VIRTIO_RING_F_INDIRECT_DESC",
    S.VIRTIO_RING_F_EVENT_IDX: "VIRTIO_RING_F_EVENT_IDX",
    S.VIRTIO_F_VERSION_1: "VIRTIO_F_VERSION_1",
    S.VIRTIO_F_ACCESS_PLATFORM: "VIRTIO_F_ACCESS_PLATFORM",
    S.VIRTIO_F_RING_PACKED: "VIRTIO_F_RING_PACKED",
    S.VIRTIO_F_IN_ORDER: "VIRTIO_F_IN_ORDER",
    S.VIRTIO_F_ORDER_PLATFORM: "VIRTIO_F_ORDER_PLATFORM",
    S.VIRTIO_F_SR_IOV: "VIRTIO_F_SR_IOV",
    S.VIRTIO_F_NOTIFICATION_DATA: "VIRTIO_F_NOTIFICATION_DATA",
    S.VIRTIO_F_NOTIF_CONFIG_DATA: "VIRTIO_F_NOTIF_CONFIG_DATA",
    S.VIRTIO_F_RING_RESET: "VIRTIO_F_RING_RESET",
}


class FeatureError(Exception):
    """A feature set that a device must refuse (it does not set FEATURES_OK)."""


def feature_names(features: int, device_names: Mapping[int, str] | None = None) -> list[str]:
    """Names of the set bits, device-specific ones from ``device_names``."""
    names = {**_NAMES, **(device_names or {})}
    out, n = [], 0
    while features >> n:
        if features >> n & 1:
            out.append(names.get(n, f"bit{n}"))
        n += 1
    return out


def _deps(extra: Mapping[int, int] | None) -> dict[int, int]:
    deps = dict(RING_DEPENDENCIES)
    for feature, needs in (extra or {}).items():
        deps[feature] = deps.get(feature, 0) | needs
    return deps


def check_offer(offered: int, dependencies: Mapping[int, int] | None = None) -> None:
    """A device MUST offer VIRTIO_F_VERSION_1 (6.2) and MUST NOT offer a feature whose
    prerequisites it does not offer (2.2.2)."""
    if not offered & bit(S.VIRTIO_F_VERSION_1):
        raise FeatureError("a device MUST offer VIRTIO_F_VERSION_1 (virtio 1.2 6.2)")
    for feature, needs in _deps(dependencies).items():
        if offered >> feature & 1 and offered & needs != needs:
            raise FeatureError(
                f"{feature_names(bit(feature))[0]} offered without its prerequisites"
            )


def check_accepted(
    offered: int,
    accepted: int,
    *,
    required: int = bit(S.VIRTIO_F_VERSION_1),
    dependencies: Mapping[int, int] | None = None,
) -> None:
    """Raise `FeatureError` unless a device can accept ``accepted`` (the driver's write
    before FEATURES_OK): a subset of the offer (2.2.1), with every prerequisite
    (2.2.1), and with the ``required`` bits (VERSION_1: this project has no legacy
    interface; add ACCESS_PLATFORM for a grant-DMA-only backend)."""
    if accepted & ~offered:
        raise FeatureError(f"accepted features not offered: {feature_names(accepted & ~offered)}")
    if accepted & required != required:
        raise FeatureError(f"required features not accepted: {feature_names(required & ~accepted)}")
    for feature, needs in _deps(dependencies).items():
        if accepted >> feature & 1 and accepted & needs != needs:
            missing = feature_names(needs & ~accepted)
            raise FeatureError(f"{feature_names(bit(feature))[0]} accepted without {missing}")


def device_accepts(
    offered: int,
    accepted: int,
    *,
    required: int = bit(S.VIRTIO_F_VERSION_1),
    dependencies: Mapping[int, int] | None = None,
) -> bool:
    """The device's FEATURES_OK verdict (virtio 1.2 2.2.2, 3.1.1 step 5)."""
    try:
        check_accepted(offered, accepted, required=required, dependencies=dependencies)
    except FeatureError:
        return False
    return True


def driver_select(
    offered: int, understood: int, dependencies: Mapping[int, int] | None = None
) -> int:
    """What a driver accepts: offered features it understands, minus any whose
    prerequisites did not survive (repeated until stable), 2.2.1."""
    accepted = offered & understood
    deps = _deps(dependencies)
    changed = True
    while changed:
        changed = False
        for feature, needs in deps.items():
            if accepted >> feature & 1 and accepted & needs != needs:
                accepted &= ~bit(feature)
                changed = True
    return accepted
