"""XenStore path rules (docs/misc/xenstore.txt; C xenstored ``is_valid_nodename``).

Paths are ``/``-separated, made of ``[A-Za-z0-9/_@-]``, with no ``//``, no trailing ``/``
(except the root ``/``) and not empty. A path not starting with ``/`` is relative to the
caller's home ``/local/domain/<domid>``. C xenstored bounds the part below
``/local/domain/<domid>/`` by its path quota (``XENSTORE_REL_PATH_MAX`` = 2048 bytes) and
the whole path stays within ``XENSTORE_ABS_PATH_MAX`` (3072 bytes). Paths starting with
``@`` name special watches (``@introduceDomain``, ``@releaseDomain``) and are not nodes.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator

from xenvirtio.spec.xs_wire import XENSTORE_ABS_PATH_MAX, XENSTORE_REL_PATH_MAX
from xenvirtio.xenstore.wire import XsError

ROOT = "/"
# "/" or "/name(/name)*" over [A-Za-z0-9_@-]: the allowed characters, starting with "/",
# no "//", no trailing "/" except the root's. Unambiguous, so matching stays linear.
_NODE_PATH = re.compile(r"/(?:[A-Za-z0-9_@-]+(?:/[A-Za-z0-9_@-]+)*)?\Z")
# sscanf(node, "/local/domain/%5u/%n"): the home prefix that does not count towards path-max.
_HOME = re.compile(r"/local/domain/[0-9]{1,5}/")


def domain_path(domid: int) -> str:
    """``/local/domain/<domid>``: a domain's home, the base of its relative paths."""
    return f"/local/domain/{domid}"


def is_special(path: str) -> bool:
    """Whether ``path`` names a special watch (``@...``) rather than a node."""
    return path.startswith("@")


def canonicalize(path: str, domid: int) -> str:
    """Absolute form of a (possibly relative) path; special paths are left as they are."""
    if path.startswith("/") or is_special(path):
        return path
    return f"{domain_path(domid)}/{path}"


def is_valid_path(path: str, path_max: int = XENSTORE_REL_PATH_MAX) -> bool:
    """Whether an absolute ``path`` names a node (C ``is_valid_nodename``)."""
    if len(path) > XENSTORE_ABS_PATH_MAX or _NODE_PATH.match(path) is None:
        return False
    limit = min(path_max, XENSTORE_REL_PATH_MAX)
    if len(path) <= limit:
        return True
    home = _HOME.match(path)
    return len(path) <= (home.end() if home else 0) + limit


def node_path(raw: str, domid: int, path_max: int = XENSTORE_REL_PATH_MAX) -> str:
    """Canonical, validated node path for a request argument, or EINVAL."""
    if len(raw) <= _MEMO_RAW_MAX:
        return _memo_node_path(raw, domid, path_max)
    return _node_path(raw, domid, path_max)


def _node_path(raw: str, domid: int, path_max: int) -> str:
    path = canonicalize(raw, domid)
    if not is_valid_path(path, path_max):
        raise XsError("EINVAL", f"invalid path {raw[:64]!r}")
    return path


# The same few paths come back request after request. Only short ones are remembered
# (invalid ones raise and are not), so the memo stays small whatever a client sends.
_MEMO_RAW_MAX = 256
_memo_node_path = functools.lru_cache(maxsize=4096)(_node_path)


def parent(path: str) -> str:
    """The parent of a node path (the root is its own parent)."""
    cut = path.rfind("/")
    return path[:cut] if cut > 0 else ROOT


def basename(path: str) -> str:
    """The last component of a node path ('' for the root)."""
    return path[path.rfind("/") + 1 :]


def components(path: str) -> list[str]:
    """The names along a node path: ``/a/b`` -> ``["a", "b"]``, ``/`` -> ``[]``."""
    return [] if path == ROOT else path[1:].split("/")


def join(path: str, name: str) -> str:
    """``path/name``, minding the root."""
    return f"/{name}" if path == ROOT else f"{path}/{name}"


def ancestors(path: str) -> Iterator[str]:
    """Strict ancestors of a node path, nearest first, ending with the root."""
    while path != ROOT:
        path = parent(path)
        yield path


def is_child(child: str, parent_path: str) -> bool:
    """xenstore.txt: ``child`` is ``parent_path`` itself or lies below it (all lie below ``/``)."""
    if parent_path == ROOT:
        return True
    if not child.startswith(parent_path):
        return False
    return len(child) == len(parent_path) or child[len(parent_path)] == "/"


def relative_to(path: str, prefix: str) -> str:
    """Event path for a watch registered relative to ``prefix`` (C ``get_watch_path``)."""
    rest = path[len(prefix) :]
    return rest[1:] if rest.startswith("/") else rest
