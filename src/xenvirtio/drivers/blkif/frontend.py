"""blkfront: the guest's blkif driver, an NBD `BlockBackend` (``NbdServer(blkfront)``).

Handshake, as Linux's xen-blkfront runs it: once the backend is InitWait the frontend
reads ``max-ring-page-order``, ``multi-queue-max-queues``, ``feature-persistent`` and
``feature-max-indirect-segments``; allocates, grants and initialises its rings
(``ring-page-order``, ``ring-ref``/``ring-ref<i>``, per queue under ``queue-<q>/`` when
``multi-queue-num-queues`` > 1), offers one event channel per ring, writes ``protocol``
and ``feature-persistent`` and goes Initialised. When the backend is Connected it reads
``sectors``, ``sector-size``, ``info`` and ``feature-*`` and goes Connected.

Requests wait for a free ring slot and data pages, go on the ring of their queue
(round robin), and complete by ``id``. Requests of more than 11 pages go indirect when
the backend offers it, else they are split.

Backend restart (as Linux's blkfront recovers): if the backend leaves Connected
(Closing, or Closed: a new backend instance starts Closed), the frontend drops its rings
and goes Closed; requests in flight stay pending. Once the backend is Closed it goes
Initialising (never before: a backend still Closing would miss our Closed), the backend
answers InitWait, and the handshake runs again with fresh rings and ports. When the
backend is Connected again every request it never answered is put on the new rings
(at-least-once: a write may reach the disk twice, which a block device tolerates).

Single-threaded: every method runs on the event loop `start` was awaited on.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import logging
import time
from dataclasses import dataclass, field

from xenvirtio.drivers.blkif.builders import (
    Builder,
    discard_builder,
    flush_builder,
    rw_builder,
)
from xenvirtio.drivers.blkif.pages import DataPage, DataPages
from xenvirtio.drivers.blkif.rings import FrontQueue
from xenvirtio.hv.api import Guest
from xenvirtio.hv.xenbus.client import gather, read_state
from xenvirtio.hv.xenbus.device import XenbusDevice, XenbusDriver
from xenvirtio.hv.xenbus.errors import XenbusError
from xenvirtio.hv.xenbus.ops import XenstoreOps, in_transaction
from xenvirtio.hv.xenbus.paths import FrontendPath
from xenvirtio.hv.xenbus.state import Role
from xenvirtio.hv.xenbus.values import encode_value, parse_uint
from xenvirtio.nbd.backend import BlockIOError
from xenvirtio.pvring.blkif.request import Response
from xenvirtio.spec import blkif as B
from xenvirtio.spec.xenbus_state import XenbusState
from xenvirtio.transport.xenbus.reactor import Reactor
from xenvirtio.transport.xenbus.store import ReactorStore
from xenvirtio.xenstore.client_protocol import XenstoreError

log = logging.getLogger("xenvirtio.blkif.front")

CLOSE_TIMEOUT = 5.0  # seconds close() waits for the backend to let go of our pages


@dataclass(frozen=True)
class BlkfrontConfig:
    """What the frontend asks for (each capped by the backend's offer)."""

    num_queues: int = 1
    ring_page_order: int = 0
    persistent: bool = True
    indirect_segments: int = 0  # 0: direct requests only (11 pages)
    data_pages: int = 256


@dataclass
class Inflight:
    """A request the backend has not answered: enough to put it on a ring again."""

    build: Builder
    pages: list[DataPage]
    future: asyncio.Future[Response]
    queue: int = 0
    extra: list[DataPage] = field(default_factory=list)  # indirect pages


class BlkifFrontend(XenbusDriver):
    """Device ``devid`` of type ``vbd`` of ``guest``. ``await start()`` first."""

    def __init__(self, guest: Guest, devid: int, config: BlkfrontConfig | None = None) -> None:
        self.guest = guest
        self.config = config or BlkfrontConfig()
        self.nodename = str(FrontendPath(guest.domid, "vbd", devid))
        self.reactor = Reactor()
        store = guest.hypervisor.store
        assert store is not None
        self.xs = ReactorStore(store, self.reactor)
        self.dev = XenbusDevice.probe(self.xs, Role.FRONTEND, self.nodename, self)
        self.reactor.watch_handler = self._on_watch
        self.pages = DataPages(guest, self.dev.otherend_id, self.config.data_pages)
        self.queues: list[FrontQueue] = []
        self.inflight: dict[int, Inflight] = {}
        self._ids = itertools.count(1)
        self._rr = 0
        self._connected: asyncio.Future[None] | None = None
        self._slot_free = asyncio.Event()
        self.sectors = 0
        self.info = 0
        self.features: dict[str, int] = {}
        self.indirect = 0
        self.reconnects = 0
        self.resubmitted = 0  # requests put on a ring again after a reconnection
        self.closing = False

    # --- BlockBackend ---------------------------------------------------------------
    @property
    def size(self) -> int:
        return self.sectors * B.SECTOR_SIZE

    @property
    def block_size(self) -> int:
        return B.SECTOR_SIZE

    @property
    def read_only(self) -> bool:
        return bool(self.info & B.VDISK_READONLY)

    @property
    def can_trim(self) -> bool:
        return bool(self.features.get(B.KEY_FEATURE_DISCARD))

    @property
    def can_write_zeroes(self) -> bool:
        return False

    async def read(self, offset: int, length: int) -> bytes:
        out = bytearray()
        for off, n in self._chunks(offset, length):
            out += await self._rw(B.BLKIF_OP_READ, off, n, None)
        return bytes(out)

    async def write(self, offset: int, data: bytes, fua: bool) -> None:
        at = 0
        for off, n in self._chunks(offset, len(data)):
            await self._rw(B.BLKIF_OP_WRITE, off, n, data[at : at + n])
            at += n
        if fua:
            await self.flush()

    async def flush(self) -> None:
        if self.features.get(B.KEY_FEATURE_FLUSH_CACHE):
            await self._submit(flush_builder, [], [])

    async def trim(self, offset: int, length: int) -> None:
        if self.can_trim:
            sector, n = offset // B.SECTOR_SIZE, length // B.SECTOR_SIZE
            await self._submit(discard_builder(sector, n), [], [])

    async def write_zeroes(self, offset: int, length: int, may_trim: bool) -> None:
        await self.write(offset, bytes(length), False)

    # --- requests -------------------------------------------------------------------
    def _max_pages(self) -> int:
        return self.indirect or B.BLKIF_MAX_SEGMENTS_PER_REQUEST

    def _chunks(self, offset: int, length: int) -> list[tuple[int, int]]:
        step = self._max_pages() * B.XEN_PAGE_SIZE
        return [(offset + at, min(step, length - at)) for at in range(0, length, step)]

    async def _rw(self, op: int, offset: int, length: int, data: bytes | None) -> bytes:
        npages = -(-length // B.XEN_PAGE_SIZE)
        pages = await self.pages.take(npages)
        extra: list[DataPage] = []
        if npages > B.BLKIF_MAX_SEGMENTS_PER_REQUEST:
            extra = await self.pages.take(-(-npages // B.SEGMENTS_PER_INDIRECT_FRAME))
        try:
            if data is not None:
                for i, page in enumerate(pages):
                    chunk = data[i * B.XEN_PAGE_SIZE : (i + 1) * B.XEN_PAGE_SIZE]
                    page.view[: len(chunk)] = chunk
            sector = offset // B.SECTOR_SIZE
            await self._submit(rw_builder(op, sector, length, extra), pages, extra)
            if data is None:
                return b"".join(bytes(p.view) for p in pages)[:length]
            return b""
        finally:
            self.pages.give(pages + extra)

    async def _submit(
        self, build: Builder, pages: list[DataPage], extra: list[DataPage]
    ) -> Response:
        loop = asyncio.get_running_loop()
        req = Inflight(build, pages, loop.create_future(), extra=extra)
        rid = next(self._ids)
        self.inflight[rid] = req
        await self._put(rid, req)
        rsp = await req.future
        if rsp.status != B.BLKIF_RSP_OKAY:
            err = errno.EOPNOTSUPP if rsp.status == B.BLKIF_RSP_EOPNOTSUPP else errno.EIO
            raise BlockIOError(err, f"blkif status {rsp.status}")
        return rsp

    async def _put(self, rid: int, req: Inflight) -> None:
        while True:
            if self._connected is not None:
                await asyncio.shield(self._connected)
            ready = [q for q in self.queues if not q.ring.full()]
            if ready:
                break
            self._slot_free.clear()
            await self._slot_free.wait()
        queue = ready[self._rr % len(ready)]
        self._rr += 1
        req.queue = self.queues.index(queue)
        if queue.put(req.build(rid, req.pages)):
            queue.kick()

    def _on_responses(self, queue: FrontQueue) -> None:
        for rsp in queue.take_responses():
            req = self.inflight.pop(rsp.id, None)
            if req is not None and not req.future.done():
                req.future.set_result(rsp)
        self._slot_free.set()

    # --- XenBus ---------------------------------------------------------------------
    def _on_watch(self, path: str, token: str) -> None:
        self.dev.handle_watch_event(path, token)

    async def start(self, timeout: float = 10.0) -> None:
        """Attach to the running loop, run the handshake, return once Connected."""
        loop = asyncio.get_running_loop()
        self._connected = loop.create_future()
        self.reactor.attach(loop)
        self.dev.watch()
        if self.dev.state is not XenbusState.INITIALISING:
            self.dev.switch_state(XenbusState.INITIALISING)
        await asyncio.wait_for(asyncio.shield(self._connected), timeout)

    def setup(self, dev: XenbusDevice) -> None:
        """``talk_to_blkback``: rings, ports and keys, before Initialised."""
        be = dev.otherend
        offer = {k: self._be_uint(be, k) for k in _OFFER_KEYS}
        nq = max(1, min(self.config.num_queues, offer[B.KEY_MULTI_QUEUE_MAX_QUEUES] or 1))
        order = min(self.config.ring_page_order, offer[B.KEY_MAX_RING_PAGE_ORDER])
        persistent = self.config.persistent and bool(offer[B.KEY_FEATURE_PERSISTENT])
        keys: dict[str, str | int | bytes] = {
            B.KEY_PROTOCOL: B.XEN_IO_PROTO_ABI_NATIVE,
            B.KEY_FEATURE_PERSISTENT: int(persistent),
        }
        if nq > 1:
            keys[B.KEY_MULTI_QUEUE_NUM_QUEUES] = nq
        if order:
            keys[B.KEY_RING_PAGE_ORDER] = order
        self._drop_queues()
        for q in range(nq):
            queue = FrontQueue(self.guest, dev.otherend_id, order, self.reactor)
            queue.on_responses = self._on_responses
            self.queues.append(queue)
            prefix = "" if nq == 1 else f"queue-{q}/"
            keys.update({prefix + k: v for k, v in queue.keys().items()})
        if persistent:
            self.pages.make_persistent()
        self._publish(keys)

    def _publish(self, keys: dict[str, str | int | bytes]) -> None:
        """Write ``keys``, dropping ring keys of an earlier handshake, in one transaction."""
        encoded = {key: encode_value(value) for key, value in keys.items()}

        def publish(t: XenstoreOps) -> None:
            for old in t.directory(self.nodename):
                if old.startswith(_RING_KEYS) and old not in encoded:
                    t.rm(f"{self.nodename}/{old}")
            for key, value in encoded.items():
                t.write(f"{self.nodename}/{key}", value)

        in_transaction(self.xs, publish)

    def connect(self, dev: XenbusDevice) -> None:
        """``blkfront_connect``: read the disk's size and features; resubmit."""
        be = dev.otherend
        self.sectors = self._be_uint(be, B.KEY_SECTORS, required=True)
        self.info = self._be_uint(be, B.KEY_INFO)
        self.features = {k: self._be_uint(be, k) for k in _FEATURE_KEYS}
        limit = self.features[B.KEY_FEATURE_MAX_INDIRECT_SEGMENTS]
        self.indirect = min(self.config.indirect_segments, limit)
        if self.indirect <= B.BLKIF_MAX_SEGMENTS_PER_REQUEST:
            self.indirect = 0
        self._resubmit()
        if self._connected is not None and not self._connected.done():
            self._connected.set_result(None)
        self._slot_free.set()

    def _resubmit(self) -> None:
        """Put what a lost backend never answered on the new rings (``blkif_recover``);
        what does not fit waits for a slot like a new request."""
        waiting: list[tuple[int, Inflight]] = []
        self.resubmitted += len(self.inflight)
        for rid, req in self.inflight.items():
            free = [q for q in self.queues if not q.ring.full()]
            if not free:
                waiting.append((rid, req))
                continue
            queue = free[req.queue % len(free)]
            req.queue = self.queues.index(queue)
            queue.put(req.build(rid, req.pages))
        for queue in self.queues:
            queue.kick()
        for rid, req in waiting:
            asyncio.get_running_loop().create_task(self._put(rid, req))

    def disconnect(self, dev: XenbusDevice) -> None:
        if self._connected is None or self._connected.done():
            self._connected = asyncio.get_running_loop().create_future()
        self._drop_queues()

    def state_changed(self, dev: XenbusDevice, old: XenbusState, new: XenbusState) -> None:
        if new is XenbusState.CLOSED and not self.closing:
            self.reconnects += 1
            if dev.machine.otherend is XenbusState.CLOSED:
                self.reactor.call_soon(self._reinitialise)

    def otherend_changed(self, dev: XenbusDevice, state: XenbusState) -> None:
        if state is XenbusState.CLOSED and dev.state is XenbusState.CLOSED:
            self.reactor.call_soon(self._reinitialise)

    def _reinitialise(self) -> None:
        """Closed, the backend Closed too: start the handshake again."""
        if not self.closing and self.dev.state is XenbusState.CLOSED:
            self.dev.switch_state(XenbusState.INITIALISING)

    def _drop_queues(self) -> None:
        for queue in self.queues:
            queue.close()
        self.queues.clear()

    def _be_uint(self, be: str, key: str, required: bool = False) -> int:
        try:
            return parse_uint(gather(self.xs, be, key)[key], key)
        except XenstoreError:
            if required:
                raise
            return 0

    def close(self) -> None:
        """Close the device (frontend Closed), release rings, ports and pages."""
        self.closing = True
        try:
            if self.dev.state is not XenbusState.CLOSED:
                self.dev.switch_state(XenbusState.CLOSED)
        except Exception as exc:  # the backend may be gone already
            log.debug("close: %s", exc)
        self.dev.unwatch()
        self._wait_backend_closed()
        self._drop_queues()
        self.reactor.close()
        for req in self.inflight.values():
            if not req.future.done():
                req.future.set_exception(BlockIOError(errno.ESHUTDOWN, "device closed"))
        self.inflight.clear()
        self.pages.close()

    def _wait_backend_closed(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Until the backend has unmapped our pages (Closed, or its directory gone);
        what it still maps after ``timeout`` is leaked, not reused."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                state = read_state(self.xs, self.dev.otherend)
            except (XenstoreError, XenbusError):
                return
            if state in (XenbusState.CLOSED, XenbusState.UNKNOWN):
                return
            time.sleep(0.01)


_RING_KEYS = (
    B.KEY_RING_REF,
    B.KEY_EVENT_CHANNEL,
    B.KEY_RING_PAGE_ORDER,
    B.KEY_MULTI_QUEUE_NUM_QUEUES,
    "queue-",
)
_OFFER_KEYS = (
    B.KEY_MULTI_QUEUE_MAX_QUEUES,
    B.KEY_MAX_RING_PAGE_ORDER,
    B.KEY_FEATURE_PERSISTENT,
)
_FEATURE_KEYS = (
    B.KEY_FEATURE_FLUSH_CACHE,
    B.KEY_FEATURE_DISCARD,
    B.KEY_FEATURE_PERSISTENT,
    B.KEY_FEATURE_MAX_INDIRECT_SEGMENTS,
)
