"""Conformance suites for foreign memory, device models (ioreq servers) and domctl.

Same use as :mod:`xenvirtio.testing.hv_conformance`: subclass in a test module that
provides a ``hv_harness`` fixture.
"""

from __future__ import annotations

import errno
import select
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import pytest

from xenvirtio.hv.api import (
    PROT_READ,
    PROT_WRITE,
    DomainState,
    HypervisorError,
    HypervisorPermissionError,
    IoreqServer,
    wait_pending,
)
from xenvirtio.spec.event_channel import VIRQ_DOM_EXC
from xenvirtio.spec.ioreq import (
    IOREQ_READ,
    IOREQ_TYPE_COPY,
    IOREQ_TYPE_PCI_CONFIG,
    IOREQ_TYPE_PIO,
    IOREQ_WRITE,
    XEN_DMOP_PCI_SBDF,
    Ioreq,
    pci_config_addr,
)
from xenvirtio.testing.hv_harness import HvHarness
from xenvirtio.testing.hv_peer import Peer

WAIT = 10.0
MMIO_BASE = 0xF100_0000


class ForeignMemoryConformance:
    def test_privileged_maps_guest_frames(self, hv_harness: HvHarness) -> None:
        peer = hv_harness.peer()
        frames = peer.call("mem.alloc", count=2)
        peer.call("write", kind="ram", handle=0, offset=frames[1] * 4096, data=b"guest".hex())
        mapping = hv_harness.hv.foreign.map(peer.domid, PROT_READ | PROT_WRITE, frames[::-1])
        assert mapping[0:5] == b"guest"
        mapping[4096:4101] = b"dom0."
        got = peer.call("read", kind="ram", handle=0, offset=frames[0] * 4096, length=5)
        assert got == b"dom0.".hex()
        mapping.unmap()

    def test_bad_frames_are_refused(self, hv_harness: HvHarness) -> None:
        peer = hv_harness.peer(memory_mb=4)
        with pytest.raises(HypervisorError) as info:
            hv_harness.hv.foreign.map(peer.domid, PROT_READ, [0, 1 << 30])
        assert info.value.errno == errno.EINVAL

    def test_unprivileged_domain_is_refused(self, hv_harness: HvHarness) -> None:
        peer = hv_harness.peer()
        other = hv_harness.peer()
        refused: list[tuple[str, dict[str, Any]]] = [
            ("foreign.map", {"domid": other.domid, "frames": [0]}),
            ("foreign.map", {"domid": 0, "frames": [0]}),
            ("dm.create_ioreq_server", {"domid": other.domid}),
            ("domctl.create", {}),
        ]
        for op, args in refused:
            with pytest.raises(HypervisorPermissionError) as info:
                peer.call(op, **args)
            assert info.value.errno == errno.EPERM
            assert isinstance(info.value, PermissionError)


def serve_until(server: IoreqServer, handler: Callable[[Ioreq], int], fut: Future[Any]) -> Any:
    """Answer ioreqs until the peer's access ``fut`` completes; returns its result."""
    while not fut.done():
        if select.select([server.fd()], [], [], 0.05)[0]:
            server.process(handler)
    return fut.result(timeout=WAIT)


