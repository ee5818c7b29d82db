"""`IoreqServer` itself: a server half made (its page or a vCPU port failed) is destroyed
again, leaving the hypervisor as before; one `process` call answers at most ``budget``
ioreqs and says when more may wait, so a fast guest cannot hold a shared loop."""

from __future__ import annotations

import errno
from typing import Any, cast

import pytest

from xenvirtio.hv.api import (
    Evtchn,
    ForeignMapping,
    ForeignMemory,
    Hypervisor,
    HypervisorError,
    IoreqServer,
)
from xenvirtio.hv.emu.host import HostStatus, host_status
from xenvirtio.spec.ioreq import (
    IOREQ,
    IOREQ_STATE_OFFSET,
    IOREQ_TYPE_COPY,
    IOREQ_WRITE,
    STATE_IOREQ_READY,
    STATE_IORESP_READY,
    Ioreq,
)


class Failing:
    """A real handle whose ``method`` fails on call number ``at``."""

    def __init__(self, real: Any, method: str, at: int) -> None:
        self.real, self.method, self.at, self.calls = real, method, at, 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.real, name)
        if name != self.method:
            return attr

        def call(*args: Any) -> Any:
            self.calls += 1
            if self.calls == self.at:
                raise HypervisorError(errno.ENOMEM, "injected failure")
            return attr(*args)

        return call


def held(emu_host: HostStatus) -> dict[str, object]:
    details = host_status(emu_host.run_dir).details
    return {k: details[k] for k in ("ioreq_servers", "ports", "connections")}


@pytest.mark.parametrize(
    ("handle", "method", "at"),
    [
        ("foreign", "map_resource", 1),
        ("evtchn", "bind_interdomain", 1),
        ("evtchn", "bind_interdomain", 2),  # the first vCPU's port is bound already
    ],
)
def test_half_made_server_leaves_nothing(
    hv: Hypervisor, emu_host: HostStatus, handle: str, method: str, at: int
) -> None:
    domid = hv.domctl.create(16, 2, "hvm", name="half-made")
    evtchn, foreign = hv.open_evtchn(), hv.open_foreignmemory()
    try:
        before = held(emu_host)
        failing = Failing(evtchn if handle == "evtchn" else foreign, method, at)
        with pytest.raises(HypervisorError, match="injected"):
            IoreqServer(
                hv.devicemodel,
                cast(ForeignMemory, failing) if handle == "foreign" else foreign,
                cast(Evtchn, failing) if handle == "evtchn" else evtchn,
                domid,
            )
        assert failing.calls == at
        assert held(emu_host) == before  # no server, no vp_eport, no binding left
        assert evtchn.ports() == []  # type: ignore[attr-defined]
        server = IoreqServer(hv.devicemodel, foreign, evtchn, domid)  # the slot is free
        server.close()
    finally:
        evtchn.close()
        foreign.close()
        hv.domctl.destroy(domid)


class BusyGuest:
    """A guest vCPU that issues its next ioreq the moment the last one is answered,
    seen through fake devicemodel / foreignmemory / evtchn handles."""

    PORT = 5

    def __init__(self) -> None:
        self.page = bytearray(4096)
        self.busy = True
        IOREQ.pack_into(self.page, 0, 0x1000, 0, 1, 4, 9, 0, 0, IOREQ_TYPE_COPY)
        self.issue()

    def issue(self) -> None:
        self.page[IOREQ_STATE_OFFSET] = STATE_IOREQ_READY | IOREQ_WRITE << 5
        self.kicked = True

    # devicemodel
    def create_ioreq_server(self, domid: int, handle_bufioreq: int) -> int:
        return 0

    def nr_vcpus(self, domid: int) -> int:
        return 1

    def destroy_ioreq_server(self, domid: int, id: int) -> None:
        pass

    # foreignmemory
    def map_resource(self, *args: int) -> ForeignMapping:
        return ForeignMapping(
            memoryview(self.page), lambda: None, domid=1, frames=[0], writable=True
        )

    # evtchn
    def bind_interdomain(self, domid: int, port: int) -> int:
        return self.PORT

    def pending(self) -> int | None:
        kicked, self.kicked = self.kicked, False
        return self.PORT if kicked else None

    def notify(self, port: int) -> None:
        assert self.page[IOREQ_STATE_OFFSET] & 0xF == STATE_IORESP_READY
        if self.busy:
            self.issue()  # the vCPU goes straight on with the next access

    def unmask(self, port: int) -> None:
        pass

    def unbind(self, port: int) -> None:
        pass


def test_process_stops_at_its_budget() -> None:
    guest = BusyGuest()
    seen: list[Ioreq] = []

    def handler(req: Ioreq) -> int:
        seen.append(req)
        return 0

    fake: Any = guest
    server = IoreqServer(fake, fake, fake, 1)
    assert server.process(handler, budget=5) == 5
    assert server.backlog  # the guest has another one waiting: call again
    assert server.process(handler, budget=3) == 3 and server.backlog
    assert len(seen) == 8 and all(r.addr == 0x1000 for r in seen)
    guest.busy = False
    assert server.process(handler) == 1 and not server.backlog  # the last one, then quiet
    assert server.served == 9
