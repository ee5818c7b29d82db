"""The XenStore shared ring, sans-I/O: ``struct xenstore_domain_interface`` over a page.

A domain talks to xenstored through one 4096-byte page holding two byte rings
(``req`` towards the daemon, ``rsp`` back) and their free-running ``uint32_t`` indices
(xen/include/public/io/xs_wire.h, docs/misc/xenstore-ring.txt). An index is masked with
``MASK_XENSTORE_IDX`` only to address a byte; ``prod - cons`` (mod 2**32) is the fill level.

Each end keeps a private copy of the indices it produces or consumes itself (the way
io/ring.h keeps ``req_prod_pvt``) and only reads the peer's index from the page, so a
peer scribbling over "our" index cannot make us read or write outside the ring. A fill
level above ``XENSTORE_RING_SIZE`` can only come from a broken or hostile peer:
:class:`RingError` (``XENSTORE_ERROR_RINGIDX``); the server stops serving that ring.

Ordering: data is copied before the index that publishes it is stored, and an index is
read before the data it covers. CPython performs these accesses in program order and x86
keeps stores ordered (TSO); a weakly ordered host would need explicit barriers here.

Call order (server): ``start()`` once, then any of ``read() write() reconnect_requested()
reset()``. Client: ``read() write() request_reconnect() connected()``.
"""

from __future__ import annotations

import enum
import struct
import sys

from xenvirtio.spec.xs_wire import (
    XENSTORE_CONNECTED,
    XENSTORE_ERROR_NONE,
    XENSTORE_ERROR_RINGIDX,
    XENSTORE_IFACE_CONNECTION,
    XENSTORE_IFACE_ERROR,
    XENSTORE_IFACE_REQ,
    XENSTORE_IFACE_REQ_CONS,
    XENSTORE_IFACE_REQ_PROD,
    XENSTORE_IFACE_RSP,
    XENSTORE_IFACE_RSP_CONS,
    XENSTORE_IFACE_RSP_PROD,
    XENSTORE_IFACE_SERVER_FEATURES,
    XENSTORE_IFACE_SIZE,
    XENSTORE_RECONNECT,
    XENSTORE_RING_IDX_MASK,
    XENSTORE_RING_SIZE,
    XENSTORE_SERVER_FEATURE_ERROR,
    XENSTORE_SERVER_FEATURE_RECONNECTION,
)

_U32 = struct.Struct("<I")


def _store_u32(view: memoryview, off: int, value: int) -> None:
    """Write the little-endian u32 at ``off`` with one aligned store: the peer reads the
    index from another process at any instant, and ``struct.pack_into`` clears the field
    before it writes (a consumer index of 0 would look like a full ring)."""
    if sys.byteorder != "little":
        value = int.from_bytes(value.to_bytes(4, "little"), sys.byteorder)
    view[off : off + 4].cast("I")[0] = value


_IDX_MOD = 1 << 32

SERVER_FEATURES = XENSTORE_SERVER_FEATURE_RECONNECTION | XENSTORE_SERVER_FEATURE_ERROR


class RingError(Exception):
    """The peer left the ring in an impossible state; ``code`` is a XENSTORE_ERROR_*."""

    def __init__(self, message: str, code: int = XENSTORE_ERROR_RINGIDX) -> None:
        super().__init__(message)
        self.code = code


class Role(enum.Enum):
    """Which end of the page we are: the daemon reads ``req``, a domain reads ``rsp``."""

    SERVER = "server"
    CLIENT = "client"


def _mask(idx: int) -> int:
    """``MASK_XENSTORE_IDX``: the byte offset of a free-running index within a ring."""
    return idx & XENSTORE_RING_IDX_MASK


class _Direction:
    """One byte ring of the page, seen from the end that consumes or produces it."""

    __slots__ = ("_cons_off", "_data_off", "_iface", "_prod_off", "pvt")

    def __init__(self, iface: memoryview, data_off: int, cons_off: int, prod_off: int) -> None:
        self._iface = iface
        self._data_off = data_off
        self._cons_off = cons_off
        self._prod_off = prod_off
        self.pvt = 0  # our private copy of the index we own in this direction

    def load(self, off: int) -> int:
        value: int = _U32.unpack_from(self._iface, off)[0]
        return value

    def adopt(self, consumer: bool) -> None:
        """Start from the index on the page that this end owns."""
        self.pvt = self.load(self._cons_off if consumer else self._prod_off)

    def _fill(self, prod: int, cons: int) -> int:
        fill = (prod - cons) % _IDX_MOD
        if fill > XENSTORE_RING_SIZE:
            raise RingError(f"ring indices prod={prod:#x} cons={cons:#x} are {fill} bytes apart")
        return fill

    def readable(self) -> int:
        """Bytes the producer has published and we have not consumed (we are consumer)."""
        return self._fill(self.load(self._prod_off), self.pvt)

    def consume(self, limit: int) -> bytes:
        """Copy up to ``limit`` published bytes out of the ring and publish the new cons."""
        n = min(self.readable(), limit)
        if n == 0:
            return b""
        start = _mask(self.pvt)
        first = min(n, XENSTORE_RING_SIZE - start)
        base = self._data_off
        data = bytes(self._iface[base + start : base + start + first])
        if first < n:
            data += bytes(self._iface[base : base + n - first])
        self.pvt = (self.pvt + n) % _IDX_MOD
        _store_u32(self._iface, self._cons_off, self.pvt)
        return data

    def space(self) -> int:
        """Free bytes in the ring (we are producer)."""
        return XENSTORE_RING_SIZE - self._fill(self.pvt, self.load(self._cons_off))

    def produce(self, data: bytes | bytearray | memoryview) -> int:
        """Copy as much of ``data`` as fits, then publish the new prod; returns bytes taken."""
        n = min(self.space(), len(data))
        if n == 0:
            return 0
        start = _mask(self.pvt)
        first = min(n, XENSTORE_RING_SIZE - start)
        base = self._data_off
        self._iface[base + start : base + start + first] = data[:first]
        if first < n:
            self._iface[base : base + n - first] = data[first:n]
        self.pvt = (self.pvt + n) % _IDX_MOD
        _store_u32(self._iface, self._prod_off, self.pvt)
        return n