class DeviceModelConformance:
    def _server(self, h: HvHarness, peer: Peer) -> IoreqServer:
        hv = h.hv
        return IoreqServer(hv.devicemodel, hv.foreign, hv.open_evtchn(), peer.domid)

    def test_mmio_read_and_write_round_trip(self, hv_harness: HvHarness) -> None:
        peer = hv_harness.peer(type="hvm", vcpus=2)
        server = self._server(hv_harness, peer)
        seen: list[Ioreq] = []

        def handler(req: Ioreq) -> int:
            seen.append(req)
            return 0x1122334455667788

        try:
            server.map_io_range(True, MMIO_BASE, MMIO_BASE + 0xFFF)
            server.set_state(True)
            args = {"type": IOREQ_TYPE_COPY, "addr": MMIO_BASE + 8, "size": 4}
            read = peer.submit("vcpu.access", dir=IOREQ_READ, **args)
            assert serve_until(server, handler, read) == 0x55667788
            write = peer.submit("vcpu.access", dir=IOREQ_WRITE, data=0xABCD, vcpu=1, **args)
            assert serve_until(server, handler, write) == 0
            assert [(r.type, r.addr, r.size, r.dir) for r in seen] == [
                (IOREQ_TYPE_COPY, MMIO_BASE + 8, 4, IOREQ_READ),
                (IOREQ_TYPE_COPY, MMIO_BASE + 8, 4, IOREQ_WRITE),
            ]
            assert seen[1].data == 0xABCD and seen[1].count == 1
        finally:
            server.close()

    def test_pci_config_and_port_io_route_to_their_server(self, hv_harness: HvHarness) -> None:
        peer = hv_harness.peer(type="hvm")
        server = self._server(hv_harness, peer)
        try:
            server.map_pcidev(0, 0, 5, 0)
            server.map_io_range(False, 0xC000, 0xC01F)
            server.set_state(True)
            sbdf = XEN_DMOP_PCI_SBDF(0, 0, 5, 0)
            cfg = peer.submit(
                "vcpu.access",
                type=IOREQ_TYPE_PCI_CONFIG,
                addr=pci_config_addr(sbdf, 0),
                size=4,
                dir=IOREQ_READ,
            )
            assert (
                serve_until(server, lambda r: 0xCAFE1234 if r.addr >> 32 == sbdf else 0, cfg)
                == 0xCAFE1234
            )
            pio = peer.submit(
                "vcpu.access", type=IOREQ_TYPE_PIO, addr=0xC010, size=2, dir=IOREQ_READ
            )
            assert serve_until(server, lambda r: r.addr, pio) == 0xC010
            other = pci_config_addr(XEN_DMOP_PCI_SBDF(0, 0, 6, 0), 0)
            assert (
                peer.call(
                    "vcpu.access", type=IOREQ_TYPE_PCI_CONFIG, addr=other, size=4, dir=IOREQ_READ
                )
                == 0xFFFFFFFF
            )
        finally:
            server.close()

    def test_unclaimed_and_disabled_accesses_float_high(self, hv_harness: HvHarness) -> None:
        peer = hv_harness.peer(type="hvm")
        server = self._server(hv_harness, peer)
        try:
            server.map_io_range(True, MMIO_BASE, MMIO_BASE + 0xFFF)  # not enabled yet
            args = {"type": IOREQ_TYPE_COPY, "addr": MMIO_BASE, "dir": IOREQ_READ}
            assert peer.call("vcpu.access", size=2, **args) == 0xFFFF
            server.set_state(True)
            server.set_state(False)
            assert peer.call("vcpu.access", size=8, **args) == (1 << 64) - 1
            assert server.served == 0
        finally:
            server.close()

    def test_range_errors(self, hv_harness: HvHarness) -> None:
        peer = hv_harness.peer(type="hvm")
        dm = hv_harness.hv.devicemodel
        server = self._server(hv_harness, peer)
        try:
            server.map_io_range(True, 0x1000, 0x1FFF)
            with pytest.raises(HypervisorError) as info:
                server.map_io_range(True, 0x1800, 0x27FF)
            assert info.value.errno == errno.EEXIST
            with pytest.raises(HypervisorError) as info:
                dm.unmap_io_range_from_ioreq_server(peer.domid, server.id, True, 0x3000, 0x3FFF)
            assert info.value.errno == errno.ENOENT
            dm.unmap_io_range_from_ioreq_server(peer.domid, server.id, True, 0x1000, 0x1FFF)
            with pytest.raises(HypervisorError) as info:
                dm.set_ioreq_server_state(peer.domid, server.id + 1, True)
            assert info.value.errno == errno.ENOENT
        finally:
            server.close()

    def test_ioreq_server_needs_an_hvm_guest(self, hv_harness: HvHarness) -> None:
        peer = hv_harness.peer(type="pv")
        with pytest.raises(HypervisorError) as info:
            hv_harness.hv.devicemodel.create_ioreq_server(peer.domid, 0)
        assert info.value.errno == errno.EINVAL

    def test_interrupts_reach_the_guest(self, hv_harness: HvHarness) -> None:
        peer = hv_harness.peer(type="hvm")
        dm = hv_harness.hv.devicemodel
        dm.inject_msi(peer.domid, 0xFEE0_0000, 0x4041)
        dm.set_pci_intx_level(peer.domid, 0, 0, 5, 0, 1)
        dm.set_irq_level(peer.domid, 9, 1)
        events = peer.call("irq.take")
        assert (events[0]["kind"], events[0]["addr"], events[0]["data"]) == (
            "msi",
            0xFEE0_0000,
            0x4041,
        )
        assert [(e["kind"], e["line"], e["level"]) for e in events[1:]] == [
            ("intx", 0, 1),
            ("irq", 9, 1),
        ]
        assert events[1]["sbdf"] == XEN_DMOP_PCI_SBDF(0, 0, 5, 0)
        assert peer.call("irq.take") == []


class DomctlConformance:
    def test_lifecycle(self, hv_harness: HvHarness) -> None:
        domctl = hv_harness.hv.domctl
        domid = domctl.create(8, 2, "hvm", name=f"lifecycle-{id(self) % 10000}")
        try:
            info = domctl.info(domid)
            assert (info.state, info.memory_mb, info.vcpus, info.type) == (
                DomainState.PAUSED,
                8,
                2,
                "hvm",
            )
            assert domid in [d.domid for d in domctl.list()]
            domctl.unpause(domid)
            assert domctl.info(domid).state == DomainState.RUNNING
            domctl.pause(domid)
            assert domctl.info(domid).state == DomainState.PAUSED
        finally:
            domctl.destroy(domid)
        with pytest.raises(HypervisorError) as info_err:
            domctl.info(domid)
        assert info_err.value.errno == errno.ESRCH
        assert domid not in [d.domid for d in domctl.list()]

    def test_xenstore_wiring(self, hv_harness: HvHarness) -> None:
        store = hv_harness.hv.store
        assert store is not None, "the host has no XenStore"
        peer = hv_harness.peer()
        base = f"/local/domain/{peer.domid}"
        name = store.read(f"{base}/name").decode()
        assert peer.call("xs.read", path=f"{base}/name") == name
        peer.call("xs.write", path=f"{base}/data/hello", value="world")
        assert store.read(f"{base}/data/hello") == b"world"
        store.watch("@releaseDomain", "released")
        try:
            assert next(store.watch_events(timeout=WAIT)) == ("@releaseDomain", "released")
            hv_harness.destroy_peer(peer)
            # XS_RELEASE fires the watch again
            assert next(store.watch_events(timeout=WAIT), None) == ("@releaseDomain", "released")
        finally:
            store.unwatch("@releaseDomain", "released")
        assert not store.exists(base)

    def test_destroy_raises_virq_dom_exc(self, hv_harness: HvHarness) -> None:
        evtchn = hv_harness.hv.open_evtchn()
        try:
            port = evtchn.bind_virq(VIRQ_DOM_EXC)
            peer = hv_harness.peer()
            hv_harness.destroy_peer(peer)
            assert wait_pending(evtchn, WAIT) == port
        finally:
            evtchn.close()
