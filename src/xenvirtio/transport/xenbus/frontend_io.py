"""The frontend's XenStore reads and writes, each one transaction.

Reads decode through `records` (a backend's values are checked like a frontend's: a
driver domain may be less trusted than the guest it serves). Writes that change what the
backend will read next and the frontend's ``state`` go in the same transaction, so the
backend's watch on ``state`` always finds the keys that go with it.
"""

from __future__ import annotations

from xenvirtio.hv.xenbus.client import state_update
from xenvirtio.hv.xenbus.ops import XenstoreClientOps, XenstoreOps, in_transaction, read_optional
from xenvirtio.hv.xenbus.paths import KEY_STATE
from xenvirtio.hv.xenbus.values import parse_state
from xenvirtio.spec.xenbus_state import XenbusState
from xenvirtio.transport.xenbus import keys as K
from xenvirtio.transport.xenbus.records import (
    BackendOffer,
    BackendStatus,
    FrontendSetup,
    parse_max_queues,
)

# Keys a frontend writes during one negotiation; a reset removes them all.
_SESSION_KEYS = (
    K.KEY_VERSION,
    K.KEY_DRIVER_FEATURES,
    K.KEY_NUM_QUEUES,
    K.KEY_CONFIG_WRITE,
)


def _state(t: XenstoreOps, directory: str) -> XenbusState:
    raw = read_optional(t, f"{directory}/{KEY_STATE}")
    return XenbusState.UNKNOWN if raw is None else parse_state(raw)


def read_offer(xs: XenstoreClientOps, backend: str) -> BackendOffer:
    """The backend's offer (TransportKeyError if incomplete or not canonical)."""

    def read(t: XenstoreOps) -> BackendOffer:
        count = parse_max_queues(read_optional(t, f"{backend}/{K.KEY_MAX_QUEUES}"))
        raw = {key: read_optional(t, f"{backend}/{key}") for key in BackendOffer.keys(count)}
        return BackendOffer.parse(raw)

    return in_transaction(xs, read)


def read_status(xs: XenstoreClientOps, backend: str) -> BackendStatus:
    """The backend's state and the keys a running frontend follows."""

    def read(t: XenstoreOps) -> BackendStatus:
        state = _state(t, backend)
        raw = {key: read_optional(t, f"{backend}/{key}") for key in BackendStatus.KEYS}
        return BackendStatus.parse(state, raw)

    return in_transaction(xs, read)


def read_dma_params(xs: XenstoreClientOps, backend: str) -> tuple[bool, int]:
    """``(grant-usage, max-mapped-pages)``; TransportKeyError until both are published."""

    def read(t: XenstoreOps) -> tuple[bool, int]:
        usage = read_optional(t, f"{backend}/{K.KEY_GRANT_USAGE}")
        pages = read_optional(t, f"{backend}/{K.KEY_MAX_MAPPED_PAGES}")
        return (
            K.parse_flag(usage, K.KEY_GRANT_USAGE),
            K.parse_dec(pages, K.KEY_MAX_MAPPED_PAGES, K.MAPPED_PAGES_LIMIT, 1),
        )

    return in_transaction(xs, read)


def read_device_id(xs: XenstoreClientOps, backend: str) -> int | None:
    raw = read_optional(xs, f"{backend}/{K.KEY_DEVICE_ID}")
    return None if raw is None else K.parse_dec(raw, K.KEY_DEVICE_ID)


def _remove_session(t: XenstoreOps, frontend: str) -> None:
    for key in _SESSION_KEYS:
        if read_optional(t, f"{frontend}/{key}") is not None:
            t.rm(f"{frontend}/{key}")
    for child in t.directory(frontend):
        if child.startswith("queue-"):
            t.rm(f"{frontend}/{child}")


def _set_state(t: XenstoreOps, frontend: str, state: XenbusState) -> None:
    update = state_update(read_optional(t, f"{frontend}/{KEY_STATE}"), state)
    if update is not None:
        t.write(f"{frontend}/{KEY_STATE}", update)


def publish_reset(xs: XenstoreClientOps, frontend: str) -> None:
    """Forget the last negotiation and go Initialising (a fresh device)."""

    def write(t: XenstoreOps) -> None:
        _remove_session(t, frontend)
        _set_state(t, frontend, XenbusState.INITIALISING)

    in_transaction(xs, write)


def publish_setup(xs: XenstoreClientOps, frontend: str, setup: FrontendSetup) -> None:
    """DRIVER_OK: the queues and features, and Initialised, at once."""

    def write(t: XenstoreOps) -> None:
        for child in t.directory(frontend):
            if child.startswith("queue-"):
                t.rm(f"{frontend}/{child}")
        for key, value in setup.entries().items():
            t.write(f"{frontend}/{key}", value)
        _set_state(t, frontend, XenbusState.INITIALISED)

    in_transaction(xs, write)


def write_key(xs: XenstoreClientOps, frontend: str, key: str, value: str) -> None:
    xs.write(f"{frontend}/{key}", value)
