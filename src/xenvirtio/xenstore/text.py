"""How Xen's xenstore-* tools show and accept values (tools/xenstore/xenstore_client.c).

``sanitise`` is what ``xenstore-read`` and ``xenstore-ls`` print: printable ASCII as is,
``\\t \\n \\r \\\\`` escaped, bytes below 8 as three octal digits, anything else as
``\\xNN``. ``unsanitise`` is what ``xenstore-write`` does to its value argument.
"""

from __future__ import annotations

_ESCAPES = {0x09: "t", 0x0A: "n", 0x0D: "r", 0x5C: "\\"}
_UNESCAPES = {"t": 0x09, "n": 0x0A, "r": 0x0D, "\\": 0x5C}
_HEX = "0123456789abcdefABCDEF"
_OCT = "01234567"


def sanitise(value: bytes) -> str:
    """A value as xenstore-read prints it."""
    out: list[str] = []
    for c in value:
        if 0x20 <= c <= 0x7E and c != 0x5C:
            out.append(chr(c))
        elif c in _ESCAPES:
            out.append("\\" + _ESCAPES[c])
        elif c < 0o10:
            out.append(f"\\{c:03o}")
        else:
            out.append(f"\\x{c:02x}")
    return "".join(out)


def _digits(text: str, start: int, allowed: str, most: int) -> str:
    end = start
    while end < len(text) and end - start < most and text[end] in allowed:
        end += 1
    return text[start:end]


def unsanitise(spec: str) -> bytes:
    """A xenstore-write value argument to the bytes written (inverse of ``sanitise``)."""
    raw = spec.encode("utf-8", "surrogateescape").decode("latin-1")
    out = bytearray()
    i = 0
    while i < len(raw):
        ch = raw[i]
        i += 1
        if ch != "\\":
            out.append(ord(ch))
            continue
        if i == len(raw):  # a trailing backslash ends the value with a NUL, as in C
            out.append(0)
            break
        ch = raw[i]
        i += 1
        if ch in _UNESCAPES:
            out.append(_UNESCAPES[ch])
        elif ch == "x":
            digits = _digits(raw, i, _HEX, 2)
            i += len(digits)
            out.append(int(digits, 16) if digits else ord("x"))
        elif ch in _OCT:
            digits = _digits(raw, i - 1, _OCT, 3)
            i += len(digits) - 1
            out.append(int(digits, 8) & 0xFF)
        else:
            out.append(ord(ch))
    return bytes(out)
