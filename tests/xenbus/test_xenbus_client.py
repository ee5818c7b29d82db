"""The XenBus helpers over the in-memory XenStore."""

from __future__ import annotations

import pytest
from xenbus_fakes import FakeStore, FakeXenstore

from xenvirtio.hv.xenbus.client import (
    create_device,
    dev_error,
    dev_fatal,
    gather,
    read_state,
    read_state_strict,
    remove_device,
    scatter,
    switch_state,
    unplug_device,
    watch_otherend,
)
from xenvirtio.hv.xenbus.errors import XenbusValueError
from xenvirtio.hv.xenbus.paths import BackendPath
from xenvirtio.spec.xenbus_state import XenbusState
from xenvirtio.xenstore.client_protocol import XenstoreError
from xenvirtio.xenstore.perms import Perm, PermKind

S = XenbusState
FE = "/local/domain/5/device/vif/0"
BE = "/local/domain/0/backend/vif/5/0"


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def xs(store: FakeStore) -> FakeXenstore:
    return store.connect()


def test_create_device_writes_both_dirs_in_one_transaction(
    store: FakeStore, xs: FakeXenstore
) -> None:
    fe, be = create_device(xs, 0, 5, "vif", 0, {"mac": "00:16:3e:00:00:01"}, {"handle": 0})
    assert (str(fe), str(be)) == (FE, BE)
    assert xs.transactions == 1
    assert {p: v for p, v in store.writes} == {
        f"{FE}/backend": BE.encode(),
        f"{FE}/backend-id": b"0",
        f"{FE}/state": b"1",
        f"{FE}/handle": b"0",
        f"{BE}/frontend": FE.encode(),
        f"{BE}/frontend-id": b"5",
        f"{BE}/online": b"1",
        f"{BE}/state": b"1",
        f"{BE}/mac": b"00:16:3e:00:00:01",
    }
    # libxl's layout: the frontend owns its dir, the backend may read it; and back.
    assert xs.get_perms(FE) == [Perm(5, PermKind.NONE), Perm(0, PermKind.READ)]
    assert xs.get_perms(f"{FE}/state") == xs.get_perms(FE)
    assert xs.get_perms(BE) == [Perm(0, PermKind.NONE), Perm(5, PermKind.READ)]
    assert xs.get_perms(f"{BE}/online") == xs.get_perms(BE)
    with pytest.raises(XenstoreError) as info:
        create_device(xs, 0, 5, "vif", 0)
    assert info.value.name == "EEXIST"


def test_create_retries_on_eagain_and_remove_cleans_up(store: FakeStore, xs: FakeXenstore) -> None:
    store.fail_commits = 2
    _, be = create_device(xs, 0, 5, "qdisk", 51712, backend_type="qdisk")
    assert xs.transactions == 3 and read_state(xs, str(be)) is S.INITIALISING
    dev_error(xs, str(be), 5, "boom")
    remove_device(xs, be)
    for gone in ["/local/domain/5/device", "/local/domain/0/backend", "/local/domain/0/error"]:
        assert not xs.exists(gone + "/qdisk") and xs.directory(gone) == []


def test_create_with_a_backend_type_of_its_own(xs: FakeXenstore) -> None:
    fe, be = create_device(xs, 0, 7, "vbd", 768, backend_type="qdisk")
    assert str(be) == "/local/domain/0/backend/qdisk/7/768"
    assert xs.read(f"{fe}/backend") == str(be).encode()
    remove_device(xs, be)
    assert not xs.exists(str(fe)) and not xs.exists(str(be))


def test_read_state_as_linux(xs: FakeXenstore) -> None:
    assert read_state(xs, FE) is S.UNKNOWN  # missing
    xs.write(f"{FE}/state", "4")
    assert read_state(xs, FE) is S.CONNECTED
    for garbage in [b"banana", b"42", b"", b"4\0"]:
        xs.write(f"{FE}/state", garbage)
        assert read_state(xs, FE) is S.UNKNOWN
        with pytest.raises(XenbusValueError):
            read_state_strict(xs, FE)


def test_switch_state_skips_unchanged_and_gone(store: FakeStore, xs: FakeXenstore) -> None:
    assert switch_state(xs, FE, S.CONNECTED) is False  # no node: do not resurrect the dir
    assert not xs.exists(FE)
    xs.write(f"{FE}/state", "1")
    store.writes.clear()
    assert switch_state(xs, FE, S.INITIALISED) is True
    assert switch_state(xs, FE, S.INITIALISED) is False  # no write, so no watch fires
    assert store.writes == [(f"{FE}/state", b"3")]
    store.fail_commits = 3
    assert switch_state(xs, FE, S.CONNECTED) is True
    assert read_state(xs, FE) is S.CONNECTED
    store.fail_commits = 100
    with pytest.raises(XenstoreError):
        switch_state(xs, FE, S.CLOSING)
    store.fail_commits = 0
    xs.write(f"{FE}/state", "junk")  # our own node overwritten: repaired
    assert switch_state(xs, FE, S.CLOSING) is True and read_state(xs, FE) is S.CLOSING


def test_dev_fatal_writes_the_error_node_and_closes(xs: FakeXenstore) -> None:
    create_device(xs, 0, 5, "vif", 0)
    dev_fatal(xs, BE, 22, "saw state 9 at frontend")
    assert xs.read("/local/domain/0/error/backend/vif/5/0/error") == b"22 saw state 9 at frontend"
    assert read_state(xs, BE) is S.CLOSING
    switch_state(xs, BE, S.CLOSED)
    dev_fatal(xs, BE, 5, "again")  # Closed stays Closed
    assert read_state(xs, BE) is S.CLOSED
    assert xs.read("/local/domain/0/error/backend/vif/5/0/error") == b"5 again"


def test_dev_error_never_raises_and_is_bounded(xs: FakeXenstore) -> None:
    assert dev_error(xs, FE, 5, "x" * 10_000) is True
    assert len(xs.read("/local/domain/5/error/device/vif/0/error")) == 1024
    assert dev_error(xs, "/not/a/device", 5, "where?") is False


def test_gather_and_scatter(xs: FakeXenstore) -> None:
    scatter(xs, FE, {"ring-ref": 8, "event-channel": 3, "protocol": "x86_64-abi"})
    assert xs.transactions == 1
    assert gather(xs, FE, "ring-ref", "protocol") == {"ring-ref": "8", "protocol": "x86_64-abi"}
    with pytest.raises(XenbusValueError, match="feature-x"):
        gather(xs, FE, "ring-ref", "feature-x")
    xs.write(f"{FE}/bad", b"\xff\xfe")
    with pytest.raises(XenbusValueError):
        gather(xs, FE, "bad")
    with pytest.raises(XenbusValueError):
        scatter(xs, FE, {"../escape": 1})
    with pytest.raises(XenbusValueError):
        gather(xs, FE, "/abs")


def test_unplug_and_watch(store: FakeStore, xs: FakeXenstore) -> None:
    _, be = create_device(xs, 0, 5, "vif", 0)
    fe_conn = store.connect()
    watched = watch_otherend(fe_conn, str(be), "tok")
    assert watched == f"{BE}/state"
    assert fe_conn.pop_event() == (watched, "tok")  # fired on registration
    assert unplug_device(xs, be) is True
    assert xs.read(f"{BE}/online") == b"0" and read_state(xs, BE) is S.CLOSING
    assert fe_conn.pop_event() == (watched, "tok")
    xs.rm(BE)
    assert fe_conn.pop_event() == (watched, "tok")  # the watched node went with its parent
    assert unplug_device(xs, BackendPath(0, "vif", 5, 0)) is False
