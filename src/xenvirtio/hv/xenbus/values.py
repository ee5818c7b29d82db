"""Reading and writing XenBus key values: text in, typed values out. Pure.

Everything read from a peer's directory is hostile: decoding is strict (UTF-8, no NUL,
bounded length) and numbers are canonical ASCII decimal, so ``"4abc"``, ``" 4"`` or
``"+4"`` are errors here even where C's ``scanf("%d")`` would have taken them.
"""

from __future__ import annotations

import re
from typing import Final

from xenvirtio.hv.xenbus.errors import XenbusValueError
from xenvirtio.spec.xenbus_state import XenbusState
from xenvirtio.spec.xs_wire import XENSTORE_PAYLOAD_MAX

VALUE_MAX: Final = XENSTORE_PAYLOAD_MAX
U32_MAX: Final = 0xFFFF_FFFF

_DECIMAL = re.compile(rb"0|[1-9][0-9]{0,19}")
# A key below a device directory: relative, no empty, "." or ".." elements. Characters as
# docs/misc/xenstore.txt allows in paths (alphanumerics and -/_@).
_KEY = re.compile(r"[A-Za-z0-9_@-]+(?:/[A-Za-z0-9_@-]+)*")
KEY_MAX: Final = 256


def check_key(key: str) -> str:
    """A relative key (``"ring-ref"``, ``"queue-0/ring-ref"``), else XenbusValueError."""
    if not isinstance(key, str) or len(key) > KEY_MAX or _KEY.fullmatch(key) is None:
        raise XenbusValueError(f"key {key!r:.80} is not a relative XenStore path")
    if any(part in (".", "..") for part in key.split("/")):
        raise XenbusValueError(f"key {key!r} has a dot element")
    return key


def decode_value(raw: bytes, key: str = "value") -> str:
    """The text of a value: strict UTF-8, no NUL, at most VALUE_MAX bytes."""
    if len(raw) > VALUE_MAX:
        raise XenbusValueError(f"{key}: value of {len(raw)} bytes is too long")
    if b"\0" in raw:
        raise XenbusValueError(f"{key}: value contains a NUL byte")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise XenbusValueError(f"{key}: value is not UTF-8") from None


def encode_value(value: str | int | bytes) -> bytes:
    """What ``xenbus_printf`` would write: ints in decimal, text as UTF-8."""
    if isinstance(value, bool):
        raise XenbusValueError("booleans have no XenBus encoding; write 0 or 1")
    if isinstance(value, int):
        return b"%d" % value
    raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    if len(raw) > VALUE_MAX or b"\0" in raw:
        raise XenbusValueError(f"value {raw[:40]!r} is too long or contains NUL")
    return raw


def parse_uint(raw: bytes | str, key: str = "value", maximum: int = U32_MAX) -> int:
    """A canonical decimal in ``0..maximum`` (grant refs, event channels, ids)."""
    data = raw.encode("utf-8", "replace") if isinstance(raw, str) else raw
    if _DECIMAL.fullmatch(data) is None:
        raise XenbusValueError(f"{key}: {data[:40]!r} is not a decimal number")
    value = int(data)
    if value > maximum:
        raise XenbusValueError(f"{key}: {value} is larger than {maximum}")
    return value


def parse_state(raw: bytes) -> XenbusState:
    """A ``state`` value: one of enum xenbus_state's numbers, else XenbusValueError."""
    number = parse_uint(raw, "state", max(XenbusState))
    return XenbusState(number)


def parse_bool(raw: bytes, key: str) -> bool:
    """``"0"``/``"1"`` (feature flags, ``online``)."""
    return parse_uint(raw, key, 1) == 1
