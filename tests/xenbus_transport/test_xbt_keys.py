"""The keys of virtio over XenBus: round trips, and hostile values refused by type."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenvirtio.mem.grant_dma import grant_dma_addr
from xenvirtio.spec.xenbus_state import XenbusState
from xenvirtio.transport.xenbus import keys as K
from xenvirtio.transport.xenbus.records import (
    BackendOffer,
    BackendStatus,
    FrontendSetup,
    QueueSetup,
)

OFFER = BackendOffer(
    device_id=2,
    features=(1 << 32) | (1 << 33) | (1 << 34),
    queue_max_sizes=(256, 0, 64),
    config=bytes(range(16)),
    config_generation=3,
    grant_usage=True,
    max_mapped_pages=1024,
)


def raw(entries: dict[str, str]) -> dict[str, bytes | None]:
    return {k: v.encode() for k, v in entries.items()}


def setup_for(offer: BackendOffer, queues: list[int]) -> FrontendSetup:
    addr = grant_dma_addr if offer.grant_usage else (lambda g: g << 12)
    qs = tuple(
        QueueSetup(n, 16, addr(10 * n), addr(10 * n + 1), addr(10 * n + 2), 5 + n) for n in queues
    )
    return FrontendSetup(1, 1 << 32, max(queues) + 1, qs)


@pytest.mark.parametrize(
    ("text", "value"), [(b"0", 0), (b"1", 1), (b"ffffffffffffffff", (1 << 64) - 1)]
)
def test_hex64_canonical(text: bytes, value: int) -> None:
    assert K.parse_hex64(text, "k") == value
    assert K.encode_hex64(value).encode() == text


@pytest.mark.parametrize(
    "text",
    [b"", b"0x1", b"01", b"F", b" 1", b"1 ", b"+1", b"-1", b"1\0", b"10000000000000000", b"g"],
)
def test_hex64_refuses_non_canonical(text: bytes) -> None:
    with pytest.raises(K.TransportKeyError, match="k"):
        K.parse_hex64(text, "k")


ARABIC_ONE = "\u0661".encode()


@pytest.mark.parametrize("text", [b"", b"01", b"+1", b" 1", b"1_0", ARABIC_ONE, b"4294967296"])
def test_decimal_refuses_non_canonical(text: bytes) -> None:
    with pytest.raises(K.TransportKeyError):
        K.parse_dec(text, "k")


def test_missing_key_is_named() -> None:
    with pytest.raises(K.TransportKeyError, match="device-id is missing"):
        K.parse_dec(None, "device-id")


@pytest.mark.parametrize("text", [b"0", b"abc", b"AB", b"0g", b"a" * 2050])
def test_bytes_refuses_odd_upper_or_long(text: bytes) -> None:
    with pytest.raises(K.TransportKeyError):
        K.parse_bytes(text, "config")


def test_offer_round_trip() -> None:
    assert BackendOffer.parse(raw(OFFER.entries())) == OFFER
    assert set(OFFER.entries()) == set(BackendOffer.keys(3))


@given(st.sampled_from(sorted(BackendOffer.keys(3))), st.binary(max_size=40))
def test_offer_with_any_one_value_garbled(key: str, garbage: bytes) -> None:
    entries = raw(OFFER.entries())
    entries[key] = garbage
    try:
        parsed = BackendOffer.parse(entries)
    except K.TransportKeyError:
        return
    assert parsed.entries()[key].encode() == garbage  # only a canonical value passes


@pytest.mark.parametrize("grant_usage", [True, False])
def test_setup_round_trip(grant_usage: bool) -> None:
    offer = replace(OFFER, grant_usage=grant_usage)
    setup = setup_for(offer, [0, 2])
    assert FrontendSetup.parse(raw(setup.entries()), offer) == setup
    assert set(setup.entries()) <= set(FrontendSetup.keys(3))


@given(
    st.sampled_from(sorted(FrontendSetup.keys(3))),
    st.one_of(st.none(), st.binary(max_size=24)),
)
def test_setup_with_any_one_value_garbled(key: str, garbage: bytes | None) -> None:
    entries = raw(setup_for(OFFER, [0, 2]).entries())
    entries[key] = garbage
    try:
        parsed = FrontendSetup.parse(entries, OFFER)
    except K.TransportKeyError:
        return
    # what passes is well formed: queues within their maximum, addresses granted
    for q in parsed.queues:
        assert 1 <= q.size <= OFFER.queue_max_sizes[q.index]
        assert all(a >> 63 for a in (q.desc, q.driver, q.device))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"num-queues": "4"}, "num-queues"),
        ({"num-queues": "0"}, "num-queues"),
        ({"queue-1/size": "4"}, "does not exist"),
        ({"queue-0/size": "257"}, "size"),
        ({"queue-0/size": "0"}, "size"),
        ({"queue-2/event-channel": "5"}, "same event channel"),
        ({"queue-0/event-channel": "0"}, "event-channel"),
        ({"queue-0/desc": "1000"}, "grant-DMA"),
        ({"version": "7"}, "version"),
    ],
)
def test_setup_checks_against_the_offer(edit: dict[str, str], message: str) -> None:
    entries = {**setup_for(OFFER, [0, 2]).entries(), **edit}
    if "queue-1/size" in edit:
        entries.update({f"queue-1/{k}": "1" for k in K.QUEUE_KEYS if k != "size"})
    with pytest.raises(K.TransportKeyError, match=message):
        FrontendSetup.parse(raw(entries), OFFER)


def test_incomplete_queue_is_refused() -> None:
    entries = raw(setup_for(OFFER, [0]).entries())
    entries["queue-0/driver"] = None
    with pytest.raises(K.TransportKeyError, match="incomplete"):
        FrontendSetup.parse(entries, OFFER)


def test_guest_physical_offer_refuses_grant_addresses() -> None:
    offer = replace(OFFER, grant_usage=False)
    entries = raw(setup_for(OFFER, [0]).entries())
    with pytest.raises(K.TransportKeyError, match="guest-physical"):
        FrontendSetup.parse(entries, offer)


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        (b"1:4:5a", True),
        (b"4294967295:0:0011223344556677", True),
        (b"1:4:", False),
        (b"1:4:5", False),
        (b"01:4:5a", False),
        (b"1:1024:5a", False),
        (b"4294967296:0:00", False),
        (b"1:0:001122334455667788", False),
        (b"1:4:5A", False),
        (b"1;4;5a", False),
    ],
)
def test_config_write_codec(text: bytes, ok: bool) -> None:
    if ok:
        write = K.ConfigWrite.parse(text)
        assert write.encode().encode() == text
    else:
        with pytest.raises(K.TransportKeyError):
            K.ConfigWrite.parse(text)


def test_backend_status_optional_keys() -> None:
    status = BackendStatus.parse(
        XenbusState.INIT_WAIT, raw({"config-generation": "4", "config": "00ff"})
    )
    assert (status.needs_reset, status.features_ok, status.config_write_ack) == (False, None, None)
    assert status.config == b"\x00\xff"
    with pytest.raises(K.TransportKeyError):
        BackendStatus.parse(
            XenbusState.CONNECTED,
            raw({"config-generation": "4", "config": "", "needs-reset": "yes"}),
        )


def test_versions() -> None:
    assert K.parse_versions(b"1 2", "v") == frozenset({1, 2})
    for bad in (b"", b"1  2", b"0", b" 1", b"1,2"):
        with pytest.raises(K.TransportKeyError):
            K.parse_versions(bad, "v")
