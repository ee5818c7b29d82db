"""Conformance suites for the hypervisor interface: event channels and grants.

Each class is a pytest test class that needs a ``hv_harness`` fixture
(:class:`~xenvirtio.testing.hv_harness.HvHarness`). A test module runs them against an
implementation by subclassing::

    class TestEvtchn(EvtchnConformance): pass

The behaviour checked is Xen's (libxenevtchn, libxengnttab, libxengntshr), so the real
Xen implementation must pass the same classes.
"""

from __future__ import annotations

import errno
import selectors

import pytest

from xenvirtio.hv.api import (
    EvtchnStatus,
    GrantCopySegment,
    GrantError,
    GrantRef,
    HypervisorError,
    UnmapNotify,
    wait_pending,
)
from xenvirtio.spec.event_channel import EVTCHNSTAT_interdomain, EVTCHNSTAT_unbound
from xenvirtio.spec.grant_table import GNTST_bad_gntref, GNTST_okay
from xenvirtio.testing.hv_harness import HvHarness
from xenvirtio.testing.hv_peer import Peer

WAIT = 10.0


def connect(h: HvHarness, peer: Peer) -> tuple[int, int]:
    """(local port, peer port) of a fresh interdomain channel offered by dom0."""
    local = h.hv.evtchn.bind_unbound_port(peer.domid)
    remote = peer.call("evtchn.bind_interdomain", remote_domid=h.hv.domid, remote_port=local)
    return local, remote


def local_wait(h: HvHarness, timeout: float = WAIT) -> int | None:
    port = wait_pending(h.hv.evtchn, timeout)
    if port is not None:
        h.hv.evtchn.unmask(port)
    return port


class EvtchnConformance:
    """libxenevtchn: interdomain channels, masking, closing, handle ownership."""

    def test_round_trip_both_ways(self, hv_harness: HvHarness) -> None:
        peer = hv_harness.peer()
        local, remote = connect(hv_harness, peer)
        hv_harness.hv.evtchn.notify(local)
        assert peer.call("evtchn.wait", timeout=WAIT) == remote
        peer.call("evtchn.notify", port=remote)
        assert local_wait(hv_harness) == local
        assert hv_harness.hv.evtchn.status(local) == EvtchnStatus(
            EVTCHNSTAT_interdomain, peer.domid, remote
        )
        status = peer.call("evtchn.status", port=remote)
        assert (status["state"], status["remote_domid"]) == (EVTCHNSTAT_interdomain, 0)

    def test_unbound_port_accepts_only_the_named_domain(self, hv_harness: HvHarness) -> None:
        peer = hv_harness.peer()
        not_for_peer = hv_harness.hv.evtchn.bind_unbound_port(hv_harness.hv.domid)
        with pytest.raises(HypervisorError) as info:
            peer.call("evtchn.bind_interdomain", remote_domid=0, remote_port=not_for_peer)
        assert info.value.errno == errno.EINVAL
        status = hv_harness.hv.evtchn.status(not_for_peer)
        assert status.state == EVTCHNSTAT_unbound
        with pytest.raises(HypervisorError) as info:
            peer.call("evtchn.bind_interdomain", remote_domid=0, remote_port=4000)
        assert info.value.errno == errno.EINVAL
        hv_harness.hv.evtchn.unbind(not_for_peer)

    def test_events_coalesce_and_stay_latched_while_masked(self, hv_harness: HvHarness) -> None:
        peer = hv_harness.peer()
        local, remote = connect(hv_harness, peer)
        for _ in range(3):
            peer.call("evtchn.notify", port=remote)
        assert wait_pending(hv_harness.hv.evtchn, WAIT) == local
        assert hv_harness.hv.evtchn.pending() is None  # three notifies, one event
        peer.call("evtchn.notify", port=remote)
        assert wait_pending(hv_harness.hv.evtchn, 0.2) is None  # masked
        hv_harness.hv.evtchn.unmask(local)
        assert wait_pending(hv_harness.hv.evtchn, WAIT) == local  # latched, now delivered
        hv_harness.hv.evtchn.unmask(local)

    def test_fd_is_selectable(self, hv_harness: HvHarness) -> None:
        peer = hv_harness.peer()
        local, remote = connect(hv_harness, peer)
        with selectors.DefaultSelector() as sel:
            sel.register(hv_harness.hv.evtchn.fd(), selectors.EVENT_READ)
            assert sel.select(0) == []
            peer.call("evtchn.notify", port=remote)
            assert sel.select(WAIT)
        assert hv_harness.hv.evtchn.pending() == local
        hv_harness.hv.evtchn.unmask(local)

    def test_closing_one_end_is_seen_by_the_other(self, hv_harness: HvHarness) -> None:
        peer = hv_harness.peer()
        local, remote = connect(hv_harness, peer)
        hv_harness.hv.evtchn.unbind(local)
        assert peer.call("evtchn.wait", timeout=WAIT) == remote
        status = peer.call("evtchn.status", port=remote)
        assert (status["state"], status["remote_domid"]) == (EVTCHNSTAT_unbound, 0)
        peer.call("evtchn.notify", port=remote)  # a notify into the void is no error
        local, remote = connect(hv_harness, peer)
        peer.call("evtchn.unbind", port=remote)
        assert local_wait(hv_harness) == local
        assert hv_harness.hv.evtchn.status(local).state == EVTCHNSTAT_unbound
        # Xen lets the closer's domain bind the survivor again.
        again = peer.call("evtchn.bind_interdomain", remote_domid=0, remote_port=local)
        hv_harness.hv.evtchn.notify(local)
        assert peer.call("evtchn.wait", timeout=WAIT) == again

    def test_ports_of_other_handles_are_refused(self, hv_harness: HvHarness) -> None:
        other = hv_harness.hv.open_evtchn()
        try:
            port = other.bind_unbound_port(0)
            for call in (hv_harness.hv.evtchn.notify, hv_harness.hv.evtchn.unbind):
                with pytest.raises(HypervisorError) as info:
                    call(port)
                assert info.value.errno == errno.ENOTCONN
        finally:
            other.close()

    def test_closing_a_handle_unbinds_its_ports(self, hv_harness: HvHarness) -> None:
        peer = hv_harness.peer()
        other = hv_harness.hv.open_evtchn()
        local = other.bind_unbound_port(peer.domid)
        remote = peer.call("evtchn.bind_interdomain", remote_domid=0, remote_port=local)
        other.close()
        assert peer.call("evtchn.wait", timeout=WAIT) == remote
        assert peer.call("evtchn.status", port=remote)["state"] == EVTCHNSTAT_unbound


