"""The XenStore daemon: an asyncio loop around :class:`~xenvirtio.xenstore.core.XenstoreCore`.

- A unix-socket listener; every socket client is a dom0 (privileged) connection, as with
  C xenstored's ``$XENSTORED_PATH`` socket.
- Domain rings: the core's :class:`IntroduceDomain` effect asks the injected
  :data:`~xenvirtio.xenstore.channel.DomainConnector` for the daemon's end of the domain's
  ring and attaches it as a connection of that domain; :class:`ReleaseDomain` detaches it.
  Without a connector, XS_INTRODUCE only records the domain in the store.
- Effects are carried out in the order the core returned them; a :class:`Send` to a
  connection that is gone is dropped.
- ``stop()`` (SIGTERM/SIGINT in :meth:`XenstoreDaemon.run`) closes every connection and
  removes the socket and pid files.

The socket appears only once the daemon accepts connections (bound under a temporary name,
then renamed), so "the socket exists" means "the daemon is ready".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import stat
from dataclasses import dataclass

from xenvirtio.spec.xs_wire import XsdSockmsgType
from xenvirtio.xenstore.channel import (
    RECV_SIZE,
    DomainConnector,
    RingBackend,
    SocketBackend,
)
from xenvirtio.xenstore.connection import Connection, ConnectionOwner, Limits
from xenvirtio.xenstore.core import XenstoreCore
from xenvirtio.xenstore.effects import (
    CloseConnection,
    Effect,
    IntroduceDomain,
    ReleaseDomain,
    Send,
)
from xenvirtio.xenstore.ring import Role
from xenvirtio.xenstore.wire import HEADER, Packet

log = logging.getLogger("xenvirtio.xenstored")

_WATCH_EVENT = int(XsdSockmsgType.XS_WATCH_EVENT)
_pack_header = HEADER.pack
_ACCEPT_BATCH = 64
_ACCEPT_BACKOFF = 0.1


@dataclass
class DaemonStats:
    """Counters the tests and the benchmark read."""

    accepted: int = 0
    closed: int = 0
    packets: int = 0
    rings_attached: int = 0


class XenstoreDaemon(ConnectionOwner):
    """Serves one :class:`XenstoreCore` to socket clients and domain rings."""

    def __init__(
        self,
        core: XenstoreCore | None = None,
        connector: DomainConnector | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.core = core or XenstoreCore()
        self.connector = connector
        self.limits = limits or Limits(outstanding_max=self.core.quota.outstanding_per_conn)
        self.stats = DaemonStats()
        self.connections: dict[int, Connection] = {}
        self.domains: dict[int, Connection] = {}  # domid -> its ring connection
        self._next_conn_id = 1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: socket.socket | None = None
        self._socket_path: str | None = None
        self._pid_file: str | None = None
        self._stopped: asyncio.Event | None = None
        self._scratch = bytearray(RECV_SIZE)  # shared by all sockets: read one at a time

    # --- lifecycle -------------------------------------------------------------------

    async def start(self, socket_path: str, pid_file: str | None = None) -> None:
        """Listen on ``socket_path`` (replacing a stale socket) and write ``pid_file``."""
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        if pid_file:  # before the socket appears: "socket exists" means fully started
            _write_atomically(pid_file, f"{os.getpid()}\n")
            self._pid_file = pid_file
        try:
            self._listener = _listen_unix(socket_path)
        except BaseException:
            if pid_file:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(pid_file)
            raise
        self._socket_path = socket_path
        self._loop.add_reader(self._listener.fileno(), self._accept)
        log.info("listening on %s (pid %d)", socket_path, os.getpid())

    def stop(self) -> None:
        """Close the listener and every connection; remove the socket and pid files."""
        if self._stopped is None or self._stopped.is_set():
            return
        if self._listener is not None and self._loop is not None:
            self._loop.remove_reader(self._listener.fileno())
            self._listener.close()
            self._listener = None
        for path in (self._socket_path, self._pid_file):
            if path:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        for conn in list(self.connections.values()):
            conn.close("daemon stopping")
        self._stopped.set()
        log.info("stopped")

    async def wait_stopped(self) -> None:
        assert self._stopped is not None, "start() first"
        await self._stopped.wait()

    async def run(self, socket_path: str, pid_file: str | None = None) -> None:
        """Serve until SIGTERM or SIGINT, then stop cleanly."""
        loop = asyncio.get_running_loop()
        stop_requested = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):  # before the socket exists
            loop.add_signal_handler(signum, stop_requested.set)
        try:
            await self.start(socket_path, pid_file)
            if stop_requested.is_set():
                self.stop()
            waiter = asyncio.ensure_future(stop_requested.wait())
            await asyncio.wait(
                [waiter, asyncio.ensure_future(self.wait_stopped())],
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
            self.stop()

    # --- connections -----------------------------------------------------------------

    def _accept(self) -> None:
        assert self._listener is not None and self._loop is not None
        for _ in range(_ACCEPT_BATCH):
            try:
                sock, _addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: pause accepting, keep serving
                log.warning("accept failed: %s; pausing accepts for %.1fs", exc, _ACCEPT_BACKOFF)
                self._loop.remove_reader(self._listener.fileno())
                self._loop.call_later(_ACCEPT_BACKOFF, self._resume_accepting)
                return
            self.stats.accepted += 1
            self._add(SocketBackend(sock, scratch=self._scratch), domid=0)

    def _resume_accepting(self) -> None:
        if self._listener is not None and self._loop is not None:
            self._loop.add_reader(self._listener.fileno(), self._accept)

    def _add(self, backend: SocketBackend | RingBackend, domid: int) -> Connection:
        assert self._loop is not None
        conn_id = self._next_conn_id
        self._next_conn_id += 1
        conn = Connection(conn_id, backend, self, self._loop, self.limits, domid)
        self.connections[conn_id] = conn
        self.core.connect(conn_id, domid)
        conn.start()
        return conn

    def on_packet(self, conn: Connection, packet: Packet) -> None:
        self.stats.packets += 1
        conns = self.connections
        for effect in self.core.handle(conn.conn_id, packet):
            if type(effect) is Send:
                target = conns.get(effect.conn_id)
                if target is not None:
                    out = effect.packet
                    payload = out.payload  # Packet.encode, inlined on the hot path
                    data = _pack_header(out.type, out.req_id, out.tx_id, len(payload)) + payload
                    target.queue(data, out.type != _WATCH_EVENT)
            else:
                self._apply(effect)
        if self.core.messages:
            while self.core.messages:
                log.warning("core: %s", self.core.messages.popleft())

    def apply(self, effects: list[Effect]) -> None:
        """Carry out effects that did not come from ``on_packet``."""
        for effect in effects:
            self._apply(effect)

    def _apply(self, effect: Effect) -> None:
        if isinstance(effect, Send):
            target = self.connections.get(effect.conn_id)
            if target is not None:
                out = effect.packet
                target.queue(out.encode(), out.type != _WATCH_EVENT)
        elif isinstance(effect, CloseConnection):
            conn = self.connections.pop(effect.conn_id, None)
            if conn is not None:
                conn.close(effect.reason)
        elif isinstance(effect, IntroduceDomain):
            self._attach(effect)
        elif isinstance(effect, ReleaseDomain):
            self._detach(effect.domid)

    def on_closed(self, conn: Connection, reason: str) -> None:
        self.stats.closed += 1
        if self.domains.get(conn.domid) is conn:
            del self.domains[conn.domid]
        if self.connections.pop(conn.conn_id, None) is not None:
            log.debug("connection %d closed: %s", conn.conn_id, reason)
            self.apply(self.core.disconnect(conn.conn_id))

    def on_reconnect(self, conn: Connection) -> None:
        """A ring reset (or broke): drop its transactions and watches, keep the domain."""
        effects = self.core.disconnect(conn.conn_id)
        self.core.connect(conn.conn_id, conn.domid)
        self.apply(effects)

    # --- domains ---------------------------------------------------------------------

    def domain_shutdown(self, domid: int) -> None:
        """The hypervisor reports a domain shut down (VIRQ_DOM_EXC): @releaseDomain."""
        self.apply(self.core.domain_shutdown(domid))

    def domain_destroyed(self, domid: int) -> None:
        """The hypervisor reports a domain gone: release it as XS_RELEASE would."""
        self.apply(self.core.domain_destroyed(domid))

    def _attach(self, intro: IntroduceDomain) -> None:
        if self.connector is None:
            return
        old = self.domains.get(intro.domid)
        if old is not None:
            old.close("domain reintroduced")
        try:
            channel = self.connector(intro.domid, intro.gfn, intro.port)
        except Exception as exc:  # the hypervisor refused: the domain stays unconnected
            log.warning("cannot attach ring of domain %d: %s", intro.domid, exc)
            return
        backend = RingBackend(channel, Role.SERVER)
        backend.ring.start()
        self.domains[intro.domid] = self._add(backend, domid=intro.domid)
        self.stats.rings_attached += 1

    def _detach(self, domid: int) -> None:
        """The core already forgot the domain's connection: just close the ring."""
        conn = self.domains.pop(domid, None)
        if conn is not None:
            self.connections.pop(conn.conn_id, None)
            conn.close("domain released")


def _listen_unix(path: str) -> socket.socket:
    """Bind under a temporary name, listen, then rename into place (ready == exists)."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    tmp = f"{path}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(tmp)
        os.chmod(tmp, 0o600)
        sock.listen(512)
        sock.setblocking(False)
        os.rename(tmp, path)
    except BaseException:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return sock


def _write_atomically(path: str, text: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)
