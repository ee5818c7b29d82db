"""XenStore rings over emu: both ends of a domain's ``xenstore_domain_interface`` page.

- :class:`EmuDomainConnector` is the XenStore daemon's ``DomainConnector``: on
  ``XS_INTRODUCE(domid, gfn, port)`` it maps the domain's page by foreign mapping and
  binds the interdomain port, as C xenstored does with privcmd and evtchn.
- :class:`EvtchnRingChannel` is one end (page + event channel) as a ``RingChannel``;
  the domain's own end is made by ``EmuGuest.store_channel``.
"""

from __future__ import annotations

import contextlib
import os
import threading

from xenvirtio.hv.api.evtchn import Evtchn
from xenvirtio.hv.api.foreignmemory import PROT_READ, PROT_WRITE
from xenvirtio.hv.api.mapping import MappedMemory
from xenvirtio.hv.emu.client import Connection
from xenvirtio.hv.emu.evtchn import EmuEvtchn
from xenvirtio.hv.emu.foreign import EmuForeignMemory


class EvtchnRingChannel:
    """A xenstore page and one bound port of a dedicated event channel handle."""

    def __init__(
        self, page: memoryview, mapping: MappedMemory | None, evtchn: Evtchn, port: int
    ) -> None:
        self.interface = page
        self._mapping = mapping
        self._evtchn = evtchn
        self.port = port
        self.closed = False

    def notify(self) -> None:
        if not self.closed:
            self._evtchn.notify(self.port)

    def fileno(self) -> int:
        return self._evtchn.fd()

    def ack(self) -> None:
        while (port := self._evtchn.pending()) is not None:
            self._evtchn.unmask(port)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.interface.release()
        if self._mapping is not None:
            self._mapping.unmap()
        with contextlib.suppress(OSError):
            self._evtchn.close()


class EmuDomainConnector:
    """``DomainConnector`` for the XenStore daemon, acting as a privileged dom0 process."""

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self._base = Connection.connect(run_dir)
        self._foreign = EmuForeignMemory(self._base.open_another())
        self._lock = threading.Lock()

    def __call__(self, domid: int, gfn: int, port: int) -> EvtchnRingChannel:
        with self._lock:
            mapping = self._foreign.map(domid, PROT_READ | PROT_WRITE, [gfn])
            evtchn = EmuEvtchn(self._base.open_another())
            try:
                local = evtchn.bind_interdomain(domid, port)
            except BaseException:
                evtchn.close()
                mapping.unmap()
                raise
            return EvtchnRingChannel(mapping.memory[:4096], mapping, evtchn, local)

    def close(self) -> None:
        self._foreign.close()
        self._base.close()
