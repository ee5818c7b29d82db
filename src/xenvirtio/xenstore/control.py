"""XS_CONTROL commands (C xenstored ``xenstored_control.c``), for privileged callers.

Served: ``check``, ``print <text>``, ``quota`` (show, ``set <name> <value>``, ``<domid>``),
``quota-soft`` (no soft quotas here: an empty list), ``help``. Xen commands that need the
daemon's host (``log``, ``logfile``, ``memreport``, ``live-update``) answer ENOSYS; any
other command is EINVAL, as in C xenstored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from xenvirtio.xenstore.wire import XsError

if TYPE_CHECKING:
    from xenvirtio.xenstore.core import XenstoreCore

OK = b"OK\0"
UNSUPPORTED = ("log", "logfile", "memreport", "live-update")


def _text(text: str) -> bytes:
    return text.encode() + b"\0"


def _check(core: XenstoreCore, args: list[str]) -> bytes:
    if args:
        raise XsError("EINVAL")
    for problem in check_store(core):
        core.messages.append(f"check: {problem}")
    return OK


def _print(core: XenstoreCore, args: list[str]) -> bytes:
    if len(args) != 1:
        raise XsError("EINVAL")
    core.messages.append(f"control: {args[0]}")
    return OK


def _quota(core: XenstoreCore, args: list[str]) -> bytes:
    if not args:
        return _text(core.quota.show())
    if args[0] == "set":
        if len(args) != 3:
            raise XsError("EINVAL")
        from xenvirtio.xenstore.handlers import atoi

        try:
            core.quota.set(args[1], atoi(args[2]))
        except ValueError:
            raise XsError("EINVAL") from None
        return OK
    if len(args) != 1:
        raise XsError("EINVAL")
    return _text(domain_usage(core, int(args[0]) if args[0].isdigit() else 0))


def _quota_soft(core: XenstoreCore, args: list[str]) -> bytes:
    if args:
        raise XsError("EINVAL")
    return _text("Quota settings:\n")


def _help(core: XenstoreCore, args: list[str]) -> bytes:
    if args:
        raise XsError("EINVAL")
    return _text("".join(f"{name}\t{pars}\n" for name, (_, pars) in COMMANDS.items()))


COMMANDS: dict[str, tuple[Callable[[XenstoreCore, list[str]], bytes], str]] = {
    "check": (_check, ""),
    "print": (_print, "<string>"),
    "quota": (_quota, "[set <name> <val>|<domid>]"),
    "quota-soft": (_quota_soft, ""),
    "help": (_help, ""),
}


def run(core: XenstoreCore, args: list[str]) -> bytes:
    """Answer ``XS_CONTROL <command>|<args>|...``."""
    if not args:
        raise XsError("EINVAL")
    name, rest = args[0], args[1:]
    if name in UNSUPPORTED:
        raise XsError("ENOSYS")
    entry = COMMANDS.get(name)
    if entry is None:
        raise XsError("EINVAL")
    return entry[0](core, rest)


def domain_usage(core: XenstoreCore, domid: int) -> str:
    """``quota <domid>``: what a domain uses; ENOENT for a domain the store never saw."""
    nodes = core.store.count(domid)
    if not core.domains.is_introduced(domid) and nodes == 0:
        raise XsError("ENOENT")
    txns = sum(len(c.transactions) for c in core.conns.values() if c.domid == domid)
    rows = [("nodes", nodes), ("watches", core.watches.count(domid)), ("transactions", txns)]
    return f"Domain {domid}:\n" + "".join(f"{k:<16}: {v:8d}\n" for k, v in rows)


def check_store(core: XenstoreCore) -> list[str]:
    """Consistency problems of the live store (none expected): entry counts, child lists."""
    counted: dict[int, int] = {}
    problems = []
    for path, node in core.store.walk("/"):
        owner = node.perms[0].domid
        counted[owner] = counted.get(owner, 0) + 1
        if node.childlen != sum(len(n) + 1 for n in node.children):
            problems.append(f"child list length of {path}")
    for domid in set(counted) | set(core.store.entries):
        if counted.get(domid, 0) != core.store.entries.get(domid, 0):
            problems.append(f"entry count of domain {domid}")
    return problems
