"""XenstoreCore, one message type and one error at a time."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from xs_support import Harness, events

from xenvirtio.spec.xs_wire import XENSTORE_PAYLOAD_MAX
from xenvirtio.spec.xs_wire import XsdSockmsgType as T
from xenvirtio.xenstore.core import CloseConnection, IntroduceDomain, ReleaseDomain, Send
from xenvirtio.xenstore.wire import Packet, PacketDecoder, WireError

DOM0, G1, G2 = 1, 2, 3  # connection ids: dom0 socket, domain 1 ring, domain 2 ring


@pytest.fixture
def h() -> Harness:
    h = Harness()
    h.connect(DOM0, 0)
    h.connect(G1, 1)
    h.connect(G2, 2)
    for d in (1, 2):
        h.ok(DOM0, T.XS_MKDIR, f"/local/domain/{d}")
        h.perms(DOM0, f"/local/domain/{d}", f"n{d}")
    return h


# -- read, write, mkdir, rm, directory ---------------------------------------------------


def test_write_read_formats(h: Harness) -> None:
    assert h.write(DOM0, "/a", b"v\x00bin").payload == b"OK\0"
    assert h.ok(DOM0, T.XS_READ, "/a") == b"v\x00bin"  # raw value, no terminator
    h.write(DOM0, "/empty", b"")
    assert h.ok(DOM0, T.XS_READ, "/empty") == b""


def test_write_creates_parents_with_empty_values(h: Harness) -> None:
    h.write(DOM0, "/x/y/z", "1")
    assert h.ok(DOM0, T.XS_READ, "/x/y") == b""
    assert h.ok(DOM0, T.XS_DIRECTORY, "/x") == b"y\0"


def test_directory_keeps_creation_order(h: Harness) -> None:
    for name in ("c", "a", "b"):
        h.write(DOM0, f"/d/{name}", "")
    assert h.ok(DOM0, T.XS_DIRECTORY, "/d") == b"c\0a\0b\0"
    h.ok(DOM0, T.XS_RM, "/d/a")
    h.write(DOM0, "/d/a", "")
    assert h.ok(DOM0, T.XS_DIRECTORY, "/d") == b"c\0b\0a\0"
    assert h.ok(DOM0, T.XS_DIRECTORY, "/d/a") == b""


def test_mkdir_keeps_existing_value(h: Harness) -> None:
    h.write(DOM0, "/m", "keep")
    assert h.ok(DOM0, T.XS_MKDIR, "/m") == b"OK\0"
    assert h.ok(DOM0, T.XS_READ, "/m") == b"keep"
    h.ok(DOM0, T.XS_MKDIR, "/m/n/o")
    assert h.ok(DOM0, T.XS_READ, "/m/n/o") == b""


def test_rm(h: Harness) -> None:
    h.write(DOM0, "/r/s/t", "1")
    assert h.ok(DOM0, T.XS_RM, "/r") == b"OK\0"
    assert h.read(DOM0, "/r/s/t").error == "ENOENT"
    assert h.ok(DOM0, T.XS_RM, "/r") == b"OK\0"  # gone, but the parent exists: fine
    assert h.err(DOM0, T.XS_RM, "/r/s") == "ENOENT"  # the parent is missing too
    assert h.err(DOM0, T.XS_RM, "/") == "EINVAL"
    assert h.core.store.count(0) == sum(1 for _ in h.core.store.walk("/")) - 2 * 1


def test_relative_paths_are_under_home(h: Harness) -> None:
    h.write(G1, "device/vif/0/state", "1")
    assert h.ok(DOM0, T.XS_READ, "/local/domain/1/device/vif/0/state") == b"1"
    assert h.ok(G1, T.XS_READ, "device/vif/0/state") == b"1"
    assert h.ok(DOM0, T.XS_READ, "/local/domain/1/device") == b""
    h.write(DOM0, "rel0", "x")  # a dom0 socket's home is /local/domain/0
    assert h.ok(DOM0, T.XS_READ, "/local/domain/0/rel0") == b"x"


@pytest.mark.parametrize("path", ["/a//b", "/a/", "/a b", "", "/" + "p" * 2100, "@releaseDomain"])
def test_invalid_paths(h: Harness, path: str) -> None:
    assert h.read(DOM0, path).error == "EINVAL"
    assert h.write(DOM0, path, "v").error == "EINVAL"


@pytest.mark.parametrize("payload", [b"/a", b"/a\0\0", b"/a\0b\0", b""])
def test_one_argument_requests_need_exactly_one_nul(h: Harness, payload: bytes) -> None:
    h.write(DOM0, "/a", "v")
    for type_ in (T.XS_READ, T.XS_DIRECTORY, T.XS_GET_PERMS, T.XS_MKDIR, T.XS_RM):
        r = h.send_packet(DOM0, Packet(type_, 1, 0, payload))
        assert r.error == "EINVAL", type_


def test_write_without_nul_is_einval(h: Harness) -> None:
    assert h.send_packet(DOM0, Packet(T.XS_WRITE, 1, 0, b"/a")).error == "EINVAL"


# -- permissions ---------------------------------------------------------------------------


def test_perms_formats_and_inheritance(h: Harness) -> None:
    assert h.ok(DOM0, T.XS_GET_PERMS, "/local/domain/1") == b"n1\0"
    h.write(G1, "data/x", "1")  # created by domain 1: owned by it
    assert h.ok(DOM0, T.XS_GET_PERMS, "/local/domain/1/data/x") == b"n1\0"
    h.perms(DOM0, "/shared", "r0", "b1")
    assert h.perms(DOM0, "/shared", "r0", "b1").error == "ENOENT"
    h.ok(DOM0, T.XS_MKDIR, "/shared")
    h.perms(DOM0, "/shared", "r0", "b1", "w2")
    h.write(DOM0, "/shared/dom0made", "")  # dom0 keeps the inherited list as is
    assert h.ok(DOM0, T.XS_GET_PERMS, "/shared/dom0made") == b"r0\0b1\0w2\0"
    h.write(G1, "/shared/g1made", "")  # domain 1 becomes owner of what it creates
    assert h.ok(DOM0, T.XS_GET_PERMS, "/shared/g1made") == b"r1\0b1\0w2\0"


def test_access_checks(h: Harness) -> None:
    h.write(G1, "secret", "s")
    assert h.read(G2, "/local/domain/1/secret").error == "EACCES"
    assert h.write(G2, "/local/domain/1/secret", "x").error == "EACCES"
    # Nothing leaks about nodes below an unreadable one: EACCES, not ENOENT.
    assert h.read(G2, "/local/domain/1/nothing/here").error == "EACCES"
    assert h.read(G1, "nothing/here").error == "ENOENT"
    h.perms(G1, "secret", "n1", "r2")
    assert h.ok(G2, T.XS_READ, "/local/domain/1/secret") == b"s"
    assert h.write(G2, "/local/domain/1/secret", "x").error == "EACCES"
    assert h.read(G2, "/tool/xenstored").error == "EACCES"  # n0 nodes


def test_set_perms_rules(h: Harness) -> None:
    h.write(G1, "n", "")
    assert h.perms(G1, "n", "n2").error == "EPERM"  # unprivileged cannot give a node away
    assert h.perms(G2, "/local/domain/1/n", "n2").error == "EACCES"
    assert h.perms(G1, "n", "q1").error == "EINVAL"
    assert h.send(G1, T.XS_SET_PERMS, "n").error == "EINVAL"  # no permission at all
    assert h.perms(DOM0, "/local/domain/1/n", "b2").error is None  # dom0 may
    assert h.core.store.count(2) >= 1 and h.core.store.count(1) == 1
    h.perms(G1, "/local/domain/1", "n1", "w2")
    assert h.write(G2, "/local/domain/1/w", "").error is None  # write-only still creates
    # The creator owns the new node; the rest of the parent's list is inherited.
    assert h.ok(DOM0, T.XS_GET_PERMS, "/local/domain/1/w") == b"n2\0w2\0"
    assert h.read(G2, "/local/domain/1/w").error is None
    assert h.read(G1, "/local/domain/1/w").error == "EACCES"


def test_set_target(h: Harness) -> None:
    h.write(G1, "priv", "p")
    assert h.read(G2, "/local/domain/1/priv").error == "EACCES"
    assert h.send(DOM0, T.XS_SET_TARGET, "2", "1").error == "ENOENT"  # not introduced
    h.ok(DOM0, T.XS_INTRODUCE, "1", "11", "5")
    h.ok(DOM0, T.XS_INTRODUCE, "2", "12", "6")
    assert h.send(G1, T.XS_SET_TARGET, "2", "1").error == "EACCES"
    h.ok(DOM0, T.XS_SET_TARGET, "2", "1")
    assert h.ok(G2, T.XS_READ, "/local/domain/1/priv") == b"p"
    assert h.perms(G2, "/local/domain/1/priv", "n1", "r2").error is None


# -- watches -------------------------------------------------------------------------------


def test_watch_fires_at_once_then_on_changes(h: Harness) -> None:
    r = h.send(DOM0, T.XS_WATCH, "/w", "tok")
    assert r.payload == b"OK\0"
    assert isinstance(r.effects[0], Send) and r.effects[0].packet.type == T.XS_WATCH
    assert events(r.effects) == [("/w", "tok")]  # after the reply
    assert events(h.write(DOM0, "/w/a/b", "1").effects) == [("/w/a/b", "tok")]
    assert events(h.write(DOM0, "/wx", "1").effects) == []  # not below /w
    assert events(h.send(DOM0, T.XS_SET_PERMS, "/w", "r0").effects) == [("/w", "tok")]
    assert events(h.send(DOM0, T.XS_MKDIR, "/w/a").effects) == []  # existed already
    ev = h.send(DOM0, T.XS_RM, "/w/a").effects
    # The removed root fires the watches above it; nodes below only exact watches.
    assert events(ev) == [("/w/a", "tok")]
    event = next(e for e in ev if isinstance(e, Send) and e.packet.type == T.XS_WATCH_EVENT)
    assert (event.packet.req_id, event.packet.tx_id) == (0, 0)


def test_removal_of_an_ancestor_reaches_exact_watches(h: Harness) -> None:
    h.write(DOM0, "/p/q/r", "1")
    h.send(DOM0, T.XS_WATCH, "/p/q/r", "deep")
    h.send(DOM0, T.XS_WATCH, "/p/q/missing", "never")
    assert events(h.send(DOM0, T.XS_RM, "/p").effects) == [("/p/q/r", "deep")]


def test_relative_watch_gets_relative_paths(h: Harness) -> None:
    r = h.send(G1, T.XS_WATCH, "device", "t")
    assert events(r.effects) == [("device", "t")]
    assert events(h.write(G1, "device/vbd/1", "x").effects, G1) == [("device/vbd/1", "t")]
    assert events(h.write(DOM0, "/local/domain/1/device", "").effects, G1) == [("device", "t")]


def test_watch_errors_and_unwatch(h: Harness) -> None:
    h.send(DOM0, T.XS_WATCH, "/u", "t")
    assert h.send(DOM0, T.XS_WATCH, "/u", "t").error == "EEXIST"
    assert h.send(DOM0, T.XS_WATCH, "/u", "t2").error is None
    assert h.send(DOM0, T.XS_WATCH, "/u//", "t").error == "EINVAL"
    assert h.send(DOM0, T.XS_WATCH, "/u").error == "EINVAL"
    assert h.ok(DOM0, T.XS_UNWATCH, "/u", "t") == b"OK\0"
    assert h.send(DOM0, T.XS_UNWATCH, "/u", "t").error == "ENOENT"
    assert events(h.write(DOM0, "/u", "1").effects) == [("/u", "t2")]


def test_events_only_for_readers(h: Harness) -> None:
    h.send(G2, T.XS_WATCH, "/local/domain/1", "spy")
    h.write(G1, "private", "1")  # n1: domain 2 cannot read it nor its parent
    assert events(h.write(G1, "private", "2").effects, G2) == []
    h.perms(G1, "private", "n1", "r2")
    # A watcher that may read the new permissions hears of the change ...
    assert events(h.write(G1, "private", "3").effects, G2) == [("/local/domain/1/private", "spy")]
    # ... and one losing access hears of that change too (old permissions count).
    ev = h.perms(G1, "private", "n1").effects
    assert events(ev, G2) == [("/local/domain/1/private", "spy")]
    assert events(h.write(G1, "private", "4").effects, G2) == []


def test_watch_token_and_tx_id_ignored(h: Harness) -> None:
    tx = h.start(DOM0)
    r = h.send(DOM0, T.XS_WATCH, "/t", b"\xfftoken", tx=tx)
    assert r.error is None
    raw = [e for e in h.write(DOM0, "/t", "1").effects if isinstance(e, Send)]
    assert raw[0].packet.payload == b"/t\0\xfftoken\0"


def test_special_watches(h: Harness) -> None:
    h.send(DOM0, T.XS_WATCH, "@introduceDomain", "in")
    h.send(DOM0, T.XS_WATCH, "@releaseDomain", "out")
    h.send(G2, T.XS_WATCH, "@releaseDomain", "g2")
    r = h.send(DOM0, T.XS_INTRODUCE, "1", "4096", "7")
    assert isinstance(r.effects[0], IntroduceDomain) and r.effects[0] == IntroduceDomain(1, 4096, 7)
    assert events(r.effects) == [("@introduceDomain", "in")]
    assert events(h.send(DOM0, T.XS_INTRODUCE, "1", "4096", "8").effects) == []  # re-introduce
    assert events(h.core.domain_shutdown(1)) == [("@releaseDomain", "out")]  # g2 may not hear
    assert h.core.domain_shutdown(1) == []  # once, until XS_RESUME
    h.ok(DOM0, T.XS_RESUME, "1")
    # Domain 2 hears once dom0 lets it read the special path.
    assert h.perms(G2, "@releaseDomain", "n2").error == "EACCES"
    h.perms(DOM0, "@releaseDomain", "n0", "r2")
    assert events(h.core.domain_shutdown(1)) == [
        ("@releaseDomain", "out"),
        ("@releaseDomain", "g2"),
    ]
    assert h.perms(DOM0, "@other", "n0").error == "EINVAL"


# -- domains -------------------------------------------------------------------------------


def test_introduce_release_cycle(h: Harness) -> None:
    assert h.ok(DOM0, T.XS_IS_DOMAIN_INTRODUCED, "1") == b"F\0"
    assert h.ok(DOM0, T.XS_IS_DOMAIN_INTRODUCED, "0") == b"T\0"
    h.ok(DOM0, T.XS_INTRODUCE, "1", "100", "3")
    assert h.ok(DOM0, T.XS_IS_DOMAIN_INTRODUCED, "1") == b"T\0"
    h.write(G1, "data", "mine")
    h.send(G1, T.XS_WATCH, "data", "t")
    h.send(DOM0, T.XS_WATCH, "/local/domain", "all")
    r = h.send(DOM0, T.XS_RELEASE, "1")
    assert r.effects[0] == ReleaseDomain(1)
    # Nodes the domain owned go with it (C destroy_domain, no --keep-orphans).
    assert ("/local/domain/1", "all") in events(r.effects)
    assert h.read(DOM0, "/local/domain/1").error == "ENOENT"
    assert h.ok(DOM0, T.XS_IS_DOMAIN_INTRODUCED, "1") == b"F\0"
    assert h.core.handle(G1, Packet.build(T.XS_READ, 1, 0, "data")) == [
        CloseConnection(G1, "unknown connection")
    ]
    assert h.send(DOM0, T.XS_RELEASE, "1").error == "ENOENT"
    assert h.send(DOM0, T.XS_RELEASE, "0").error == "EINVAL"
    assert h.send(DOM0, T.XS_RESUME, "1").error == "ENOENT"


def test_reintroduce_resets_the_domain(h: Harness) -> None:
    h.ok(DOM0, T.XS_INTRODUCE, "1", "100", "3")
    h.send(G1, T.XS_WATCH, "/local/domain/1", "t")
    tx = h.start(G1)
    h.ok(DOM0, T.XS_INTRODUCE, "1", "100", "4")
    assert h.end(G1, tx).error == "ENOENT"
    assert events(h.write(G1, "x", "").effects) == []


@pytest.mark.parametrize(
    "args", [("1", "100"), ("1", "100", "0"), ("0", "1", "2"), ("32752", "1", "2")]
)
def test_introduce_bad_arguments(h: Harness, args: tuple[str, ...]) -> None:
    assert h.send(DOM0, T.XS_INTRODUCE, *args).error == "EINVAL"


def test_get_domain_path(h: Harness) -> None:
    assert h.ok(G1, T.XS_GET_DOMAIN_PATH, "7") == b"/local/domain/7\0"


@pytest.mark.parametrize(
    "type_, args",
    [
        (T.XS_CONTROL, ("print", "x")),
        (T.XS_INTRODUCE, ("5", "1", "1")),
        (T.XS_RELEASE, ("1",)),
        (T.XS_IS_DOMAIN_INTRODUCED, ("1",)),
        (T.XS_RESUME, ("1",)),
        (T.XS_SET_TARGET, ("1", "2")),
    ],
)
def test_privileged_requests(h: Harness, type_: int, args: tuple[str, ...]) -> None:
    assert h.send(G1, type_, *args).error == "EACCES"


def test_reset_watches(h: Harness) -> None:
    h.send(G1, T.XS_WATCH, "x", "t")
    tx = h.start(G1)
    assert h.ok(G1, T.XS_RESET_WATCHES, "") == b"OK\0"
    assert events(h.write(G1, "x", "").effects) == []
    assert h.end(G1, tx).error == "ENOENT"


# -- control, unknown types, framing -------------------------------------------------------


def test_control(h: Harness) -> None:
    assert h.ok(DOM0, T.XS_CONTROL, "print", "hello") == b"OK\0"
    assert "control: hello" in h.core.messages
    assert h.ok(DOM0, T.XS_CONTROL, "check") == b"OK\0"
    assert b"nodes            :     1000" in h.ok(DOM0, T.XS_CONTROL, "quota")
    assert h.ok(DOM0, T.XS_CONTROL, "quota", "set", "nodes", "7") == b"OK\0"
    assert h.core.quota.entries_per_domain == 7
    assert h.err(DOM0, T.XS_CONTROL, "quota", "set", "bogus", "7") == "EINVAL"
    assert h.ok(DOM0, T.XS_CONTROL, "quota", "1").startswith(b"Domain 1:\nnodes")
    assert h.err(DOM0, T.XS_CONTROL, "quota", "9") == "ENOENT"
    assert b"print\t<string>" in h.ok(DOM0, T.XS_CONTROL, "help")
    assert h.err(DOM0, T.XS_CONTROL, "frobnicate") == "EINVAL"
    assert h.err(DOM0, T.XS_CONTROL, "log", "on") == "ENOSYS"
    assert h.err(DOM0, T.XS_CONTROL, "print") == "EINVAL"
    assert h.send_packet(DOM0, Packet(T.XS_CONTROL, 1, 0, b"check")).error == "EINVAL"


@pytest.mark.parametrize(
    "type_", [T.XS_WATCH_EVENT, T.XS_ERROR, 20, T.XS_TYPE_COUNT, 0xFFFF, 2**32 - 1]
)
def test_types_the_daemon_does_not_serve(h: Harness, type_: int) -> None:
    r = h.send_packet(DOM0, Packet(type_, 9, 0, b"/\0"))
    assert r.error == "ENOSYS"


def test_unknown_transaction_id(h: Harness) -> None:
    assert h.read(DOM0, "/", tx=77).error == "ENOENT"
    assert h.send(DOM0, T.XS_GET_DOMAIN_PATH, "1", tx=77).error == "ENOENT"


def test_too_long_reply_is_e2big(h: Harness) -> None:
    for i in range(XENSTORE_PAYLOAD_MAX // 40 + 1):
        h.write(DOM0, f"/big/{'n' * 36}{i:03d}", "")
    assert h.read(DOM0, "/big").error is None
    assert h.send(DOM0, T.XS_DIRECTORY, "/big").error == "E2BIG"


def test_directory_part(h: Harness) -> None:
    names = [f"{'c' * 30}{i:04d}" for i in range(300)]  # ~10 KiB of names
    for n in names:
        h.ok(DOM0, T.XS_MKDIR, f"/dp/{n}")
    got: list[bytes] = []
    offset, gens = 0, set()
    while True:
        part = h.ok(DOM0, T.XS_DIRECTORY_PART, "/dp", str(offset))
        assert len(part) <= XENSTORE_PAYLOAD_MAX
        gen, rest = part.split(b"\0", 1)
        gens.add(gen)
        if rest.endswith(b"\0\0") or rest == b"\0":
            got.extend(rest[:-2].split(b"\0") if rest != b"\0" else [])
            break
        got.extend(rest[:-1].split(b"\0"))
        offset += len(rest)
    assert [g.decode() for g in got] == names
    assert len(gens) == 1
    beyond = h.ok(DOM0, T.XS_DIRECTORY_PART, "/dp", "999999")
    assert beyond == gens.pop() + b"\0\0"
    h.ok(DOM0, T.XS_MKDIR, "/dp/new")
    assert not h.ok(DOM0, T.XS_DIRECTORY_PART, "/dp", "999999").startswith(gen + b"\0")
    assert h.send(DOM0, T.XS_DIRECTORY_PART, "/dp").error == "EINVAL"


def test_unknown_connection_and_disconnect(h: Harness) -> None:
    assert h.core.handle(99, Packet(T.XS_READ, 1, 0, b"/\0")) == [
        CloseConnection(99, "unknown connection")
    ]
    h.send(G1, T.XS_WATCH, "x", "t")
    assert h.core.disconnect(G1) == []
    assert h.core.disconnect(G1) == []
    assert h.core.watches.count(1) == 0
    assert h.core.domain_of(G2) == 2


# -- fuzzing -------------------------------------------------------------------------------

requests = st.builds(
    lambda t, tx, parts, term: Packet.build(t, 1, tx, *parts, terminate=term),
    st.integers(0, 24),
    st.sampled_from([0, 0, 1, 2]),
    st.lists(
        st.one_of(
            st.sampled_from(
                [
                    "/a",
                    "/a/b",
                    "a",
                    "@releaseDomain",
                    "T",
                    "F",
                    "1",
                    "0",
                    "n1",
                    "b0",
                    "print",
                    "quota",
                    "",
                    "//",
                    "/local/domain/1",
                ]
            ),
            st.binary(max_size=12),
        ),
        max_size=4,
    ),
    st.booleans(),
)


@settings(max_examples=300)
@given(st.lists(st.tuples(st.sampled_from([DOM0, G1, G2]), requests), max_size=25))
def test_core_never_raises(stream: list[tuple[int, Packet]]) -> None:
    h = Harness()
    for conn, domid in ((DOM0, 0), (G1, 1), (G2, 2)):
        h.connect(conn, domid)
    for conn, packet in stream:
        effects = h.core.handle(conn, packet)
        replies = [
            e
            for e in effects
            if isinstance(e, Send) and e.conn_id == conn and e.packet.type != T.XS_WATCH_EVENT
        ]
        assert len(replies) == 1
    assert h.core.internal_errors == 0, list(h.core.messages)
    from xenvirtio.xenstore.control import check_store

    assert check_store(h.core) == []


@settings(max_examples=300)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_only_raise_wire_error(data: bytes) -> None:
    h = Harness()
    h.connect(G1, 1)
    dec = PacketDecoder()
    dec.feed(data)
    try:
        while (packet := dec.next_packet()) is not None:
            h.core.handle(G1, packet)
    except WireError:
        pass
    assert h.core.internal_errors == 0, list(h.core.messages)
