"""A blkif frontend that puts whatever a test writes on its ring: malformed requests,
barriers in a batch, a producer index past the ring.

`RawBlkfront` acts as domain ``domid`` (``attach_guest``), runs the XenBus handshake
like blkfront (one queue, ``ring-page-order`` 0, ``feature-persistent`` as asked) with
`DATA_PAGES` pages granted to the backend for the whole connection, and then does
nothing on its own: every ring entry is the test's bytes (only the ``id`` is set, so
responses can be matched). Synchronous; the reactor is pumped while waiting.

    with RawBlkfront(run_dir, dom0, runner, image) as raw:
        rsp = raw.request(encode_rw(BLKIF_OP_READ, 0, 0, [Segment(raw.pages[0].gref, 0, 7)]))
"""

from __future__ import annotations

import contextlib
import struct
import time
from collections.abc import Callable
from pathlib import Path

from xenvirtio.devices.blkif.backend import BlkbackConfig, BlkifBackendRunner
from xenvirtio.drivers.blkif.pages import DataPage, DataPages
from xenvirtio.drivers.blkif.rings import FrontQueue
from xenvirtio.hv.api import Hypervisor
from xenvirtio.hv.emu.guest import EmuGuest, attach_guest
from xenvirtio.hv.xenbus.client import gather, scatter
from xenvirtio.hv.xenbus.device import XenbusDevice, XenbusDriver
from xenvirtio.hv.xenbus.paths import BackendPath, FrontendPath
from xenvirtio.hv.xenbus.state import Role
from xenvirtio.hv.xenbus.toolstack import create_device, remove_device
from xenvirtio.hv.xenbus.values import parse_uint
from xenvirtio.pvring.blkif.request import Response
from xenvirtio.pvring.ring import REQ_PROD_OFF
from xenvirtio.spec import blkif as B
from xenvirtio.spec.xenbus_state import XenbusState
from xenvirtio.transport.xenbus.reactor import Reactor
from xenvirtio.transport.xenbus.store import ReactorStore

DATA_PAGES = 8
_ID = struct.Struct("<Q")  # blkif_request.id at byte 8, in every layout


class RawBlkfront(XenbusDriver):
    """A domain with one vbd served by ``runner`` from ``image``; see the module doc."""

    def __init__(
        self, run_dir: Path, dom0: Hypervisor, runner: BlkifBackendRunner, image: Path, *,
        devid: int = 0, persistent: bool = True, back: BlkbackConfig | None = None,
    ) -> None:  # fmt: skip
        assert dom0.store is not None
        self.dom0, self.runner, self.persistent = dom0, runner, persistent
        self.domid = dom0.domctl.create(16, name=f"blkif-raw-{id(self):x}")
        self.backend: BackendPath | None = None
        self.guest: EmuGuest | None = None
        self.queue: FrontQueue | None = None
        self.responses: list[Response] = []
        self.sectors = 0
        self._ids = iter(range(1, 1 << 63))
        self.reactor = Reactor()
        try:
            _, self.backend = create_device(dom0.store, 0, self.domid, "vbd", devid)
            runner.add(str(self.backend), image, back)
            self.guest = attach_guest(run_dir, self.domid)
            self._connect(devid)
        except BaseException:
            self.close()
            raise

    def _connect(self, devid: int, timeout: float = 10.0) -> None:
        assert self.guest is not None and self.guest.hypervisor.store is not None
        self.xs = ReactorStore(self.guest.hypervisor.store, self.reactor)
        nodename = str(FrontendPath(self.domid, "vbd", devid))
        self.dev = XenbusDevice.probe(self.xs, Role.FRONTEND, nodename, self)
        self.reactor.watch_handler = self._on_watch
        self.data = DataPages(self.guest, self.dev.otherend_id, DATA_PAGES)
        self.data.make_persistent()
        self.pages: list[DataPage] = list(self.data.pages)
        self.dev.watch()
        self.dev.switch_state(XenbusState.INITIALISING)
        self.pump_until(lambda: self.dev.state is XenbusState.CONNECTED, timeout)

    def _on_watch(self, path: str, token: str) -> None:
        self.dev.handle_watch_event(path, token)

    # --- XenbusDriver hooks: blkfront's handshake, minimal ---------------------------
    def setup(self, dev: XenbusDevice) -> None:
        assert self.guest is not None
        self.queue = FrontQueue(self.guest, dev.otherend_id, 0, self.reactor)
        self.queue.on_responses = lambda q: self.responses.extend(q.take_responses())
        keys: dict[str, str | int | bytes] = {
            B.KEY_PROTOCOL: B.XEN_IO_PROTO_ABI_NATIVE,
            B.KEY_FEATURE_PERSISTENT: int(self.persistent),
            **self.queue.keys(),
        }
        scatter(self.xs, dev.nodename, keys)

    def connect(self, dev: XenbusDevice) -> None:
        sectors = gather(self.xs, dev.otherend, B.KEY_SECTORS)[B.KEY_SECTORS]
        self.sectors = parse_uint(sectors, B.KEY_SECTORS)

    # --- the ring -------------------------------------------------------------------
    def pump_until(self, done: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError("the backend did not answer")
            self.reactor.run_once(0.02)

    def put(self, entry: bytes) -> int:
        """Put ``entry`` (any bytes, its id replaced by a fresh one) without pushing."""
        assert self.queue is not None
        rid = next(self._ids)
        self.queue.ring.put_request(entry[:8] + _ID.pack(rid) + entry[16 : B.REQUEST_SIZE])
        return rid

    def push(self) -> None:
        assert self.queue is not None
        if self.queue.ring.push_requests_and_check_notify():
            self.queue.kick()

    def wait(self, rids: list[int], timeout: float = 10.0) -> list[Response]:
        """The responses to ``rids``, in the order the backend answered them."""
        want = set(rids)
        self.pump_until(lambda: want <= {r.id for r in self.responses}, timeout)
        got = [r for r in self.responses if r.id in want]
        self.responses = [r for r in self.responses if r.id not in want]
        return got

    def request(self, entry: bytes, timeout: float = 10.0) -> Response:
        rid = self.put(entry)
        self.push()
        return self.wait([rid], timeout)[0]

    def overflow(self, by: int = 5) -> None:
        """Publish a ``req_prod`` ``by`` entries past what the ring can hold, and kick."""
        assert self.queue is not None
        ring = self.queue.ring
        rsp_prod = ring.sring_indices[2]
        struct.pack_into("<I", ring.buf, REQ_PROD_OFF, (rsp_prod + ring.nr_ents + by) & 0xFFFFFFFF)
        self.queue.kick()

    def close(self) -> None:
        if self.backend is not None:
            with contextlib.suppress(Exception):
                self.runner.remove(str(self.backend))
        if self.queue is not None:
            self.queue.close()
        if getattr(self, "dev", None) is not None:
            self.dev.unwatch()
        self.reactor.close()
        if self.guest is not None:
            self.guest.close()
        assert self.dom0.store is not None
        if self.backend is not None:
            with contextlib.suppress(OSError):
                remove_device(self.dom0.store, self.backend)
        with contextlib.suppress(OSError):
            self.dom0.domctl.destroy(self.domid)

    def __enter__(self) -> RawBlkfront:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
