"""What a domain's kernel reaches on emu: its grant table and its interrupts (its vCPUs'
I/O is in :mod:`xenvirtio.hv.emu.vcpu_io`)."""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
from collections.abc import Sequence

from xenvirtio.hv.api.errors import HypervisorError
from xenvirtio.hv.api.guest import IrqEvent
from xenvirtio.hv.emu.client import Connection
from xenvirtio.spec.grant_table import (
    GRANT_ENTRY_V1,
    GTF_permit_access,
    GTF_reading,
    GTF_readonly,
    GTF_writing,
)


class EmuGrantTableFront:
    """The domain's own grant table (:class:`xenvirtio.hv.api.GrantTableFront`)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        result = conn.call("grant.table")
        self.nr_entries = int(result.value["nr_entries"])
        try:
            self._map = mmap.mmap(result.fds[0], self.nr_entries * GRANT_ENTRY_V1.size)
        finally:
            result.close_fds()

    def alloc_grant_references(self, count: int) -> list[int]:
        return [int(r) for r in self._conn.call("grant.alloc_refs", {"count": count}).value["refs"]]

    def free_grant_references(self, refs: Sequence[int]) -> None:
        self._conn.call("grant.free_refs", {"refs": list(refs)})

    def _check(self, ref: int) -> int:
        if not 0 <= ref < self.nr_entries:
            raise HypervisorError(errno.EINVAL, f"grant ref {ref} out of range")
        return ref * GRANT_ENTRY_V1.size

    def grant_foreign_access_ref(self, ref: int, domid: int, frame: int, readonly: bool) -> None:
        offset = self._check(ref)
        GRANT_ENTRY_V1.pack_into(self._map, offset, 0, domid, frame)
        flags = GTF_permit_access | (GTF_readonly if readonly else 0)
        self._map[offset : offset + 2] = flags.to_bytes(2, "little")  # flags last (wmb)

    def end_foreign_access_ref(self, ref: int) -> None:
        self._check(ref)
        self._conn.call("grant.end_access", {"ref": ref})

    def query_foreign_access(self, ref: int) -> bool:
        offset = self._check(ref)
        flags = int.from_bytes(self._map[offset : offset + 2], "little")
        return bool(flags & (GTF_reading | GTF_writing))

    def grant_foreign_access(self, domid: int, frame: int, readonly: bool) -> int:
        (ref,) = self.alloc_grant_references(1)
        self.grant_foreign_access_ref(ref, domid, frame, readonly)
        return ref

    def end_foreign_access(self, ref: int) -> None:
        self.end_foreign_access_ref(ref)
        self.free_grant_references([ref])

    def close(self) -> None:
        self._map.close()


class EmuInterrupts:
    """The domain's virtual interrupt controller (:class:`xenvirtio.hv.api.Interrupts`)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._efd = conn.call("irq.attach").fds[0]

    def fd(self) -> int:
        return self._efd

    def take(self) -> list[IrqEvent]:
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._efd)
        events = self._conn.call("irq.take").value["events"]
        return [IrqEvent(**e) for e in events]

    def get_free_pirq(self) -> int:
        return int(self._conn.call("irq.get_free_pirq").value["pirq"])

    def map_pirq_gsi(self, gsi: int) -> int:
        return int(self._conn.call("irq.map_pirq_gsi", {"gsi": gsi}).value["pirq"])

    def unmap_pirq(self, pirq: int) -> None:
        self._conn.call("irq.unmap_pirq", {"pirq": pirq})

    def close(self) -> None:
        os.close(self._efd)
