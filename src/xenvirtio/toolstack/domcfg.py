"""A domain's configuration from a parsed xl.cfg file, sans I/O.

    parsed = parse_config(text, "demo.cfg")
    cfg = domain_config(parsed, base_dir="/etc/xen")     # ConfigError "FILE:LINE: key: ..."

Keys read: ``name`` (required), ``type`` (``pv``/``hvm``; else legacy ``builder``),
``memory`` (MiB), ``vcpus``, ``disk``, ``vif``, ``virtio``. Other keys are accepted and
reported as ignored warnings. Each device's channel defaults come from
`xenvirtio.toolstack.channel`; a relative disk target is taken relative to ``base_dir``
(the config file's directory).
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from xenvirtio.spec.virtio import VirtioDeviceId
from xenvirtio.toolstack.cfg import Item, ParsedConfig, Setting, strtol0
from xenvirtio.toolstack.channel import Channel, resolve_channel
from xenvirtio.toolstack.disk import parse_disk
from xenvirtio.toolstack.errors import ConfigError, ConfigWarning, EntryError
from xenvirtio.toolstack.options import ChannelRequest, GuestType
from xenvirtio.toolstack.vif import parse_vif
from xenvirtio.toolstack.virtio import PROVIDED, parse_virtio

KNOWN_KEYS = frozenset({"name", "type", "builder", "memory", "vcpus", "disk", "vif", "virtio"})
DEFAULT_MEMORY_MIB = 128
MAX_MEMORY_MIB = 1 << 20  # 1 TiB
MAX_VCPUS = 128  # HVM_MAX_VCPUS
MAX_DEVICES = 64  # per list; the runtime's per-transport limits are checked later
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class Disk:
    target: str
    vdev: str
    readonly: bool
    channel: Channel
    line: int


@dataclass(frozen=True)
class Nic:
    index: int  # the vif's position: the guest's ethN order
    mac: str | None  # None: chosen when the domain is created
    ips: tuple[str, ...]
    bridge: str | None
    vifname: str | None
    mtu: int | None
    channel: Channel
    line: int


@dataclass(frozen=True)
class VirtioDevice:
    device: VirtioDeviceId
    channel: Channel
    line: int

    @property
    def kind(self) -> str:
        return PROVIDED[self.device]


@dataclass(frozen=True)
class DomainConfig:
    source: str
    name: str
    type: GuestType
    memory: int  # MiB
    vcpus: int
    disks: tuple[Disk, ...] = ()
    nics: tuple[Nic, ...] = ()
    virtio: tuple[VirtioDevice, ...] = ()
    warnings: tuple[ConfigWarning, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["warnings"] = [str(w) for w in self.warnings]
        for dev, kind in zip(data["virtio"], self.virtio, strict=True):
            dev["kind"] = kind.kind
        return data


class _Reader:
    """Typed access to the settings, with errors at the setting's line."""

    def __init__(self, parsed: ParsedConfig) -> None:
        self.parsed = parsed
        self.warnings: list[ConfigWarning] = list(parsed.warnings)

    def error(self, setting: Setting, message: str, line: int | None = None) -> ConfigError:
        return ConfigError(self.parsed.source, line or setting.line, setting.key, message)

    def warn(self, setting: Setting, message: str, line: int | None = None) -> None:
        src = self.parsed.source
        self.warnings.append(ConfigWarning(src, line or setting.line, setting.key, message))

    def string(self, key: str) -> str | None:
        setting = self.parsed.get(key)
        if setting is None:
            return None
        if not isinstance(setting.value, str):
            raise self.error(setting, f'must be a string ({key} = "...")')
        return setting.value

    def number(self, key: str, default: int, low: int, high: int) -> int:
        setting = self.parsed.get(key)
        if setting is None:
            return default
        value: object = setting.value
        if isinstance(value, str):  # xl reads numbers from strings too
            value = strtol0(value.strip()) if value.strip() else None
        if not isinstance(value, int):
            raise self.error(setting, "must be a number")
        if not low <= value <= high:
            raise self.error(setting, f"{value} is out of range {low}..{high}")
        return value

    def strings(self, key: str) -> list[tuple[str, Item]]:
        setting = self.parsed.get(key)
        if setting is None:
            return []
        if not isinstance(setting.value, tuple):
            raise self.error(setting, f"must be a list ({key} = [ '...', ... ])")
        if len(setting.value) > MAX_DEVICES:
            raise self.error(setting, f"more than {MAX_DEVICES} entries")
        out = []
        for item in setting.value:
            if not isinstance(item.value, str):
                raise self.error(setting, "each entry must be a quoted string", item.line)
            out.append((item.value, item))
        return out


