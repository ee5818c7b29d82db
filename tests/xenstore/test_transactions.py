"""Transactions: isolation, the conflict rule, watch events at commit."""

from __future__ import annotations

import pytest
from xs_support import Harness, events

from xenvirtio.spec.xs_wire import XsdSockmsgType as T

A, B = 1, 2  # two dom0 connections


@pytest.fixture
def h() -> Harness:
    h = Harness()
    h.connect(A, 0)
    h.connect(B, 0)
    h.write(A, "/x", "x0")
    h.write(A, "/y", "y0")
    return h


def test_start_reply_and_ids(h: Harness) -> None:
    assert h.ok(A, T.XS_TRANSACTION_START, "") == b"1\0"
    assert h.ok(A, T.XS_TRANSACTION_START, "") == b"2\0"
    assert h.send(A, T.XS_TRANSACTION_START, "", tx=1).error == "EBUSY"
    assert h.send(A, T.XS_TRANSACTION_START, "", tx=9).error == "ENOENT"


def test_isolation_and_commit(h: Harness) -> None:
    tx = h.start(A)
    h.write(A, "/x", "x1", tx=tx)
    h.write(A, "/new/deep", "n", tx=tx)
    assert h.read(A, "/x", tx=tx).payload == b"x1"
    assert h.read(B, "/x").payload == b"x0"
    assert h.read(B, "/new").error == "ENOENT"
    assert h.end(A, tx).payload == b"OK\0"
    assert h.read(B, "/x").payload == b"x1"
    assert h.read(B, "/new/deep").payload == b"n"
    assert h.end(A, tx).error == "ENOENT"  # the id is gone


def test_abort_discards(h: Harness) -> None:
    tx = h.start(A)
    h.write(A, "/x", "x1", tx=tx)
    h.send(A, T.XS_RM, "/y", tx=tx)
    assert h.end(A, tx, commit=False).error is None
    assert h.read(A, "/x").payload == b"x0" and h.read(A, "/y").payload == b"y0"


def test_end_arguments(h: Harness) -> None:
    tx = h.start(A)
    assert h.send(A, T.XS_TRANSACTION_END, "X", tx=tx).error == "EINVAL"
    assert h.send(A, T.XS_TRANSACTION_END, "T").error == "ENOENT"  # tx_id 0
    assert h.end(A, tx).error is None


def test_conflict_on_a_read_node(h: Harness) -> None:
    tx = h.start(A)
    assert h.read(A, "/x", tx=tx).payload == b"x0"
    h.write(B, "/x", "other")
    h.write(A, "/y", "y1", tx=tx)
    assert h.end(A, tx).error == "EAGAIN"
    assert h.read(A, "/y").payload == b"y0"  # nothing of it applied


def test_conflict_on_a_written_node(h: Harness) -> None:
    tx = h.start(A)
    h.write(A, "/x", "mine", tx=tx)
    h.write(B, "/x", "theirs")
    assert h.end(A, tx).error == "EAGAIN"
    assert h.read(A, "/x").payload == b"theirs"


def test_conflict_on_a_node_seen_missing(h: Harness) -> None:
    tx = h.start(A)
    assert h.read(A, "/z", tx=tx).error == "ENOENT"
    h.write(B, "/z", "now")
    assert h.end(A, tx).error == "EAGAIN"


def test_unrelated_changes_merge(h: Harness) -> None:
    h.write(A, "/d1/a", "")
    h.write(A, "/d2/b", "")
    tx = h.start(A)
    h.write(A, "/d1/a", "txn", tx=tx)
    h.write(B, "/d2/b", "outside")
    h.write(B, "/d2/c", "outside")
    assert h.end(A, tx).error is None
    assert h.read(A, "/d1/a").payload == b"txn"
    assert h.read(A, "/d2/b").payload == b"outside"
    assert h.ok(A, T.XS_DIRECTORY, "/d2") == b"b\0c\0"
    from xenvirtio.xenstore.control import check_store

    assert check_store(h.core) == []


