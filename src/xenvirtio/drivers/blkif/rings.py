"""One blkfront queue: its shared ring pages (granted), its event channel, its FrontRing."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from xenvirtio.hv.api import Guest
from xenvirtio.pvring.blkif.request import REQUEST_CODEC, RESPONSE_CODEC, Response
from xenvirtio.pvring.ring import FrontRing
from xenvirtio.spec import blkif as B
from xenvirtio.transport.xenbus.reactor import Reactor


class FrontQueue:
    """``2**order`` ring pages granted to ``backend_domid`` and an unbound port for it."""

    def __init__(self, guest: Guest, backend_domid: int, order: int, reactor: Reactor) -> None:
        self.guest = guest
        self.order = order
        self.reactor = reactor
        npages = 1 << order
        self.frames = guest.alloc_pages(npages)
        frames = sorted(self.frames)
        first = frames[0]
        if frames != list(range(first, first + npages)):
            raise OSError("ring pages are not contiguous")
        table = guest.grant_table
        self.refs = table.alloc_grant_references(npages)
        for ref, frame in zip(self.refs, frames, strict=True):
            table.grant_foreign_access_ref(ref, backend_domid, frame, False)
        view = guest.memory[first * B.XEN_PAGE_SIZE : (first + npages) * B.XEN_PAGE_SIZE]
        self.ring: FrontRing[bytes, Response] = FrontRing(view, REQUEST_CODEC, RESPONSE_CODEC)
        self.evtchn = guest.hypervisor.open_evtchn()
        self.port = self.evtchn.bind_unbound_port(backend_domid)
        self.on_responses: Callable[[FrontQueue], None] | None = None
        reactor.register(self.evtchn.fd(), self._on_event)

    def keys(self) -> dict[str, str | int | bytes]:
        """This queue's keys (relative to its directory)."""
        keys: dict[str, str | int | bytes] = {B.KEY_EVENT_CHANNEL: self.port}
        if self.order == 0:
            keys[B.KEY_RING_REF] = self.refs[0]
        else:
            keys.update({f"{B.KEY_RING_REF}{i}": ref for i, ref in enumerate(self.refs)})
        return keys

    def put(self, entry: bytes) -> bool:
        """Queue and publish one request; True if the backend must be notified."""
        self.ring.put_request(entry)
        return self.ring.push_requests_and_check_notify()

    def kick(self) -> None:
        self.evtchn.notify(self.port)

    def take_responses(self) -> list[Response]:
        out: list[Response] = []
        while True:
            while (rsp := self.ring.get_response()) is not None:
                out.append(rsp)
            if not self.ring.final_check_for_responses():
                return out

    def _on_event(self) -> None:
        while (port := self.evtchn.pending()) is not None:
            self.evtchn.unmask(port)
        if self.on_responses is not None:
            self.on_responses(self)

    def close(self) -> None:
        self.reactor.unregister(self.evtchn.fd())
        self.evtchn.close()
        table = self.guest.grant_table
        ended = True
        for ref in self.refs:
            try:
                table.end_foreign_access_ref(ref)
            except OSError:
                ended = False  # still mapped: leak the pages rather than reuse them
        if ended:
            with contextlib.suppress(OSError):
                table.free_grant_references(self.refs)
                self.guest.free_pages(self.frames)