def _name(reader: _Reader) -> str:
    name = reader.string("name")
    if name is None:
        raise ConfigError(reader.parsed.source, 1, "name", 'is required (name = "...")')
    setting = reader.parsed["name"]
    if not _NAME.fullmatch(name):
        raise reader.error(setting, f"{name!r}: use 1-64 of A-Za-z0-9_.- starting alphanumeric")
    if name.isdigit() or name == "Domain-0":
        raise reader.error(setting, f"{name!r} would be read as dom0 or a domain id")
    return name


def _guest_type(reader: _Reader) -> GuestType:
    kind, builder = reader.string("type"), reader.string("builder")
    if kind is not None:
        if builder is not None:
            reader.warn(reader.parsed["builder"], "ignored: type is set")
        if kind not in ("pv", "hvm"):
            other = "is not provided" if kind == "pvh" else "is not a guest type"
            raise reader.error(reader.parsed["type"], f"{kind!r} {other}; use pv or hvm")
        return GuestType(kind)
    if builder is None or builder == "generic":
        return GuestType.PV
    if builder == "hvm":
        return GuestType.HVM
    raise reader.error(reader.parsed["builder"], f"{builder!r}: must be hvm or generic")


_Entry = TypeVar("_Entry")


def _entries(
    reader: _Reader, key: str, parse: Callable[[str], _Entry]
) -> list[tuple[_Entry, Item]]:
    out = []
    for text, item in reader.strings(key):
        try:
            out.append((parse(text), item))
        except EntryError as exc:
            raise reader.error(reader.parsed[key], f"{text!r}: {exc}", item.line) from None
    return out


def _channel(
    reader: _Reader, key: str, item: Item, req: ChannelRequest, guest: GuestType
) -> Channel:
    try:
        return resolve_channel(req, guest)
    except EntryError as exc:
        raise reader.error(reader.parsed[key], f"{item.value!r}: {exc}", item.line) from None


def _disks(reader: _Reader, guest: GuestType, base_dir: str) -> tuple[Disk, ...]:
    disks: list[Disk] = []
    for entry, item in _entries(reader, "disk", parse_disk):
        for note in entry.notes:
            reader.warn(reader.parsed["disk"], note, item.line)
        clash = next((d for d in disks if d.vdev == entry.vdev), None)
        if clash is not None:
            msg = f"vdev {entry.vdev} is also the disk on line {clash.line}"
            raise reader.error(reader.parsed["disk"], msg, item.line)
        target = posixpath.normpath(posixpath.join(base_dir, entry.target))
        channel = _channel(reader, "disk", item, entry.request, guest)
        disks.append(Disk(target, entry.vdev, entry.readonly, channel, item.line))
    return tuple(disks)


def _nics(reader: _Reader, guest: GuestType) -> tuple[Nic, ...]:
    nics: list[Nic] = []
    for entry, item in _entries(reader, "vif", parse_vif):
        for note in entry.notes:
            reader.warn(reader.parsed["vif"], note, item.line)
        clash = next((n for n in nics if entry.mac and n.mac == entry.mac), None)
        if clash is not None:
            msg = f"mac {entry.mac} is also the vif on line {clash.line}"
            raise reader.error(reader.parsed["vif"], msg, item.line)
        channel = _channel(reader, "vif", item, entry.request, guest)
        fields = (entry.mac, entry.ips, entry.bridge, entry.vifname, entry.mtu)
        nics.append(Nic(len(nics), *fields, channel, item.line))
    return tuple(nics)


def _virtio(reader: _Reader, guest: GuestType) -> tuple[VirtioDevice, ...]:
    return tuple(
        VirtioDevice(
            entry.device, _channel(reader, "virtio", item, entry.request, guest), item.line
        )
        for entry, item in _entries(reader, "virtio", parse_virtio)
    )


def domain_config(parsed: ParsedConfig, base_dir: str = "") -> DomainConfig:
    """Validate ``parsed`` into a `DomainConfig`; the first problem raises `ConfigError`."""
    reader = _Reader(parsed)
    name, guest = _name(reader), _guest_type(reader)
    memory = reader.number("memory", DEFAULT_MEMORY_MIB, 1, MAX_MEMORY_MIB)
    vcpus = reader.number("vcpus", 1, 1, MAX_VCPUS)
    disks = _disks(reader, guest, base_dir)
    nics, virtio = _nics(reader, guest), _virtio(reader, guest)
    for key, setting in parsed.items():
        if key not in KNOWN_KEYS:
            reader.warn(setting, "not used by xenvirtio; ignored")
    warnings = tuple(sorted(reader.warnings, key=lambda w: w.line))
    return DomainConfig(parsed.source, name, guest, memory, vcpus, disks, nics, virtio, warnings)
