"""disk, vif and virtio strings: the forms xl accepts, and what is refused and why."""

from __future__ import annotations

import pytest

from xenvirtio.spec.virtio import VirtioDeviceId
from xenvirtio.toolstack.disk import DiskEntry, parse_disk
from xenvirtio.toolstack.errors import EntryError
from xenvirtio.toolstack.options import ChannelRequest, Specification, Transport
from xenvirtio.toolstack.vif import parse_vif
from xenvirtio.toolstack.virtio import parse_virtio

# -- disk ------------------------------------------------------------------------------
PLAIN = DiskEntry("/dev/vg/guest", "xvda")


@pytest.mark.parametrize(
    "text",
    [
        "/dev/vg/guest,,xvda",
        "/dev/vg/guest,raw,xvda,rw",
        "/dev/vg/guest,raw,xvda,w,",
        "format=raw, vdev=xvda, access=rw, target=/dev/vg/guest",
        "raw:/dev/vg/guest,xvda,w",
        "phy:/dev/vg/guest,xvda,w",
        "tap:aio:/dev/vg/guest,xvda:disk,rw",
        " /dev/vg/guest , , xvda".replace(" , ", ","),
        ",raw,xvda,target=/dev/vg/guest",
        "/dev/vg/guest,raw,vdev=xvda,devtype=disk",
    ],
)
def test_disk_forms_xl_treats_as_equivalent(text: str) -> None:
    assert parse_disk(text) == PLAIN


def test_disk_access_and_channel_keys() -> None:
    entry = parse_disk("img,,xvdb,ro,specification=virtio,transport=mmio,backend=sd,grant_usage=1")
    assert entry.readonly and entry.vdev == "xvdb" and entry.target == "img"
    assert entry.request == ChannelRequest(Specification.VIRTIO, Transport.MMIO, "sd", True)
    assert parse_disk("img,,xvda,r").readonly
    assert parse_disk("img,,xvda,specification=xen").request.specification is Specification.XEN


def test_disk_target_eats_the_rest_including_commas() -> None:
    entry = parse_disk("vdev=xvda, target=/srv/a,b c,")
    assert entry.target == "/srv/a,b c"


def test_disk_advisory_flags_are_noted_not_fatal() -> None:
    entry = parse_disk("img,,xvda,backendtype=qdisk,direct-io-safe,discard,untrusted")
    assert entry.target == "img"
    assert entry.notes == (
        "backendtype=qdisk is ignored: xenvirtio serves the disk itself",
        "direct-io-safe is ignored",
        "discard is ignored",
        "untrusted is ignored",
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("img,qcow2,xvda", "format=qcow2: only raw images are served (qemu-img convert -O raw)"),
        ("format=vhd,vdev=xvda,target=img", "format=vhd: only raw images are served"),
        ("img,,hdc,cdrom", "cdrom: cdrom drives are not provided"),
        ("img,raw,hdc,devtype=cdrom", "devtype=cdrom: only devtype=disk is provided"),
        (",hdc:cdrom,r", "'hdc:cdrom': empty cdrom drives are not provided"),
        ("img,raw,hdc:cdrom", "hdc:cdrom: only disks are provided (no cdrom type)"),
        ("img,,xvda,script=block-iscsi", "script=block-iscsi: block scripts are not run"),
        ("iscsi:iqn.x,xvda,w", "iscsi: block scripts are not run"),
        ("foo:/x,xvda", "foo: unknown deprecated disk prefix"),
        ("img,,xvda,colo", "colo: COLO replication is not supported"),
        ("img,,xvda,bogus=1", "bogus=1: unknown parameter"),
        ("img,,xvda,Bad=1", "'Bad=1': unknown parameter"),
        ("img,,xvda,rw,extra", "'extra': too many positional parameters"),
        ("img,,xvda,rx", "access=rx: must be r, ro, w or rw"),
        ("img,,xvda,specification=scsi", "specification=scsi: must be one of virtio|xen"),
        ("img,,xvda,transport=usb", "transport=usb: must be one of xenbus|pci|mmio"),
        ("img,,xvda,grant_usage=yes", "grant_usage=yes: must be 0 or 1"),
        ("img,,xvda,backend=a/b", "backend=a/b: not a domain name or id"),
        ("img,,xvda,vdev=xvdb", "vdev respecified"),
        ("img,,xvda,transport=pci,transport=mmio", "transport respecified"),
        ("/a,,xvda,target=/b", "target respecified"),
        ("img,,nvme0", "vdev=nvme0: not a Xen disk name"),
        (",,xvda", "no target"),
        ("img", "no vdev"),
        ("", "no target"),
    ],
)
def test_disk_refusals_say_why(text: str, message: str) -> None:
    with pytest.raises(EntryError, match=None) as info:
        parse_disk(text)
    assert str(info.value).startswith(message)


