"""The xs_wire codec and the spec constants."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenvirtio.spec import xs_wire
from xenvirtio.spec.xs_wire import XENSTORE_PAYLOAD_MAX, XSD_ERRORS, XsdSockmsgType
from xenvirtio.xenstore.wire import HEADER, Packet, PacketDecoder, WireError, XsError, error_packet

u32 = st.integers(0, 0xFFFF_FFFF)
packets = st.builds(Packet, u32, u32, u32, st.binary(max_size=XENSTORE_PAYLOAD_MAX))


def test_enum_values_follow_xs_wire_h() -> None:
    assert int(XsdSockmsgType.XS_CONTROL) == 0
    assert int(XsdSockmsgType.XS_SET_TARGET) == 19
    assert XsdSockmsgType.XS_RESET_WATCHES == XsdSockmsgType.XS_SET_TARGET + 2
    assert int(XsdSockmsgType.XS_DIRECTORY_PART) == 22
    assert int(XsdSockmsgType.XS_TYPE_COUNT) == 23
    assert int(XsdSockmsgType.XS_INVALID) == 0xFFFF
    assert 20 not in set(XsdSockmsgType)  # XS_RESTRICT was removed


def test_header_file_agrees() -> None:
    """The installed Xen header is the authority for names and numbers."""
    text = Path("/usr/include/xen/io/xs_wire.h").read_text()
    for name in (
        "XENSTORE_PAYLOAD_MAX",
        "XENSTORE_ABS_PATH_MAX",
        "XENSTORE_REL_PATH_MAX",
        "XENSTORE_RING_SIZE",
        "XENSTORE_SERVER_FEATURE_RECONNECTION",
        "XENSTORE_SERVER_FEATURE_ERROR",
        "XENSTORE_CONNECTED",
        "XENSTORE_RECONNECT",
        "XENSTORE_ERROR_NONE",
        "XENSTORE_ERROR_COMM",
        "XENSTORE_ERROR_RINGIDX",
        "XENSTORE_ERROR_PROTO",
    ):
        line = next(ln for ln in text.splitlines() if ln.startswith(f"#define {name} "))
        assert int(line.split()[2]) == getattr(xs_wire, name), name
    order = [ln.split("(")[1].split(")")[0] for ln in text.splitlines() if "XSD_ERROR(E" in ln]
    assert order == list(XSD_ERRORS)


def test_ring_interface_layout() -> None:
    assert xs_wire.XENSTORE_IFACE_REQ_CONS == 2048
    assert xs_wire.XENSTORE_IFACE_RSP_PROD == 2048 + 12
    assert xs_wire.XENSTORE_IFACE_ERROR == 2048 + 24
    assert xs_wire.XENSTORE_IFACE_SIZE == 2048 + 28


def test_encode_layout() -> None:
    raw = Packet(XsdSockmsgType.XS_READ, 7, 3, b"/a\0").encode()
    assert raw == struct.pack("<IIII", 2, 7, 3, 3) + b"/a\0"
    assert HEADER.size == 16


@given(packets)
def test_roundtrip(packet: Packet) -> None:
    dec = PacketDecoder()
    dec.feed(packet.encode())
    assert dec.next_packet() == packet
    assert dec.next_packet() is None
    assert dec.buffered == 0


@given(st.lists(packets, max_size=5), st.data())
def test_incremental_feeding(batch: list[Packet], data: st.DataObject) -> None:
    stream = b"".join(p.encode() for p in batch)
    dec = PacketDecoder()
    got: list[Packet] = []
    pos = 0
    while pos < len(stream):
        step = data.draw(st.integers(1, 64))
        dec.feed(stream[pos : pos + step])
        pos += step
        while (p := dec.next_packet()) is not None:
            got.append(p)
    assert got == batch


def test_oversized_header_is_a_wire_error() -> None:
    dec = PacketDecoder()
    dec.feed(HEADER.pack(2, 1, 0, XENSTORE_PAYLOAD_MAX + 1))
    with pytest.raises(WireError):
        dec.next_packet()


def test_partial_header_waits() -> None:
    dec = PacketDecoder()
    dec.feed(b"\x02\x00\x00")
    assert dec.next_packet() is None
    assert dec.buffered == 3


@pytest.mark.parametrize(
    "kwargs",
    [
        {"type": -1, "req_id": 0, "tx_id": 0, "payload": b""},
        {"type": 0, "req_id": 1 << 32, "tx_id": 0, "payload": b""},
        {"type": 0, "req_id": 0, "tx_id": 0, "payload": b"x" * (XENSTORE_PAYLOAD_MAX + 1)},
    ],
)
def test_packet_validates(kwargs: dict[str, object]) -> None:
    with pytest.raises(WireError):
        Packet(**kwargs)  # type: ignore[arg-type]


def test_args_and_build() -> None:
    p = Packet.build(XsdSockmsgType.XS_WATCH, 1, 0, "/a", b"tok")
    assert p.payload == b"/a\0tok\0"
    assert p.args() == [b"/a", b"tok"]
    w = Packet.build(XsdSockmsgType.XS_WRITE, 1, 0, "/a", b"v", terminate=False)
    assert w.payload == b"/a\0v"
    assert w.args() == [b"/a", b"v"]
    assert Packet(0, 0, 0, b"").args() == []


def test_error_packet() -> None:
    p = error_packet(5, 6, "EAGAIN")
    assert (p.type, p.req_id, p.tx_id, p.payload) == (XsdSockmsgType.XS_ERROR, 5, 6, b"EAGAIN\0")
    with pytest.raises(ValueError):
        error_packet(0, 0, "ENOTANERROR")
    assert XsError("E2BIG").errno == 7