class XenstoreRing:
    """One end of a ``xenstore_domain_interface`` page.

    ``read`` returns the bytes the peer produced; ``write`` queues as much as fits and
    returns how much it took. Both raise :class:`RingError` on impossible indices.
    """

    def __init__(self, interface: memoryview, role: Role) -> None:
        if len(interface) < XENSTORE_IFACE_SIZE:
            raise ValueError(f"a xenstore page needs {XENSTORE_IFACE_SIZE} bytes")
        self.interface = interface
        self.role = role
        req = _Direction(
            interface, XENSTORE_IFACE_REQ, XENSTORE_IFACE_REQ_CONS, XENSTORE_IFACE_REQ_PROD
        )
        rsp = _Direction(
            interface, XENSTORE_IFACE_RSP, XENSTORE_IFACE_RSP_CONS, XENSTORE_IFACE_RSP_PROD
        )
        self._in, self._out = (req, rsp) if role is Role.SERVER else (rsp, req)
        self._sync_private_indices()

    def _sync_private_indices(self) -> None:
        """Adopt the indices on the page as our starting point (attach or reconnect)."""
        self._in.adopt(consumer=True)
        self._out.adopt(consumer=False)

    # --- data ---------------------------------------------------------------------

    def readable(self) -> int:
        """Bytes waiting to be read."""
        return self._in.readable()

    def read(self, limit: int = XENSTORE_RING_SIZE) -> bytes:
        """Take the bytes the peer has published (at most ``limit``)."""
        return self._in.consume(limit)

    def space(self) -> int:
        """Bytes that ``write`` would take right now."""
        return self._out.space()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Publish as much of ``data`` as fits; returns the number of bytes taken."""
        return self._out.produce(data)

    # --- page fields ----------------------------------------------------------------

    def _field(self, off: int) -> int:
        value: int = _U32.unpack_from(self.interface, off)[0]
        return value

    def _set_field(self, off: int, value: int) -> None:
        _store_u32(self.interface, off, value)

    @property
    def server_features(self) -> int:
        return self._field(XENSTORE_IFACE_SERVER_FEATURES)

    @property
    def connection(self) -> int:
        return self._field(XENSTORE_IFACE_CONNECTION)

    @property
    def error(self) -> int:
        return self._field(XENSTORE_IFACE_ERROR)

    # --- server ---------------------------------------------------------------------

    def start(self) -> None:
        """Server: advertise reconnection and the error field (xenstore-ring.txt)."""
        self._require(Role.SERVER)
        self._set_field(XENSTORE_IFACE_SERVER_FEATURES, SERVER_FEATURES)

    def set_error(self, code: int) -> None:
        """Server: tell the domain why we stopped serving its ring."""
        self._require(Role.SERVER)
        self._set_field(XENSTORE_IFACE_ERROR, code)

    def reconnect_requested(self) -> bool:
        """Server: the domain set ``connection = XENSTORE_RECONNECT``."""
        return self.connection == XENSTORE_RECONNECT

    def reset(self) -> None:
        """Server: complete a reconnect; all indices 0, error cleared, CONNECTED.

        The caller has already discarded the connection's state (transactions, watches,
        partial packets) as xenstore-ring.txt requires, and notifies the domain after.
        """
        self._require(Role.SERVER)
        for off in (
            XENSTORE_IFACE_REQ_CONS,
            XENSTORE_IFACE_REQ_PROD,
            XENSTORE_IFACE_RSP_CONS,
            XENSTORE_IFACE_RSP_PROD,
        ):
            self._set_field(off, 0)
        self._in.pvt = self._out.pvt = 0
        self._set_field(XENSTORE_IFACE_ERROR, XENSTORE_ERROR_NONE)
        self._set_field(XENSTORE_IFACE_CONNECTION, XENSTORE_CONNECTED)

    # --- client ---------------------------------------------------------------------

    def request_reconnect(self) -> None:
        """Client: ask the server to reset the ring (only if it advertised the feature)."""
        self._require(Role.CLIENT)
        if not self.server_features & XENSTORE_SERVER_FEATURE_RECONNECTION:
            raise RingError("server does not support reconnection")
        self._set_field(XENSTORE_IFACE_CONNECTION, XENSTORE_RECONNECT)

    def connected(self) -> bool:
        """Client: the server finished a reconnect; adopt the reset indices."""
        self._require(Role.CLIENT)
        if self.connection != XENSTORE_CONNECTED:
            return False
        self._sync_private_indices()
        return True

    def _require(self, role: Role) -> None:
        if self.role is not role:
            raise RuntimeError(f"only the {role.value} end may do this")