# -- vif -------------------------------------------------------------------------------
def test_vif_keys() -> None:
    entry = parse_vif("mac=00:16:3E:AA:bb:01, bridge=xenbr0, ip=10.0.0.2/24 fd00::2, mtu=9000")
    assert entry.mac == "00:16:3e:aa:bb:01"
    assert entry.ips == ("10.0.0.2/24", "fd00::2")
    assert (entry.bridge, entry.mtu) == ("xenbr0", 9000)
    assert parse_vif("") == parse_vif("type=vif") == parse_vif(",")
    assert parse_vif("model=virtio-net").request == ChannelRequest()
    classic = parse_vif("bridge=br0,specification=xen,vifname=vif-g0")
    assert classic.request.specification is Specification.XEN and classic.vifname == "vif-g0"
    assert parse_vif("script=vif-bridge,rate=10Mb/s").notes == (
        "script=vif-bridge is ignored",
        "rate=10Mb/s is ignored",
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mac=01:16:3e:00:00:01", "mac=01:16:3e:00:00:01: a multicast address"),
        ("mac=00:16:3e:00:00", "mac=00:16:3e:00:00: must be six hex octets"),
        ("mac=00-16-3e-00-00-01", "mac=00-16-3e-00-00-01: must be six hex octets"),
        ("mac=00:16:3e:00:00:0g", "mac=00:16:3e:00:00:0g: must be six hex octets"),
        ("ip=10.0.0.256", "ip=10.0.0.256: not an IP address"),
        ("ip=10.0.0.1/33", "ip=10.0.0.1/33: not an IP address"),
        ("ip=", "ip=: no address given"),
        ("bridge=br/0", "bridge=br/0: not a network interface name"),
        ("bridge=abcdefghijklmnop", "bridge=abcdefghijklmnop: not a network interface name"),
        ("type=ioemu", "type=ioemu: emulated NICs are not provided"),
        ("model=e1000", "model=e1000: emulated NICs are not provided"),
        ("model=virtio-net,specification=xen", "model=virtio-net conflicts with specification=xen"),
        ("mtu=20", "mtu=20: must be a number in 68..65535"),
        ("bridge", "'bridge': expected key=value"),
        ("accel=x", "accel=x: unknown parameter"),
        ("bridge=a,bridge=b", "bridge respecified"),
    ],
)
def test_vif_refusals_say_why(text: str, message: str) -> None:
    with pytest.raises(EntryError) as info:
        parse_vif(text)
    assert str(info.value).startswith(message)


# -- virtio ----------------------------------------------------------------------------
def test_virtio_entries() -> None:
    console = parse_virtio("type=virtio,device3")
    assert console.device is VirtioDeviceId.CONSOLE and console.kind == "console"
    rng = parse_virtio("transport=pci, type=virtio,device4, backend=rngdom, grant_usage=1")
    assert rng.kind == "rng"
    assert rng.request == ChannelRequest(None, Transport.PCI, "rngdom", True)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("type=virtio,device2", "type=virtio,device2: give a block with disk="),
        ("type=virtio,device1", "type=virtio,device1: give a net with vif="),
        ("type=virtio,device22", "type=virtio,device22: pstore devices are not provided"),
        ("type=virtio,device99", "type=virtio,device99: 99 is not a virtio device ID"),
        ("type=virtio,device", "type=virtio,device: must be virtio,device<N>"),
        ("type=virtio", "type=virtio: must be virtio,device<N>"),
        ("transport=mmio", "no type"),
        ("type=virtio,device3,specification=xen", "specification=xen: a console is provided"),
        ("type=virtio,device4,grant_usage=2", "grant_usage=2: must be 0 or 1"),
        ("type=virtio,device4,foo=bar", "foo=bar: unknown parameter"),
        ("type=virtio,device4,type=virtio,device3", "type respecified"),
        ("device4", "'device4': expected key=value"),
    ],
)
def test_virtio_refusals_say_why(text: str, message: str) -> None:
    with pytest.raises(EntryError) as info:
        parse_virtio(text)
    assert str(info.value).startswith(message)
