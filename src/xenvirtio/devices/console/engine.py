"""The I/O edge of virtio-console: port 0 exposed on the host as a pseudo-terminal.

`PtyPort` opens a pty pair, keeps both ends, and publishes the slave's path (what
xenconsoled writes to XenStore as ``tty``): users open that path (``xenvirtio console``,
``screen``, ``minicom``) and talk to the guest. Bytes written into the pty come out of
the master, which the port reads into the device's receive path; what the guest
transmits is written to the master and read from the pty by the user. The slave is in
raw mode (no echo, no line editing, no CR/LF translation) and stays open here, so the
master never sees a hang-up when users come and go.

Flow control: the master is read only while the device has input space; guest output
waits in a bounded backlog (``output_limit``) while nobody drains the pty, and the
device holds transmit buffers beyond it. The pty's window size is the console size:
set by users (TIOCSWINSZ on their end) and picked up on the next input or poll, or set
here with `resize`.

Runs on an asyncio loop, the device's thread: call everything from that loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import struct
import termios
import tty

from xenvirtio.devices.console.device import VirtioConsoleDevice

log = logging.getLogger(__name__)

READ_CHUNK = 4096
WRITE_CHUNK = 16384
_WINSIZE = struct.Struct("HHHH")  # struct winsize: ws_row, ws_col, ws_xpixel, ws_ypixel


def get_winsize(fd: int) -> tuple[int, int]:
    """``(cols, rows)`` of the terminal ``fd``."""
    rows, cols, _, _ = _WINSIZE.unpack(fcntl.ioctl(fd, termios.TIOCGWINSZ, bytes(8)))
    return cols, rows


def set_winsize(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, _WINSIZE.pack(rows, cols, 0, 0))


class PtyPort:
    """Port 0 of ``device`` on a new pty. Implements the device's `PortBackend`.

    ``size_poll``: seconds between window-size checks (None: only on input)."""

    def __init__(
        self,
        device: VirtioConsoleDevice,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        output_limit: int = 64 * 1024,
        size_poll: float | None = 0.25,
    ) -> None:
        self._device = device
        self._loop = loop or asyncio.get_running_loop()
        self._output_limit = output_limit
        self._size_poll = size_poll
        self._out = bytearray()
        self._held = b""  # input read but not taken (never, while the device keeps its word)
        self._reading = self._writing = self._throttled = False
        self._poll: asyncio.TimerHandle | None = None
        self.master, self.slave = os.openpty()
        try:
            self.path = os.ttyname(self.slave)
            tty.setraw(self.slave)
            os.set_blocking(self.master, False)
            set_winsize(self.master, *device.size)
        except BaseException:
            self._close_fds()
            raise
        self._size = device.size
        self.closed = False
        device.connect(self)
        self._start_reading()
        self._schedule_poll()

    # ------------------------------------------------------------ PortBackend
    def send(self, data: bytes) -> None:
        if self.closed:
            return
        self._out += data
        if len(self._out) >= self._output_limit:
            self._throttled = True
        self._flush()

    @property
    def send_blocked(self) -> bool:
        return self.closed or len(self._out) >= self._output_limit

    def input_space_available(self) -> None:
        if self.closed or not self._device.input_space:
            return
        if self._held:
            self._held = self._held[self._device.receive(self._held) :]
        if not self._held:
            self._start_reading()

    # ------------------------------------------------------------ guest output
    def _flush(self) -> None:
        while self._out:
            try:
                n = os.write(self.master, memoryview(self._out)[:WRITE_CHUNK])
            except BlockingIOError:
                break
            except OSError as err:  # the pty went away under us: keep the backlog
                log.warning("virtio-console: writing %s failed: %s", self.path, err)
                break
            del self._out[:n]
        want = bool(self._out)
        if want != self._writing:
            if want:
                self._loop.add_writer(self.master, self._on_writable)
            else:
                self._loop.remove_writer(self.master)
            self._writing = want

    def _on_writable(self) -> None:
        self._flush()
        if self._throttled and len(self._out) <= self._output_limit // 2:
            self._throttled = False
            self._device.resume_transmit()

    @property
    def output_pending(self) -> int:
        """Guest output bytes not yet written into the pty."""
        return len(self._out)

    # ------------------------------------------------------------ host input
    def _start_reading(self) -> None:
        if not self._reading:
            self._loop.add_reader(self.master, self._on_readable)
            self._reading = True

    def _stop_reading(self) -> None:
        if self._reading:
            self._loop.remove_reader(self.master)
            self._reading = False

    def _on_readable(self) -> None:
        space = self._device.input_space
        if not space:
            self._stop_reading()  # the pty buffers, then the writer blocks: no loss
            return
        try:
            data = os.read(self.master, min(space, READ_CHUNK))
        except BlockingIOError:
            return
        except OSError as err:
            if err.errno != errno.EIO:
                log.warning("virtio-console: reading %s failed: %s", self.path, err)
            self._stop_reading()
            return
        taken = self._device.receive(data)
        if taken < len(data):  # keep the rest: offered again when there is space
            self._held = data[taken:]
            self._stop_reading()
        self.check_size()

    # ------------------------------------------------------------ window size
    def check_size(self) -> bool:
        """Pick up a window size users set on the pty; returns whether it changed."""
        if self.closed:
            return False
        size = get_winsize(self.master)
        if size == self._size:
            return False
        self._size = size
        self._device.resize(*size)
        return True

    def resize(self, cols: int, rows: int) -> None:
        """Set the console size from the host side (users of the pty see it too)."""
        set_winsize(self.master, cols, rows)
        self.check_size()

    def _schedule_poll(self) -> None:
        if self._size_poll is not None and not self.closed:
            self._poll = self._loop.call_later(self._size_poll, self._poll_size)

    def _poll_size(self) -> None:
        self.check_size()
        self._schedule_poll()

    # ------------------------------------------------------------ teardown
    def close(self) -> None:
        """Stop serving and close the pty (users see a hang-up); unsent output is lost."""
        if self.closed:
            return
        self.closed = True
        self._stop_reading()
        if self._writing:
            self._loop.remove_writer(self.master)
            self._writing = False
        if self._poll is not None:
            self._poll.cancel()
        self._device.disconnect()
        self._close_fds()

    def _close_fds(self) -> None:
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> PtyPort:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
