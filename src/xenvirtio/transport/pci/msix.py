"""MSI-X (PCI Local Bus 3.0 6.8.2): the capability in config space, and the vector
table and Pending Bit Array that live in a memory BAR.

A vector fires only when MSI-X is enabled, the function is not masked, the vector's mask
bit is clear and bus mastering is on; otherwise its pending bit is set, and the message
goes out as soon as all of that holds again (an unmask, a Message Control write, a
Command write). Each delivered message is an `MsiMessage` event.
"""

from __future__ import annotations

from collections.abc import Callable

from xenvirtio.spec import pci as P
from xenvirtio.transport.events import EventQueue, MsiMessage
from xenvirtio.transport.pci.config_space import Capability
from xenvirtio.transport.registers import access_ok

_ENTRY = P.PCI_MSIX_ENTRY_SIZE
# Writable bits of one table entry: address (dword aligned), upper address, data, mask.
_ENTRY_WMASK = (
    (0xFFFFFFFC).to_bytes(4, "little")
    + (0xFFFFFFFF).to_bytes(4, "little")
    + (0xFFFFFFFF).to_bytes(4, "little")
    + P.PCI_MSIX_ENTRY_CTRL_MASKBIT.to_bytes(4, "little")
)


def pba_size(vectors: int) -> int:
    """Bytes of a Pending Bit Array: one bit per vector, in whole QWORDs."""
    return (vectors + 63) // 64 * 8


class MsixTable:
    """The vector table and pending bits of one function."""

    def __init__(self, vectors: int, events: EventQueue) -> None:
        if not 1 <= vectors <= P.PCI_MSIX_MAX_VECTORS:
            raise ValueError(f"MSI-X table size {vectors} outside 1..2048")
        self.vectors = vectors
        self.events = events
        self.entries = bytearray(_ENTRY * vectors)
        for v in range(vectors):  # every vector starts masked (6.8.2.9)
            self.entries[v * _ENTRY + P.PCI_MSIX_ENTRY_VECTOR_CTRL] = P.PCI_MSIX_ENTRY_CTRL_MASKBIT
        self.pending = 0  # bit v: vector v has a message waiting
        self.enabled = False
        self.function_mask = False
        self.bus_master = False

    @property
    def table_bytes(self) -> int:
        return len(self.entries)

    def vector_masked(self, vector: int) -> bool:
        ctrl = self.entries[vector * _ENTRY + P.PCI_MSIX_ENTRY_VECTOR_CTRL]
        return bool(ctrl & P.PCI_MSIX_ENTRY_CTRL_MASKBIT)

    def _blocked(self, vector: int) -> bool:
        return self.function_mask or not self.bus_master or self.vector_masked(vector)

    def message(self, vector: int) -> MsiMessage:
        base = vector * _ENTRY
        raw = self.entries[base : base + 12]
        addr = int.from_bytes(raw[0:8], "little")
        return MsiMessage(addr, int.from_bytes(raw[8:12], "little"))

    def fire(self, vector: int) -> None:
        """Signal ``vector`` (ignored unless MSI-X is enabled and the vector exists)."""
        if not self.enabled or not 0 <= vector < self.vectors:
            return
        if self._blocked(vector):
            self.pending |= 1 << vector
        else:
            self.events.push(self.message(vector))

    def deliver_pending(self) -> None:
        """Send every pending message that is no longer blocked, clearing its bit."""
        if not self.enabled or not self.pending:
            return
        for v in range(self.vectors):
            if self.pending >> v & 1 and not self._blocked(v):
                self.pending &= ~(1 << v)
                self.events.push(self.message(v))

    def table_read(self, offset: int, size: int) -> int:
        if not access_ok(size) or offset < 0 or offset + size > len(self.entries):
            return 0
        return int.from_bytes(self.entries[offset : offset + size], "little")

    def table_write(self, offset: int, size: int, value: int) -> None:
        if not access_ok(size) or offset < 0 or offset + size > len(self.entries):
            return
        data = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        for i, byte in enumerate(data, offset):
            mask = _ENTRY_WMASK[i % _ENTRY]
            self.entries[i] = (self.entries[i] & ~mask) | (byte & mask)
        self.deliver_pending()  # an unmask releases a pending message (6.8.2.9)

    def pba_read(self, offset: int, size: int) -> int:
        if not access_ok(size) or offset < 0 or offset + size > pba_size(self.vectors):
            return 0
        return (self.pending >> (8 * offset)) & ((1 << (8 * size)) - 1)


class MsixCapability(Capability):
    """The MSI-X capability structure: Message Control, Table and PBA offset/BIR."""

    def __init__(
        self,
        table: MsixTable,
        table_bar: int,
        table_offset: int,
        pba_bar: int,
        pba_offset: int,
        on_change: Callable[[], None],
    ) -> None:
        super().__init__(P.PCI_CAP_ID_MSIX, P.PCI_CAP_MSIX_SIZEOF)
        if table_offset % 8 or pba_offset % 8:
            raise ValueError("MSI-X table and PBA offsets must be QWORD aligned")
        self.table = table
        self.on_change = on_change
        ctrl = (table.vectors - 1) & P.PCI_MSIX_FLAGS_QSIZE
        self.image[P.PCI_MSIX_FLAGS : P.PCI_MSIX_FLAGS + 2] = ctrl.to_bytes(2, "little")
        self.image[P.PCI_MSIX_TABLE : P.PCI_MSIX_TABLE + 4] = (table_offset | table_bar).to_bytes(
            4, "little"
        )
        self.image[P.PCI_MSIX_PBA : P.PCI_MSIX_PBA + 4] = (pba_offset | pba_bar).to_bytes(
            4, "little"
        )
        writable = P.PCI_MSIX_FLAGS_ENABLE | P.PCI_MSIX_FLAGS_MASKALL
        self.wmask[P.PCI_MSIX_FLAGS : P.PCI_MSIX_FLAGS + 2] = writable.to_bytes(2, "little")

    def write(self, offset: int, data: bytes) -> None:
        super().write(offset, data)
        ctrl = int.from_bytes(self.image[P.PCI_MSIX_FLAGS : P.PCI_MSIX_FLAGS + 2], "little")
        enabled = bool(ctrl & P.PCI_MSIX_FLAGS_ENABLE)
        masked = bool(ctrl & P.PCI_MSIX_FLAGS_MASKALL)
        table = self.table
        if (enabled, masked) != (table.enabled, table.function_mask):
            table.enabled, table.function_mask = enabled, masked
            self.on_change()
