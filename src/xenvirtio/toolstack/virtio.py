"""libxl's generic ``virtio = [ ... ]`` entries (xl.cfg(5), Xen 4.17), sans I/O.

    parse_virtio("type=virtio,device3")                       # a virtio console
    parse_virtio("type=virtio,device4,transport=pci")         # a virtio-rng over virtio-pci
    parse_virtio("type=virtio,device4,backend=rngdom,grant_usage=1")

Each entry is ``key=value`` fields: ``type``, ``transport``, ``backend``, ``grant_usage``
as in libxl (the one comma allowed inside ``type=virtio,device<N>``), plus this
project's ``specification``. ``<N>`` is the virtio device ID (virtio 1.2 5): the console
(3) and the entropy device (4) are provided here; disks and NICs have their own ``disk``
and ``vif`` keys. Neither has a classic Xen PV protocol here, so ``specification=xen``
is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from xenvirtio.spec.virtio import VirtioDeviceId
from xenvirtio.toolstack.errors import EntryError
from xenvirtio.toolstack.options import (
    ChannelRequest,
    Specification,
    key_value,
    split_fields,
    update_channel,
)

_TYPE = re.compile(r"virtio,device([0-9]{1,3})")
# What each device ID is called here, and the xl key for the ones with their own key.
PROVIDED = {VirtioDeviceId.CONSOLE: "console", VirtioDeviceId.ENTROPY: "rng"}
_OWN_KEY = {VirtioDeviceId.NET: "vif", VirtioDeviceId.BLOCK: "disk"}


@dataclass(frozen=True)
class VirtioEntry:
    """One parsed ``virtio`` entry, before the domain fills in its defaults."""

    device: VirtioDeviceId
    request: ChannelRequest = field(default_factory=ChannelRequest)

    @property
    def kind(self) -> str:
        return PROVIDED[self.device]


def _fields(text: str) -> list[tuple[str, str]]:
    """``key=value`` pairs, rejoining the comma inside ``type=virtio,device<N>``."""
    words = split_fields(text)
    pairs: list[tuple[str, str]] = []
    for n, word in enumerate(words):
        kv = key_value(word)
        if kv is None and n > 0 and pairs and pairs[-1] == ("type", "virtio"):
            pairs[-1] = ("type", f"virtio,{word}")
        elif kv is None:
            if word:
                raise EntryError(f"{word!r}: expected key=value")
        else:
            pairs.append(kv)
    return pairs


def _device(value: str) -> VirtioDeviceId:
    match = _TYPE.fullmatch(value)
    if match is None:
        raise EntryError(f"type={value}: must be virtio,device<N> (N the virtio device ID)")
    try:
        device = VirtioDeviceId(int(match.group(1)))
    except ValueError:
        raise EntryError(f"type={value}: {match.group(1)} is not a virtio device ID") from None
    if device in _OWN_KEY:
        raise EntryError(f"type={value}: give a {device.name.lower()} with {_OWN_KEY[device]}=")
    if device not in PROVIDED:
        raise EntryError(f"type={value}: {device.name.lower()} devices are not provided")
    return device


def parse_virtio(text: str) -> VirtioEntry:
    """One ``virtio`` entry; `EntryError` naming the offending key."""
    device: VirtioDeviceId | None = None
    request = ChannelRequest()
    seen: set[str] = set()
    for key, value in _fields(text):
        if key in seen:
            raise EntryError(f"{key} respecified")
        seen.add(key)
        if key == "type":
            device = _device(value)
            continue
        updated = update_channel(request, key, value)
        if updated is None:
            raise EntryError(f"{key}={value}: unknown parameter")
        request = updated
    if device is None:
        raise EntryError("no type: give type=virtio,device<N>")
    if request.specification is Specification.XEN:
        raise EntryError(f"specification=xen: a {PROVIDED[device]} is provided as virtio only")
    return VirtioEntry(device, request)
