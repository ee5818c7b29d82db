"""Hostile frontends: malformed transmit packets are dropped (``NETIF_RSP_ERROR``), a
broken slot stream or ring indices out of step fail that vif (``dev_fatal``), and the
other guests on the same netback and bridge keep their traffic flowing."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from xenvirtio.hv.xenbus.client import read_state
from xenvirtio.hv.xenbus.paths import error_dir
from xenvirtio.pvring.netif.codecs import ExtraInfo, TxRequest, encode_extra, encode_tx_request
from xenvirtio.pvring.ring import REQ_PROD_OFF
from xenvirtio.spec import netif as N
from xenvirtio.spec.xenbus_state import XenbusState
from xenvirtio.testing.hv_harness import wait_until
from xenvirtio.testing.net_tools import ping
from xenvirtio.testing.netif_stack import NetifGuest, NetifStack
from xenvirtio.testing.tools import require_tool

MORE = N.NETTXF_more_data


@pytest.fixture(scope="module")
def stack(netif_run_dir: Path) -> Iterator[NetifStack]:
    require_tool("ping")
    with NetifStack(netif_run_dir, guests=4) as s:
        yield s


def inject(stack: NetifStack, g: NetifGuest, build: object) -> list[int]:
    """Put the slots ``build(ids, grefs)`` returns on ``g``'s tx ring and kick; the ids
    used are taken from the frontend's free list (their responses free them again)."""

    def put() -> list[int]:
        tx = g.front.queues[0].tx
        ids = [tx.free.pop() for _ in range(20)]
        slots = build(ids, [tx.pages.refs[i] for i in ids])  # type: ignore[operator]
        tx.inflight.update(ids)
        for raw in slots:
            tx.ring.put_request(raw)
        tx.ring.push_requests()
        q = g.front.queues[0]
        q.evtchn.notify(q.tx_port)
        unused = ids[len(slots) :]
        tx.inflight.difference_update(unused)
        tx.free.extend(unused)
        return ids

    result: list[int] = stack.call(put)
    return result


def req(gref: int, rid: int, size: int, flags: int = 0, offset: int = 0) -> bytes:
    return encode_tx_request(TxRequest(gref, offset, flags, rid, size))


CASES = {
    "too many slots": lambda ids, refs: [
        req(refs[0], ids[0], 19 * 60, MORE),
        *(req(refs[i], ids[i], 60, MORE) for i in range(1, 18)),
        req(refs[18], ids[18], 60),
    ],
    "offset past the page": lambda ids, refs: [req(refs[0], ids[0], 200, offset=4000)],
    "size past the page": lambda ids, refs: [
        req(refs[0], ids[0], 5000, MORE),
        req(refs[1], ids[1], 100),
    ],
    "gref out of range": lambda ids, refs: [req(1 << 30, ids[0], 60)],
    "gref not granted": lambda ids, refs: [req(4000, ids[0], 60)],
    "runt": lambda ids, refs: [req(refs[0], ids[0], 6)],
    "gso type": lambda ids, refs: [
        req(refs[0], ids[0], 1000, N.NETTXF_extra_info | N.NETTXF_csum_blank),
        encode_extra(ExtraInfo(1, 0, struct.pack("<HBxH", 1448, 7, 0)), N.TX_SLOT_SIZE),
    ],
}


def test_bad_packets_are_dropped_others_unaffected(stack: NetifStack) -> None:
    g1, g2, bad, _ = stack.guests
    stats = bad.backend.peer.stats  # type: ignore[union-attr]
    tx = bad.front.queues[0].tx
    for name, build in CASES.items():
        before, errors = sum(stats.tx_dropped.values()), tx.counters.errors
        inject(stack, bad, build)
        assert wait_until(lambda b=before: sum(stats.tx_dropped.values()) == b + 1, 5), name
        assert wait_until(lambda e=errors: tx.counters.errors > e, 5), name  # NETIF_RSP_ERROR
        assert ping(g1.netns, g2.address, count=5).lossless, name
    assert stats.tx_dropped["grant copy failed"] == 2
    # The hostile guest's own vif still works, and no id leaked.
    assert ping(bad.netns, g1.address, count=5).lossless
    assert stack.call(lambda: len(tx.free) + len(tx.inflight)) == 256
    assert read_state(stack.dom0.store, str(bad.backend_path)) is XenbusState.CONNECTED  # type: ignore[union-attr, arg-type]


def failed(stack: NetifStack, g: NetifGuest, word: str) -> bool:
    store = stack.dom0.store  # type: ignore[union-attr]
    path = str(g.backend_path)
    if read_state(store, path) is XenbusState.CONNECTED:  # type: ignore[arg-type]
        return False
    return word in store.read(f"{error_dir(path)}/error").decode()  # type: ignore[union-attr]


@pytest.mark.parametrize("attack", ["unknown extra type", "req_prod out of step"])
def test_broken_ring_fails_that_vif_only(stack: NetifStack, attack: str) -> None:
    g1, g2 = stack.guests[:2]
    victim = stack.guests[2] if attack == "unknown extra type" else stack.guests[3]
    if attack == "unknown extra type":
        inject(stack, victim, lambda ids, refs: [
            req(refs[0], ids[0], 100, N.NETTXF_extra_info),
            encode_extra(ExtraInfo(9, 0), N.TX_SLOT_SIZE),
        ])  # fmt: skip
        word = "extra info of type 9"
    else:
        q = victim.front.queues[0]

        def jump() -> None:
            ring = q.tx.ring
            struct.pack_into("<I", ring.buf, REQ_PROD_OFF, ring.req_prod_pvt + 300)
            q.evtchn.notify(q.tx_port)

        stack.call(jump)
        word = "req_prod"
    assert wait_until(lambda: failed(stack, victim, word), 10)
    assert ping(g1.netns, g2.address, count=10).lossless
    assert ping(g2.netns, stack.topology.peer_address, count=5).lossless