def share(peer: Peer, count: int = 1, writable: bool = True, to: int = 0) -> tuple[int, list[int]]:
    answer = peer.call("gntshr.share", domid=to, count=count, writable=writable)
    return answer["handle"], answer["refs"]


class GnttabConformance:
    """libxengnttab: mapping another domain's grants, grant copy, misuse."""

    def test_read_only_grant(self, hv_harness: HvHarness) -> None:
        peer = hv_harness.peer()
        _, refs = share(peer, 1, writable=False)
        with pytest.raises(GrantError) as info:
            hv_harness.hv.gnttab.map_grant_refs(peer.domid, refs, True)
        assert info.value.errno == errno.EPERM
        assert peer.call("grant.query", ref=refs[0]) is False  # nothing mapped
        with hv_harness.hv.gnttab.map_grant_refs(peer.domid, refs, False) as mapping:
            assert mapping.memory.readonly
            with pytest.raises(TypeError):
                mapping[0:1] = b"x"

    def test_misuse_is_refused_and_maps_nothing(self, hv_harness: HvHarness) -> None:
        peer = hv_harness.peer()
        _, good = share(peer, 1)
        _, elsewhere = share(peer, 1, to=peer.domid)  # granted to someone else
        gnttab = hv_harness.hv.gnttab
        cases = {
            "unpermitted ref": ([2000], errno.EPERM),
            "wrong domid": (elsewhere, errno.EPERM),
            "ref out of range": ([1 << 20], errno.EINVAL),
            "one bad ref among good ones": ([good[0], 1 << 20], errno.EINVAL),
        }
        for what, (refs, code) in cases.items():
            with pytest.raises(GrantError) as info:
                gnttab.map_grant_refs(peer.domid, refs, False)
            assert info.value.errno == code, what
        assert peer.call("grant.query", ref=good[0]) is False
        with pytest.raises(GrantError) as info:
            gnttab.map_grant_refs(0x7FEF, good, False)
        assert info.value.errno == errno.ESRCH

    def test_ending_access_while_mapped_is_busy(self, hv_harness: HvHarness) -> None:
        peer = hv_harness.peer()
        (frame,) = peer.call("mem.alloc", count=1)
        ref = peer.call("grant.grant", domid=0, frame=frame, readonly=False)
        mapping = hv_harness.hv.gnttab.map_grant_ref(peer.domid, ref, True)
        with pytest.raises(HypervisorError) as info:
            peer.call("grant.end", ref=ref)
        assert info.value.errno == errno.EBUSY
        mapping[0:2] = b"ok"
        assert peer.call("read", kind="ram", handle=0, offset=frame * 4096, length=2) == b"ok".hex()
        mapping.unmap()
        peer.call("grant.end", ref=ref)
        with pytest.raises(GrantError):
            hv_harness.hv.gnttab.map_grant_ref(peer.domid, ref, False)

    def test_grant_copy_sets_per_segment_status(self, hv_harness: HvHarness) -> None:
        peer = hv_harness.peer()
        handle, refs = share(peer, 1)
        peer.call("write", kind="share", handle=handle, offset=100, data=b"copy-me".hex())
        into = bytearray(7)
        segments = [
            GrantCopySegment(GrantRef(peer.domid, refs[0], 100), into, 7),
            GrantCopySegment(b"written", GrantRef(peer.domid, refs[0], 200), 7),
            GrantCopySegment(b"nope", GrantRef(peer.domid, 1 << 20, 0), 4),
        ]
        hv_harness.hv.gnttab.grant_copy(segments)
        assert [s.status for s in segments] == [GNTST_okay, GNTST_okay, GNTST_bad_gntref]
        assert into == b"copy-me"
        assert (
            peer.call("read", kind="share", handle=handle, offset=200, length=7) == b"written".hex()
        )
        with pytest.raises(HypervisorError):
            hv_harness.hv.gnttab.grant_copy([GrantCopySegment(b"x", bytearray(1), 1)])

    def test_set_max_grants(self, hv_harness: HvHarness) -> None:
        peer = hv_harness.peer()
        _, refs = share(peer, 2)
        gnttab = hv_harness.hv.open_gnttab()
        try:
            gnttab.set_max_grants(1)
            with pytest.raises(HypervisorError):
                gnttab.map_grant_refs(peer.domid, refs, True)
            gnttab.map_grant_ref(peer.domid, refs[0], True).unmap()
        finally:
            gnttab.close()

    def test_unmap_notify_clears_byte_and_sends_event(self, hv_harness: HvHarness) -> None:
        peer = hv_harness.peer()
        handle, refs = share(peer, 1)
        local, remote = connect(hv_harness, peer)
        peer.call("write", kind="share", handle=handle, offset=10, data="ff")
        mapping = hv_harness.hv.gnttab.map_grant_refs(
            peer.domid, refs, True, notify=UnmapNotify(offset=10, port=local)
        )
        mapping.unmap()
        assert peer.call("read", kind="share", handle=handle, offset=10, length=1) == "00"
        assert peer.call("evtchn.wait", timeout=WAIT) == remote


