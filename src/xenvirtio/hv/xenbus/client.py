"""XenBus helpers over a XenStore connection, as Linux's ``xenbus_client.c``.

Every function takes the connection first (anything with the methods of
:class:`~xenvirtio.hv.xenbus.ops.XenstoreClientOps`: the blocking
:class:`~xenvirtio.xenstore.client.XenstoreClient` or an in-memory fake) and a device
directory. Multi-key reads and writes run in one transaction, retried on ``EAGAIN``.
The pure halves (:func:`state_update`, :func:`error_report`, :func:`gathered`) are shared
with the asyncio variants in :mod:`xenvirtio.hv.xenbus.aio`.

Device side: :func:`read_state`, :func:`switch_state`, :func:`dev_error`,
:func:`dev_fatal`, :func:`watch_otherend`, :func:`gather`, :func:`scatter`. Toolstack
side (from :mod:`xenvirtio.hv.xenbus.toolstack`): :func:`create_device`,
:func:`unplug_device`, :func:`remove_device`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from xenvirtio.hv.xenbus.errors import XenbusError, XenbusValueError
from xenvirtio.hv.xenbus.ops import (
    TRANSACTION_RETRIES,
    XenstoreClientOps,
    XenstoreOps,
    in_transaction,
    read_optional,
)
from xenvirtio.hv.xenbus.paths import KEY_STATE, error_dir
from xenvirtio.hv.xenbus.toolstack import (
    create_device,
    device_perms,
    remove_device,
    unplug_device,
)
from xenvirtio.hv.xenbus.values import check_key, decode_value, encode_value, parse_state
from xenvirtio.spec.xenbus_state import XenbusState
from xenvirtio.xenstore.client_protocol import XenstoreError

__all__ = [
    "CLOSING_UNLESS_CLOSED",
    "ERROR_MESSAGE_MAX",
    "TRANSACTION_RETRIES",
    "XenstoreClientOps",
    "XenstoreOps",
    "create_device",
    "dev_error",
    "dev_fatal",
    "device_perms",
    "error_report",
    "gather",
    "gathered",
    "in_transaction",
    "is_watch_for",
    "otherend_watch_path",
    "read_optional",
    "read_state",
    "read_state_strict",
    "remove_device",
    "scatter",
    "state_update",
    "switch_state",
    "unplug_device",
    "watch_otherend",
]

log = logging.getLogger("xenvirtio.xenbus")

# Linux's xenbus_va_dev_error formats into a 4096-byte buffer; keep well inside a payload.
ERROR_MESSAGE_MAX = 1024


# --- state ------------------------------------------------------------------------


def read_state_strict(xs: XenstoreOps, directory: str) -> XenbusState:
    """``<directory>/state``: UNKNOWN if missing; garbage raises XenbusValueError."""
    raw = read_optional(xs, f"{directory}/{KEY_STATE}")
    return XenbusState.UNKNOWN if raw is None else parse_state(raw)


def read_state(xs: XenstoreOps, directory: str) -> XenbusState:
    """``<directory>/state``, UNKNOWN when it cannot be read, as
    ``xenbus_read_driver_state()`` (missing node, or not one of the enum's numbers)."""
    try:
        return read_state_strict(xs, directory)
    except XenbusValueError:
        return XenbusState.UNKNOWN


def switch_state(
    xs: XenstoreClientOps,
    directory: str,
    state: XenbusState,
    keep: frozenset[XenbusState] = frozenset(),
) -> bool:
    """Publish ``state`` in ``<directory>/state`` inside a transaction (``xenbus_switch_state``).

    Nothing is written if the node already holds ``state`` (a write would fire the other
    end's watch for nothing), if the node is gone (the device is being torn down: do not
    resurrect its directory), or if the current state is in ``keep``. Returns whether it
    wrote.
    """
    path = f"{directory}/{KEY_STATE}"

    def attempt(t: XenstoreOps) -> bool:
        update = state_update(read_optional(t, path), state, keep)
        if update is not None:
            t.write(path, update)
        return update is not None

    return in_transaction(xs, attempt)


def state_update(
    raw: bytes | None, state: XenbusState, keep: frozenset[XenbusState] = frozenset()
) -> bytes | None:
    """What :func:`switch_state` writes over ``raw`` (the current value), or None."""
    if raw is None:
        return None
    try:
        current: XenbusState | None = parse_state(raw)
    except XenbusValueError:
        current = None  # garbage in our own node: overwrite it
    if current is state or current in keep:
        return None
    return encode_value(int(state))


# --- errors -----------------------------------------------------------------------


def dev_error(xs: XenstoreOps, directory: str, err: int, message: str) -> bool:
    """Report ``"<err> <message>"`` at ``error/<device dir>/error`` (``xenbus_dev_error``).

    ``err`` is a positive errno. A failed write is logged, not raised: reporting an error
    must not cause another one. Returns whether the report was written.
    """
    try:
        xs.write(*error_report(directory, err, message))
    except (XenstoreError, XenbusError) as exc:
        log.warning("%s: could not write the error node: %s", directory, exc)
        return False
    return True


def error_report(directory: str, err: int, message: str) -> tuple[str, bytes]:
    """The node and value ``xenbus_dev_error`` writes; logs the report."""
    text = f"{abs(err)} {message}"[:ERROR_MESSAGE_MAX]
    log.error("%s: %s", directory, text)
    return f"{error_dir(directory)}/error", text.encode("utf-8", "replace")


CLOSING_UNLESS_CLOSED: tuple[XenbusState, frozenset[XenbusState]] = (
    XenbusState.CLOSING,
    frozenset({XenbusState.CLOSED}),
)


def dev_fatal(xs: XenstoreClientOps, directory: str, err: int, message: str) -> None:
    """``dev_error`` then switch to Closing for an orderly close (``xenbus_dev_fatal``).

    A device already Closed stays Closed: it has nothing left to close.
    """
    dev_error(xs, directory, err, message)
    try:
        switch_state(xs, directory, *CLOSING_UNLESS_CLOSED)
    except XenstoreError as exc:
        log.warning("%s: could not switch to Closing: %s", directory, exc)


# --- watches ----------------------------------------------------------------------


def otherend_watch_path(otherend_dir: str) -> str:
    return f"{otherend_dir}/{KEY_STATE}"


def watch_otherend(xs: XenstoreClientOps, otherend_dir: str, token: str) -> str:
    """Watch the other end's ``state`` node (``xenbus_watch_pathfmt(.., "%s/state")``).

    Returns the watched path; the daemon fires one event at once, then one per change.
    """
    path = otherend_watch_path(otherend_dir)
    xs.watch(path, token)
    return path


def is_watch_for(event_path: str, watched_path: str) -> bool:
    """Whether an event path belongs to a watch on ``watched_path`` (it or a child)."""
    return event_path == watched_path or event_path.startswith(watched_path + "/")


# --- several keys at once ---------------------------------------------------------


def gather(xs: XenstoreClientOps, directory: str, *keys: str) -> dict[str, str]:
    """Read ``keys`` under ``directory`` in one transaction (``xenbus_gather``).

    Values are decoded strictly (UTF-8, no NUL, bounded); a missing key raises
    XenbusValueError naming it. Parse numbers with :func:`~.values.parse_uint`.
    """
    for key in keys:
        check_key(key)

    def attempt(t: XenstoreOps) -> dict[str, str]:
        return {
            key: gathered(directory, key, read_optional(t, f"{directory}/{key}")) for key in keys
        }

    return in_transaction(xs, attempt)


def gathered(directory: str, key: str, raw: bytes | None) -> str:
    """One value of :func:`gather`: decoded, or XenbusValueError if missing or bad."""
    if raw is None:
        raise XenbusValueError(f"{directory}/{key} is missing")
    return decode_value(raw, key)


def scatter(
    xs: XenstoreClientOps, directory: str, entries: Mapping[str, str | int | bytes]
) -> None:
    """Write ``entries`` under ``directory`` in one transaction (``xenbus_printf`` each)."""
    encoded = {check_key(key): encode_value(value) for key, value in entries.items()}

    def attempt(t: XenstoreOps) -> None:
        for key, raw in encoded.items():
            t.write(f"{directory}/{key}", raw)

    in_transaction(xs, attempt)
