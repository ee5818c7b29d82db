"""NIC, console and rng specs: their JSON form round-trips and hostile values are
refused with the field named, as for disks."""

from __future__ import annotations

import json
from typing import Any

import pytest

from xenvirtio.runtime.network import backend_netns, backend_tap, guest_netns
from xenvirtio.runtime.specs import (
    ConsoleSpec,
    DeviceSpec,
    NetSpec,
    RngSpec,
    SpecError,
    spec_from_json,
    spec_to_json,
    specs_from_json,
)

NET: dict[str, Any] = {"kind": "net", "devid": 0, "ifname": "eth0", "mac": "00:16:3e:00:00:01"}


@pytest.mark.parametrize(
    "spec",
    [
        NetSpec(
            devid=3,
            ifname="eth1",
            mac="02:00:00:00:00:09",
            ip="10.0.0.2/24",
            bridge="br-x",
            mtu=9000,
            queues=2,
            transport="pci",
        ),
        NetSpec(devid=0, ifname="eth0", mac="00:16:3e:00:00:01", ip="fd00::2/64"),
        ConsoleSpec(devid=1, unit=2, ring="split"),
        RngSpec(devid=0, transport="mmio", rate=4096, burst=512),
    ],
)
def test_json_round_trip(spec: DeviceSpec) -> None:
    assert spec_from_json(json.loads(json.dumps(spec_to_json(spec)))) == spec


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({**NET, "ifname": "../x"}, "device.ifname"),
        ({**NET, "mac": "01:00:00:00:00:01"}, "device.mac"),  # multicast
        ({**NET, "mac": "00:16:3E:00:00:01"}, "device.mac"),  # the canonical form only
        ({**NET, "ip": "10.0.0.300/24"}, "device.ip"),
        ({**NET, "ip": "10.0.0.2"}, "device.ip"),  # no prefix
        ({**NET, "bridge": "a bridge"}, "device.bridge"),
        ({**NET, "mtu": 67}, "device.mtu"),
        ({**NET, "queues": 17}, "device.queues"),
        ({"kind": "net", "devid": 0, "ifname": "eth0"}, "device.mac"),
        ({"kind": "console", "devid": 0, "unit": 16}, "device.unit"),
        ({"kind": "console", "devid": 0, "pty": "/dev/pts/1"}, "device.pty"),
        ({"kind": "rng", "devid": 0, "rate": -1}, "device.rate"),
        ({"kind": "rng", "devid": 0, "burst": 10}, "device.burst"),  # no rate
        ({"kind": "rng", "devid": 0, "rate": 1.5}, "device.rate"),
    ],
)
def test_bad_fields_are_named(data: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as info:
        spec_from_json(data)
    assert info.value.where == field


def test_names_are_per_kind_and_unit() -> None:
    specs = specs_from_json([NET, {"kind": "console", "devid": 1},
                             {"kind": "rng", "devid": 0, "transport": "pci"}])  # fmt: skip
    assert [s.name for s in specs] == ["eth0", "console0", "rng0"]
    with pytest.raises(SpecError, match=r"^devices\[1\]\.name: 'console0'"):
        specs_from_json([{"kind": "console", "devid": 0},
                         {"kind": "console", "devid": 0, "transport": "pci"}])  # fmt: skip


def test_namespace_and_tap_names_fit(tmp_path: Any) -> None:
    spec = NetSpec(devid=255, ifname="eth0", mac="02:00:00:00:00:01", transport="xenbus")
    assert len(backend_tap(0x7FEF, spec)) <= 15  # IFNAMSIZ - 1
    assert backend_tap(3, NetSpec(devid=2, ifname="eth1", mac="02:00:00:00:00:01",
                                  transport="pci")) == "vif3.p2"  # fmt: skip
    assert backend_netns(tmp_path) == backend_netns(tmp_path / ".")  # any spelling
    assert backend_netns(tmp_path) != backend_netns(tmp_path / "other")
    assert guest_netns(tmp_path, 4).endswith("-4")
