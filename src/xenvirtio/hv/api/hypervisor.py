"""The hypervisor as a bundle of narrow ports, one per Xen library.

``runtime.open_hypervisor`` (the composition root) builds a :class:`Hypervisor` for the
chosen implementation; everything above the ``hv`` layer sees only this bundle.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

from xenvirtio.hv.api.devicemodel import DeviceModel
from xenvirtio.hv.api.domctl import DomainControl
from xenvirtio.hv.api.evtchn import Evtchn
from xenvirtio.hv.api.foreignmemory import ForeignMemory
from xenvirtio.hv.api.gnttab import Gntshr, Gnttab
from xenvirtio.xenstore.client import XenstoreClient


class HandleOpener(Protocol):
    """Opens more handles of the same domain (``xenevtchn_open`` and friends)."""

    def open_evtchn(self) -> Evtchn: ...

    def open_gnttab(self) -> Gnttab: ...

    def open_gntshr(self) -> Gntshr: ...

    def open_foreignmemory(self) -> ForeignMemory: ...

    def open_devicemodel(self) -> DeviceModel: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Hypervisor:
    """One handle per library for domain ``domid``, plus an opener for more.

    ``store`` is a XenStore client (``xenvirtio.xenstore.client.XenstoreClient``) or None
    when no XenStore daemon was reachable.
    """

    domid: int
    evtchn: Evtchn
    gnttab: Gnttab
    gntshr: Gntshr
    foreign: ForeignMemory
    devicemodel: DeviceModel
    domctl: DomainControl
    store: XenstoreClient | None
    opener: HandleOpener

    def open_evtchn(self) -> Evtchn:
        return self.opener.open_evtchn()

    def open_gnttab(self) -> Gnttab:
        return self.opener.open_gnttab()

    def open_gntshr(self) -> Gntshr:
        return self.opener.open_gntshr()

    def open_foreignmemory(self) -> ForeignMemory:
        return self.opener.open_foreignmemory()

    def open_devicemodel(self) -> DeviceModel:
        return self.opener.open_devicemodel()

    def close(self) -> None:
        """Close every handle of the bundle (not the ones opened through ``open_*``)."""
        handles: list[Any] = [
            self.evtchn,
            self.gnttab,
            self.gntshr,
            self.foreign,
            self.devicemodel,
            self.domctl,
            self.store,
            self.opener,
        ]
        for handle in handles:
            if handle is not None:
                with contextlib.suppress(OSError):
                    handle.close()

    def __enter__(self) -> Hypervisor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
