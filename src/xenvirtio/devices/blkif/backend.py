"""blkback: one ``vbd`` backend device, the XenBus handshake as Linux's blkback runs it.

A new backend instance first publishes its offer and ``state`` = Closed in one
transaction, whatever an earlier instance left (a killed one leaves Connected): a
frontend still Connected to a dead backend reads Closed, closes and initialises again,
and the backend answers that with InitWait ("prepare for reconnect", as Linux's blkback
does from Closed). From Closed it reaches Connected only through InitWait and a
frontend Initialised written after it, so it never maps rings set up for an earlier
instance.

The offer (written again at each InitWait): ``sectors``, ``sector-size``,
``physical-sector-size``, ``info``, ``feature-flush-cache``, ``feature-barrier``,
``feature-discard`` with ``discard-granularity``/``-alignment``/``-secure``,
``feature-persistent``, ``feature-max-indirect-segments``, ``multi-queue-max-queues``
and ``max-ring-page-order``. When the frontend is Initialised it reads ``protocol``,
``feature-persistent``, ``multi-queue-num-queues``, ``ring-page-order`` and each queue's
``ring-ref``/``ring-ref<i>`` and ``event-channel`` (under ``queue-<q>/`` with several
queues), maps the rings, binds the ports and goes Connected. Any key out of range fails
the device (``dev_fatal``); so does a ring whose producer index overflows. Other devices
of the runner are not affected.

Runs on a `Reactor` thread, requests on the runner's `BlkifEngine`:
``runner = BlkifBackendRunner(hv); runner.add(be_dir, image); runner.start_thread()``.
"""

from __future__ import annotations

import errno
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from xenvirtio.devices.blk.backing import BlockFile
from xenvirtio.devices.blkif.grants import GrantAccess
from xenvirtio.devices.blkif.io import BlkifEngine
from xenvirtio.devices.blkif.queue import BlkifQueue
from xenvirtio.hv.api import Hypervisor
from xenvirtio.hv.api.evtchn import Evtchn
from xenvirtio.hv.api.gnttab import Gnttab
from xenvirtio.hv.api.mapping import GrantMapping
from xenvirtio.hv.xenbus.device import XenbusDevice, XenbusDriver
from xenvirtio.hv.xenbus.errors import XenbusPathError
from xenvirtio.hv.xenbus.ops import XenstoreOps, in_transaction, read_optional
from xenvirtio.hv.xenbus.paths import KEY_STATE
from xenvirtio.hv.xenbus.state import Role
from xenvirtio.hv.xenbus.values import encode_value, parse_uint
from xenvirtio.pvring.blkif.request import Limits
from xenvirtio.pvring.ring import RingProducerOverflow
from xenvirtio.spec import blkif as B
from xenvirtio.spec.xenbus_state import XenbusState
from xenvirtio.transport.xenbus.reactor import Reactor
from xenvirtio.transport.xenbus.store import ReactorStore
from xenvirtio.xenstore.client_protocol import XenstoreError

log = logging.getLogger("xenvirtio.blkif.back")


@dataclass(frozen=True)
class BlkbackConfig:
    """What the backend offers."""

    persistent: bool = True
    max_indirect_segments: int = 256  # Linux MAX_INDIRECT_SEGMENTS; 0: no indirect
    max_queues: int = 4
    max_ring_page_order: int = 4  # Linux XENBUS_MAX_RING_GRANT_ORDER
    read_only: bool = False
    barrier: bool = True  # feature-barrier: BLKIF_OP_WRITE_BARRIER = drain, write, flush


