"""What the store knows about domains: introduced or not, shut down, targets, and the
permissions of the special watch paths (C xenstored ``xenstored_domain.c``).

Domain 0 is privileged and always introduced (C xenstored introduces it at start).
"""

from __future__ import annotations

from xenvirtio.spec.xs_wire import XS_SPECIAL_WATCH_PATHS
from xenvirtio.xenstore.perms import Access, Caller, Perm, PermKind, Perms, access_for, allows
from xenvirtio.xenstore.perms import without_domain as _without_domain
from xenvirtio.xenstore.wire import XsError

DOMID_SELF = 0x7FF0  # xen.h: DOMID_FIRST_RESERVED, "the calling domain"
DOMID_FIRST_RESERVED = 0x7FF0
_CALLERS_KEPT = 1024


class Domains:
    """Introduced domains, their targets, their shutdown flags, special-path permissions."""

    def __init__(self) -> None:
        self.introduced: set[int] = {0}
        self.shut_down: set[int] = set()
        self.targets: dict[int, int] = {}
        self._callers: dict[int, Caller] = {}
        # Both special paths start as "n0": only privileged connections hear them.
        self.special_perms: dict[str, Perms] = {
            name: (Perm(0, PermKind.NONE),) for name in XS_SPECIAL_WATCH_PATHS
        }

    def caller(self, domid: int) -> Caller:
        target = self.targets.get(domid)
        known = self._callers.get(domid)
        if known is not None and known.target == target:
            return known  # a Caller is immutable: reuse it while the target is the same
        known = Caller(domid, privileged=domid == 0, target=target)
        if len(self._callers) >= _CALLERS_KEPT:
            self._callers.clear()
        self._callers[domid] = known
        return known

    def is_introduced(self, domid: int) -> bool:
        return domid in self.introduced

    def require_introduced(self, domid: int) -> None:
        """C ``find_connected_domain``: ENOENT for a domain the store does not talk to."""
        if domid not in self.introduced:
            raise XsError("ENOENT", f"domain {domid} is not introduced")

    def may_hear_special(self, caller: Caller, path: str) -> bool:
        """Whether ``caller`` gets events on a special path (C ``check_perms_special``)."""
        perms = self.special_perms.get(path)
        return perms is not None and bool(access_for(caller, perms) & Access.READ)

    def set_special_perms(self, caller: Caller, path: str, perms: Perms) -> None:
        """SET_PERMS on ``@introduceDomain``/``@releaseDomain`` (C ``set_perms_special``)."""
        current = self.special_perms.get(path)
        if current is None:
            raise XsError("EINVAL", f"no special path {path[:64]!r}")
        if not allows(caller, current, Access.WRITE | Access.OWNER):
            raise XsError("EACCES")
        self.special_perms[path] = perms

    def forget(self, domid: int) -> None:
        """A domain went away: not introduced, no target, dropped from special perms."""
        self.introduced.discard(domid)
        self.shut_down.discard(domid)
        self.targets.pop(domid, None)
        for dom, target in list(self.targets.items()):
            if target == domid:
                del self.targets[dom]
        for name, perms in self.special_perms.items():
            self.special_perms[name] = _without_domain(perms, domid)
