"""``xl block-attach`` / ``block-detach``: disks added to and removed from running domains.

    endpoint = block_attach(host, "demo", "data.img,raw,xvdb,rw")
    block_detach(host, "demo", "xvdb")

The disk string is an xl disk string (xl-disk-configuration(5), as in a config's
``disk`` list). A relative target is taken relative to the current directory. A
hot-plugged disk defaults to ``transport=xenbus`` whatever the guest type: XenBus is the
only transport devices can join or leave a running guest by (`runtime.hotplug`).
"""

from __future__ import annotations

import os

from xenvirtio.runtime.domain import DeviceEndpoint
from xenvirtio.runtime.hotplug import (
    HotplugError,
    attach_device,
    detach_device,
    next_devid,
    read_specs,
)
from xenvirtio.runtime.layout import DomainDir
from xenvirtio.runtime.specs import DiskSpec, SpecError
from xenvirtio.toolstack.disk import parse_disk
from xenvirtio.toolstack.errors import EntryError
from xenvirtio.toolstack.lifecycle import Host, ToolstackError, find_domain, hotplug_channel
from xenvirtio.toolstack.options import GuestType


def disk_spec(host: Host, domid: int, guest: GuestType, text: str) -> DiskSpec:
    """The runtime spec for disk string ``text`` in domain ``domid``."""
    try:
        entry = parse_disk(text)
    except EntryError as exc:
        raise ToolstackError(f"{text!r}: {exc}") from None
    channel, backend = hotplug_channel(host, guest, text, entry.request, "disks")
    specs = read_specs(DomainDir(host.run_dir, domid))
    transport = channel.transport.value
    return DiskSpec(devid=next_devid(specs, transport), vdev=entry.vdev,
                    image=os.path.abspath(entry.target), read_only=entry.readonly,
                    transport=transport, backend_domid=backend,  # type: ignore[arg-type]
                    grant_usage=channel.grant_usage)  # fmt: skip


def block_attach(host: Host, ref: str, text: str, timeout: float = 30.0) -> DeviceEndpoint:
    """Add disk ``text`` to domain ``ref``; returns its endpoint once the guest serves it."""
    info = find_domain(host, ref)
    spec = disk_spec(host, info.domid, GuestType(info.type), text)
    if not os.path.exists(spec.image):
        raise ToolstackError(f"{text!r}: {spec.image} does not exist")
    try:
        return attach_device(host.hv, info.domid, host.run_dir, spec, timeout)
    except (HotplugError, SpecError, OSError) as exc:
        raise ToolstackError(f"block-attach {spec.vdev}: {exc}") from exc


def block_detach(host: Host, ref: str, vdev: str, timeout: float = 30.0) -> None:
    """Remove disk ``vdev`` from domain ``ref``."""
    info = find_domain(host, ref)
    try:
        detach_device(host.hv, info.domid, host.run_dir, vdev, timeout)
    except (HotplugError, OSError) as exc:
        raise ToolstackError(f"block-detach {vdev}: {exc}") from exc
