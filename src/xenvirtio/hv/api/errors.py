"""Typed errors of the hypervisor interface, named by Xen's errno values.

Every port raises :class:`HypervisorError` (an :class:`OSError`) whose ``errno`` is the
value Xen's library would leave in ``errno``; ``name`` gives it as Xen spells it
(``EPERM``, ``EINVAL``, ``EBUSY`` ...). A refused privileged operation is also a
:class:`PermissionError`; a failed grant operation also carries the ``GNTST_*`` status.
"""

from __future__ import annotations

import errno as _errno


class HypervisorError(OSError):
    """A hypervisor call failed; ``errno`` says why, as Xen's libraries report it."""

    def __init__(self, err: int, message: str) -> None:
        super().__init__(err, message)

    @property
    def name(self) -> str:
        """The errno name (``EINVAL``), as in Xen's ``errno.h``."""
        return _errno.errorcode.get(self.errno or 0, f"E{self.errno}")

    def __str__(self) -> str:
        return f"[{self.name}] {self.strerror}"


class HypervisorPermissionError(HypervisorError, PermissionError):
    """The caller may not do this (EPERM / EACCES): e.g. an unprivileged domain asking
    for a foreign mapping or a device-model operation."""


class GrantError(HypervisorError):
    """A grant table operation was refused; ``status`` is the ``GNTST_*`` code."""

    def __init__(self, err: int, message: str, status: int = -1) -> None:
        super().__init__(err, message)
        self.status = status


def hv_error(err: int | str, message: str, *, gntst: int | None = None) -> HypervisorError:
    """The right :class:`HypervisorError` subclass for ``err`` (a number or ``"EPERM"``)."""
    code = getattr(_errno, err, None) if isinstance(err, str) else err
    if not isinstance(code, int):
        code = _errno.EIO
    if gntst is not None:
        return GrantError(code, message, gntst)
    if code in (_errno.EPERM, _errno.EACCES):
        return HypervisorPermissionError(code, message)
    return HypervisorError(code, message)
