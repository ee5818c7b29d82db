"""XenBus directory names: build them, and parse the ones a peer hands us. Pure.

docs/misc/xenstore-paths.pandoc (Xen): a frontend lives at
``/local/domain/$FE/device/$TYPE/$DEVID`` and its backend at
``/local/domain/$BE/backend/$TYPE/$FE/$DEVID``. Each points at the other with the
``backend``/``backend-id`` and ``frontend``/``frontend-id`` keys, which a guest can
rewrite: everything parsed here is treated as hostile. Domain and device ids are canonical
decimal (ASCII digits, no sign, no leading zero, no whitespace); Python's ``int()`` would
also take ``" 1"``, ``"+1"``, ``"1_0"`` and non-ASCII digits, so it only ever sees text
that matched :data:`_DECIMAL` first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from xenvirtio.hv.xenbus.errors import XenbusPathError

# xen/include/public/xen.h: ids from DOMID_FIRST_RESERVED up are special (DOMID_SELF,
# DOMID_IO, DOMID_XEN, ...) and never name a real domain's directory.
DOMID_FIRST_RESERVED: Final = 0x7FF0
DOMID_MAX: Final = DOMID_FIRST_RESERVED - 1
# Linux keeps a device id in an int; vbd ids reach 1 << 28 | (disk << 8) (blkif.h).
DEVID_MAX: Final = 0x7FFF_FFFF
# Device types in use (vbd, qdisk, vif, console, 9pfs, virtio, ...): short path elements.
DEVICE_TYPE_MAX: Final = 64

_DECIMAL = re.compile(r"0|[1-9][0-9]{0,9}")
_DEVICE_TYPE = re.compile(r"[a-z0-9][a-z0-9_-]*")
_FRONTEND = re.compile(r"/local/domain/([^/]+)/device/([^/]+)/([^/]+)")
_BACKEND = re.compile(r"/local/domain/([^/]+)/backend/([^/]+)/([^/]+)/([^/]+)")

# Keys a toolstack writes (xenbus_probe_frontend.c/_backend.c read them).
KEY_STATE: Final = "state"
KEY_BACKEND: Final = "backend"
KEY_BACKEND_ID: Final = "backend-id"
KEY_FRONTEND: Final = "frontend"
KEY_FRONTEND_ID: Final = "frontend-id"
KEY_ONLINE: Final = "online"


def parse_decimal(text: str, what: str, maximum: int) -> int:
    """A canonical non-negative decimal no larger than ``maximum``, else XenbusPathError."""
    if not isinstance(text, str) or _DECIMAL.fullmatch(text) is None:
        raise XenbusPathError(f"{what} {text!r:.40} is not a decimal number")
    value = int(text)
    if value > maximum:
        raise XenbusPathError(f"{what} {value} is out of range (max {maximum})")
    return value


def check_domid(domid: int) -> int:
    if isinstance(domid, bool) or not isinstance(domid, int) or not 0 <= domid <= DOMID_MAX:
        raise XenbusPathError(f"domid {domid!r} is not a real domain (0..{DOMID_MAX})")
    return domid


def check_devid(devid: int) -> int:
    if isinstance(devid, bool) or not isinstance(devid, int) or not 0 <= devid <= DEVID_MAX:
        raise XenbusPathError(f"devid {devid!r} is out of range (0..{DEVID_MAX})")
    return devid


def check_device_type(devtype: str) -> str:
    if (
        not isinstance(devtype, str)
        or len(devtype) > DEVICE_TYPE_MAX
        or _DEVICE_TYPE.fullmatch(devtype) is None
    ):
        raise XenbusPathError(f"device type {devtype!r:.70} is not a valid path element")
    return devtype


def domain_home(domid: int) -> str:
    """``/local/domain/<domid>``: the domain's home path."""
    return f"/local/domain/{check_domid(domid)}"


@dataclass(frozen=True)
class FrontendPath:
    """``/local/domain/<domid>/device/<type>/<devid>``."""

    domid: int
    type: str
    devid: int

    def __post_init__(self) -> None:
        check_domid(self.domid)
        check_device_type(self.type)
        check_devid(self.devid)

    def __str__(self) -> str:
        return f"{domain_home(self.domid)}/device/{self.type}/{self.devid}"


@dataclass(frozen=True)
class BackendPath:
    """``/local/domain/<domid>/backend/<type>/<frontend_domid>/<devid>``."""

    domid: int
    type: str
    frontend_domid: int
    devid: int

    def __post_init__(self) -> None:
        check_domid(self.domid)
        check_device_type(self.type)
        check_domid(self.frontend_domid)
        check_devid(self.devid)

    def __str__(self) -> str:
        return f"{domain_home(self.domid)}/backend/{self.type}/{self.frontend_domid}/{self.devid}"


def frontend_dir(frontend_domid: int, devtype: str, devid: int) -> str:
    return str(FrontendPath(frontend_domid, devtype, devid))


def backend_dir(backend_domid: int, devtype: str, frontend_domid: int, devid: int) -> str:
    return str(BackendPath(backend_domid, devtype, frontend_domid, devid))


def parse_frontend_dir(path: str) -> FrontendPath:
    """Parse and validate a frontend directory; anything else is XenbusPathError."""
    match = _FRONTEND.fullmatch(path) if isinstance(path, str) else None
    if match is None:
        raise XenbusPathError(f"{path!r:.120} is not /local/domain/<fe>/device/<type>/<devid>")
    domid, devtype, devid = match.groups()
    return FrontendPath(
        parse_decimal(domid, "domid", DOMID_MAX),
        check_device_type(devtype),
        parse_decimal(devid, "devid", DEVID_MAX),
    )


def parse_backend_dir(path: str) -> BackendPath:
    """Parse and validate a backend directory; anything else is XenbusPathError."""
    match = _BACKEND.fullmatch(path) if isinstance(path, str) else None
    if match is None:
        raise XenbusPathError(
            f"{path!r:.120} is not /local/domain/<be>/backend/<type>/<fe>/<devid>"
        )
    domid, devtype, fe_domid, devid = match.groups()
    return BackendPath(
        parse_decimal(domid, "domid", DOMID_MAX),
        check_device_type(devtype),
        parse_decimal(fe_domid, "frontend domid", DOMID_MAX),
        parse_decimal(devid, "devid", DEVID_MAX),
    )


def parse_device_dir(path: str) -> FrontendPath | BackendPath:
    """Either kind of device directory."""
    if isinstance(path, str) and "/backend/" in path:
        return parse_backend_dir(path)
    return parse_frontend_dir(path)


def backend_of(frontend: FrontendPath, backend_domid: int) -> BackendPath:
    """The backend directory that serves ``frontend`` from ``backend_domid``."""
    return BackendPath(backend_domid, frontend.type, frontend.domid, frontend.devid)


def frontend_of(backend: BackendPath) -> FrontendPath:
    """The frontend directory that ``backend`` serves."""
    return FrontendPath(backend.frontend_domid, backend.type, backend.devid)


def error_dir(device_dir: str) -> str:
    """Where ``xenbus_dev_error`` reports for a device: ``<home>/error/<dir below home>``.

    Linux writes ``error/<nodename>`` relative to the writing domain's home, with
    ``nodename`` itself relative (``device/vif/0``, ``backend/vif/1/0``); the ``error``
    key goes inside. The toolstack makes ``<home>/error`` writable by the domain.
    """
    parsed = parse_device_dir(device_dir)
    home = domain_home(parsed.domid)
    return f"{home}/error{str(parsed)[len(home) :]}"
