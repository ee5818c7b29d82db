"""Device specs: the JSON form round-trips, and hostile input is refused with an error
naming the field."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenvirtio.runtime.devices import mmio_place, pci_place, pci_slot
from xenvirtio.runtime.specs import (
    DiskSpec,
    SpecError,
    spec_from_json,
    spec_to_json,
    specs_from_json,
)

DISK: dict[str, Any] = {"kind": "disk", "devid": 0, "vdev": "xvda", "image": "/srv/a.img"}

disks = st.builds(
    DiskSpec,
    devid=st.integers(0, 10),
    vdev=st.from_regex(r"[a-z][a-z0-9]{0,15}", fullmatch=True),
    image=st.from_regex(r"/[a-zA-Z0-9_./-]{1,64}", fullmatch=True),
    transport=st.sampled_from(["xenbus", "pci", "mmio"]),
    ring=st.sampled_from(["split", "packed", "auto"]),
    backend_domid=st.integers(0, 0x7FEF),
    read_only=st.booleans(),
    queues=st.integers(1, 16),
    serial=st.from_regex(r"[ -~]{0,20}", fullmatch=True),
)


@given(disks)
def test_json_round_trip(spec: DiskSpec) -> None:
    assert spec_from_json(json.loads(json.dumps(spec_to_json(spec)))) == spec


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"kind": "floppy"}, "device.kind"),
        ({"devid": -1}, "device.devid"),
        ({"devid": True}, "device.devid"),
        ({"devid": "0"}, "device.devid"),
        ({"transport": "pci", "devid": 28}, "device.devid"),  # slot 32 does not exist
        ({"transport": "mmio", "devid": 11}, "device.devid"),  # past the last SPI
        ({"transport": "usb"}, "device.transport"),
        ({"ring": "ring"}, "device.ring"),
        ({"backend_domid": 0x7FF0}, "device.backend_domid"),
        ({"grant_usage": 1}, "device.grant_usage"),
        ({"grant_usage": True, "transport": "pci"}, "device.grant_usage"),
        ({"vdev": "../etc"}, "device.vdev"),
        ({"vdev": "Xvda"}, "device.vdev"),
        ({"image": "disk.img"}, "device.image"),
        ({"image": "/a\0b"}, "device.image"),
        ({"specification": "qemu"}, "device.specification"),
        ({"specification": "xen", "transport": "pci"}, "device.transport"),
        ({"specification": "xen", "ring": "packed"}, "device.ring"),
        ({"specification": "xen", "grant_usage": False}, "device.grant_usage"),
        ({"specification": "xen", "serial": "s1"}, "device.serial"),
        ({"image": 5}, "device.image"),
        ({"read_only": "yes"}, "device.read_only"),
        ({"queues": 0}, "device.queues"),
        ({"queues": 1.0}, "device.queues"),
        ({"serial": "x" * 21}, "device.serial"),
        ({"serial": "caf\u00e9"}, "device.serial"),
        ({"bogus": 1}, "device.bogus"),
    ],
)
def test_bad_fields_are_named(change: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as info:
        spec_from_json({**DISK, **change})
    assert info.value.where == field


def test_missing_and_non_object() -> None:
    with pytest.raises(SpecError, match=r"^device\.image: is required"):
        spec_from_json({k: v for k, v in DISK.items() if k != "image"})
    with pytest.raises(SpecError, match=r"^device: must be an object"):
        spec_from_json([DISK])
    with pytest.raises(SpecError, match=r"^devices: must be a list"):
        specs_from_json(DISK)


def test_a_domain_list_is_cross_checked() -> None:
    second = {**DISK, "devid": 1}
    with pytest.raises(SpecError, match=r"^devices\[1\]\.name: 'xvda'"):
        specs_from_json([DISK, second])
    with pytest.raises(SpecError, match=r"^devices\[1\]\.devid: xenbus devid 0"):
        specs_from_json([DISK, {**DISK, "vdev": "xvdb"}])
    both = specs_from_json([DISK, {**DISK, "vdev": "xvdb", "transport": "pci"}])
    assert [s.name for s in both] == ["xvda", "xvdb"]


def test_grant_usage_defaults_by_transport() -> None:
    assert spec_from_json(DISK).uses_grants
    assert not spec_from_json({**DISK, "transport": "mmio"}).uses_grants
    assert not spec_from_json({**DISK, "grant_usage": False}).uses_grants


def test_places_are_deterministic() -> None:
    spec = spec_from_json({**DISK, "devid": 3, "transport": "pci"})
    assert pci_slot(spec) == 7 and pci_place(spec) == 7 << 3
    place = mmio_place(spec_from_json({**DISK, "devid": 10, "transport": "mmio"}))
    assert (place.base, place.gsi) == (0x0200_0000 + 10 * 0x1000, 43)


def test_classic_devices_have_places_of_their_own() -> None:
    """A vbd does not take a virtio devid; two XenBus NICs (virtio or vif) with one
    devid would share the backend TAP name ``vif<domid>.<devid>`` and are refused."""
    classic = {**DISK, "vdev": "xvdb", "specification": "xen"}
    specs = specs_from_json([DISK, classic])
    assert [s.place for s in specs] == [("xenbus", 0), ("vbd", 0)]
    nic = {"kind": "net", "devid": 0, "ifname": "eth0", "mac": "00:16:3e:00:00:01"}
    vif = {**nic, "ifname": "eth1", "specification": "xen"}
    with pytest.raises(SpecError, match=r"^devices\[1\]\.devid: its TAP"):
        specs_from_json([nic, vif])
    assert [s.place for s in specs_from_json([nic, {**vif, "devid": 1}])] == [
        ("xenbus", 0), ("vif", 1)]  # fmt: skip
