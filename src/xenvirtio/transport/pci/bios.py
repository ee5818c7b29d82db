"""Guest firmware's part of PCI: find functions and give their BARs addresses, the way a
BIOS (or Xen's hvmloader) does, over the guest's `PciBus` port.

Sizing a BAR (PCI 3.0 6.2.5.1): with decoding off, save the register, write all-ones,
read back the size mask, restore. A 64-bit memory BAR spans two registers and is sized
through both. Addresses come from an `MmioWindow`, each BAR aligned to its size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from xenvirtio.spec import pci as P


class PciBus(Protocol):
    """The guest's access to PCI configuration space and to memory-mapped I/O. On Xen
    HVM each access becomes an ioreq served by the function's device model."""

    def cfg_read(self, bdf: int, offset: int, size: int) -> int: ...

    def cfg_write(self, bdf: int, offset: int, size: int, value: int) -> None: ...

    def mmio_read(self, address: int, size: int) -> int: ...

    def mmio_write(self, address: int, size: int, value: int) -> None: ...


class PciEnumerationError(Exception):
    """A function whose BARs cannot be sized or placed."""


@dataclass(frozen=True, slots=True)
class PciFunctionId:
    bdf: int
    vendor_id: int
    device_id: int
    class_code: int


@dataclass(frozen=True, slots=True)
class BarInfo:
    """One BAR as sized (and, once assigned, placed)."""

    index: int
    size: int
    io: bool
    mem64: bool
    prefetchable: bool
    base: int = 0


class MmioWindow:
    """A bump allocator over the guest-physical window reserved for BARs."""

    def __init__(self, base: int, size: int) -> None:
        self.base, self.limit, self.next = base, base + size, base

    def alloc(self, size: int) -> int:
        addr = (self.next + size - 1) & ~(size - 1)
        if addr + size > self.limit:
            raise PciEnumerationError(f"no room for a {size:#x}-byte BAR")
        self.next = addr + size
        return addr


def scan(bus: PciBus, bus_numbers: tuple[int, ...] = (0,)) -> list[PciFunctionId]:
    """Every present function (vendor ID not 0xffff), probing functions 1-7 only on
    multi-function devices."""
    found: list[PciFunctionId] = []
    for number in bus_numbers:
        for dev in range(32):
            for fn in range(8):
                bdf = P.pci_bdf(number, dev, fn)
                vendor = bus.cfg_read(bdf, P.PCI_VENDOR_ID, 2)
                if vendor in (0xFFFF, 0x0000):
                    if fn == 0:
                        break
                    continue
                device = bus.cfg_read(bdf, P.PCI_DEVICE_ID, 2)
                klass = bus.cfg_read(bdf, P.PCI_REVISION_ID, 4) >> 8
                found.append(PciFunctionId(bdf, vendor, device, klass))
                header = bus.cfg_read(bdf, P.PCI_HEADER_TYPE, 1)
                if fn == 0 and not header & P.PCI_HEADER_TYPE_MFD:
                    break
    return found


def _probe_register(bus: PciBus, bdf: int, reg: int) -> tuple[int, int]:
    """(original value, value read after writing all-ones); the original is restored."""
    orig = bus.cfg_read(bdf, reg, 4)
    bus.cfg_write(bdf, reg, 4, 0xFFFFFFFF)
    mask = bus.cfg_read(bdf, reg, 4)
    bus.cfg_write(bdf, reg, 4, orig)
    return orig, mask


def size_bars(bus: PciBus, bdf: int) -> list[BarInfo]:
    """Size every BAR of a type 0 function (decoding must be off)."""
    bars: list[BarInfo] = []
    index = 0
    while index < P.PCI_NUM_BARS:
        reg = P.PCI_BASE_ADDRESS_0 + 4 * index
        orig, mask = _probe_register(bus, bdf, reg)
        if mask in (0, 0xFFFFFFFF) and not orig:
            index += 1  # not implemented (reads 0) or nothing answers
            continue
        if orig & P.PCI_BASE_ADDRESS_SPACE_IO:
            size = (~(mask & P.PCI_BASE_ADDRESS_IO_MASK) & 0xFFFF) + 1
            bars.append(BarInfo(index, size, True, False, False))
            index += 1
            continue
        mem64 = orig & P.PCI_BASE_ADDRESS_MEM_TYPE_MASK == P.PCI_BASE_ADDRESS_MEM_TYPE_64
        full = mask & P.PCI_BASE_ADDRESS_MEM_MASK
        if mem64:
            if index + 1 >= P.PCI_NUM_BARS:
                raise PciEnumerationError(f"{bdf:#x}: 64-bit BAR {index} in the last slot")
            _, high = _probe_register(bus, bdf, reg + 4)
            full |= high << 32
        width = 64 if mem64 else 32
        size = (~full & ((1 << width) - 1)) + 1
        if not full or size & (size - 1):
            raise PciEnumerationError(f"{bdf:#x}: BAR {index} size mask {full:#x} is invalid")
        prefetch = bool(orig & P.PCI_BASE_ADDRESS_MEM_PREFETCH)
        bars.append(BarInfo(index, size, False, mem64, prefetch))
        index += 2 if mem64 else 1
    return bars


def assign_bars(bus: PciBus, bdf: int, window: MmioWindow) -> list[BarInfo]:
    """Size and place the memory BARs, then enable memory decoding and bus mastering.
    I/O BARs are left unassigned (this project's functions have none)."""
    command = bus.cfg_read(bdf, P.PCI_COMMAND, 2)
    off = command & ~(P.PCI_COMMAND_MEMORY | P.PCI_COMMAND_IO)
    bus.cfg_write(bdf, P.PCI_COMMAND, 2, off)
    placed: list[BarInfo] = []
    for bar in size_bars(bus, bdf):
        if bar.io:
            continue
        base = window.alloc(bar.size)
        if not bar.mem64 and base >> 32:
            raise PciEnumerationError(f"{bdf:#x}: 32-bit BAR {bar.index} placed above 4 GiB")
        reg = P.PCI_BASE_ADDRESS_0 + 4 * bar.index
        bus.cfg_write(bdf, reg, 4, base & 0xFFFFFFFF)
        if bar.mem64:
            bus.cfg_write(bdf, reg + 4, 4, base >> 32)
        placed.append(BarInfo(bar.index, bar.size, False, bar.mem64, bar.prefetchable, base))
    bus.cfg_write(bdf, P.PCI_COMMAND, 2, off | P.PCI_COMMAND_MEMORY | P.PCI_COMMAND_MASTER)
    return placed


def read_bar_address(bus: PciBus, bdf: int, index: int) -> int:
    """The memory address BAR ``index`` holds (the OS reading what firmware assigned)."""
    if not 0 <= index < P.PCI_NUM_BARS:
        raise PciEnumerationError(f"BAR index {index} out of range")
    reg = P.PCI_BASE_ADDRESS_0 + 4 * index
    low = bus.cfg_read(bdf, reg, 4)
    if low & P.PCI_BASE_ADDRESS_SPACE_IO:
        raise PciEnumerationError(f"{bdf:#x}: BAR {index} is an I/O BAR")
    addr = low & P.PCI_BASE_ADDRESS_MEM_MASK
    if low & P.PCI_BASE_ADDRESS_MEM_TYPE_MASK == P.PCI_BASE_ADDRESS_MEM_TYPE_64:
        if index + 1 >= P.PCI_NUM_BARS:
            raise PciEnumerationError(f"{bdf:#x}: 64-bit BAR {index} in the last slot")
        addr |= bus.cfg_read(bdf, reg + 4, 4) << 32
    return addr
