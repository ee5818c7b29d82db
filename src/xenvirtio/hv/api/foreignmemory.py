"""libxenforeignmemory: a privileged domain maps another domain's memory by frame number.

Only privileged callers (dom0, a privileged driver domain) may do this; anyone else gets
:class:`~xenvirtio.hv.api.errors.HypervisorPermissionError` (EPERM) and nothing mapped.
"""

from __future__ import annotations

import mmap
from collections.abc import Sequence
from typing import Final, Protocol

from xenvirtio.hv.api.mapping import ForeignMapping

PROT_READ: Final = mmap.PROT_READ
PROT_WRITE: Final = mmap.PROT_WRITE


class ForeignMemory(Protocol):
    """A libxenforeignmemory handle (``xenforeignmemory_handle``, /dev/xen/privcmd)."""

    def map(self, domid: int, prot: int, frames: Sequence[int]) -> ForeignMapping:
        """``xenforeignmemory_map`` with ``err == NULL``: the guest frames ``frames`` of
        ``domid``, contiguous, in order; any bad frame fails the whole call (EINVAL)."""
        ...

    def map_resource(
        self, domid: int, type: int, id: int, frame: int, nr_frames: int, prot: int
    ) -> ForeignMapping:
        """``xenforeignmemory_map_resource``: frames of a hypervisor resource of ``domid``
        (``XENMEM_resource_ioreq_server`` pages of server ``id``, or its grant table)."""
        ...

    def unmap(self, mapping: ForeignMapping) -> None:
        """``xenforeignmemory_unmap`` (or ``..._unmap_resource``)."""
        ...

    def close(self) -> None: ...
