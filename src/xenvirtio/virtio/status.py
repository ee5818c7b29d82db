"""The device status state machine (virtio 1.2 2.1, 3.1.1) as an explicit table.

Rule 1: every legal move is one ``(state, input) -> next`` entry in `TRANSITIONS`.
Rule 2: a pair that is not in the table is a driver protocol error: the machine latches
`DeviceState.PROTOCOL_ERROR` (reported with DEVICE_NEEDS_RESET) until a reset.

Inputs are what the driver writes (decoded from the status byte by `decode_write`) plus
the device's own verdicts: whether it accepts the features at FEATURES_OK and whether it
hit an error that needs a reset.
"""

from __future__ import annotations

from enum import Enum

from xenvirtio.spec.virtio import DeviceStatus as B


class DeviceState(Enum):
    RESET = "reset"
    ACKNOWLEDGED = "acknowledged"
    DRIVER = "driver"
    FEATURES_OK = "features-ok"
    DRIVER_OK = "driver-ok"
    NEEDS_RESET = "needs-reset"
    FAILED = "failed"
    PROTOCOL_ERROR = "protocol-error"


class StatusInput(Enum):
    RESET = "reset"  # driver writes 0 (or the transport's reset)
    ACKNOWLEDGE = "acknowledge"
    DRIVER = "driver"
    FEATURES_OK = "features-ok"  # driver sets FEATURES_OK, the device accepts
    FEATURES_REFUSED = "features-refused"  # ... the device refuses: bit stays clear
    DRIVER_OK = "driver-ok"
    FAILED = "failed"  # driver gives up (sets FAILED)
    DEVICE_ERROR = "device-error"  # the device needs a reset (sets DEVICE_NEEDS_RESET)
    INVALID_WRITE = "invalid-write"  # a bit cleared or a reserved bit set: never legal


St, In = DeviceState, StatusInput

TRANSITIONS: dict[tuple[DeviceState, StatusInput], DeviceState] = {
    (St.RESET, In.RESET): St.RESET,
    (St.RESET, In.ACKNOWLEDGE): St.ACKNOWLEDGED,
    (St.RESET, In.FAILED): St.FAILED,
    (St.ACKNOWLEDGED, In.ACKNOWLEDGE): St.ACKNOWLEDGED,
    (St.ACKNOWLEDGED, In.DRIVER): St.DRIVER,
    (St.DRIVER, In.DRIVER): St.DRIVER,
    (St.DRIVER, In.FEATURES_OK): St.FEATURES_OK,
    (St.DRIVER, In.FEATURES_REFUSED): St.DRIVER,  # 2.2.2: FEATURES_OK is not set
    (St.FEATURES_OK, In.FEATURES_OK): St.FEATURES_OK,
    (St.FEATURES_OK, In.DRIVER_OK): St.DRIVER_OK,
    (St.DRIVER_OK, In.DRIVER_OK): St.DRIVER_OK,
    (St.NEEDS_RESET, In.DEVICE_ERROR): St.NEEDS_RESET,
    (St.FAILED, In.FAILED): St.FAILED,
}
# From any state: reset starts over (2.4.1); the driver may give up (FAILED) at any
# time; the device may need a reset once the driver has found it (2.1.2).
for _state in DeviceState:
    TRANSITIONS[(_state, In.RESET)] = St.RESET
    if _state is not St.PROTOCOL_ERROR:
        TRANSITIONS.setdefault((_state, In.FAILED), St.FAILED)
    if _state not in (St.RESET, St.FAILED, St.PROTOCOL_ERROR):
        TRANSITIONS.setdefault((_state, In.DEVICE_ERROR), St.NEEDS_RESET)

# The status byte the device shows in each state (NEEDS_RESET, FAILED and
# PROTOCOL_ERROR add their bit to whatever was set before).
STATUS_BITS: dict[DeviceState, int] = {
    St.RESET: 0,
    St.ACKNOWLEDGED: B.ACKNOWLEDGE,
    St.DRIVER: B.ACKNOWLEDGE | B.DRIVER,
    St.FEATURES_OK: B.ACKNOWLEDGE | B.DRIVER | B.FEATURES_OK,
    St.DRIVER_OK: B.ACKNOWLEDGE | B.DRIVER | B.FEATURES_OK | B.DRIVER_OK,
    St.NEEDS_RESET: B.DEVICE_NEEDS_RESET,
    St.FAILED: B.FAILED,
    St.PROTOCOL_ERROR: B.DEVICE_NEEDS_RESET,
}
_STICKY = (St.NEEDS_RESET, St.FAILED, St.PROTOCOL_ERROR)
_RESERVED = 0xFF & ~(
    B.ACKNOWLEDGE | B.DRIVER | B.FEATURES_OK | B.DRIVER_OK | B.DEVICE_NEEDS_RESET | B.FAILED
)

# Bits in the order the driver sets them (3.1.1), and the input each one means.
_WRITE_ORDER = (
    (B.ACKNOWLEDGE, In.ACKNOWLEDGE),
    (B.DRIVER, In.DRIVER),
    (B.FEATURES_OK, In.FEATURES_OK),
    (B.DRIVER_OK, In.DRIVER_OK),
    (B.FAILED, In.FAILED),
)


class DeviceStatusMachine:
    """The device's view of its status field. `status` is the byte the driver reads."""

    def __init__(self) -> None:
        self.state = St.RESET
        self.status = 0
        self.error: tuple[DeviceState, StatusInput] | None = None

    def feed(self, event: StatusInput) -> DeviceState:
        """Apply one input; an input not in the table latches PROTOCOL_ERROR."""
        nxt = TRANSITIONS.get((self.state, event))
        if nxt is None:
            self.error = (self.state, event)
            nxt = St.PROTOCOL_ERROR
        if nxt is St.RESET:
            self.status, self.error = 0, None
        elif nxt in _STICKY:
            self.status |= STATUS_BITS[nxt]
        else:
            self.status = STATUS_BITS[nxt]
        self.state = nxt
        return nxt

    def decode_write(self, value: int, features_ok: bool) -> list[StatusInput]:
        """The inputs a driver's write of ``value`` to the status field means.

        0 is a reset. Otherwise each newly set bit, in initialisation order (rewriting
        the same bits means nothing). Clearing a bit (2.1.1: the driver MUST NOT) or
        setting a reserved one is `StatusInput.INVALID_WRITE`, which no state accepts.
        ``features_ok`` is the device's verdict on the accepted features (2.2.2)."""
        if value == 0:
            return [In.RESET]
        value &= ~B.DEVICE_NEEDS_RESET  # device-owned; drivers echo it back
        if self.status & ~B.DEVICE_NEEDS_RESET & ~value or value & _RESERVED:
            return [In.INVALID_WRITE]
        out = []
        for mask, event in _WRITE_ORDER:
            if value & mask and not self.status & mask:
                if event is In.FEATURES_OK and not features_ok:
                    event = In.FEATURES_REFUSED
                out.append(event)
        return out

    def write(self, value: int, features_ok: bool = True) -> DeviceState:
        """Apply a driver write of the status field."""
        for event in self.decode_write(value, features_ok):
            self.feed(event)
        return self.state