class GntshrConformance:
    """libxengntshr: sharing this domain's pages, unmap notification, deferred unshare."""

    def test_shared_pages_map_both_ways(self, hv_harness: HvHarness) -> None:
        peer = hv_harness.peer()
        handle, refs = share(peer, 2)
        peer.call("write", kind="share", handle=handle, offset=4096 + 7, data=b"from-peer".hex())
        mapping = hv_harness.hv.gnttab.map_grant_refs(peer.domid, refs, True)
        assert len(mapping) == 8192
        assert mapping[4096 + 7 : 4096 + 16] == b"from-peer"
        mapping[0:5] = b"dom0!"
        assert peer.call("read", kind="share", handle=handle, offset=0, length=5) == b"dom0!".hex()
        assert peer.call("grant.query", ref=refs[0]) is True
        mapping.unmap()
        assert peer.call("grant.query", ref=refs[0]) is False
        with pytest.raises(ValueError):
            mapping.memory  # noqa: B018 (an unmapped mapping refuses access)

    def test_unshare_notifies_and_waits_for_the_mapper(self, hv_harness: HvHarness) -> None:
        peer = hv_harness.peer()
        local, remote = connect(hv_harness, peer)
        answer = peer.call(
            "gntshr.share", domid=0, count=1, writable=True, notify_offset=3, notify_port=remote
        )
        peer.call("write", kind="share", handle=answer["handle"], offset=0, data="aabbccdd")
        mapping = hv_harness.hv.gnttab.map_grant_refs(peer.domid, answer["refs"], False)
        peer.call("gntshr.unshare", handle=answer["handle"])
        assert local_wait(hv_harness) == local
        assert mapping[0:4] == bytes.fromhex("aabbcc00")  # still mapped, byte cleared
        mapping.unmap()
        with pytest.raises(GrantError):  # the deferred unshare has now ended the grant
            hv_harness.hv.gnttab.map_grant_refs(peer.domid, answer["refs"], False)

    def test_peer_maps_dom0_shared_pages(self, hv_harness: HvHarness) -> None:
        peer = hv_harness.peer()
        pages = hv_harness.hv.gntshr.share_pages(peer.domid, 1, True)
        pages[0:4] = b"d0d0"
        handle = peer.call("gnttab.map", domid=0, refs=list(pages.refs), writable=True)
        assert peer.call("read", kind="map", handle=handle, offset=0, length=4) == b"d0d0".hex()
        peer.call("write", kind="map", handle=handle, offset=4, data=b"dU".hex())
        assert pages[4:6] == b"dU"
        peer.call("gnttab.unmap", handle=handle)
        hv_harness.hv.gntshr.unshare(pages)
