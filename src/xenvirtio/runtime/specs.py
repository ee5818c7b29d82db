"""What a domain's virtio devices are: frozen specs, and their strict JSON form.

A spec says *what* a device is (kind, transport, ring format, backend domain, what it
serves); where it lands in the guest (PCI slot, virtio-mmio window, XenBus devid) follows
from it deterministically (`xenvirtio.runtime.devices`). Configuration files are hostile
input: every field is checked for its type and range, unknown fields are refused, and
an error names the field (``devices[1].queues: ...``).

    spec = DiskSpec(devid=0, vdev="xvda", image="/srv/guest.img", transport="pci")
    data = spec_to_json(spec)                       # {"kind": "disk", ...}
    assert spec_from_json(data) == spec
    specs = specs_from_json(json.loads(text))       # a domain's list, cross-checked

A disk or NIC with ``specification`` "xen" is a classic PV device instead (blkif
``vbd`` / netif ``vif``, XenBus with grants only): the same fields, served by blkback
and netback and driven by blkfront and netfront.

A NIC (`NetSpec`), a console (`ConsoleSpec`) and an entropy device (`RngSpec`) have
the same common fields; NICs are named by the guest's interface (``eth0``), consoles
and entropy devices by kind and unit (``console0``, ``rng0``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Literal

Transport = Literal["xenbus", "pci", "mmio"]
Ring = Literal["split", "packed", "auto"]
Specification = Literal["virtio", "xen"]
TRANSPORTS: Final = ("xenbus", "pci", "mmio")
RINGS: Final = ("split", "packed", "auto")
SPECIFICATIONS: Final = ("virtio", "xen")
# Highest devid per transport: XenBus numbers freely; PCI slots 4..31 of bus 0 (slot =
# 4 + devid); virtio-mmio SPIs 33..43 (GUEST_VIRTIO_MMIO_SPI_FIRST + devid).
MAX_DEVID: Final = {"xenbus": 255, "pci": 27, "mmio": 10}
MAX_DOMID: Final = 0x7FEF  # DOMID_FIRST_RESERVED - 1
MAX_QUEUES: Final = 16
MAX_SERIAL: Final = 20  # VIRTIO_BLK_ID_BYTES
MAX_PATH: Final = 4096
MAX_UNIT: Final = 15
MAX_RNG_RATE: Final = 1 << 30  # bytes per second
_VDEV = re.compile(r"[a-z][a-z0-9]{0,15}")
_IFNAME = re.compile(r"eth[0-9]{1,3}")
_BRIDGE = re.compile(r"[A-Za-z0-9_.-]{1,15}")  # IFNAMSIZ - 1
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


class SpecError(ValueError):
    """A device spec is malformed; the message starts with the field's name."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where


@dataclass(frozen=True, kw_only=True)
class DeviceSpec:
    """The fields every device kind has.

    ``grant_usage`` None means the transport's default: grant DMA (True) over XenBus;
    guest-physical addresses over pci and mmio (the device model maps guest RAM).
    """

    kind: ClassVar[str] = ""
    devid: int
    transport: Transport = "xenbus"
    ring: Ring = "auto"
    backend_domid: int = 0
    grant_usage: bool | None = None

    @property
    def uses_grants(self) -> bool:
        if self.grant_usage is None:
            return self.transport == "xenbus"
        return self.grant_usage

    @property
    def name(self) -> str:
        """How tools name the device in its domain (file names, XenStore keys)."""
        return f"{self.kind}{self.devid}"

    @property
    def xen_devtype(self) -> str | None:
        """``vbd`` or ``vif`` for a classic PV device; None for a virtio one."""
        return None

    @property
    def place(self) -> tuple[str, int]:
        """What no two devices of a domain may share: (transport or devtype, devid)."""
        return (self.xen_devtype or self.transport, self.devid)


@dataclass(frozen=True, kw_only=True)
class DiskSpec(DeviceSpec):
    """A virtio-blk disk on a raw image file (or block device) of the backend domain."""

    kind: ClassVar[str] = "disk"
    vdev: str
    image: str
    read_only: bool = False
    queues: int = 1
    serial: str = ""
    specification: Specification = "virtio"

    @property
    def name(self) -> str:
        return self.vdev

    @property
    def xen_devtype(self) -> str | None:
        return "vbd" if self.specification == "xen" else None


