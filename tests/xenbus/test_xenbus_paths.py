"""Device directory names and key values: built, parsed, and hostile ones refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenvirtio.hv.xenbus.errors import XenbusPathError, XenbusValueError
from xenvirtio.hv.xenbus.paths import (
    DEVID_MAX,
    DOMID_MAX,
    BackendPath,
    FrontendPath,
    backend_dir,
    backend_of,
    error_dir,
    frontend_dir,
    frontend_of,
    parse_backend_dir,
    parse_device_dir,
    parse_frontend_dir,
)
from xenvirtio.hv.xenbus.values import (
    check_key,
    decode_value,
    encode_value,
    parse_state,
    parse_uint,
)
from xenvirtio.spec.xenbus_state import XenbusState

domids = st.integers(0, DOMID_MAX)
devids = st.integers(0, DEVID_MAX)
types = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,20}", fullmatch=True)


def test_layout_is_xenstore_paths_pandoc() -> None:
    assert frontend_dir(5, "vif", 0) == "/local/domain/5/device/vif/0"
    assert backend_dir(0, "vif", 5, 0) == "/local/domain/0/backend/vif/5/0"
    assert error_dir("/local/domain/5/device/vbd/51712") == "/local/domain/5/error/device/vbd/51712"
    assert error_dir("/local/domain/0/backend/vbd/5/51712") == (
        "/local/domain/0/error/backend/vbd/5/51712"
    )


@given(domids, types, devids, domids)
def test_round_trip(fe_domid: int, devtype: str, devid: int, be_domid: int) -> None:
    fe = FrontendPath(fe_domid, devtype, devid)
    be = backend_of(fe, be_domid)
    assert parse_frontend_dir(str(fe)) == fe == parse_device_dir(str(fe))
    assert parse_backend_dir(str(be)) == be == parse_device_dir(str(be))
    assert frontend_of(be) == fe
    assert BackendPath(be_domid, devtype, fe_domid, devid) == be


@pytest.mark.parametrize(
    "path",
    [
        "/local/domain/5/device/vif",  # too short
        "/local/domain/5/device/vif/0/extra",
        "/local/domain/05/device/vif/0",  # not canonical
        "/local/domain/+5/device/vif/0",
        "/local/domain/ 5/device/vif/0",
        "/local/domain/5/device/vif/1_0",  # int() would take it
        "/local/domain/5/device/vif/\u0661",  # an Arabic-Indic digit: int() would take it
        "/local/domain/32752/device/vif/0",  # DOMID_FIRST_RESERVED (DOMID_SELF)
        "/local/domain/5/device/vif/2147483648",  # past DEVID_MAX
        "/local/domain/5/device/vif/99999999999999999999999",
        "/local/domain/5/device/VIF/0",
        "/local/domain/5/device/../0",
        "/local/domain/5/device/-vif/0",
        "/local/domain/5/device/" + "v" * 65 + "/0",
        "local/domain/5/device/vif/0",
        "/local/domain/5/backend/vif/0",
        "",
    ],
)
def test_bad_frontend_dirs_are_refused(path: str) -> None:
    with pytest.raises(XenbusPathError):
        parse_frontend_dir(path)


@pytest.mark.parametrize(
    "path",
    [
        "/local/domain/0/backend/vif/5",
        "/local/domain/0/backend/vif/5/0/1",
        "/local/domain/0/backend/vif/65535/0",
        "/local/domain/0/backend/vif/x/0",
        "/local/domain/0/device/vif/5/0",
    ],
)
def test_bad_backend_dirs_are_refused(path: str) -> None:
    with pytest.raises(XenbusPathError):
        parse_backend_dir(path)


@given(st.text(max_size=80))
def test_arbitrary_text_parses_or_raises_typed(text: str) -> None:
    for parse in (parse_frontend_dir, parse_backend_dir, parse_device_dir):
        try:
            parsed = parse(text)
        except XenbusPathError:
            continue
        assert str(parsed) == text  # whatever parses is canonical


@pytest.mark.parametrize("bad", [-1, DOMID_MAX + 1, True, 1.0])
def test_constructors_check_their_fields(bad: object) -> None:
    with pytest.raises(XenbusPathError):
        FrontendPath(bad, "vif", 0)  # type: ignore[arg-type]


def test_state_values() -> None:
    assert parse_state(b"4") is XenbusState.CONNECTED
    for bad in [b"", b"9", b"-1", b"04", b" 4", b"4\n", b"4abc", b"+4", b"\xff", b"4\0"]:
        with pytest.raises(XenbusValueError):
            parse_state(bad)


@given(st.binary(max_size=12))
def test_parse_uint_is_canonical_decimal_only(raw: bytes) -> None:
    try:
        value = parse_uint(raw, "ring-ref")
    except XenbusValueError:
        return
    assert raw == b"%d" % value and 0 <= value <= 0xFFFF_FFFF


def test_values_and_keys() -> None:
    assert encode_value(7) == b"7" and encode_value("x") == b"x" and encode_value(b"y") == b"y"
    assert decode_value(b"tcp") == "tcp"
    for raw in [b"a\0b", b"\xff", b"x" * 4097]:
        with pytest.raises(XenbusValueError):
            decode_value(raw)
    with pytest.raises(XenbusValueError):
        encode_value(True)
    assert check_key("queue-0/ring-ref") == "queue-0/ring-ref"
    for key in ["", "/abs", "a//b", "a/../b", "..", "a b", "a/", "é"]:
        with pytest.raises(XenbusValueError):
            check_key(key)
