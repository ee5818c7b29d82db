"""The transport-level DMA port (`DmaPages`, `DmaWindow`, `DmaPool.for_transport`) and
the optional `PollableDevice` capability with `bind_poll`."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from xenvirtio.mem.flat import FlatMemory
from xenvirtio.testing.echo_device import EchoDevice
from xenvirtio.testing.inproc_bus import InProcessBus
from xenvirtio.transport.api import PollableDevice, bind_poll
from xenvirtio.transport.dma import Arena, DmaPages, DmaPool, DmaWindow, NoDmaMemoryError


class Pages:
    def __init__(self, memory: FlatMemory, arenas: list[Arena]) -> None:
        self.memory, self.arenas = memory, arenas


class Offers:
    def __init__(self, dma: DmaPages) -> None:
        self.dma = dma


def test_a_window_is_one_arena_at_its_guest_physical_address() -> None:
    mem = FlatMemory(1 << 20)
    window = DmaWindow(mem, 0x4000, 0x8000)
    assert window.arenas == [Arena(0x4000, 4, 8)]
    with pytest.raises(ValueError):
        DmaWindow(mem, 0x4001, 0x8000)
    with pytest.raises(ValueError):
        DmaWindow(mem, 0x4000, 0)


def test_for_transport_allocates_from_the_largest_arena() -> None:
    mem = FlatMemory(1 << 20)
    pages = Pages(mem, [Arena(0x1000, 1, 2), Arena(0x10000, 16, 4), Arena(0x40000, 64, 1)])
    pool = DmaPool.for_transport(Offers(pages))
    assert (pool.base, pool.size) == (0x10000, 4 * 4096)
    buf = pool.alloc(100, 4096)
    assert buf.addr == 0x10000
    buf.view[:3] = b"abc"
    assert mem.read(0x10000, 3) == b"abc"  # the view aliases the transport's memory


def test_pci_and_mmio_drivers_offer_the_window_they_were_given() -> None:
    mem = FlatMemory(1 << 20)
    bus = InProcessBus()
    window = DmaWindow(mem, 0x1000, 0x10000)
    for given in (
        bus.add_pci(EchoDevice(), mem, dma=window),
        bus.add_mmio(EchoDevice(), mem, dma=window),
    ):
        assert given.transport.dma is window
        assert DmaPool.for_transport(given.transport).size == 0x10000
    for bare in (bus.add_pci(EchoDevice(), mem), bus.add_mmio(EchoDevice(), mem)):
        with pytest.raises(NoDmaMemoryError):
            _ = bare.transport.dma


class Engine:
    def __init__(self) -> None:
        self.wakeup: Callable[[], None] | None = None
        self.polls = 0

    def poll(self) -> None:
        self.polls += 1


def test_bind_poll_schedules_poll_on_wakeup_once_and_only_once() -> None:
    device, scheduled = Engine(), []
    assert isinstance(device, PollableDevice)
    assert bind_poll(device, scheduled.append)
    assert device.wakeup is not None
    device.wakeup()
    assert device.polls == 0 and len(scheduled) == 1  # runs later, on the device's thread
    scheduled.pop()()
    assert device.polls == 1
    first = device.wakeup
    assert not bind_poll(device, scheduled.append)  # a wakeup already set stays
    assert device.wakeup is first
    assert not bind_poll(EchoDevice(), scheduled.append)  # not pollable: nothing to do
