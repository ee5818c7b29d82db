"""XenBus device states, from Xen's public header ``io/xenbus.h`` (``enum xenbus_state``).

Each end of a paravirtual device writes its state as a decimal integer to the ``state``
key of its own XenStore directory; the other end watches it. Names only, no behaviour:
the allowed transitions live in :mod:`xenvirtio.hv.xenbus.state`.
"""

from __future__ import annotations

from enum import IntEnum


class XenbusState(IntEnum):
    """``enum xenbus_state``. The comments are the header's."""

    UNKNOWN = 0  # XenbusStateUnknown: also what a missing or unreadable state reads as
    INITIALISING = 1  # XenbusStateInitialising
    # Finished early initialisation but waiting for information from the peer or hotplug
    # scripts.
    INIT_WAIT = 2  # XenbusStateInitWait
    INITIALISED = 3  # XenbusStateInitialised: waiting for a connection from the peer
    CONNECTED = 4  # XenbusStateConnected
    # The device is being closed due to an error or an unplug event.
    CLOSING = 5  # XenbusStateClosing
    CLOSED = 6  # XenbusStateClosed
    RECONFIGURING = 7  # XenbusStateReconfiguring: the device is being reconfigured
    RECONFIGURED = 8  # XenbusStateReconfigured

    @property
    def xen_name(self) -> str:
        """The header's name without its prefix ("InitWait"), as ``xenbus_strstate()`` prints."""
        return _XEN_NAMES[self]


_XEN_NAMES: dict[XenbusState, str] = {
    XenbusState.UNKNOWN: "Unknown",
    XenbusState.INITIALISING: "Initialising",
    XenbusState.INIT_WAIT: "InitWait",
    XenbusState.INITIALISED: "Initialised",
    XenbusState.CONNECTED: "Connected",
    XenbusState.CLOSING: "Closing",
    XenbusState.CLOSED: "Closed",
    XenbusState.RECONFIGURING: "Reconfiguring",
    XenbusState.RECONFIGURED: "Reconfigured",
}
