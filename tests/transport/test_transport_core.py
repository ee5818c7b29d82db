"""The shared pieces on their own: register blocks against a byte model, and the
transport-independent device state (`DeviceTransportCore`) driven directly."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from xenvirtio.mem.flat import FlatMemory
from xenvirtio.spec import virtio as S
from xenvirtio.spec.virtio import DeviceStatus
from xenvirtio.testing.echo_device import EchoDevice
from xenvirtio.transport.core import DeviceTransportCore
from xenvirtio.transport.events import DeviceActivated, EventQueue, NeedsReset
from xenvirtio.transport.queue_regs import NO_VECTOR, QueueField
from xenvirtio.transport.registers import Field, Layout

FIELDS = [Field("a", 0, 4), Field("b", 4, 2), Field("c", 7, 1), Field("d", 8, 4), Field("e", 12, 4)]
LAYOUT = Layout(FIELDS, 18)  # bytes 6 and 16-17 are gaps


class Regs:
    """Plain storage behind the layout, plus the byte model it must behave like."""

    def __init__(self) -> None:
        self.values = {f.name: 0 for f in FIELDS}
        self.model = bytearray(18)

    def get(self, f: Field) -> int:
        return self.values[f.name]

    def put(self, f: Field, value: int) -> None:
        assert 0 <= value < 1 << (8 * f.size)
        self.values[f.name] = value


@given(
    st.lists(
        st.tuples(st.integers(-4, 20), st.integers(-1, 9), st.integers(-(2**64), 2**66)),
        max_size=30,
    )
)
def test_layout_behaves_like_bytes_with_gaps(writes: list[tuple[int, int, int]]) -> None:
    regs = Regs()
    covered = {i for f in FIELDS for i in range(f.offset, f.offset + f.size)}
    for off, size, value in writes:
        LAYOUT.write(off, size, value, regs.get, regs.put)
        if 1 <= size <= 8:
            data = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
            for i, byte in enumerate(data, off):
                if i in covered:
                    regs.model[i] = byte
    padded = bytes(4) + bytes(regs.model) + bytes(8)  # outside the block reads as 0
    for off in range(-2, 18):
        for size in (1, 2, 4, 8):
            want = padded[off + 4 : off + 4 + size]
            assert LAYOUT.read(off, size, regs.get) == int.from_bytes(want, "little")


class Signals:
    def __init__(self) -> None:
        self.log: list[str] = []

    def queue_interrupt(self, index: int) -> None:
        self.log.append(f"q{index}")

    def config_interrupt(self) -> None:
        self.log.append("config")

    def reset_interrupts(self) -> None:
        self.log.append("reset")


def make_core(**kwargs: int) -> tuple[DeviceTransportCore, EchoDevice, Signals, EventQueue]:
    echo = EchoDevice(**kwargs)
    signals, events = Signals(), EventQueue()
    return DeviceTransportCore(echo, FlatMemory(1 << 20), signals, events), echo, signals, events


def _features(core: DeviceTransportCore, features: int) -> None:
    for word in range(2):
        core.driver_feature_select = word
        core.write_driver_feature_word(features >> (32 * word))


def test_feature_words_are_bounded_and_frozen_at_features_ok() -> None:
    core, _, _, _ = make_core()
    core.driver_feature_select = 0xFFFFFFFF  # far past any feature: ignored, not stored
    core.write_driver_feature_word(0xFFFFFFFF)
    assert core.driver_features == 0 and core.driver_feature_word() == 0
    core.device_feature_select = 1
    assert core.device_feature_word() == core.offered >> 32
    _features(core, 1 << S.VIRTIO_F_VERSION_1)
    for status in (1, 3, 11):
        core.write_status(status)
    assert core.status == 11 and core.negotiated == 1 << S.VIRTIO_F_VERSION_1
    _features(core, 1 << S.VIRTIO_F_VERSION_1 | 1 << S.VIRTIO_F_RING_PACKED)
    assert core.driver_features == 1 << S.VIRTIO_F_VERSION_1  # 3.1.1: fixed by now


def test_queue_registers_locked_while_enabled_and_bad_size_needs_reset() -> None:
    core, echo, signals, events = make_core()
    _features(core, 1 << S.VIRTIO_F_VERSION_1)
    for status in (1, 3, 11):
        core.write_status(status)
    core.write_queue(0, QueueField.SIZE, 100)  # not a power of two: split rings refuse
    core.write_queue(0, QueueField.ENABLE, 1)
    core.write_queue(0, QueueField.SIZE, 64)  # enabled: ignored
    assert core.read_queue(0, QueueField.SIZE) == 100
    assert core.read_queue(5, QueueField.VECTOR) == NO_VECTOR
    core.write_status(15)
    assert core.status & DeviceStatus.DEVICE_NEEDS_RESET and echo.ctx is None
    assert [type(e) for e in events.take()] == [NeedsReset]
    assert signals.log == ["config"]  # DRIVER_OK was set: 2.1.2


def test_clearing_a_status_bit_is_a_protocol_error() -> None:
    core, echo, signals, events = make_core()
    _features(core, 1 << S.VIRTIO_F_VERSION_1)
    core.write_queue(0, QueueField.ENABLE, 1)
    for status in (1, 3, 11, 15):
        core.write_status(status)
    assert isinstance(events.take()[0], DeviceActivated) and echo.ctx is not None
    port = echo.ctx.interrupt
    core.write_status(3)  # clears FEATURES_OK and DRIVER_OK: never legal (2.1.1)
    assert core.status & DeviceStatus.DEVICE_NEEDS_RESET
    assert signals.log == ["config"]
    assert not core.notify(0, 0)  # no kicks reach the device any more
    core.write_status(0)
    assert core.status == 0 and echo.resets == 1 and echo.ctx is None
    port.trigger_queue(0)  # a port from before the reset is dead
    assert signals.log == ["config", "reset"]