@dataclass(frozen=True, kw_only=True)
class NetSpec(DeviceSpec):
    """A virtio-net NIC: the backend's TAP on ``bridge`` (in the host's backend network
    namespace), the guest's interface ``ifname`` with ``mac`` and ``ip`` (an address
    with its prefix, or "" for none) in the domain's own namespace."""

    kind: ClassVar[str] = "net"
    ifname: str
    mac: str
    ip: str = ""
    bridge: str = "xenbr0"
    mtu: int = 1500
    queues: int = 1
    specification: Specification = "virtio"

    @property
    def name(self) -> str:
        return self.ifname

    @property
    def xen_devtype(self) -> str | None:
        return "vif" if self.specification == "xen" else None


@dataclass(frozen=True, kw_only=True)
class ConsoleSpec(DeviceSpec):
    """A virtio-console whose port 0 is a pty of the backend domain."""

    kind: ClassVar[str] = "console"
    unit: int = 0

    @property
    def name(self) -> str:
        return f"console{self.unit}"


@dataclass(frozen=True, kw_only=True)
class RngSpec(DeviceSpec):
    """A virtio-rng fed from the backend's CSPRNG; ``rate`` bytes/s (0: no limit),
    bursts of up to ``burst`` bytes (0: one second's worth)."""

    kind: ClassVar[str] = "rng"
    unit: int = 0
    rate: int = 0
    burst: int = 0

    @property
    def name(self) -> str:
        return f"rng{self.unit}"


SPEC_KINDS: Final[dict[str, type[DeviceSpec]]] = {
    "disk": DiskSpec,
    "net": NetSpec,
    "console": ConsoleSpec,
    "rng": RngSpec,
}


