"""`GuardedMemory`: a `GuestMemory` wrapper that proves which ranges were touched.

Every read, write, view and views is recorded; one that is not entirely inside the
allowed ranges is recorded as a violation and refused with `GuestMemoryError` (as if the
memory were unmapped). A test then asserts ``guard.violations == []``: nothing outside the
memory the guest legitimately shared was touched, whatever the ring said. ``check`` touches
nothing and is passed through unrecorded.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from xenvirtio.mem.api import Buffer, GuestMemory, GuestMemoryError


@dataclass(frozen=True, slots=True)
class Access:
    op: str  # "read", "write", "view", "views"
    gpa: int
    size: int


class GuardedMemory:
    """Wraps ``inner``, allowing accesses only inside ``allowed`` ``(gpa, size)`` ranges."""

    def __init__(self, inner: GuestMemory, allowed: Iterable[tuple[int, int]]) -> None:
        self.inner = inner
        self.allowed = [(gpa, gpa + size) for gpa, size in allowed]
        self.accesses: list[Access] = []
        self.violations: list[Access] = []

    def allow(self, gpa: int, size: int) -> None:
        self.allowed.append((gpa, gpa + size))

    def _guard(self, op: str, gpa: int, size: int) -> None:
        access = Access(op, gpa, size)
        self.accesses.append(access)
        if not self._allowed(gpa, size):
            self.violations.append(access)
            raise GuestMemoryError(gpa, size, f"{op} outside the allowed ranges")

    def assert_clean(self) -> None:
        """Raise AssertionError listing the violations, if any."""
        if self.violations:
            raise AssertionError(f"accesses outside allowed ranges: {self.violations}")

    @property
    def writable(self) -> bool:
        return self.inner.writable

    def _allowed(self, gpa: int, size: int) -> bool:
        return size == 0 or any(lo <= gpa and gpa + size <= hi for lo, hi in self.allowed)

    def check(self, gpa: int, size: int, write: bool = False) -> None:
        if not self._allowed(gpa, size):
            raise GuestMemoryError(gpa, size, "outside the allowed ranges")
        self.inner.check(gpa, size, write)

    def read(self, gpa: int, size: int) -> bytes:
        self._guard("read", gpa, size)
        return self.inner.read(gpa, size)

    def write(self, gpa: int, data: Buffer) -> None:
        self._guard("write", gpa, len(memoryview(data).cast("B")))
        self.inner.write(gpa, data)

    def view(self, gpa: int, size: int) -> memoryview:
        self._guard("view", gpa, size)
        return self.inner.view(gpa, size)

    def views(self, gpa: int, size: int) -> list[memoryview]:
        self._guard("views", gpa, size)
        return self.inner.views(gpa, size)
