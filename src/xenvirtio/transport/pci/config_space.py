"""A PCI function's configuration space: type 0 header, memory BARs with the sizing
protocol, and a capability list (PCI Local Bus 3.0 6.1-6.7).

The space is an image plus a per-byte write mask, like real hardware: a write changes
only writable bits, so writing all-ones to a BAR reads back its size mask with the type
bits (what a BIOS uses to size it), and read-only fields stay put whatever is written.
Capabilities are objects placed after the header and chained through ``cap_next``;
they may add behaviour (MSI-X Message Control, the virtio PCI_CFG window).

Any access is answered: sizes other than 1..8 read 0 and write nothing, offsets past
the 4 KiB extended space read all-ones (nothing decodes there), the extended space of
this conventional function reads 0, and accesses spanning regions are split per region.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from xenvirtio.spec import pci as P
from xenvirtio.transport.events import BarDecodeChanged, EventQueue
from xenvirtio.transport.registers import access_ok, size_mask

_COMMAND_WRITABLE = (
    P.PCI_COMMAND_MEMORY
    | P.PCI_COMMAND_MASTER
    | P.PCI_COMMAND_PARITY
    | P.PCI_COMMAND_SERR
    | P.PCI_COMMAND_INTX_DISABLE
)


@dataclass(frozen=True, slots=True)
class BarSpec:
    """A memory BAR: ``size`` bytes (a power of two, >= 16); 64-bit BARs take two slots."""

    index: int
    size: int
    mem64: bool = True
    prefetchable: bool = False

    def __post_init__(self) -> None:
        slots = 2 if self.mem64 else 1
        if self.size < 16 or self.size & (self.size - 1) or self.size > 1 << 40:
            raise ValueError(f"BAR size {self.size:#x} is not a power of two in 16..2**40")
        if not 0 <= self.index <= P.PCI_NUM_BARS - slots:
            raise ValueError(f"BAR {self.index} does not fit the header")


@dataclass(frozen=True, slots=True)
class PciIdentity:
    """The read-only identification fields of the header."""

    vendor_id: int
    device_id: int
    revision: int
    class_code: int
    subsystem_vendor_id: int
    subsystem_id: int
    interrupt_pin: int = P.PCI_INTERRUPT_PIN_INTA


class Capability:
    """One capability structure: its bytes and which bits the driver may write."""

    def __init__(self, cap_id: int, length: int) -> None:
        if not 2 <= length <= 0xC0 or length % 4:
            raise ValueError("capability length must be a multiple of 4 in 4..192")
        self.image = bytearray(length)
        self.image[P.PCI_CAP_LIST_ID] = cap_id
        self.wmask = bytearray(length)
        self.offset = 0  # placed by PciConfigSpace

    @property
    def length(self) -> int:
        return len(self.image)

    def read(self, offset: int, size: int) -> bytes:
        """``size`` bytes at ``offset`` within the capability (already clipped)."""
        return bytes(self.image[offset : offset + size])

    def write(self, offset: int, data: bytes) -> None:
        for i, byte in enumerate(data, offset):
            mask = self.wmask[i]
            self.image[i] = (self.image[i] & ~mask) | (byte & mask)


class PciConfigSpace:
    """Configuration space of one type 0 function."""

    def __init__(
        self,
        identity: PciIdentity,
        bars: Sequence[BarSpec],
        capabilities: Sequence[Capability],
        events: EventQueue,
        on_command: Callable[[int, int], None] | None = None,
    ) -> None:
        self.bars = {b.index: b for b in bars}
        self.capabilities = list(capabilities)
        self.events = events
        self.on_command = on_command
        self.interrupt_status = False  # PCI_STATUS_INTERRUPT, kept by the function
        self.header = bytearray(P.PCI_STD_HEADER_SIZEOF)
        self.hmask = bytearray(P.PCI_STD_HEADER_SIZEOF)
        self._build_header(identity)
        self._place_capabilities()
        self._windows: dict[int, int | None] = {b: None for b in self.bars}

    # -- construction --------------------------------------------------------------------
    def _put(self, offset: int, size: int, value: int, wmask: int = 0) -> None:
        self.header[offset : offset + size] = value.to_bytes(size, "little")
        self.hmask[offset : offset + size] = wmask.to_bytes(size, "little")

    def _build_header(self, ident: PciIdentity) -> None:
        self._put(P.PCI_VENDOR_ID, 2, ident.vendor_id)
        self._put(P.PCI_DEVICE_ID, 2, ident.device_id)
        self._put(P.PCI_COMMAND, 2, 0, _COMMAND_WRITABLE)
        status = P.PCI_STATUS_CAP_LIST if self.capabilities else 0
        self._put(P.PCI_STATUS, 2, status)
        self._put(P.PCI_REVISION_ID, 1, ident.revision)
        self._put(P.PCI_CLASS_PROG, 3, ident.class_code)
        self._put(P.PCI_CACHE_LINE_SIZE, 1, 0, 0xFF)
        self._put(P.PCI_HEADER_TYPE, 1, P.PCI_HEADER_TYPE_NORMAL)
        self._put(P.PCI_SUBSYSTEM_VENDOR_ID, 2, ident.subsystem_vendor_id)
        self._put(P.PCI_SUBSYSTEM_ID, 2, ident.subsystem_id)
        self._put(P.PCI_INTERRUPT_LINE, 1, 0xFF, 0xFF)  # RW scratch for the OS
        self._put(P.PCI_INTERRUPT_PIN, 1, ident.interrupt_pin)
        for bar in self.bars.values():
            reg = P.PCI_BASE_ADDRESS_0 + 4 * bar.index
            mask = ~(bar.size - 1) & ((1 << 64) - 1)
            kind = P.PCI_BASE_ADDRESS_MEM_TYPE_64 if bar.mem64 else 0
            kind |= P.PCI_BASE_ADDRESS_MEM_PREFETCH if bar.prefetchable else 0
            self._put(reg, 4, kind, mask & P.PCI_BASE_ADDRESS_MEM_MASK)
            if bar.mem64:
                self._put(reg + 4, 4, 0, mask >> 32)

    def _place_capabilities(self) -> None:
        pos, prev = P.PCI_STD_HEADER_SIZEOF, None
        for cap in self.capabilities:
            cap.offset = pos
            if prev is None:
                self.header[P.PCI_CAPABILITY_LIST] = pos
            else:
                prev.image[P.PCI_CAP_LIST_NEXT] = pos
            prev, pos = cap, pos + cap.length
        if pos > P.PCI_CFG_SPACE_SIZE:
            raise ValueError("capabilities do not fit in 256 bytes of config space")

    # -- state ---------------------------------------------------------------------------
    @property
    def command(self) -> int:
        return int.from_bytes(self.header[P.PCI_COMMAND : P.PCI_COMMAND + 2], "little")

    def bar_address(self, index: int) -> int:
        """The address programmed in BAR ``index`` (type bits stripped)."""
        bar = self.bars[index]
        reg = P.PCI_BASE_ADDRESS_0 + 4 * index
        raw = int.from_bytes(self.header[reg : reg + (8 if bar.mem64 else 4)], "little")
        return raw & ~0xF

    def decode(self, address: int, size: int) -> tuple[int, int] | None:
        """``(bar, offset)`` if memory decoding is on and a BAR claims the whole access."""
        for index, base in self._windows.items():
            if base is not None and 0 <= address - base <= self.bars[index].size - size:
                return index, address - base
        return None

    def _update_windows(self) -> None:
        enabled = bool(self.command & P.PCI_COMMAND_MEMORY)
        for index, bar in self.bars.items():
            addr = self.bar_address(index)
            base = addr if enabled and addr != 0 else None
            if base != self._windows[index]:
                self._windows[index] = base
                self.events.push(BarDecodeChanged(index, base, bar.size))

    # -- accesses ------------------------------------------------------------------------
    def _region(self, pos: int, end: int) -> tuple[Capability | None, int]:
        """The region at ``pos``: a capability (or None: header/gap) and its end."""
        if pos < P.PCI_STD_HEADER_SIZEOF:
            return None, min(end, P.PCI_STD_HEADER_SIZEOF)
        nxt = P.PCI_CFG_SPACE_EXP_SIZE
        for cap in self.capabilities:
            if cap.offset <= pos < cap.offset + cap.length:
                return cap, min(end, cap.offset + cap.length)
            if cap.offset > pos:
                nxt = min(nxt, cap.offset)
        return None, min(end, nxt)

    def read(self, offset: int, size: int) -> int:
        if not access_ok(size):
            return 0
        if offset < 0 or offset + size > P.PCI_CFG_SPACE_EXP_SIZE:
            return size_mask(size)
        out = bytearray()
        pos, end = offset, offset + size
        while pos < end:
            cap, stop = self._region(pos, end)
            if cap is not None:
                out += cap.read(pos - cap.offset, stop - pos)
            elif pos < P.PCI_STD_HEADER_SIZEOF:
                out += self._header_bytes(pos, stop)
            else:
                out += bytes(stop - pos)
            pos = stop
        return int.from_bytes(out, "little")

    def _header_bytes(self, start: int, stop: int) -> bytes:
        data = bytearray(self.header[start:stop])
        if start <= P.PCI_STATUS < stop and self.interrupt_status:
            data[P.PCI_STATUS - start] |= P.PCI_STATUS_INTERRUPT
        return bytes(data)

    def write(self, offset: int, size: int, value: int) -> None:
        if not access_ok(size) or offset < 0 or offset + size > P.PCI_CFG_SPACE_EXP_SIZE:
            return
        data = (value & size_mask(size)).to_bytes(size, "little")
        pos, end = offset, offset + size
        while pos < end:
            cap, stop = self._region(pos, end)
            chunk = data[pos - offset : stop - offset]
            if cap is not None:
                cap.write(pos - cap.offset, chunk)
            elif pos < P.PCI_STD_HEADER_SIZEOF:
                self._write_header(pos, chunk)
            pos = stop

    def _write_header(self, start: int, data: bytes) -> None:
        old_command = self.command
        for i, byte in enumerate(data, start):
            mask = self.hmask[i]
            self.header[i] = (self.header[i] & ~mask) | (byte & mask)
        self._update_windows()
        if self.command != old_command and self.on_command is not None:
            self.on_command(old_command, self.command)
