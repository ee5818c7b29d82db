"""The console driver as an asyncio transport, so code inside the guest gets ordinary
``asyncio.StreamReader`` / ``StreamWriter`` (``readline``, ``readexactly``, ``drain``)
over the port, as it would over a socket.

Flow control is asyncio's own: the reader's buffer above twice its limit pauses reading
(the driver stops re-posting receive buffers, so input waits in the device and then in
the host's pty); the writer's buffer above the high-water mark pauses writing (``drain``
waits) until the device has used the transmit buffers.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol


class PortOwner(Protocol):
    """What the transport needs from the driver."""

    def _tx_write(self, data: bytes) -> None: ...

    @property
    def _tx_backlog(self) -> int: ...

    def _set_reading(self, on: bool) -> None: ...

    def _stream_closed(self) -> None: ...


class ConsoleTransport(asyncio.Transport):
    """An asyncio `Transport` over one console port; created by the driver."""

    def __init__(
        self,
        owner: PortOwner,
        protocol: asyncio.BaseProtocol,
        loop: asyncio.AbstractEventLoop,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(extra)
        self._extra_info: dict[str, Any] = dict(extra or {})
        self._owner = owner
        self._protocol = protocol
        self._loop = loop
        self._closing = False
        self._error: Exception | None = None
        self._reading = True
        self._writing_paused = False
        self._high, self._low = 64 * 1024, 16 * 1024

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra_info.get(name, default)

    def set_extra(self, name: str, value: Any) -> None:
        self._extra_info[name] = value

    # ---------------------------------------------------------------- reading
    def is_reading(self) -> bool:
        return self._reading and not self._closing

    def pause_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._owner._set_reading(False)

    def resume_reading(self) -> None:
        if not self._reading:
            self._reading = True
            self._owner._set_reading(True)

    # ---------------------------------------------------------------- writing
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._error is not None:
            raise ConnectionResetError(str(self._error))
        if self._closing:
            raise RuntimeError("write to a closing console stream")
        if data:
            self._owner._tx_write(bytes(data))
            self.update_flow()

    def can_write_eof(self) -> bool:
        return False  # a console port has no half-close

    def get_write_buffer_size(self) -> int:
        return self._owner._tx_backlog

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        high = 64 * 1024 if high is None else high
        low = high // 4 if low is None else low
        if not 0 <= low <= high:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high, self._low = high, low
        self.update_flow()

    def update_flow(self) -> None:
        """Pause or resume the protocol's writing by the driver's transmit backlog."""
        size = self._owner._tx_backlog
        if not self._writing_paused and size > self._high:
            self._writing_paused = True
            self._protocol.pause_writing()
        elif self._writing_paused and size <= self._low:
            self._writing_paused = False
            self._protocol.resume_writing()
        if self._closing and not size:
            self._owner._stream_closed()

    # ---------------------------------------------------------------- closing
    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Stop accepting writes; the stream ends once what was written is transmitted."""
        if not self._closing:
            self._closing = True
            self.update_flow()

    def abort(self) -> None:
        self._closing = True
        self._owner._stream_closed()

    def connection_lost(self, exc: Exception | None) -> None:
        """Tell the protocol (once, on the loop) that the port is gone."""
        self._closing = True
        self._error = exc
        self._loop.call_soon(self._protocol.connection_lost, exc)
