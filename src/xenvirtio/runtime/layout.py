"""Where a running domain's pieces are found: files under the run directory and the
keys its guest publishes in XenStore.

    <run-dir>/domains/<domid>/devices.json     the device specs (written by the runtime)
    <run-dir>/domains/<domid>/backend.pid      the backend process serving them
    <run-dir>/domains/<domid>/backend.log      its log
    <run-dir>/domains/<domid>/backend.status   what it serves after each reload (JSON)
    <run-dir>/domains/<domid>/<name>.nbd       a disk's NBD export (served by the guest)
    <run-dir>/domains/<domid>/<name>.pty       a console's pty path (written by the backend)
    <run-dir>/domains/<domid>/<name>.rng       an rng's entropy socket (served by the guest)

    /local/domain/<domid>/data/xenvirtio/<name>/state     starting | ready | failed
    /local/domain/<domid>/data/xenvirtio/<name>/ring      split | packed (negotiated)
    /local/domain/<domid>/data/xenvirtio/<name>/error     why it failed
    /local/domain/<domid>/data/xenvirtio/<name>/reconnects  resets after backend restarts

    /local/domain/<domid>/device/virtio/<devid>/xenvirtio-spec  a hot-plugged device's spec

The guest owns ``data/`` of its XenStore directory, so what it writes there is untrusted:
readers accept only the values above (`parse_state`, `parse_ring`) and take paths from
this layout, never from the guest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

EndpointState = Literal["starting", "ready", "failed"]
ENDPOINT_STATES: Final = ("starting", "ready", "failed")
RING_NAMES: Final = ("split", "packed", "blkif", "netif")  # virtqueues; classic rings
MAX_ERROR: Final = 1024
# Written by the toolstack in a hot-plugged XenBus device's frontend directory: what a
# device tree tells a guest at boot, told at run time (the guest learns kind and name).
HOTPLUG_SPEC_KEY: Final = "xenvirtio-spec"


@dataclass(frozen=True)
class DomainDir:
    """A domain's directory under the run directory."""

    run_dir: Path
    domid: int

    @property
    def path(self) -> Path:
        return self.run_dir / "domains" / str(self.domid)

    @property
    def spec_file(self) -> Path:
        return self.path / "devices.json"

    @property
    def backend_pid(self) -> Path:
        return self.path / "backend.pid"

    @property
    def backend_log(self) -> Path:
        return self.path / "backend.log"

    @property
    def backend_status(self) -> Path:
        return self.path / "backend.status"

    def nbd_socket(self, name: str) -> Path:
        return self.path / f"{name}.nbd"

    def pty_file(self, name: str) -> Path:
        return self.path / f"{name}.pty"

    def rng_socket(self, name: str) -> Path:
        return self.path / f"{name}.rng"


def endpoint_dir(domid: int, name: str) -> str:
    return f"/local/domain/{domid}/data/xenvirtio/{name}"


def endpoints_root(domid: int) -> str:
    return f"/local/domain/{domid}/data/xenvirtio"


def parse_state(raw: bytes | None) -> EndpointState:
    """The guest's word for a device; anything unexpected reads as "starting"."""
    text = raw.decode("ascii", "replace") if raw is not None else ""
    for state in ENDPOINT_STATES:
        if text == state:
            return state
    return "starting"


def parse_ring(raw: bytes | None) -> str | None:
    text = raw.decode("ascii", "replace") if raw is not None else ""
    return text if text in RING_NAMES else None


def parse_count(raw: bytes | None) -> int:
    text = raw.decode("ascii", "replace") if raw is not None else ""
    return int(text) if text.isdigit() and len(text) <= 9 else 0


def parse_error(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    return raw[:MAX_ERROR].decode("utf-8", "replace")
