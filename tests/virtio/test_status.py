"""The device status table: every (state, input) pair, and decoding of status writes."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from xenvirtio.spec.virtio import DeviceStatus as B
from xenvirtio.virtio.status import (
    STATUS_BITS,
    TRANSITIONS,
    DeviceState,
    DeviceStatusMachine,
    StatusInput,
)

St, In = DeviceState, StatusInput


def machine_in(state: DeviceState) -> DeviceStatusMachine:
    m = DeviceStatusMachine()
    m.state, m.status = state, STATUS_BITS[state]
    return m


@given(st.sampled_from(list(DeviceState)), st.sampled_from(list(StatusInput)))
def test_every_pair(state: DeviceState, event: StatusInput) -> None:
    m = machine_in(state)
    before = m.status
    nxt = m.feed(event)
    if (state, event) in TRANSITIONS:
        assert nxt is TRANSITIONS[(state, event)]
        assert m.error is None
    else:
        assert nxt is St.PROTOCOL_ERROR and m.error == (state, event)
    if nxt is St.RESET:
        assert m.status == 0
    elif nxt in (St.NEEDS_RESET, St.FAILED, St.PROTOCOL_ERROR):
        assert m.status == before | STATUS_BITS[nxt]  # sticky bits keep what was set
    else:
        assert m.status == STATUS_BITS[nxt]


def test_table_covers_the_normal_sequence_and_nothing_skips_steps() -> None:
    # 3.1.1: ACKNOWLEDGE, DRIVER, FEATURES_OK, DRIVER_OK in this order, no skipping.
    m = DeviceStatusMachine()
    for event in (In.ACKNOWLEDGE, In.DRIVER, In.FEATURES_OK, In.DRIVER_OK):
        m.feed(event)
    assert m.state is St.DRIVER_OK and m.status == 15
    for state, event in itertools.product(
        [St.RESET, St.ACKNOWLEDGED], [In.FEATURES_OK, In.DRIVER_OK]
    ):
        assert (state, event) not in TRANSITIONS
    assert (St.DRIVER, In.DRIVER_OK) not in TRANSITIONS
    assert all((s, In.INVALID_WRITE) not in TRANSITIONS for s in DeviceState)


@given(st.sampled_from(list(DeviceState)), st.lists(st.sampled_from(list(StatusInput)), max_size=8))
def test_protocol_error_latches_until_reset(state: DeviceState, events: list[StatusInput]) -> None:
    m = machine_in(state)
    m.feed(In.INVALID_WRITE)
    for event in events:
        m.feed(event)
        if event is In.RESET:
            break
        assert m.state is St.PROTOCOL_ERROR and m.status & B.DEVICE_NEEDS_RESET
    m.feed(In.RESET)
    assert m.state is St.RESET and m.status == 0 and m.error is None


def test_status_writes_decode() -> None:
    m = DeviceStatusMachine()
    assert m.write(B.ACKNOWLEDGE) is St.ACKNOWLEDGED
    assert m.write(B.ACKNOWLEDGE | B.DRIVER) is St.DRIVER
    assert m.write(B.ACKNOWLEDGE | B.DRIVER | B.FEATURES_OK, features_ok=False) is St.DRIVER
    assert m.status == B.ACKNOWLEDGE | B.DRIVER  # 2.2.2: FEATURES_OK not set
    assert m.write(B.ACKNOWLEDGE | B.DRIVER | B.FEATURES_OK) is St.FEATURES_OK
    assert m.write(15) is St.DRIVER_OK
    assert m.write(15) is St.DRIVER_OK  # rewriting the same bits is harmless
    m.feed(In.DEVICE_ERROR)
    assert m.status == 15 | B.DEVICE_NEEDS_RESET
    assert m.write(15 | B.DEVICE_NEEDS_RESET) is St.NEEDS_RESET  # echoing the bit back
    assert m.write(0) is St.RESET


def test_clearing_a_bit_is_a_protocol_error() -> None:
    m = DeviceStatusMachine()
    m.write(B.ACKNOWLEDGE | B.DRIVER)
    assert m.write(B.DRIVER) is St.PROTOCOL_ERROR  # 2.1.1: MUST NOT clear a bit
    assert m.write(B.ACKNOWLEDGE | B.DRIVER) is St.PROTOCOL_ERROR


def test_reserved_bit_and_skipped_step() -> None:
    assert DeviceStatusMachine().write(B.ACKNOWLEDGE | 0x10) is St.PROTOCOL_ERROR
    assert DeviceStatusMachine().write(B.ACKNOWLEDGE | B.DRIVER_OK) is St.PROTOCOL_ERROR


def test_failed_from_anywhere_but_error() -> None:
    for state in DeviceState:
        m = machine_in(state)
        m.feed(In.FAILED)
        assert m.state is (St.PROTOCOL_ERROR if state is St.PROTOCOL_ERROR else St.FAILED)
