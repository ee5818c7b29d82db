"""Quotas: the Xen 4.17 defaults, their errors, dom0's exemption, no effect on others."""

from __future__ import annotations

import pytest
from xs_support import Harness

from xenvirtio.spec.xs_wire import XsdSockmsgType as T
from xenvirtio.xenstore.quota import Quota

DOM0, G1, G2 = 1, 2, 3


def make(quota: Quota | None = None) -> Harness:
    h = Harness(quota)
    h.connect(DOM0, 0)
    h.connect(G1, 1)
    h.connect(G2, 2)
    for d in (1, 2):
        h.ok(DOM0, T.XS_MKDIR, f"/local/domain/{d}")
        h.perms(DOM0, f"/local/domain/{d}", f"n{d}")
    return h


def test_defaults_are_xen_4_17() -> None:
    q = Quota()
    assert (q.entries_per_domain, q.node_size, q.watches_per_domain) == (1000, 2048, 128)
    assert (q.transactions_per_conn, q.outstanding_per_conn, q.perms_per_node) == (10, 20, 5)
    assert (q.transaction_nodes, q.path_max) == (1024, 2048)


def test_entries_per_domain() -> None:
    h = make(Quota(entries_per_domain=5))
    # /local/domain/1 is owned by domain 1 already: 4 more fit.
    for i in range(4):
        assert h.write(G1, f"e{i}", "").error is None
    assert h.write(G1, "e4", "").error == "ENOSPC"
    assert h.write(G1, "a/b", "").error == "ENOSPC"
    assert h.write(G1, "e0", "overwrite is fine").error is None
    assert h.write(G2, "mine", "").error is None  # domain 2 unaffected
    for i in range(10):
        assert h.write(DOM0, f"/dom0/{i}", "").error is None  # dom0 exempt
    h.ok(G1, T.XS_RM, "e3")
    assert h.write(G1, "e4", "").error is None


def test_entries_checked_again_at_commit() -> None:
    h = make(Quota(entries_per_domain=3))
    t1 = h.start(G1)
    t2 = h.start(G1)
    h.write(G1, "a", "", tx=t1)
    h.write(G1, "b/c", "", tx=t2)  # fits the snapshot, not together with t1
    assert h.end(G1, t1).error is None
    assert h.end(G1, t2).error in ("ENOSPC", "EAGAIN")
    assert h.core.store.count(1) <= 3


def test_node_size() -> None:
    h = make()
    limit = 2048 - 24 - 8  # header + one permission
    assert h.write(G1, "big", b"v" * (limit - 1)).error is None
    assert h.write(G1, "big", b"v" * limit).error == "ENOSPC"
    assert h.write(G1, "new", b"v" * limit).error == "ENOSPC"
    assert h.read(G1, "new").error == "ENOENT"
    assert h.write(DOM0, "/local/domain/1/big", b"v" * 3000).error is None  # dom0 exempt


def test_watches_per_domain() -> None:
    h = make(Quota(watches_per_domain=3))
    for i in range(3):
        assert h.send(G1, T.XS_WATCH, f"w{i}", "t").error is None
    assert h.send(G1, T.XS_WATCH, "w3", "t").error == "E2BIG"
    assert h.send(G2, T.XS_WATCH, "w", "t").error is None
    h.send(G1, T.XS_UNWATCH, "w0", "t")
    assert h.send(G1, T.XS_WATCH, "w3", "t").error is None


def test_default_watch_quota_is_128() -> None:
    h = make()
    for i in range(128):
        assert h.send(G1, T.XS_WATCH, f"w{i}", "t").error is None
    assert h.send(G1, T.XS_WATCH, "one-more", "t").error == "E2BIG"
    for i in range(200):
        assert h.send(DOM0, T.XS_WATCH, f"/w{i}", "t").error is None


def test_transactions_per_connection() -> None:
    h = make()
    for _ in range(10):
        h.start(G1)
    assert h.send(G1, T.XS_TRANSACTION_START, "").error == "ENOSPC"
    assert h.send(G2, T.XS_TRANSACTION_START, "").error is None
    for _ in range(20):
        h.start(DOM0)


@pytest.mark.parametrize("count, error", [(5, None), (6, "ENOSPC")])
def test_perms_per_node(count: int, error: str | None) -> None:
    h = make()
    h.write(G1, "p", "")
    perms = ["n1"] + [f"r{d}" for d in range(2, count + 1)]
    assert h.perms(G1, "p", *perms).error == error
    assert (
        h.perms(DOM0, "/local/domain/1/p", *(["n1"] + [f"r{d}" for d in range(2, 12)])).error
        is None
    )


def long_path(length: int) -> str:
    """A relative path of ``length`` bytes in 100-byte components (node sizes stay small)."""
    parts, left = [], length
    while left > 100:
        parts.append("x" * 99)
        left -= 100
    return "/".join([*parts, "x" * left])


def test_path_max() -> None:
    h = make()
    assert h.write(G1, long_path(2048), "").error is None  # below /local/domain/1/
    assert h.write(G1, long_path(2049), "").error == "EINVAL"
    assert h.write(DOM0, "/" + long_path(2047), "").error is None
    assert h.write(DOM0, "/" + long_path(2048), "").error == "EINVAL"  # dom0 is bound too
    h.ok(DOM0, T.XS_CONTROL, "quota", "set", "path-max", "100")
    assert h.write(G1, long_path(101), "").error == "EINVAL"