# -- validation of one field ----------------------------------------------------------
def _int(where: str, value: object, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise SpecError(where, f"must be an integer in {low}..{high}, not {value!r}")
    return value


def _bool(where: str, value: object) -> bool:
    if type(value) is not bool:
        raise SpecError(where, f"must be true or false, not {value!r}")
    return value


def _choice(where: str, value: object, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise SpecError(where, f"must be one of {', '.join(choices)}, not {value!r}")
    return str(value)


def _text(where: str, value: object, limit: int) -> str:
    if not isinstance(value, str) or len(value) > limit or "\0" in value:
        raise SpecError(where, f"must be a string of at most {limit} characters")
    return value


def _check_common(where: str, spec: DeviceSpec) -> None:
    _choice(f"{where}.transport", spec.transport, TRANSPORTS)
    _int(f"{where}.devid", spec.devid, 0, MAX_DEVID[spec.transport])
    _choice(f"{where}.ring", spec.ring, RINGS)
    _int(f"{where}.backend_domid", spec.backend_domid, 0, MAX_DOMID)
    if spec.grant_usage is not None:
        _bool(f"{where}.grant_usage", spec.grant_usage)
        if spec.grant_usage and spec.transport != "xenbus":
            raise SpecError(f"{where}.grant_usage", f"grant DMA needs xenbus, not {spec.transport}")


def _check_classic(where: str, spec: DiskSpec | NetSpec) -> None:
    """A classic PV device runs over XenBus with grants, on its own ring format."""
    if _choice(f"{where}.specification", spec.specification, SPECIFICATIONS) == "virtio":
        return
    if spec.transport != "xenbus":
        raise SpecError(
            f"{where}.transport", f"a classic device needs xenbus, not {spec.transport}"
        )
    if spec.ring != "auto":
        raise SpecError(f"{where}.ring", "a classic device has no virtqueue ring choice")
    if spec.grant_usage is False:
        raise SpecError(f"{where}.grant_usage", "a classic device always uses grants")
    if isinstance(spec, DiskSpec) and spec.serial:
        raise SpecError(f"{where}.serial", "blkif has no serial number")


def _check_disk(where: str, spec: DiskSpec) -> None:
    if not isinstance(spec.vdev, str) or not _VDEV.fullmatch(spec.vdev):
        raise SpecError(f"{where}.vdev", f"must match {_VDEV.pattern}, not {spec.vdev!r}")
    image = _text(f"{where}.image", spec.image, MAX_PATH)
    if not image.startswith("/"):
        raise SpecError(f"{where}.image", f"must be an absolute path, not {image!r}")
    _bool(f"{where}.read_only", spec.read_only)
    _int(f"{where}.queues", spec.queues, 1, MAX_QUEUES)
    serial = _text(f"{where}.serial", spec.serial, MAX_SERIAL)
    if not serial.isascii() or not serial.isprintable():
        raise SpecError(f"{where}.serial", "must be printable ASCII")
    _check_classic(where, spec)


def _pattern(where: str, value: object, pattern: re.Pattern[str]) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise SpecError(where, f"must match {pattern.pattern}, not {value!r}")
    return value


def _check_net(where: str, spec: NetSpec) -> None:
    _pattern(f"{where}.ifname", spec.ifname, _IFNAME)
    mac = _pattern(f"{where}.mac", spec.mac, _MAC)
    if int(mac[:2], 16) & 1:
        raise SpecError(f"{where}.mac", "must be a unicast address (first octet even)")
    ip = _text(f"{where}.ip", spec.ip, 64)
    if ip:
        try:
            ipaddress.ip_interface(ip)
        except ValueError:
            raise SpecError(
                f"{where}.ip", f"must be an address with its /prefix, not {ip!r}"
            ) from None
        if "/" not in ip:
            raise SpecError(f"{where}.ip", f"needs its /prefix, not {ip!r}")
    _pattern(f"{where}.bridge", spec.bridge, _BRIDGE)
    _int(f"{where}.mtu", spec.mtu, 68, 65535)
    _int(f"{where}.queues", spec.queues, 1, MAX_QUEUES)
    _check_classic(where, spec)


def _check_rng(where: str, spec: RngSpec) -> None:
    _int(f"{where}.unit", spec.unit, 0, MAX_UNIT)
    _int(f"{where}.rate", spec.rate, 0, MAX_RNG_RATE)
    _int(f"{where}.burst", spec.burst, 0, MAX_RNG_RATE)
    if spec.burst and not spec.rate:
        raise SpecError(f"{where}.burst", "needs a rate")


def check_spec(spec: DeviceSpec, where: str = "device") -> DeviceSpec:
    """Validate a spec built in code as strictly as one read from JSON."""
    _check_common(where, spec)
    if isinstance(spec, DiskSpec):
        _check_disk(where, spec)
    elif isinstance(spec, NetSpec):
        _check_net(where, spec)
    elif isinstance(spec, ConsoleSpec):
        _int(f"{where}.unit", spec.unit, 0, MAX_UNIT)
    elif isinstance(spec, RngSpec):
        _check_rng(where, spec)
    return spec


# -- JSON ------------------------------------------------------------------------------
def spec_to_json(spec: DeviceSpec) -> dict[str, Any]:
    """``{"kind": ..., field: value, ...}`` (every field, defaults included)."""
    return {"kind": spec.kind, **dataclasses.asdict(spec)}


def spec_from_json(data: object, where: str = "device") -> DeviceSpec:
    """One spec from its JSON object; `SpecError` naming the field on anything wrong."""
    if not isinstance(data, Mapping):
        raise SpecError(where, "must be an object")
    kind = _choice(f"{where}.kind", data.get("kind"), tuple(SPEC_KINDS))
    cls = SPEC_KINDS[kind]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key != "kind" and key not in fields:
            raise SpecError(f"{where}.{key}", f"unknown field for a {kind}")
    missing = [n for n, f in fields.items() if _required(f) and n not in data]
    if missing:
        raise SpecError(f"{where}.{missing[0]}", "is required")
    try:
        spec = cls(**{k: v for k, v in data.items() if k != "kind"})
    except TypeError as exc:  # pragma: no cover - the checks above cover the fields
        raise SpecError(where, str(exc)) from None
    return check_spec(spec, where)


def _required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def specs_to_json(specs: list[DeviceSpec]) -> list[dict[str, Any]]:
    return [spec_to_json(s) for s in specs]


def specs_from_json(data: object, where: str = "devices") -> list[DeviceSpec]:
    """A domain's device list: each spec checked, then the list as a whole."""
    if not isinstance(data, list):
        raise SpecError(where, "must be a list")
    specs = [spec_from_json(item, f"{where}[{n}]") for n, item in enumerate(data)]
    check_domain_devices(specs, where)
    return specs


def check_domain_devices(specs: list[DeviceSpec], where: str = "devices") -> None:
    """No two devices of a domain may share a name or a (transport, devid) place; no
    two XenBus NICs a devid (their backend TAPs are both ``vif<domid>.<devid>``)."""
    names: dict[str, int] = {}
    places: dict[tuple[str, int], int] = {}
    vifs: dict[int, int] = {}
    for n, spec in enumerate(specs):
        here = f"{where}[{n}]"
        if spec.name in names:
            raise SpecError(f"{here}.name", f"{spec.name!r} is also {where}[{names[spec.name]}]")
        place = spec.place
        if place in places:
            raise SpecError(
                f"{here}.devid",
                f"{place[0]} devid {spec.devid} is also {where}[{places[place]}]",
            )
        names[spec.name], places[place] = n, n
        if isinstance(spec, NetSpec) and spec.transport == "xenbus":
            if spec.devid in vifs:
                raise SpecError(f"{here}.devid", f"its TAP is also {where}[{vifs[spec.devid]}]'s")
            vifs[spec.devid] = n
