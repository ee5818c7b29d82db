"""Build :class:`~xenvirtio.hv.api.Hypervisor` bundles over emu connections."""

from __future__ import annotations

from pathlib import Path

from xenvirtio.hv.api.hypervisor import Hypervisor
from xenvirtio.hv.emu.client import Connection
from xenvirtio.hv.emu.devicemodel import EmuDeviceModel
from xenvirtio.hv.emu.domctl import EmuDomctl
from xenvirtio.hv.emu.evtchn import EmuEvtchn
from xenvirtio.hv.emu.foreign import EmuForeignMemory
from xenvirtio.hv.emu.gnttab import EmuGntshr, EmuGnttab
from xenvirtio.xenstore.client import XenstoreClient

XENSTORED_SOCKET = "xenstored.sock"


class EmuOpener:
    """Opens handles of one domain, each its own connection (``xen*_open``)."""

    def __init__(self, base: Connection) -> None:
        self.base = base

    def open_evtchn(self) -> EmuEvtchn:
        return EmuEvtchn(self.base.open_another())

    def open_gnttab(self) -> EmuGnttab:
        return EmuGnttab(self.base.open_another())

    def open_gntshr(self) -> EmuGntshr:
        return EmuGntshr(self.base.open_another())

    def open_foreignmemory(self) -> EmuForeignMemory:
        return EmuForeignMemory(self.base.open_another())

    def open_devicemodel(self) -> EmuDeviceModel:
        return EmuDeviceModel(self.base.open_another())

    def close(self) -> None:
        self.base.close()


def bundle(base: Connection, domid: int, store: XenstoreClient | None) -> Hypervisor:
    """Every port of domain ``domid``, opened through ``base`` (which the bundle owns)."""
    opener = EmuOpener(base)
    return Hypervisor(
        domid=domid,
        evtchn=opener.open_evtchn(),
        gnttab=opener.open_gnttab(),
        gntshr=opener.open_gntshr(),
        foreign=opener.open_foreignmemory(),
        devicemodel=opener.open_devicemodel(),
        domctl=EmuDomctl(base.open_another(), store),
        store=store,
        opener=opener,
    )


def xenstore_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / XENSTORED_SOCKET


def open_emu(run_dir: str | Path, *, xenstore: bool = True) -> Hypervisor:
    """dom0's hypervisor: connect to the daemon (and XenStore, when it runs) in ``run_dir``."""
    base = Connection.connect(run_dir)
    store = None
    if xenstore and xenstore_path(run_dir).exists():
        store = XenstoreClient.connect(str(xenstore_path(run_dir)))
    try:
        return bundle(base, 0, store)
    except BaseException:
        base.close()
        if store is not None:
            store.close()
        raise
