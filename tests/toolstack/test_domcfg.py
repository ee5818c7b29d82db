"""Domain configs: defaults, the allowed combinations, errors at file:line: key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from xenvirtio.cli import cli
from xenvirtio.runtime.specs import ConsoleSpec, DiskSpec, NetSpec, RngSpec
from xenvirtio.spec.virtio import VirtioDeviceId
from xenvirtio.toolstack.cfg import parse_config
from xenvirtio.toolstack.channel import Channel
from xenvirtio.toolstack.domcfg import DomainConfig, domain_config
from xenvirtio.toolstack.errors import ConfigError
from xenvirtio.toolstack.load import load_domain_config
from xenvirtio.toolstack.options import GuestType, Specification, Transport
from xenvirtio.toolstack.runtime_specs import derived_mac, runtime_specs

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
VIRTIO, XEN = Specification.VIRTIO, Specification.XEN
XENBUS, PCI, MMIO = Transport.XENBUS, Transport.PCI, Transport.MMIO


def config(text: str, base_dir: str = "/cfg") -> DomainConfig:
    return domain_config(parse_config(text, "d.cfg"), base_dir)


def error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        config(text)
    return str(info.value)


def test_defaults_for_a_pv_guest() -> None:
    cfg = config("name = 'g'\ndisk = ['img,,xvda']\nvif = ['']\nvirtio = ['type=virtio,device3']")
    assert (cfg.type, cfg.memory, cfg.vcpus) == (GuestType.PV, 128, 1)
    dom0_xenbus = Channel(VIRTIO, XENBUS, "0", True)
    assert cfg.disks[0].channel == cfg.nics[0].channel == cfg.virtio[0].channel == dom0_xenbus
    assert cfg.disks[0].target == "/cfg/img" and cfg.disks[0].line == 2
    assert cfg.virtio[0].device is VirtioDeviceId.CONSOLE


def test_defaults_for_an_hvm_guest_and_the_legacy_builder_key() -> None:
    for head in ("type = 'hvm'", "builder = 'hvm'"):
        cfg = config(f"name = 'g'\n{head}\nmemory = '1024'\nvcpus = 4\ndisk = ['/i,,hda']")
        assert (cfg.type, cfg.memory, cfg.vcpus) == (GuestType.HVM, 1024, 4)
        assert cfg.disks[0].channel == Channel(VIRTIO, PCI, "0", False)
    assert config("name='g'\nbuilder='generic'").type is GuestType.PV


def test_a_backend_outside_dom0_implies_grants_on_every_transport() -> None:
    for transport in ("xenbus", "pci", "mmio"):
        cfg = config(f"name='g'\ntype='hvm'\ndisk=['/i,,xvda,backend=sd,transport={transport}']")
        assert cfg.disks[0].channel.grant_usage is True
    cfg = config("name='g'\ntype='hvm'\ndisk=['/i,,xvda,grant_usage=1']")
    assert cfg.disks[0].channel == Channel(VIRTIO, PCI, "0", True)
    cfg = config("name='g'\ndisk=['/i,,xvda,grant_usage=0,backend=Domain-0']")
    assert cfg.disks[0].channel == Channel(VIRTIO, XENBUS, "Domain-0", False)


def test_classic_disk_and_vif_run_over_xenbus_with_grants() -> None:
    cfg = config(
        "name='g'\ntype='hvm'\ndisk=['/i,,xvda,specification=xen']\nvif=['specification=xen']"
    )
    assert cfg.disks[0].channel == cfg.nics[0].channel == Channel(XEN, XENBUS, "0", True)


def test_relative_and_absolute_targets() -> None:
    cfg = config(
        "name='g'\ndisk=['../img/a.img,,xvda', '/abs.img,,xvdb', 'vdev=xvdc,target=./b c,d']"
    )
    assert [d.target for d in cfg.disks] == ["/img/a.img", "/abs.img", "/cfg/b c,d"]


def test_unknown_keys_and_ignored_flags_are_warnings_with_lines() -> None:
    cfg = config("name='g'\nkernel='/boot/vmlinuz'\ndisk=['/i,,xvda,discard']\nvcpus=1\nvcpus=2")
    assert [str(w) for w in cfg.warnings] == [
        "d.cfg:2: kernel: warning: not used by xenvirtio; ignored",
        "d.cfg:3: disk: warning: discard is ignored",
        "d.cfg:5: vcpus: warning: set again; replaces line 4",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("memory = 64", 'd.cfg:1: name: is required (name = "...")'),
        ("\nname = 5", 'd.cfg:2: name: must be a string (name = "...")'),
        ("name = 'a b'", "d.cfg:1: name: 'a b': use 1-64 of A-Za-z0-9_.- starting alphanumeric"),
        ("name = '42'", "d.cfg:1: name: '42' would be read as dom0 or a domain id"),
        ("name='g'\ntype='pvh'", "d.cfg:2: type: 'pvh' is not provided; use pv or hvm"),
        ("name='g'\nbuilder='linux'", "d.cfg:2: builder: 'linux': must be hvm or generic"),
        ("name='g'\n\nmemory=0", "d.cfg:3: memory: 0 is out of range 1..1048576"),
        ("name='g'\nmemory='lots'", "d.cfg:2: memory: must be a number"),
        ("name='g'\nvcpus=[1]", "d.cfg:2: vcpus: must be a number"),
        ("name='g'\nvcpus=129", "d.cfg:2: vcpus: 129 is out of range 1..128"),
        ("name='g'\ndisk='/i,,xvda'", "d.cfg:2: disk: must be a list (disk = [ '...', ... ])"),
        ("name='g'\ndisk=[\n'/i,,xvda',\n7]", "d.cfg:4: disk: each entry must be a quoted string"),
        (
            "name='g'\ndisk=[\n '/i,,xvda',\n '/j,qcow2,xvdb']",
            "d.cfg:4: disk: '/j,qcow2,xvdb': format=qcow2: only raw images are served "
            "(qemu-img convert -O raw)",
        ),
        (
            "name='g'\ndisk=['/i,,xvda',\n'/j,,xvda']",
            "d.cfg:3: disk: vdev xvda is also the disk on line 2",
        ),
        (
            "name='g'\nvif=['mac=00:16:3e:00:00:01',\n'mac=00:16:3E:00:00:01']",
            "d.cfg:3: vif: mac 00:16:3e:00:00:01 is also the vif on line 2",
        ),
        (
            "name='g'\ndisk=['/i,,xvda,transport=pci']",
            "d.cfg:2: disk: '/i,,xvda,transport=pci': transport=pci needs type=hvm "
            "(a PV guest has no PCI bus)",
        ),
        (
            "name='g'\nvif=['backend=netdom,grant_usage=0']",
            "d.cfg:2: vif: 'backend=netdom,grant_usage=0': grant_usage=0 with backend=netdom: "
            "a backend outside dom0 cannot map guest memory, it needs grants (grant_usage=1)",
        ),
        (
            "name='g'\ntype='hvm'\nvif=['specification=xen,transport=pci']",
            "d.cfg:3: vif: 'specification=xen,transport=pci': transport=pci with "
            "specification=xen: classic PV rings are set up through XenStore (transport=xenbus)",
        ),
        (
            "name='g'\ndisk=['/i,,xvda,specification=xen,grant_usage=1']",
            "d.cfg:2: disk: '/i,,xvda,specification=xen,grant_usage=1': grant_usage applies "
            "to specification=virtio only",
        ),
        (
            "name='g'\nvirtio=[\n'type=virtio,device4,specification=xen']",
            "d.cfg:3: virtio: 'type=virtio,device4,specification=xen': specification=xen: "
            "a rng is provided as virtio only",
        ),
    ],
)
def test_errors_name_file_line_and_key(text: str, expected: str) -> None:
    assert error(text) == expected


EXPECTED_EXAMPLES = {
    "demo.cfg": (GuestType.PV, {XENBUS}, 1, ["console", "rng"]),
    "pv-xenbus.cfg": (GuestType.PV, {XENBUS}, 1, ["rng"]),
    "hvm-pci.cfg": (GuestType.HVM, {PCI}, 2, ["console", "rng"]),
    "mmio.cfg": (GuestType.HVM, {MMIO}, 1, ["rng"]),
    "classic-pv.cfg": (GuestType.PV, {XENBUS}, 1, []),
    "driver-domain.cfg": (GuestType.PV, {XENBUS}, 1, ["console"]),
}


def test_every_example_parses_to_its_scenario() -> None:
    assert {p.name for p in EXAMPLES.glob("*.cfg")} == set(EXPECTED_EXAMPLES)
    for name, (guest, transports, ndisks, kinds) in EXPECTED_EXAMPLES.items():
        cfg = load_domain_config(EXAMPLES / name)
        channels = [d.channel for d in (*cfg.disks, *cfg.nics, *cfg.virtio)]
        assert cfg.type is guest, name
        assert {c.transport for c in channels} == transports, name
        assert len(cfg.disks) == ndisks and [v.kind for v in cfg.virtio] == kinds, name
        assert cfg.warnings == (), name
    classic = load_domain_config(EXAMPLES / "classic-pv.cfg")
    assert {c.channel.specification for c in (*classic.disks, *classic.nics)} == {XEN}
    dd = load_domain_config(EXAMPLES / "driver-domain.cfg").disks[0].channel
    assert (dd.backend, dd.grant_usage) == ("storagedom", True)
    demo = load_domain_config(EXAMPLES / "demo.cfg")
    assert demo.disks[0].target == str(EXAMPLES / "demo.img")


def test_runtime_specs_numbered_per_transport_and_checked() -> None:
    disks = "'/a,,xvda', '/b,,xvdb,ro,transport=xenbus', '/c,,xvdc', '/d,,xvdd,specification=xen'"
    vifs = (
        "'ip=10.1.2.3,bridge=br1,mtu=9000', 'transport=xenbus,mac=02:00:00:00:00:07', "
        "'specification=xen'"
    )
    cfg = config(
        f"name='g'\ntype='hvm'\ndisk=[{disks}]\nvif=[{vifs}]\n"
        "virtio=['type=virtio,device4', 'type=virtio,device3,transport=xenbus']"
    )
    devices = runtime_specs(cfg)
    assert devices.specs == (
        DiskSpec(devid=0, vdev="xvda", image="/a", transport="pci", grant_usage=False),
        DiskSpec(devid=0, vdev="xvdb", image="/b", read_only=True, grant_usage=True),
        DiskSpec(devid=1, vdev="xvdc", image="/c", transport="pci", grant_usage=False),
        DiskSpec(devid=0, vdev="xvdd", image="/d", grant_usage=True, specification="xen"),
        NetSpec(
            devid=2,
            ifname="eth0",
            mac=derived_mac("g", 0),
            ip="10.1.2.3/24",
            bridge="br1",
            mtu=9000,
            transport="pci",
            grant_usage=False,
        ),
        NetSpec(devid=1, ifname="eth1", mac="02:00:00:00:00:07", grant_usage=True),
        # a classic vif is numbered with the XenBus virtio devices: TAP vif<domid>.2
        NetSpec(
            devid=2, ifname="eth2", mac=derived_mac("g", 2), grant_usage=True, specification="xen"
        ),
        RngSpec(devid=3, transport="pci", grant_usage=False),
        ConsoleSpec(devid=3, grant_usage=True),
    )
    assert devices.pending == ()
    assert derived_mac("g", 0).startswith("00:16:3e:") and derived_mac("g", 1) != derived_mac(
        "g", 0
    )
    clash = config("name='g'\nvirtio=['type=virtio,device3',\n'type=virtio,device3']")
    assert [s.name for s in runtime_specs(clash).specs] == ["console0", "console1"]


def test_runtime_refusals_come_back_at_the_entry_line() -> None:
    cfg = config("name='g'\ntype='hvm'\ndisk=[\n'/a,,xvda,backend=7']")
    with pytest.raises(ConfigError) as info:
        runtime_specs(cfg)
    assert (
        str(info.value) == "d.cfg:4: disk: disk xvda.grant_usage: grant DMA needs xenbus, not pci"
    )
    named = config("name='g'\ndisk=['/a,,xvda,backend=sd']")
    with pytest.raises(ConfigError, match=r"^d\.cfg:2: disk: backend=sd: no domain"):
        runtime_specs(named)
    assert runtime_specs(named, lambda name: 9).specs[0].backend_domid == 9


def test_check_config_command(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(cli, ["check-config", str(EXAMPLES / "demo.cfg")])
    assert ok.exit_code == 0, ok.output
    assert "domain demo: pv, 256 MiB, 2 vcpu(s)" in ok.output
    assert "console: virtio device 3; virtio over xenbus" in ok.output
    js = runner.invoke(cli, ["check-config", "--json", str(EXAMPLES / "hvm-pci.cfg")])
    data = json.loads(js.stdout)
    assert data["name"] == "hvm-pci" and data["disks"][1]["readonly"] is True
    assert data["virtio"][0]["kind"] == "console"
    assert data["disks"][0]["channel"]["transport"] == "pci"
    bad = tmp_path / "bad.cfg"
    bad.write_text("name = 'x'\n\ndisk = [ 'img,,xvda,transport=pci' ]\n")
    err = runner.invoke(cli, ["check-config", str(bad)])
    assert err.exit_code == 1
    assert err.stderr.strip().splitlines() == [
        f"error: {bad}:3: disk: 'img,,xvda,transport=pci': transport=pci needs type=hvm "
        "(a PV guest has no PCI bus)"
    ]
    missing = runner.invoke(cli, ["check-config", str(tmp_path / "none.cfg")])
    assert missing.exit_code == 1
    assert f"{tmp_path / 'none.cfg'}: cannot read: No such file or directory" in missing.stderr
    binary = tmp_path / "bin.cfg"
    binary.write_bytes(b"name = 'x'\nextra = '\xff'\n")
    assert f"{binary}:2: not UTF-8 text" in runner.invoke(cli, ["check-config", str(binary)]).stderr
