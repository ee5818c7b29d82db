"""Mapped memory handed out by the ports: grant mappings, shared pages, foreign mappings.

One small concrete class serves every implementation: it wraps the ``memoryview`` the
implementation mapped and the callback that unmaps it. After :meth:`MappedMemory.unmap`
the view is released; touching it raises ``ValueError`` (never a stale page).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import TracebackType
from typing import overload


class MappedMemory:
    """Pages mapped into this process, usable as a memoryview (``.memory``, indexing, len)."""

    def __init__(self, memory: memoryview, unmap: Callable[[], None]) -> None:
        self._memory = memory
        self._unmap: Callable[[], None] | None = unmap

    @property
    def memory(self) -> memoryview:
        """The mapped bytes (format ``B``), valid until :meth:`unmap`."""
        if self._unmap is None:
            raise ValueError("mapping is unmapped")
        return self._memory

    @property
    def mapped(self) -> bool:
        return self._unmap is not None

    def unmap(self) -> None:
        """Unmap the pages; a second call does nothing."""
        release, self._unmap = self._unmap, None
        if release is not None:
            self._memory.release()
            release()

    def __len__(self) -> int:
        return len(self.memory)

    @overload
    def __getitem__(self, index: int) -> int: ...
    @overload
    def __getitem__(self, index: slice) -> bytes: ...
    def __getitem__(self, index: int | slice) -> int | bytes:
        if isinstance(index, slice):
            return bytes(self.memory[index])
        return self.memory[index]

    def __setitem__(self, index: slice, value: bytes | bytearray | memoryview) -> None:
        self.memory[index] = value

    def __enter__(self) -> MappedMemory:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.unmap()


class _GrantedPages(MappedMemory):
    """Pages reached through grant references: whose they are, the refs, and the access."""

    def __init__(
        self,
        memory: memoryview,
        unmap: Callable[[], None],
        *,
        domid: int,
        refs: Sequence[int],
        writable: bool,
    ) -> None:
        super().__init__(memory, unmap)
        self.domid = domid
        self.refs = tuple(refs)
        self.writable = writable


class GrantMapping(_GrantedPages):
    """Grant references of ``domid`` mapped by ``Gnttab.map_grant_refs``."""


class SharedPages(_GrantedPages):
    """Pages of this domain granted to ``domid`` by ``Gntshr.share_pages``; ``refs`` are
    the grant references to hand to the peer (e.g. through XenStore)."""


class ForeignMapping(MappedMemory):
    """Guest frames (or a resource's frames) of ``domid`` mapped by ``ForeignMemory``."""

    def __init__(
        self,
        memory: memoryview,
        unmap: Callable[[], None],
        *,
        domid: int,
        frames: Sequence[int],
        writable: bool,
    ) -> None:
        super().__init__(memory, unmap)
        self.domid = domid
        self.frames = tuple(frames)
        self.writable = writable
