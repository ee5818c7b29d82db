"""The generic shared ring of ``xen/include/public/io/ring.h``, sans-I/O.

Layout (``DEFINE_RING_TYPES``): one shared ``sring`` of ``2**order`` pages::

    0   RING_IDX req_prod, req_event      (le32 each; indices run freely, wrap at 2**32)
    8   RING_IDX rsp_prod, rsp_event
    16  uint8_t  pvt[4]; uint8_t __pad[44]
    64  union { req_t req; rsp_t rsp; } ring[nr_ents]

``nr_ents`` is the number of entries that fit, rounded down to a power of two
(``__CONST_RING_SIZE``); an entry is the size of the union of request and response (the
larger, rounded up to the stricter alignment). Each side keeps its own private indices apart
from the shared page (``req_prod_pvt``/``rsp_cons`` in `FrontRing`, ``rsp_prod_pvt``/
``req_cons`` in `BackRing`): the peer can scribble over the shared page but not over them.

Both rings are generic over a request and a response `Codec`, and work on a ``memoryview``
of the shared pages (a grant mapping, a shared-pages view, or ``mem.view(gpa, size)`` of a
`~xenvirtio.mem.api.GuestMemory`). They do no I/O: delivering an event-channel notification
is the caller's business, deciding whether one is needed is the ring's.

Call order, front end (the requester)::

    ring = FrontRing(buf, req_codec, rsp_codec)          # XEN_FRONT_RING_INIT
    ring.put_request(req) *                              # RING_GET_REQUEST + req_prod_pvt++
    if ring.push_requests_and_check_notify(): notify()   # RING_PUSH_..._AND_CHECK_NOTIFY
    on event: loop { while (rsp := ring.get_response()) is not None: ...
                     if not ring.final_check_for_responses(): break }

Back end (the responder)::

    ring = BackRing(buf, req_codec, rsp_codec)           # BACK_RING_INIT
    on event: loop { while (req := ring.copy_request()) is not None: ...  # RING_COPY_REQUEST
                     if not ring.final_check_for_requests(): break }
    ring.put_response(rsp) *
    if ring.push_responses_and_check_notify(): notify()

Hostile peers: `copy_request` copies an entry out of shared memory exactly once and decodes
the private copy, so validation never looks at bytes the frontend can still change
(``RING_COPY_REQUEST``). A ``req_prod`` more than ``nr_ents`` ahead of what the backend has
answered is an ill-behaved frontend (``RING_REQUEST_PROD_OVERFLOW``) and raises
`RingProducerOverflow`; likewise a ``rsp_prod`` ahead of the requests the front has
outstanding (``RING_RESPONSE_PROD_OVERFLOW``). The backend never consumes more requests
than it has response slots for (``RING_REQUEST_CONS_OVERFLOW``). Notification decisions use
the private copy of the last index pushed, not the shared one, so a peer rewriting the
producer index can only cost itself notifications.

Memory ordering: on x86 (total store order) the ``wmb`` before publishing a producer index
is free; CPython offers no ``mb``, and the interpreter's own work between the store of the
producer index and the load of the event index stands in for it, as in the virtqueue code.
A shared index is written with one aligned 32-bit store (`store_index`), as C writes a
``RING_IDX``: ``struct.pack_into`` zero-fills its target before it writes, so the peer,
another process, could read a producer index of 0 (a ring that looks overflowed) or an
event index of 0 (a notification wrongly skipped).
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

PAGE_SIZE = 4096
RING_IDX_MASK = 0xFFFFFFFF

# struct xxx_sring: offsets of the shared indices and of ring[0].
REQ_PROD_OFF = 0
REQ_EVENT_OFF = 4
RSP_PROD_OFF = 8
RSP_EVENT_OFF = 12
PVT_OFF = 16
SRING_HEADER_SIZE = 64

_IDX = struct.Struct("<I")

T = TypeVar("T")
Req = TypeVar("Req")
Rsp = TypeVar("Rsp")


class Codec(Protocol[T]):
    """How one message type sits in a ring entry.

    ``size`` is ``sizeof(msg_t)`` and ``align`` its C alignment. `unpack` receives a private
    ``bytes`` copy of exactly ``size`` bytes and must accept any bytes (validation is the
    protocol layer's job, on the decoded copy).
    """

    @property
    def size(self) -> int: ...

    @property
    def align(self) -> int: ...

    def pack_into(self, buf: memoryview, offset: int, msg: T) -> None: ...

    def unpack(self, data: bytes) -> T: ...


class RingError(Exception):
    """Base of the ring's typed errors."""


class RingFull(RingError):
    """`FrontRing.put_request` with no free slot (``RING_FULL``): a caller bug, not the peer's."""


class RingProducerOverflow(RingError):
    """The peer's producer index claims more entries than can exist: an ill-behaved peer.

    ``RING_REQUEST_PROD_OVERFLOW`` (backend side) / ``RING_RESPONSE_PROD_OVERFLOW`` (front
    side). The connection is broken; a backend reports it with ``xenbus_dev_fatal``.
    """

    def __init__(self, what: str, prod: int, base: int, nr_ents: int) -> None:
        super().__init__(
            f"{what} {prod:#x} is {(prod - base) & RING_IDX_MASK} entries past {base:#x}, "
            f"ring has {nr_ents}"
        )
        self.prod = prod
        self.base = base
        self.nr_ents = nr_ents


def _round_down_pow2(n: int) -> int:
    """``__RD32``: the largest power of two <= ``n`` (0 for 0)."""
    return 1 << (n.bit_length() - 1) if n > 0 else 0


def _round_up(n: int, align: int) -> int:
    return (n + align - 1) // align * align


@dataclass(frozen=True)
class RingLayout:
    """Geometry of an sring: ``entry_size`` bytes per entry, ``nr_ents`` entries,
    ``nbytes`` bytes of shared pages (``PAGE_SIZE << order``)."""

    entry_size: int
    nr_ents: int
    nbytes: int

    @classmethod
    def for_codecs(cls, req: Codec[Any], rsp: Codec[Any], nbytes: int) -> RingLayout:
        """``__CONST_RING_SIZE(name, nbytes)`` for the union of ``req`` and ``rsp``."""
        entry = _round_up(max(req.size, rsp.size), max(req.align, rsp.align))
        nr_ents = _round_down_pow2((nbytes - SRING_HEADER_SIZE) // entry)
        if nr_ents < 1:
            raise ValueError(f"{nbytes} bytes hold no {entry}-byte ring entry")
        return cls(entry, nr_ents, nbytes)

    @classmethod
    def for_order(cls, req: Codec[Any], rsp: Codec[Any], order: int) -> RingLayout:
        """The layout of a ring of ``2**order`` pages (``ring-page-order``)."""
        return cls.for_codecs(req, rsp, PAGE_SIZE << order)

    def entry_offset(self, idx: int) -> int:
        """Byte offset of ``ring[idx & (nr_ents - 1)]``."""
        return SRING_HEADER_SIZE + (idx & (self.nr_ents - 1)) * self.entry_size


def ring_size(req: Codec[Any], rsp: Codec[Any], order: int = 0) -> int:
    """``__CONST_RING_SIZE`` for a ring of ``2**order`` pages."""
    return RingLayout.for_order(req, rsp, order).nr_ents


def shared_ring_init(buf: memoryview) -> None:
    """``SHARED_RING_INIT``: producers 0, event indices 1, padding zeroed. Front end only."""
    buf[:SRING_HEADER_SIZE] = bytes(SRING_HEADER_SIZE)
    store_index(buf, REQ_EVENT_OFF, 1)
    store_index(buf, RSP_EVENT_OFF, 1)


def store_index(buf: memoryview, off: int, value: int) -> None:
    """Write the little-endian ``RING_IDX`` at ``off`` of ``buf`` with one 32-bit store.

    The peer reads the field at any moment from another process; at every instant it
    must hold the old value or the new one. ``struct.pack_into`` clears the field before
    it writes, so it is never used on a shared index. ``off`` is 4-byte aligned."""
    value &= RING_IDX_MASK
    if sys.byteorder != "little":
        value = int.from_bytes(value.to_bytes(4, "little"), sys.byteorder)
    buf[off : off + 4].cast("I")[0] = value


def _check_notify(new: int, old: int, event: int) -> bool:
    """``(RING_IDX)(new - event) < (RING_IDX)(new - old)``: did we pass the peer's event?"""
    return (new - event) & RING_IDX_MASK < (new - old) & RING_IDX_MASK


class _Ring(Generic[Req, Rsp]):
    """What both halves share: the view, the codecs and the geometry."""

    def __init__(self, buf: memoryview, req: Codec[Req], rsp: Codec[Rsp]) -> None:
        self.layout = RingLayout.for_codecs(req, rsp, len(buf))
        self.buf = buf
        self.req_codec = req
        self.rsp_codec = rsp

    @property
    def nr_ents(self) -> int:
        """``RING_SIZE``."""
        return self.layout.nr_ents

    def _load(self, off: int) -> int:
        return int(_IDX.unpack_from(self.buf, off)[0])

    def _store(self, off: int, value: int) -> None:
        store_index(self.buf, off, value)

    def _copy_entry(self, idx: int, size: int) -> bytes:
        off = self.layout.entry_offset(idx)
        return bytes(self.buf[off : off + size])  # the single fetch: callers see only this

    @property
    def sring_indices(self) -> tuple[int, int, int, int]:
        """The shared (req_prod, req_event, rsp_prod, rsp_event), for diagnostics."""
        return (self._load(0), self._load(4), self._load(8), self._load(12))


class FrontRing(_Ring[Req, Rsp]):
    """The front end's half: puts requests, takes responses. See the module docstring.

    ``init=True`` initialises the shared page (``XEN_FRONT_RING_INIT``); ``init=False``
    attaches to a live one at index ``start`` (``FRONT_RING_ATTACH``).
    """

    def __init__(
        self,
        buf: memoryview,
        req: Codec[Req],
        rsp: Codec[Rsp],
        *,
        init: bool = True,
        start: int = 0,
    ) -> None:
        super().__init__(buf, req, rsp)
        if init:
            shared_ring_init(buf)
        self.req_prod_pvt = start & RING_IDX_MASK
        self.rsp_cons = start & RING_IDX_MASK
        self._pushed = start & RING_IDX_MASK  # req_prod as we last published it

    def free_requests(self) -> int:
        """``RING_FREE_REQUESTS``."""
        return self.nr_ents - ((self.req_prod_pvt - self.rsp_cons) & RING_IDX_MASK)

    def full(self) -> bool:
        """``RING_FULL``."""
        return self.free_requests() == 0

    def put_request(self, msg: Req) -> int:
        """Write ``msg`` at ``req_prod_pvt`` (not yet visible to the back) and return its index."""
        if self.full():
            raise RingFull(f"{self.nr_ents} requests outstanding")
        idx = self.req_prod_pvt
        self.req_codec.pack_into(self.buf, self.layout.entry_offset(idx), msg)
        self.req_prod_pvt = (idx + 1) & RING_IDX_MASK
        return idx

    def push_requests(self) -> None:
        """``RING_PUSH_REQUESTS``: publish ``req_prod``."""
        self._store(REQ_PROD_OFF, self.req_prod_pvt)
        self._pushed = self.req_prod_pvt

    def push_requests_and_check_notify(self) -> bool:
        """``RING_PUSH_REQUESTS_AND_CHECK_NOTIFY``: publish, then True when the back asked
        (through ``req_event``) to be told about one of the requests just pushed."""
        old, new = self._pushed, self.req_prod_pvt
        self.push_requests()
        return _check_notify(new, old, self._load(REQ_EVENT_OFF))

    def unconsumed_responses(self) -> int:
        """``RING_HAS_UNCONSUMED_RESPONSES``, checked against ``RING_RESPONSE_PROD_OVERFLOW``
        and the requests outstanding (a backend cannot answer what was never asked)."""
        prod = self._load(RSP_PROD_OFF)
        n = (prod - self.rsp_cons) & RING_IDX_MASK
        if n > self.nr_ents or n > (self.req_prod_pvt - self.rsp_cons) & RING_IDX_MASK:
            raise RingProducerOverflow("rsp_prod", prod, self.rsp_cons, self.nr_ents)
        return n

    def get_response(self) -> Rsp | None:
        """``RING_COPY_RESPONSE`` at ``rsp_cons`` and consume it; None when there is none."""
        if not self.unconsumed_responses():
            return None
        data = self._copy_entry(self.rsp_cons, self.rsp_codec.size)
        self.rsp_cons = (self.rsp_cons + 1) & RING_IDX_MASK
        return self.rsp_codec.unpack(data)

    def final_check_for_responses(self) -> bool:
        """``RING_FINAL_CHECK_FOR_RESPONSES``: True when responses are pending; otherwise
        set ``rsp_event`` so the very next response notifies, and check once more."""
        if self.unconsumed_responses():
            return True
        self._store(RSP_EVENT_OFF, self.rsp_cons + 1)
        return self.unconsumed_responses() > 0


class BackRing(_Ring[Req, Rsp]):
    """The back end's half: copies requests out, puts responses. See the module docstring.

    Never initialises the shared page (only the front does); ``start`` attaches at a live
    index (``BACK_RING_ATTACH``).
    """

    def __init__(
        self, buf: memoryview, req: Codec[Req], rsp: Codec[Rsp], *, start: int = 0
    ) -> None:
        super().__init__(buf, req, rsp)
        self.rsp_prod_pvt = start & RING_IDX_MASK
        self.req_cons = start & RING_IDX_MASK
        self._pushed = start & RING_IDX_MASK  # rsp_prod as we last published it

    def unconsumed_requests(self) -> int:
        """``RING_HAS_UNCONSUMED_REQUESTS`` (bounded by free response slots, so
        ``RING_REQUEST_CONS_OVERFLOW`` cannot happen) after ``RING_REQUEST_PROD_OVERFLOW``.

        Raises `RingProducerOverflow` for an ill-behaved frontend.
        """
        prod = self._load(REQ_PROD_OFF)
        ahead = (prod - self.rsp_prod_pvt) & RING_IDX_MASK
        # Past the ring, or behind requests already consumed: an ill-behaved frontend.
        if ahead > self.nr_ents or ahead < (self.req_cons - self.rsp_prod_pvt) & RING_IDX_MASK:
            raise RingProducerOverflow("req_prod", prod, self.rsp_prod_pvt, self.nr_ents)
        req = (prod - self.req_cons) & RING_IDX_MASK
        rsp = self.nr_ents - ((self.req_cons - self.rsp_prod_pvt) & RING_IDX_MASK)
        return min(req, rsp)

    def copy_request(self) -> Req | None:
        """``RING_COPY_REQUEST`` at ``req_cons`` and consume it; None when there is none.

        The entry is copied once and decoded from the copy: validate what this returns, never
        the shared entry.
        """
        if not self.unconsumed_requests():
            return None
        data = self._copy_entry(self.req_cons, self.req_codec.size)
        self.req_cons = (self.req_cons + 1) & RING_IDX_MASK
        return self.req_codec.unpack(data)

    def put_response(self, msg: Rsp) -> int:
        """Write ``msg`` at ``rsp_prod_pvt`` (not yet visible) and return its index.

        One response per consumed request: more would overwrite requests not yet read.
        """
        if self.rsp_prod_pvt == self.req_cons:
            raise RingFull("no consumed request is waiting for a response")
        idx = self.rsp_prod_pvt
        self.rsp_codec.pack_into(self.buf, self.layout.entry_offset(idx), msg)
        self.rsp_prod_pvt = (idx + 1) & RING_IDX_MASK
        return idx

    def push_responses(self) -> None:
        """``RING_PUSH_RESPONSES``: publish ``rsp_prod``."""
        self._store(RSP_PROD_OFF, self.rsp_prod_pvt)
        self._pushed = self.rsp_prod_pvt

    def push_responses_and_check_notify(self) -> bool:
        """``RING_PUSH_RESPONSES_AND_CHECK_NOTIFY``: publish, then True when the front
        asked (through ``rsp_event``) to be told about one of the responses just pushed."""
        old, new = self._pushed, self.rsp_prod_pvt
        self.push_responses()
        return _check_notify(new, old, self._load(RSP_EVENT_OFF))

    def final_check_for_requests(self) -> bool:
        """``RING_FINAL_CHECK_FOR_REQUESTS``: True when requests are pending; otherwise
        set ``req_event`` so the very next request notifies, and check once more."""
        if self.unconsumed_requests():
            return True
        self._store(REQ_EVENT_OFF, self.req_cons + 1)
        return self.unconsumed_requests() > 0


@dataclass(frozen=True)
class StructCodec(Generic[T]):
    """A `Codec` from a ``struct.Struct`` and two functions: the common case.

    ``to_fields(msg)`` gives the values to pack; ``from_fields(values)`` builds the message.
    """

    st: struct.Struct
    alignment: int
    to_fields: Callable[[T], tuple[Any, ...]]
    from_fields: Callable[[tuple[Any, ...]], T]

    @property
    def size(self) -> int:
        return self.st.size

    @property
    def align(self) -> int:
        return self.alignment

    def pack_into(self, buf: memoryview, offset: int, msg: T) -> None:
        self.st.pack_into(buf, offset, *self.to_fields(msg))

    def unpack(self, data: bytes) -> T:
        return self.from_fields(self.st.unpack(data))
