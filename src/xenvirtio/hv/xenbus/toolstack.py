"""The toolstack's part of XenBus: creating and removing a device's two directories.

As libxl's ``libxl__device_generic_add`` and ``libxl__device_destroy``: both directories
in one transaction, with the permissions Linux's xenbus drivers expect.
"""

from __future__ import annotations

from collections.abc import Mapping

from xenvirtio.hv.xenbus.errors import XenbusError
from xenvirtio.hv.xenbus.ops import XenstoreClientOps, XenstoreOps, in_transaction, read_optional
from xenvirtio.hv.xenbus.paths import (
    KEY_BACKEND,
    KEY_BACKEND_ID,
    KEY_FRONTEND,
    KEY_FRONTEND_ID,
    KEY_ONLINE,
    KEY_STATE,
    BackendPath,
    FrontendPath,
    error_dir,
    parse_frontend_dir,
)
from xenvirtio.hv.xenbus.values import check_key, decode_value, encode_value
from xenvirtio.spec.xenbus_state import XenbusState
from xenvirtio.xenstore.client_protocol import XenstoreError
from xenvirtio.xenstore.perms import Perm, PermKind


def device_perms(owner: int, peer: int) -> list[Perm]:
    """A device directory's permissions as libxl sets them: owned by ``owner`` (others get
    nothing), readable by ``peer``. Keys written below inherit them."""
    return [Perm(owner, PermKind.NONE), Perm(peer, PermKind.READ)]


def create_device(
    xs: XenstoreClientOps,
    backend_domid: int,
    frontend_domid: int,
    devtype: str,
    devid: int,
    backend_entries: Mapping[str, str | int | bytes] | None = None,
    frontend_entries: Mapping[str, str | int | bytes] | None = None,
    *,
    backend_type: str | None = None,
) -> tuple[FrontendPath, BackendPath]:
    """Create both directories of a device in ONE transaction, as a toolstack does.

    The frontend directory is owned by the frontend domain and readable by the backend;
    the backend directory the other way round. Frontend keys: ``backend``,
    ``backend-id``, ``state`` = Initialising; backend keys: ``frontend``,
    ``frontend-id``, ``online`` = 1, ``state`` = Initialising; then the given entries
    (which may override those). ``backend_type`` names a backend that differs from the
    frontend's type (``qdisk`` serving ``vbd``). Existing directories are EEXIST.
    """
    fe = FrontendPath(frontend_domid, devtype, devid)
    be = BackendPath(backend_domid, backend_type or devtype, frontend_domid, devid)
    fe_keys: dict[str, str | int | bytes] = {
        KEY_BACKEND: str(be),
        KEY_BACKEND_ID: backend_domid,
        KEY_STATE: int(XenbusState.INITIALISING),
        **(frontend_entries or {}),
    }
    be_keys: dict[str, str | int | bytes] = {
        KEY_FRONTEND: str(fe),
        KEY_FRONTEND_ID: frontend_domid,
        KEY_ONLINE: 1,
        KEY_STATE: int(XenbusState.INITIALISING),
        **(backend_entries or {}),
    }
    fe_raw = {check_key(k): encode_value(v) for k, v in fe_keys.items()}
    be_raw = {check_key(k): encode_value(v) for k, v in be_keys.items()}

    def attempt(t: XenstoreOps) -> None:
        for directory in (str(fe), str(be)):
            if t.exists(directory):
                raise XenstoreError("EEXIST", f"{directory} already exists")
        _make_dir(t, str(fe), device_perms(frontend_domid, backend_domid), fe_raw)
        _make_dir(t, str(be), device_perms(backend_domid, frontend_domid), be_raw)

    in_transaction(xs, attempt)
    return fe, be


def _make_dir(
    t: XenstoreOps, directory: str, perms: list[Perm], entries: Mapping[str, bytes]
) -> None:
    t.mkdir(directory)
    t.set_perms(directory, perms)
    for key, raw in entries.items():
        t.write(f"{directory}/{key}", raw)


def unplug_device(xs: XenstoreClientOps, backend: BackendPath) -> bool:
    """Ask for an orderly unplug, as libxl does: backend ``online`` = 0, ``state`` = Closing.

    The frontend sees Closing and closes; the backend then sees the frontend Closed and,
    being offline, removes itself. Returns False if the backend directory is gone.
    """
    directory = str(backend)

    def attempt(t: XenstoreOps) -> bool:
        if not t.exists(directory):
            return False
        t.write(f"{directory}/{KEY_ONLINE}", b"0")
        t.write(f"{directory}/{KEY_STATE}", encode_value(int(XenbusState.CLOSING)))
        return True

    return in_transaction(xs, attempt)


def remove_device(xs: XenstoreClientOps, backend: BackendPath) -> None:
    """Remove both directories of a device and their error nodes in one transaction.

    Missing nodes are fine (either end may have gone already); the emptied parent
    ``device/<type>`` and ``backend/<type>/<fe>`` directories go too.
    """
    fe = FrontendPath(backend.frontend_domid, _frontend_type(xs, backend), backend.devid)
    dirs = [str(fe), str(backend), error_dir(str(fe)), error_dir(str(backend))]

    def attempt(t: XenstoreOps) -> None:
        for directory in dirs:
            _rm_quiet(t, directory)
            _prune_empty_parents(t, directory, stop_depth=5)

    in_transaction(xs, attempt)


def _frontend_type(xs: XenstoreOps, backend: BackendPath) -> str:
    """The frontend's type, from the backend's ``frontend`` key if it is well formed."""
    raw = read_optional(xs, f"{backend}/{KEY_FRONTEND}")
    if raw is not None:
        try:
            fe = parse_frontend_dir(decode_value(raw, KEY_FRONTEND))
        except XenbusError:
            pass
        else:
            if fe.domid == backend.frontend_domid and fe.devid == backend.devid:
                return fe.type
    return backend.type


def _rm_quiet(t: XenstoreOps, path: str) -> None:
    try:
        t.rm(path)
    except XenstoreError as exc:
        if exc.name != "ENOENT":
            raise


def _prune_empty_parents(t: XenstoreOps, path: str, stop_depth: int) -> None:
    """Remove empty parents of ``path`` while they are deeper than ``stop_depth`` elements
    (``/local/domain/<id>/device`` is depth 4 and stays)."""
    parts = path.strip("/").split("/")
    for depth in range(len(parts) - 1, stop_depth - 1, -1):
        parent = "/" + "/".join(parts[:depth])
        try:
            if t.directory(parent):
                return
            t.rm(parent)
        except XenstoreError as exc:
            if exc.name != "ENOENT":
                raise
