"""Domain control for the toolstack (what libxl / ``xl`` do through domctl)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal, Protocol

DomainType = Literal["pv", "hvm"]


class DomainState(Enum):
    """Coarse domain state, as ``xl list`` shows it (r, p, s, d)."""

    RUNNING = "running"
    PAUSED = "paused"
    SHUTDOWN = "shutdown"  # the kernel ended; the domain waits to be destroyed
    DYING = "dying"


@dataclass(frozen=True)
class DomainInfo:
    """What ``xl list`` / ``xc_domain_getinfo`` tell about a domain."""

    domid: int
    name: str
    memory_mb: int
    vcpus: int
    type: DomainType
    privileged: bool
    state: DomainState
    exit_code: int | None = None
    pid: int | None = None  # emu: the process running the domain's kernel


class DomainControl(Protocol):
    """Create, pause and destroy domains (privileged)."""

    def create(
        self,
        memory_mb: int,
        vcpus: int = 1,
        type: DomainType = "pv",
        privileged: bool = False,
        name: str | None = None,
        *,
        kernel: str | Callable[..., Any] | None = None,
        cmdline: str = "",
    ) -> int:
        """Build a paused domain and return its domid, wired to XenStore as ``xl``
        does (``/local/domain/<id>``, store page and port, ``XS_INTRODUCE``).

        ``kernel`` is what the domain runs once unpaused: on emu a module-level Python
        callable ``func(guest, cmdline)`` (or its name ``"package.module:func"``), or a
        module name run as ``__main__`` with the command line as ``sys.argv[1:]``; on
        Xen a kernel image path.
        """
        ...

    def destroy(self, domid: int) -> None:
        """Destroy ``domid``: its ports, grants and mappings are revoked, XenStore
        releases it (``@releaseDomain``) and ``/local/domain/<id>`` is removed."""
        ...

    def pause(self, domid: int) -> None: ...

    def unpause(self, domid: int) -> None: ...

    def list(self) -> list[DomainInfo]: ...

    def info(self, domid: int) -> DomainInfo:
        """Raises ``HypervisorError`` (ESRCH) for an unknown domid."""
        ...

    def close(self) -> None: ...
