"""The pure parts: DMA arenas, FrameMemory, negotiation, the frontend's table."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenvirtio.mem.api import GuestMemoryError
from xenvirtio.mem.grant_dma import XEN_PAGE_SIZE, grant_dma_addr
from xenvirtio.spec import virtio as S
from xenvirtio.spec.xenbus_state import XenbusState
from xenvirtio.transport.dma import Arena, arenas, largest
from xenvirtio.transport.xenbus.frontend_state import (
    Reaction,
    react,
    reset_complete,
    reset_needs_handshake,
)
from xenvirtio.transport.xenbus.keys import ACCESS_PLATFORM, TRANSPORT_UNSUPPORTED
from xenvirtio.transport.xenbus.memory import FrameMemory
from xenvirtio.transport.xenbus.negotiation import (
    device_view,
    driver_accepts,
    refusal,
    transport_offer,
)

V1 = 1 << S.VIRTIO_F_VERSION_1
X = XenbusState


@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40)), unique_by=lambda p: p[0]))
def test_arenas_are_runs_of_consecutive_addresses_and_frames(
    pages: list[tuple[int, int]],
) -> None:
    pairs = [(grant_dma_addr(g), f) for g, f in pages]
    found = arenas(pairs)
    covered = [(a.base + i * XEN_PAGE_SIZE, a.frame + i) for a in found for i in range(a.pages)]
    assert sorted(covered) == sorted(pairs)  # every page in exactly one arena
    for a, b in itertools.pairwise(found):  # maximal: neighbours cannot merge
        assert not (a.base + a.size == b.base and a.frame + a.pages == b.frame)
    if found:
        assert largest(found).pages == max(a.pages for a in found)


def test_arena_split_where_frames_jump() -> None:
    pages = [(grant_dma_addr(8), 100), (grant_dma_addr(9), 101), (grant_dma_addr(10), 7)]
    assert arenas(pages) == [
        Arena(grant_dma_addr(8), 100, 2),
        Arena(grant_dma_addr(10), 7, 1),
    ]
    with pytest.raises(ValueError):
        arenas([(grant_dma_addr(1) + 8, 3)])
    with pytest.raises(ValueError):
        largest([])


def test_frame_memory_maps_frames_once() -> None:
    pages = {5: memoryview(bytearray(XEN_PAGE_SIZE)), 6: memoryview(bytearray(XEN_PAGE_SIZE))}
    asked: list[int] = []

    def resolve(gfn: int) -> memoryview | None:
        asked.append(gfn)
        return pages.get(gfn)

    mem = FrameMemory(resolve)
    mem.write(6 * XEN_PAGE_SIZE - 2, b"abcd")  # spans frames 5 and 6
    assert mem.read(6 * XEN_PAGE_SIZE - 2, 4) == b"abcd"
    assert [len(v) for v in mem.views(6 * XEN_PAGE_SIZE - 2, 4)] == [2, 2]
    with pytest.raises(GuestMemoryError, match="separately mapped"):
        mem.view(6 * XEN_PAGE_SIZE - 2, 4)
    assert asked == [5, 6]
    with pytest.raises(GuestMemoryError, match="not mapped"):
        mem.read(7 * XEN_PAGE_SIZE, 1)
    with pytest.raises(GuestMemoryError, match="grant-DMA"):
        mem.read(grant_dma_addr(5), 1)
    with pytest.raises(GuestMemoryError):
        mem.write(5 * XEN_PAGE_SIZE, b"x" * (2 * XEN_PAGE_SIZE + 1))  # runs into frame 7
    assert bytes(pages[5][:1]) == b"\0"  # nothing written
    mem.clear()
    assert mem.mapped_frames == 0


def test_transport_offer_and_verdict() -> None:
    device = V1 | 1 << S.VIRTIO_F_RING_PACKED | TRANSPORT_UNSUPPORTED
    offer = transport_offer(device, grant_usage=True)
    assert offer & TRANSPORT_UNSUPPORTED == 0 and offer & ACCESS_PLATFORM
    assert transport_offer(device, grant_usage=False) & ACCESS_PLATFORM == 0
    assert refusal(offer, V1 | ACCESS_PLATFORM, True) is None
    assert "ACCESS_PLATFORM" in str(refusal(offer, V1, True))
    assert "VERSION_1" in str(refusal(offer, ACCESS_PLATFORM, True))
    assert "not offered" in str(refusal(offer, V1 | ACCESS_PLATFORM | 1 << 40, True))
    assert driver_accepts(V1, offer, True) == V1 | ACCESS_PLATFORM
    assert driver_accepts(V1, offer, False) == V1
    assert device_view(V1 | ACCESS_PLATFORM, device) == V1
    assert device_view(V1 | ACCESS_PLATFORM, device | ACCESS_PLATFORM) == V1 | ACCESS_PLATFORM


@pytest.mark.parametrize("own", list(XenbusState))
@pytest.mark.parametrize("backend", list(XenbusState))
def test_frontend_reactions(own: XenbusState, backend: XenbusState) -> None:
    reaction = react(own, backend)
    if own in (X.INITIALISING, X.CLOSED):
        assert reaction is Reaction.STAY  # nothing published: nothing to lose
    elif own is X.INITIALISED:
        expected = {X.CONNECTED: Reaction.CONNECT, X.INITIALISING: Reaction.STAY}
        expected[X.INIT_WAIT] = Reaction.STAY
        assert reaction is expected.get(backend, Reaction.LOST)
    elif own is X.CONNECTED:
        assert reaction is (Reaction.STAY if backend is X.CONNECTED else Reaction.LOST)
    else:
        assert reaction is Reaction.LOST  # a stale state from an earlier life


def test_reset_handshake_rules() -> None:
    assert not reset_needs_handshake(X.INITIALISING, X.INIT_WAIT)
    assert not reset_needs_handshake(X.INITIALISING, X.CLOSED)
    assert reset_needs_handshake(X.INITIALISING, X.CONNECTED)  # a backend from an earlier life
    assert reset_needs_handshake(X.CONNECTED, X.CONNECTED)
    assert reset_needs_handshake(X.CLOSED, X.INIT_WAIT)
    assert reset_complete(X.CLOSED) and reset_complete(X.UNKNOWN)
    assert not reset_complete(X.CLOSING) and not reset_complete(X.CONNECTED)
