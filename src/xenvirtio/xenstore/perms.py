"""XenStore node permissions: the ``n``/``r``/``w``/``b`` + domid strings and who may do what.

A node's permission list is ``[owner-entry, entry...]`` (docs/misc/xenstore.txt,
``GET_PERMS``/``SET_PERMS``). The first entry names the owner and is also the default
for every domain not listed later. Following C xenstored's ``perm_for_conn()``:

* privileged callers (dom0) and the owner get read, write and ownership;
* a domain with a target (``XS_SET_TARGET``, e.g. a device-model stub domain) acts as the
  target too: full access to the target's nodes and the target's entries apply to it;
* otherwise the first later entry naming the domain (or its target) applies, else the
  owner entry's letter.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum, IntFlag

from xenvirtio.xenstore.wire import XsError

DOMID_MAX = 0xFFFF  # domid_t is 16 bits


class PermKind(Enum):
    """The letter of a permission entry."""

    NONE = "n"
    READ = "r"
    WRITE = "w"
    BOTH = "b"


class Access(IntFlag):
    """What a caller may do to a node (XS_PERM_READ, XS_PERM_WRITE, XS_PERM_OWNER)."""

    NONE = 0
    READ = 0x01
    WRITE = 0x02
    OWNER = 0x08


_KIND_ACCESS = {
    PermKind.NONE: Access.NONE,
    PermKind.READ: Access.READ,
    PermKind.WRITE: Access.WRITE,
    PermKind.BOTH: Access.READ | Access.WRITE,
}
FULL_ACCESS = Access.READ | Access.WRITE | Access.OWNER
_FULL = int(FULL_ACCESS)


@dataclass(frozen=True, slots=True)
class Perm:
    """One permission entry, e.g. ``Perm(5, PermKind.READ)`` is ``"r5"``."""

    domid: int
    kind: PermKind

    def __str__(self) -> str:
        return f"{self.kind.value}{self.domid}"

    @property
    def access(self) -> Access:
        return _KIND_ACCESS[self.kind]


Perms = tuple[Perm, ...]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking: a domain, whether it is privileged, and its target domain if any."""

    domid: int
    privileged: bool = False
    target: int | None = None


def parse_perm(text: str) -> Perm:
    """Parse ``"r5"``; anything else than a letter and a decimal domid is EINVAL."""
    if len(text) < 2 or not text[1:].isdigit() or not text[1:].isascii():
        raise XsError("EINVAL")
    try:
        kind = PermKind(text[0])
    except ValueError:
        raise XsError("EINVAL") from None
    domid = int(text[1:])
    if domid > DOMID_MAX:
        raise XsError("EINVAL")
    return Perm(domid, kind)


def parse_perms(texts: Sequence[str]) -> Perms:
    """Parse a SET_PERMS list; an empty list is EINVAL (a node always has an owner)."""
    if not texts:
        raise XsError("EINVAL")
    return tuple(parse_perm(t) for t in texts)


def format_perms(perms: Iterable[Perm]) -> list[str]:
    """The GET_PERMS strings, in order."""
    return [str(p) for p in perms]


def access_for(caller: Caller, perms: Perms) -> Access:
    """What ``caller`` may do to a node with ``perms`` (C xenstored ``perm_for_conn``)."""
    owner = perms[0].domid
    target = caller.target
    if caller.privileged or owner == caller.domid or (target is not None and owner == target):
        return FULL_ACCESS
    for entry in perms[1:]:
        if entry.domid == caller.domid or (target is not None and entry.domid == target):
            return entry.access
    return perms[0].access


def allows(caller: Caller, perms: Perms, want: Access) -> bool:
    """Whether every bit of ``want`` is granted."""
    wanted = int(want)  # plain ints: IntFlag's operators are slow on this hot path
    if caller.privileged or perms[0].domid == caller.domid:
        return (_FULL & wanted) == wanted  # access_for's first case, without the call
    return (int(access_for(caller, perms)) & wanted) == wanted


def with_owner(perms: Perms, owner: int) -> Perms:
    """``perms`` with the owner entry moved to ``owner`` (implicit creation by a domain)."""
    return (Perm(owner, perms[0].kind), *perms[1:])


def without_domain(perms: Perms, domid: int, new_owner: int = 0) -> Perms:
    """Drop ``domid`` from a list when it goes away; an owned list passes to ``new_owner``."""
    head = perms[0] if perms[0].domid != domid else Perm(new_owner, perms[0].kind)
    return (head, *(p for p in perms[1:] if p.domid != domid))
