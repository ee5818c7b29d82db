"""The guest memory interface every protocol core takes as an argument.

A `GuestMemory` is how a device (or a driver) reaches the memory a guest shared with it:
guest-physical memory mapped by a privileged backend, pages granted through Xen grant
tables, or a plain buffer in tests. Ring code never holds raw pointers; it calls these
methods with guest addresses (``gpa``) and gets bytes or zero-copy views back.

Contract (every implementation, checked by the tests in ``tests/virtio/test_mem_*.py``):

- ``read(gpa, size)`` returns exactly ``size`` bytes or raises `GuestMemoryError`. It is
  never partial. Negative addresses or sizes, ranges that run past 2**64, and ranges that
  touch anything unmapped all raise. ``size == 0`` returns ``b""`` for any address in
  ``[0, 2**64]`` (nothing is touched).
- ``write(gpa, data)`` writes all of ``data`` or raises (before writing anything) when the
  range is not entirely mapped or is (partly) read-only.
- ``view(gpa, size)`` returns one contiguous zero-copy ``memoryview`` (format ``"B"``,
  ``len == size``) or raises when the range is unmapped *or* not contiguous in the host
  (e.g. it spans two separately mapped pages). A view of read-only memory is read-only.
- ``views(gpa, size)`` returns zero-copy pieces (in address order, none empty unless
  ``size == 0``, which returns ``[]``) whose concatenation is the range: the shape
  ``os.preadv``/``os.pwritev`` want. Raises like ``read``.
- ``check(gpa, size, write=False)`` raises like ``read`` (or like ``write`` when ``write``
  is true) but touches nothing: queues use it to validate descriptor buffers at pop time.
- ``writable`` is False when every write would raise (a read-only mapping). A memory may
  still map individual read-only ranges while ``writable`` is True; writes there raise.

Views alias guest memory: the guest may change the bytes under them at any time. Code that
validates guest data must copy it first (``read``, or ``bytes(view)``/``struct.unpack_from``
once) and act only on the copy (no double fetch).

Views stay valid as long as the mapping does; an implementation that can unmap (grant
mappings) documents when views become invalid.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

# Guest addresses are 64-bit (virtio descriptors carry le64 addresses).
GPA_LIMIT = 1 << 64

Buffer = bytes | bytearray | memoryview


class GuestMemoryError(Exception):
    """An access to guest memory that cannot be honoured.

    ``gpa`` and ``size`` give the range asked for, ``reason`` says why (unmapped, read-only,
    not contiguous, out of range). Raised for anything the guest controls, so callers turn
    it into a protocol error; it never leaves partial effects behind.
    """

    def __init__(self, gpa: int, size: int, reason: str) -> None:
        super().__init__(f"guest memory [{gpa:#x}, +{size:#x}): {reason}")
        self.gpa = gpa
        self.size = size
        self.reason = reason


def check_range(gpa: int, size: int) -> None:
    """Raise `GuestMemoryError` unless ``[gpa, gpa+size)`` is a well-formed 64-bit range."""
    if gpa < 0 or size < 0:
        raise GuestMemoryError(gpa, size, "negative address or size")
    if gpa + size > GPA_LIMIT:
        raise GuestMemoryError(gpa, size, "range overflows the 64-bit address space")


@runtime_checkable
class GuestMemory(Protocol):
    """Guest memory as seen by one side of a virtqueue. See the module docstring."""

    @property
    def writable(self) -> bool:
        """False when every write raises (a read-only mapping)."""
        ...

    def read(self, gpa: int, size: int) -> bytes:
        """Copy ``size`` bytes at ``gpa``; never partial, raises `GuestMemoryError`."""
        ...

    def write(self, gpa: int, data: Buffer) -> None:
        """Write all of ``data`` at ``gpa`` or raise `GuestMemoryError` without writing."""
        ...

    def check(self, gpa: int, size: int, write: bool = False) -> None:
        """Raise `GuestMemoryError` unless the range is mapped (and writable if
        ``write``); reads and writes nothing."""
        ...

    def view(self, gpa: int, size: int) -> memoryview:
        """One contiguous zero-copy view of the range; raises if not contiguous/mapped."""
        ...

    def views(self, gpa: int, size: int) -> list[memoryview]:
        """Zero-copy pieces covering the range in order (for preadv/pwritev)."""
        ...