class BlkifBackend(XenbusDriver):
    """The `XenbusDriver` of one vbd backend directory."""

    def __init__(
        self, hv: Hypervisor, store: ReactorStore, reactor: Reactor, nodename: str,
        image: Path, config: BlkbackConfig, engine: BlkifEngine,
    ) -> None:  # fmt: skip
        self.hv = hv
        self.store = store
        self.reactor = reactor
        self.nodename = nodename
        self.config = config
        self.engine = engine
        self.disk = BlockFile(image, read_only=config.read_only)
        self.limits = Limits(
            sectors=self.disk.size // B.SECTOR_SIZE,
            max_indirect_segments=config.max_indirect_segments,
            read_only=config.read_only,
            barrier=config.barrier,
        )
        self.queues: list[BlkifQueue] = []
        self.queue_of_port: dict[int, BlkifQueue] = {}
        self._evtchn: Evtchn | None = None
        self._gnttab: Gnttab | None = None
        self._grants: GrantAccess | None = None
        self._rings: list[GrantMapping] = []
        self.persistent = False
        try:
            self._publish_offer(XenbusState.CLOSED)  # a new instance holds nothing
            self.dev = XenbusDevice.probe(store, Role.BACKEND, nodename, self)
        except BaseException:
            self.disk.close()
            raise

    def start(self) -> None:
        """Follow the frontend from Closed (its Initialising takes us to InitWait)."""
        self.dev.watch()

    def _publish_offer(self, state: XenbusState | None = None) -> None:
        """The offer, and ``state`` if given, in one transaction."""
        offer = {key: encode_value(value) for key, value in self._offer().items()}

        def publish(t: XenstoreOps) -> None:
            if read_optional(t, f"{self.nodename}/{KEY_STATE}") is None:
                raise XenbusPathError(f"{self.nodename} is gone")  # do not resurrect it
            for key, value in offer.items():
                t.write(f"{self.nodename}/{key}", value)
            if state is not None:
                t.write(f"{self.nodename}/{KEY_STATE}", str(int(state)))

        in_transaction(self.store, publish)

    def _offer(self) -> dict[str, str | int | bytes]:
        c = self.config
        return {
            B.KEY_SECTORS: self.limits.sectors,
            B.KEY_SECTOR_SIZE: B.SECTOR_SIZE,
            B.KEY_PHYSICAL_SECTOR_SIZE: B.SECTOR_SIZE,
            B.KEY_INFO: B.VDISK_READONLY if c.read_only else 0,
            B.KEY_FEATURE_FLUSH_CACHE: 1,
            B.KEY_FEATURE_BARRIER: int(c.barrier and not c.read_only),
            B.KEY_FEATURE_DISCARD: 0 if c.read_only else 1,
            B.KEY_DISCARD_GRANULARITY: B.SECTOR_SIZE,
            B.KEY_DISCARD_ALIGNMENT: 0,
            B.KEY_DISCARD_SECURE: 0,
            B.KEY_FEATURE_PERSISTENT: int(c.persistent),
            B.KEY_FEATURE_MAX_INDIRECT_SEGMENTS: c.max_indirect_segments,
            B.KEY_MULTI_QUEUE_MAX_QUEUES: c.max_queues,
            B.KEY_MAX_RING_PAGE_ORDER: c.max_ring_page_order,
        }  # fmt: skip

    # --- XenbusDriver hooks ---------------------------------------------------------
    def setup(self, dev: XenbusDevice) -> None:
        self._publish_offer()

    def connect(self, dev: XenbusDevice) -> None:
        """``connect_ring``: read the frontend's keys, map rings, bind ports."""
        self.disconnect(dev)
        fe = dev.otherend
        protocol = self._read(f"{fe}/{B.KEY_PROTOCOL}")
        if protocol is not None and protocol != B.XEN_IO_PROTO_ABI_X86_64:
            raise ValueError(f"protocol {protocol!r} not supported")
        persistent = self._uint(f"{fe}/{B.KEY_FEATURE_PERSISTENT}", 1, default=0)
        nq = self._uint(f"{fe}/{B.KEY_MULTI_QUEUE_NUM_QUEUES}", self.config.max_queues, 1)
        order = self._uint(f"{fe}/{B.KEY_RING_PAGE_ORDER}", self.config.max_ring_page_order, 0)
        if nq < 1:
            raise ValueError("multi-queue-num-queues 0")
        self.persistent = bool(persistent) and self.config.persistent
        self._gnttab = self.hv.open_gnttab()
        self._evtchn = self.hv.open_evtchn()
        self._grants = GrantAccess(self._gnttab, dev.otherend_id, self.persistent)
        for q in range(nq):
            self._connect_queue(dev, fe if nq == 1 else f"{fe}/queue-{q}", order)
        self.reactor.register(self._evtchn.fd(), self._on_event)
        log.info("%s: connected, %d queue(s), persistent %s", self.nodename, nq, self.persistent)

    def _connect_queue(self, dev: XenbusDevice, qdir: str, order: int) -> None:
        assert self._gnttab is not None and self._evtchn is not None and self._grants
        if order == 0:
            refs = [self._uint(f"{qdir}/{B.KEY_RING_REF}", 0xFFFFFFFF)]
        else:
            keys = [f"{qdir}/{B.KEY_RING_REF}{i}" for i in range(1 << order)]
            refs = [self._uint(k, 0xFFFFFFFF) for k in keys]
        remote_port = self._uint(f"{qdir}/{B.KEY_EVENT_CHANNEL}", 0x7FFFFFFF)
        mapping = self._gnttab.map_grant_refs(dev.otherend_id, refs, True)
        self._rings.append(mapping)
        port = self._evtchn.bind_interdomain(dev.otherend_id, remote_port)
        evtchn = self._evtchn

        def notify() -> None:
            evtchn.notify(port)

        queue = BlkifQueue(mapping.memory, self.disk, self._grants, self.limits, notify,
                           self.engine, self.reactor.call_soon)  # fmt: skip
        self.queues.append(queue)
        self.queue_of_port[port] = queue

    def disconnect(self, dev: XenbusDevice) -> None:
        if self.queues:
            log.info("%s: disconnecting", self.nodename)
        for queue in self.queues:
            queue.close()  # running requests first: they use the mapped pages
        if self._evtchn is not None:
            self.reactor.unregister(self._evtchn.fd())
            self._evtchn.close()  # unbinds every port
            self._evtchn = None
        if self._grants is not None:
            self._grants.close()
            self._grants = None
        for mapping in self._rings:
            mapping.unmap()
        self._rings.clear()
        if self._gnttab is not None:
            self._gnttab.close()
            self._gnttab = None
        self.queues.clear()
        self.queue_of_port.clear()

    def remove(self, dev: XenbusDevice) -> None:
        self.disconnect(dev)

    # --- data plane -----------------------------------------------------------------
    def _on_event(self) -> None:
        evtchn = self._evtchn
        for _ in range(64):  # a kick storm is bounded per round
            if evtchn is None or (port := evtchn.pending()) is None:
                return
            queue = self.queue_of_port.get(port)
            try:
                if queue is not None:
                    queue.service()
            except RingProducerOverflow as exc:
                log.warning("%s: %s", self.dev.nodename, exc)
                self.dev.fatal(errno.EPROTO, f"ring overflow: {exc}")
                return
            evtchn.unmask(port)

    # --- XenStore reads -------------------------------------------------------------
    def _read(self, path: str) -> str | None:
        try:
            return self.dev.xs.read(path).decode("ascii", "replace")
        except XenstoreError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise

    def _uint(self, path: str, maximum: int, default: int | None = None) -> int:
        text = self._read(path)
        if text is None:
            if default is None:
                raise ValueError(f"{path} missing")
            return default
        return parse_uint(text, path, maximum)

    def close(self) -> None:
        self.disconnect(self.dev)
        self.dev.unwatch()
        self.disk.close()


