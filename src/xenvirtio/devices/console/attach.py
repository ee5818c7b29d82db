"""Attach a terminal to a console pty, as ``xl console`` does: raw mode on the user's
terminal, bytes copied both ways, detach on Ctrl-] (0x1d), the terminal restored.

    reason = attach("/dev/pts/7")          # stdin/stdout, blocks until detached
    reason = await ConsoleAttach(path, stdin=fd, stdout=fd).run()

Detaches on the escape byte (bytes typed before it in the same read still go to the
console), on end of input, or when the console hangs up (its pty was closed). The
user's window size is copied to the console pty at attach time and on SIGWINCH (when
running in the main thread), so the device's configuration follows the terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import termios
import threading
import tty
from collections.abc import Callable, Iterator
from enum import Enum

from xenvirtio.devices.console.engine import get_winsize, set_winsize

ESCAPE = 0x1D  # Ctrl-], xl console's escape character
_CHUNK = 4096
_BUFFER_LIMIT = 64 * 1024


class DetachReason(Enum):
    ESCAPE = "escape"  # the user typed the escape character
    EOF = "eof"  # the user's input ended
    HANGUP = "hangup"  # the console pty went away


class _Pump:
    """Copies ``src`` to ``dst`` (non-blocking fds) on a loop, at most ``_BUFFER_LIMIT``
    bytes buffered: a slow ``dst`` stops the reads from ``src``."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        src: int,
        dst: int,
        on_data: Callable[[bytes], tuple[bytes, DetachReason | None]],
        on_end: Callable[[DetachReason], None],
        end_reason: DetachReason,
    ) -> None:
        self._loop, self._src, self._dst = loop, src, dst
        self._on_data, self._on_end, self._end_reason = on_data, on_end, end_reason
        self._buf = bytearray()
        self._reading = self._writing = False
        self._set_reading(True)

    def _set_reading(self, on: bool) -> None:
        if on != self._reading:
            if on:
                self._loop.add_reader(self._src, self._readable)
            else:
                self._loop.remove_reader(self._src)
            self._reading = on

    def _readable(self) -> None:
        try:
            data = os.read(self._src, _CHUNK)
        except BlockingIOError:
            return
        except OSError as err:  # EIO: the other end of a pty closed
            self._set_reading(False)
            self._on_end(self._end_reason if err.errno == errno.EIO else DetachReason.HANGUP)
            return
        if not data:
            self._set_reading(False)
            self._on_end(self._end_reason)
            return
        forward, stop = self._on_data(data)
        self._buf += forward
        self.flush()
        if stop is not None:
            self._set_reading(False)
            self._on_end(stop)
        elif len(self._buf) >= _BUFFER_LIMIT:
            self._set_reading(False)

    def flush(self) -> None:
        while self._buf:
            try:
                n = os.write(self._dst, memoryview(self._buf)[:_CHUNK])
            except BlockingIOError:
                break
            except OSError:
                self._buf.clear()  # the destination is gone; nothing more to do
                break
            del self._buf[:n]
        want = bool(self._buf)
        if want != self._writing:
            if want:
                self._loop.add_writer(self._dst, self.flush)
            else:
                self._loop.remove_writer(self._dst)
            self._writing = want

    def close(self) -> None:
        self._set_reading(False)
        if self._writing:
            self._loop.remove_writer(self._dst)
            self._writing = False


class ConsoleAttach:
    """One attachment of a terminal (``stdin``/``stdout`` fds) to the console pty at
    ``path``. ``ready`` is set once the terminal is raw and bytes flow."""

    def __init__(self, path: str, *, stdin: int = 0, stdout: int = 1, escape: int = ESCAPE) -> None:
        if not 0 <= escape <= 0xFF:
            raise ValueError("escape must be a byte value")
        self.path = path
        self.stdin, self.stdout = stdin, stdout
        self.escape = escape
        self.ready = asyncio.Event()
        self._console = -1

    def _user_input(self, data: bytes) -> tuple[bytes, DetachReason | None]:
        cut = data.find(self.escape)
        if cut < 0:
            return data, None
        return data[:cut], DetachReason.ESCAPE

    @staticmethod
    def _console_output(data: bytes) -> tuple[bytes, DetachReason | None]:
        return data, None

    def sync_size(self) -> tuple[int, int] | None:
        """Copy the user's window size to the console pty; returns it (None when the
        user's side is not a terminal)."""
        for fd in (self.stdout, self.stdin):
            if self._console >= 0 and os.isatty(fd):
                size = get_winsize(fd)
                set_winsize(self._console, *size)
                return size
        return None

    async def run(self) -> DetachReason:
        """Copy bytes both ways until detached; the terminal is restored whatever
        happens."""
        loop = asyncio.get_running_loop()
        flags = os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC
        self._console = os.open(self.path, flags)
        with contextlib.ExitStack() as restore:
            restore.callback(self._close_console)
            restore.enter_context(_raw_terminal(self.stdin))
            tty.setraw(self._console)
            for fd in {self.stdin, self.stdout}:
                restore.enter_context(_non_blocking(fd))
            done: asyncio.Future[DetachReason] = loop.create_future()

            def end(reason: DetachReason) -> None:
                if not done.done():
                    done.set_result(reason)

            user = _Pump(loop, self.stdin, self._console, self._user_input, end, DetachReason.EOF)
            restore.callback(user.close)
            restore.callback(user.flush)  # what was typed before the escape still goes
            cons = _Pump(
                loop, self._console, self.stdout, self._console_output, end, DetachReason.HANGUP
            )
            restore.callback(cons.close)
            self.sync_size()
            restore.enter_context(_on_sigwinch(loop, self.sync_size))
            self.ready.set()
            return await done
        raise AssertionError("unreachable")  # pragma: no cover

    def _close_console(self) -> None:
        if self._console >= 0:
            os.close(self._console)
            self._console = -1


@contextlib.contextmanager
def _raw_terminal(fd: int) -> Iterator[None]:
    """Raw mode on ``fd`` if it is a terminal, restored on exit."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@contextlib.contextmanager
def _non_blocking(fd: int) -> Iterator[None]:
    was = os.get_blocking(fd)
    os.set_blocking(fd, False)
    try:
        yield
    finally:
        os.set_blocking(fd, was)


@contextlib.contextmanager
def _on_sigwinch(loop: asyncio.AbstractEventLoop, handler: Callable[[], object]) -> Iterator[None]:
    """Call ``handler`` on SIGWINCH; only the main thread can take signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    try:
        loop.add_signal_handler(signal.SIGWINCH, handler)
    except (NotImplementedError, RuntimeError, ValueError):
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGWINCH)


def attach(path: str, *, stdin: int = 0, stdout: int = 1, escape: int = ESCAPE) -> DetachReason:
    """Attach this process's terminal to the console pty at ``path`` until detached."""
    return asyncio.run(ConsoleAttach(path, stdin=stdin, stdout=stdout, escape=escape).run())