def test_change_before_first_access_is_seen_not_conflicting(h: Harness) -> None:
    """C xenstored reads a node when the transaction first touches it; so do we."""
    tx = h.start(A)
    h.write(A, "/y", "y1", tx=tx)
    h.write(B, "/x", "x-new")
    assert h.read(A, "/x", tx=tx).payload == b"x-new"
    assert h.end(A, tx).error is None
    assert h.read(A, "/y").payload == b"y1"


def test_sibling_creation_conflicts_as_in_c(h: Harness) -> None:
    h.write(A, "/dir", "")
    tx = h.start(A)
    h.write(A, "/dir/one", "", tx=tx)  # changes /dir's child list
    h.write(B, "/dir/two", "")
    assert h.end(A, tx).error == "EAGAIN"


def test_removed_subtree_conflicts_with_changes_below(h: Harness) -> None:
    h.write(A, "/t/u/v", "")
    tx = h.start(A)
    h.send(A, T.XS_RM, "/t", tx=tx)
    h.write(B, "/t/u/w", "")
    assert h.end(A, tx).error == "EAGAIN"
    assert h.read(A, "/t/u/w").error is None


def test_two_transactions_first_commit_wins(h: Harness) -> None:
    t1, t2 = h.start(A), h.start(B)
    h.read(A, "/x", tx=t1)
    h.read(B, "/y", tx=t2)
    h.write(A, "/y", "1", tx=t1)
    h.write(B, "/x", "2", tx=t2)
    assert h.end(A, t1).error is None
    assert h.end(B, t2).error == "EAGAIN"


def test_watch_events_fire_at_commit_only(h: Harness) -> None:
    h.send(B, T.XS_WATCH, "/x", "w")
    tx = h.start(A)
    assert events(h.write(A, "/x", "1", tx=tx).effects) == []
    assert events(h.write(A, "/x", "2", tx=tx).effects) == []
    assert events(h.end(A, tx).effects) == [("/x", "w")]  # once per node
    tx = h.start(A)
    h.write(A, "/x", "3", tx=tx)
    assert events(h.end(A, tx, commit=False).effects) == []


def test_disconnect_aborts(h: Harness) -> None:
    tx = h.start(A)
    h.write(A, "/x", "lost", tx=tx)
    h.core.disconnect(A)
    assert h.read(B, "/x").payload == b"x0"


def test_unprivileged_transaction_and_node_limit() -> None:
    from xenvirtio.xenstore.quota import Quota

    h = Harness(Quota(transaction_nodes=4))
    h.connect(A, 0)
    h.connect(B, 5)
    h.ok(A, T.XS_MKDIR, "/local/domain/5")
    h.perms(A, "/local/domain/5", "n5")
    tx = h.start(B)
    for i in range(3):  # the parent and three new nodes: four nodes touched
        assert h.write(B, f"n{i}", "", tx=tx).error is None
    assert h.write(B, "n3", "", tx=tx).error == "ENOSPC"
    assert h.write(A, "/dom0/may", "", tx=h.start(A)).error is None  # dom0 is not limited


def test_deep_paths_merge_without_recursion_limits(h: Harness) -> None:
    deep = "/q" * 1000  # 1000 levels, 2000 bytes
    h.write(A, deep, "old")
    tx = h.start(A)
    assert h.write(A, deep + "/z", "new", tx=tx).error is None
    h.write(B, "/q/other", "outside")  # forces a three-way merge down the deep path
    assert h.read(A, "/q/other", tx=tx).payload == b"outside"
    assert h.end(A, tx).error is None
    assert h.read(B, deep + "/z").payload == b"new"
    assert h.read(B, deep).payload == b"old"
    assert h.send(B, T.XS_RM, "/q").error is None
    assert h.read(B, "/q").error == "ENOENT"
