"""Feature negotiation helpers (virtio 1.2 2.2, 6)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenvirtio.spec import virtio as S
from xenvirtio.virtio.features import (
    RING_DEPENDENCIES,
    FeatureError,
    bit,
    check_accepted,
    check_offer,
    device_accepts,
    driver_select,
    feature_names,
)

V1 = bit(S.VIRTIO_F_VERSION_1)
PACKED = bit(S.VIRTIO_F_RING_PACKED)
ALL_RING = S.RING_FEATURES
features = st.integers(0, (1 << 64) - 1)


def test_accepts_a_valid_subset() -> None:
    offered = V1 | PACKED | bit(S.VIRTIO_RING_F_EVENT_IDX) | bit(3)
    check_accepted(offered, V1 | bit(3))
    assert device_accepts(offered, V1 | PACKED)


def test_refusals() -> None:
    offered = V1 | bit(3)
    with pytest.raises(FeatureError, match="not offered"):
        check_accepted(offered, V1 | bit(4))
    with pytest.raises(FeatureError, match="VIRTIO_F_VERSION_1"):
        check_accepted(offered, bit(3))  # no legacy interface here
    with pytest.raises(FeatureError, match="RING_PACKED"):
        check_accepted(PACKED | V1, PACKED, required=0)  # packed needs VERSION_1
    platform = bit(S.VIRTIO_F_ACCESS_PLATFORM)
    assert not device_accepts(V1 | platform, V1, required=V1 | platform)  # grant-DMA backend


def test_device_specific_dependencies() -> None:
    deps = {5: bit(4)}
    with pytest.raises(FeatureError):
        check_accepted(V1 | bit(4) | bit(5), V1 | bit(5), dependencies=deps)
    assert driver_select(V1 | bit(4) | bit(5), bit(5) | V1, deps) == V1
    with pytest.raises(FeatureError):
        check_offer(V1 | bit(5), deps)
    with pytest.raises(FeatureError):
        check_offer(bit(3))  # a device MUST offer VERSION_1


@given(offered=features, understood=features)
def test_driver_selection_is_always_acceptable(offered: int, understood: int) -> None:
    offered |= V1
    understood |= V1
    chosen = driver_select(offered, understood)
    assert chosen & ~offered == 0 and chosen & ~understood == 0
    assert device_accepts(offered, chosen)
    for feature, needs in RING_DEPENDENCIES.items():
        if chosen >> feature & 1:
            assert chosen & needs == needs


def test_names() -> None:
    assert feature_names(V1 | PACKED | bit(0), {0: "VIRTIO_NET_F_CSUM"}) == [
        "VIRTIO_NET_F_CSUM",
        "VIRTIO_F_VERSION_1",
        "VIRTIO_F_RING_PACKED",
    ]
    assert feature_names(bit(50)) == ["bit50"]


def test_spec_values() -> None:
    assert (S.VIRTIO_F_VERSION_1, S.VIRTIO_F_RING_PACKED, S.VIRTIO_F_IN_ORDER) == (32, 34, 35)
    assert (S.VIRTIO_RING_F_INDIRECT_DESC, S.VIRTIO_RING_F_EVENT_IDX) == (28, 29)
    assert (S.VIRTIO_F_NOTIFICATION_DATA, S.VIRTIO_F_RING_RESET) == (38, 40)
    assert ALL_RING & V1
