"""The daemon's per-connection engine: bytes in, packets to the core, replies out.

One code path for sockets and rings (see :mod:`xenvirtio.xenstore.channel`). Each
connection has its own decoder and output queue, so one client's mess stays its own:

- **Batching.** A readable event takes everything the transport has, hands every whole
  packet to the daemon, and writes all replies back with one ``send``.
- **Throttling.** A reply counts as *outstanding* until the transport has taken it (the
  peer is not reading if the socket buffer or the ring is full). At ``outstanding_max``
  (C xenstored's ``-Q outstanding``, default 20) the connection stops taking requests
  until its replies drain; its requests wait in its own socket buffer or ring.
- **Backlog cap.** Watch events are queued whether or not the peer reads. A connection
  whose queued output exceeds ``backlog_max`` bytes is disconnected (a ring is marked
  broken with XENSTORE_ERROR_COMM); nobody else is affected.
- **Broken streams.** A bad header (oversized ``len``) closes a socket; on a ring it
  sets the page's ``error`` field and the ring is ignored until the domain reconnects
  (xenstore-ring.txt), as are impossible ring indices.

Call order from the owner: ``start()`` once, then the loop drives ``_on_event``;
``queue()`` any time; ``close()`` at most once (idempotent).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from xenvirtio.spec.xs_wire import (
    XENSTORE_ERROR_COMM,
    XENSTORE_ERROR_PROTO,
    XENSTORE_PAYLOAD_MAX,
)
from xenvirtio.xenstore.channel import Backend, RingBackend
from xenvirtio.xenstore.ring import RingError
from xenvirtio.xenstore.wire import HEADER, Packet, PacketDecoder, WireError

log = logging.getLogger("xenvirtio.xenstored")

_PARTIAL_MAX = HEADER.size + XENSTORE_PAYLOAD_MAX  # the most a decoder holds between messages


@dataclass(frozen=True)
class Limits:
    """Flow-control limits of one connection."""

    outstanding_max: int = 20
    backlog_max: int = 1 << 20


class ConnectionOwner:
    """What a connection calls back into (the daemon)."""

    def on_packet(self, conn: Connection, packet: Packet) -> None:
        raise NotImplementedError

    def on_closed(self, conn: Connection, reason: str) -> None:
        raise NotImplementedError

    def on_reconnect(self, conn: Connection) -> None:
        raise NotImplementedError


class Connection:
    """One client of the daemon over one backend."""

    def __init__(
        self,
        conn_id: int,
        backend: Backend,
        owner: ConnectionOwner,
        loop: asyncio.AbstractEventLoop,
        limits: Limits,
        domid: int = 0,
    ) -> None:
        self.conn_id = conn_id
        self.domid = domid
        self.backend = backend
        self.closed = False
        self.broken = False  # ring only: ignored until the domain asks to reconnect
        self.close_reason = ""
        self._owner = owner
        self._loop = loop
        self._limits = limits
        self._fd = backend.fileno()
        self._decoder = PacketDecoder()
        self._out = bytearray()
        self._queued = 0  # total bytes ever queued
        self._sent = 0  # total bytes ever taken by the transport
        self._reply_ends: deque[int] = deque()  # _queued value at the end of each reply
        self._reading = False
        self._writing = False
        self._in_event = False
        self._flush_pending = False

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self._set_reading(True)
        if self.backend.is_ring:
            self._loop.call_soon(self._on_event)  # requests queued before we attached

    def close(self, reason: str) -> None:
        """Stop serving; the owner hears about it through ``on_closed``."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self._set_reading(False)
        self._set_writing(False)
        self.backend.close()
        self._out.clear()
        self._owner.on_closed(self, reason)

    @property
    def outstanding(self) -> int:
        return len(self._reply_ends)

    @property
    def backlog(self) -> int:
        return len(self._out)

    # --- output ----------------------------------------------------------------------

    def queue(self, data: bytes, reply: bool) -> None:
        """Queue an encoded packet; it goes out at the end of the current event."""
        if self.closed or self.broken:
            return
        self._out += data
        self._queued += len(data)
        if reply:
            self._reply_ends.append(self._queued)
        if len(self._out) > self._limits.backlog_max:
            self._fail("output backlog over limit (peer not reading)", XENSTORE_ERROR_COMM)
        elif not self._in_event and not self._flush_pending:
            self._flush_pending = True
            self._loop.call_soon(self._deferred_flush)

    def _deferred_flush(self) -> None:
        self._flush_pending = False
        if not self.closed and not self.broken:
            self._guarded(self._flush_and_kick)

    def _flush_and_kick(self) -> None:
        self._flush()
        self.backend.kick()

    def _flush(self) -> None:
        """Hand the transport as much queued output as it takes."""
        out = self._out
        if out:
            n = self.backend.send(out)
            if n:
                del out[:n]
                self._sent += n
                ends = self._reply_ends
                while ends and ends[0] <= self._sent:
                    ends.popleft()
        if not self.backend.is_ring:
            self._set_writing(bool(out))

    # --- input -----------------------------------------------------------------------

    def _on_event(self) -> None:
        if self.closed:
            return
        self._in_event = True
        try:
            self._guarded(self._service)
        finally:
            self._in_event = False
        if not self.closed and not self.broken:
            self._guarded(self.backend.kick)

    def _guarded(self, step: Callable[[], None]) -> None:
        """Run an I/O step; whatever goes wrong ends this connection, never the daemon."""
        try:
            step()
        except EOFError as exc:
            self.close(f"peer gone: {exc}")
        except RingError as exc:
            self._fail(f"ring: {exc}", exc.code)
        except Exception as exc:
            log.exception("connection %d: internal error", self.conn_id)
            self._fail(f"internal error: {exc!r}", XENSTORE_ERROR_COMM)

    def _service(self) -> None:
        backend = self.backend
        if backend.is_ring and self._ring_reconnect():
            return
        if self.broken:
            self._ack()  # a broken ring only listens for a reconnect request
            return
        self._flush()
        # Read more only when the quota allows and what was read before is consumed down
        # to one partial message: a slow reader cannot make the input buffer grow.
        if (
            self.outstanding < self._limits.outstanding_max
            and self._decoder.buffered <= _PARTIAL_MAX
        ):
            data = backend.recv()
            if data:
                self._decoder.feed(data)
        else:
            self._ack()  # throttled: leave the requests in the ring, but take the kick
        self._process()
        if not self.closed and not self.broken:
            self._flush()
            if backend.is_ring:
                self._set_reading(True)  # the kick fd also signals freed rsp space
            else:
                self._set_reading(self.outstanding < self._limits.outstanding_max)

    def _process(self) -> None:
        """Hand whole packets to the owner while the outstanding quota allows."""
        limit = self._limits.outstanding_max
        decoder = self._decoder
        owner = self._owner
        while not self.closed and not self.broken:
            if len(self._reply_ends) >= limit:
                self._flush()  # maybe the transport takes them right now
                if len(self._reply_ends) >= limit:
                    return
            try:
                packet = decoder.next_packet()
            except WireError as exc:
                self._fail(f"bad packet: {exc}", XENSTORE_ERROR_PROTO)
                return
            if packet is None:
                return
            owner.on_packet(self, packet)

    def _ring_reconnect(self) -> bool:
        """xenstore-ring.txt: the domain set ``connection = XENSTORE_RECONNECT``."""
        assert isinstance(self.backend, RingBackend)
        ring = self.backend.ring
        if not ring.reconnect_requested():
            return False
        self.backend.channel.ack()
        self._reset_state()
        self.broken = False
        self._owner.on_reconnect(self)
        ring.reset()
        self.backend.force_kick()
        return True

    def _ack(self) -> None:
        if isinstance(self.backend, RingBackend):
            self.backend.channel.ack()

    def _reset_state(self) -> None:
        self._decoder = PacketDecoder()
        self._out.clear()
        self._reply_ends.clear()
        self._queued = self._sent = 0

    def _fail(self, reason: str, ring_error: int) -> None:
        """The stream is untrustworthy: close a socket, mark a ring broken."""
        if isinstance(self.backend, RingBackend) and not self.closed:
            self.broken = True
            self.close_reason = reason
            self._reset_state()
            self.backend.ring.set_error(ring_error)
            self.backend.force_kick()
            self._owner.on_reconnect(self)  # forget transactions and watches now
            return
        self.close(reason)

    # --- loop registration -----------------------------------------------------------

    def _set_reading(self, on: bool) -> None:
        if on == self._reading or (on and self.closed):
            return
        self._reading = on
        if on:
            self._loop.add_reader(self._fd, self._on_event)
        else:
            self._loop.remove_reader(self._fd)

    def _set_writing(self, on: bool) -> None:
        if on == self._writing or (on and self.closed):
            return
        self._writing = on
        if on:
            self._loop.add_writer(self._fd, self._on_event)
        else:
            self._loop.remove_writer(self._fd)