class BlkifBackendRunner:
    """Many vbd backends of this domain on one reactor (thread)."""

    def __init__(self, hv: Hypervisor, *, workers: int = 8) -> None:
        assert hv.store is not None, "blkback needs XenStore"
        self.hv = hv
        self.engine = BlkifEngine(workers)
        self.reactor = Reactor()
        self.store = ReactorStore(hv.store, self.reactor)
        self.reactor.watch_handler = self._on_watch
        self.backends: dict[str, BlkifBackend] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def add(self, nodename: str, image: Path, config: BlkbackConfig | None = None) -> None:
        def add() -> None:
            be = BlkifBackend(self.hv, self.store, self.reactor, nodename, image,
                              config or BlkbackConfig(), self.engine)  # fmt: skip
            self.backends[nodename] = be
            be.start()

        self._on_thread(add)

    def remove(self, nodename: str) -> None:
        def remove() -> None:
            be = self.backends.pop(nodename, None)
            if be is not None:
                be.close()

        self._on_thread(remove)

    def _on_watch(self, path: str, token: str) -> None:
        for be in list(self.backends.values()):
            be.dev.handle_watch_event(path, token)

    def _on_thread(self, fn: object) -> None:
        assert callable(fn)
        if self._thread is None:
            fn()
            return
        done = threading.Event()
        errors: list[BaseException] = []

        def call() -> None:
            try:
                fn()
            except BaseException as exc:
                errors.append(exc)
            finally:
                done.set()

        self.reactor.call_soon(call)
        if not done.wait(30):
            raise TimeoutError("backend thread did not answer")
        if errors:
            raise errors[0]

    def start_thread(self, timeout: float = 0.05) -> None:
        def loop() -> None:
            while not self._stop.is_set():
                self.reactor.run_once(timeout)

        self._thread = threading.Thread(target=loop, name="blkback", daemon=True)
        self._thread.start()

    def close(self) -> None:
        for nodename in list(self.backends):
            self.remove(nodename)
        self._stop.set()
        if self._thread is not None:
            self.reactor.wake()
            self._thread.join(10)
            self._thread = None
        self.engine.close()
        self.reactor.close()
