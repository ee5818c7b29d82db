"""A ``/dev/hwrng``-like reader over a `VirtioRngDriver`: a blocking raw file whose
``read(n)`` returns between 1 and ``n`` random bytes, for code that wants a file, not a
coroutine. Wrap it in ``io.BufferedReader`` to get exactly ``n`` bytes per read.

Use it from any thread except the driver's loop thread (it waits for that loop).
"""

from __future__ import annotations

import asyncio
import io

from xenvirtio.drivers.rng.driver import VirtioRngDriver


class HwRngReader(io.RawIOBase):
    """``open("/dev/hwrng", "rb", buffering=0)``, served by a virtio-rng driver."""

    def __init__(
        self,
        driver: VirtioRngDriver,
        loop: asyncio.AbstractEventLoop,
        *,
        timeout: float | None = None,
    ) -> None:
        super().__init__()
        self._driver = driver
        self._loop = loop
        self._timeout = timeout

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        """Block until at least one byte is there; fill up to ``len(buffer)``. Raises
        OSError(EIO) once the device failed, TimeoutError after ``timeout`` seconds."""
        if self.closed:
            raise ValueError("read from a closed HwRngReader")
        if _running_loop() is self._loop:
            raise RuntimeError("HwRngReader would block the loop its driver runs on")
        view = memoryview(buffer).cast("B")
        if not len(view):
            return 0
        future = asyncio.run_coroutine_threadsafe(self._driver.read_some(len(view)), self._loop)
        data = future.result(self._timeout)
        view[: len(data)] = data
        return len(data)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
