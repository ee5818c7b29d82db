"""One domain's v1 grant table as the hypervisor sees it (pure: a memoryview in, checks out).

The granting domain writes ``grant_entry_v1`` entries straight into the shared table;
the hypervisor copies an entry once, validates the copy (Xen's ``_set_status_v1``) and
keeps its own pin counts, so a guest scribbling over ``GTF_reading``/``GTF_writing``
cannot revoke or forge a mapping. ``end_access`` is done here too: it stands in for the
guest's ``cmpxchg`` on the flags, which Python cannot do on shared memory.
"""

from __future__ import annotations

import errno
import heapq

from xenvirtio.hv.api.errors import GrantError
from xenvirtio.spec.grant_table import (
    GNTTAB_NR_RESERVED_ENTRIES,
    GRANT_ENTRY_V1,
    GNTST_bad_gntref,
    GNTST_general_error,
    GNTST_no_space,
    GNTST_permission_denied,
    GTF_permit_access,
    GTF_reading,
    GTF_readonly,
    GTF_sub_page,
    GTF_type_mask,
    GTF_writing,
)

_BUSY = GTF_reading | GTF_writing


def grant_error(err: int, status: int, message: str) -> GrantError:
    return GrantError(err, message, status)


class GrantTable:
    """Entries ``0 .. nr_entries-1`` of ``table``; refs below 8 are the toolstack's."""

    def __init__(self, table: memoryview, nr_frames_of_owner: int) -> None:
        self.table = table
        self.nr_entries = len(table) // GRANT_ENTRY_V1.size
        self.nr_frames = nr_frames_of_owner
        self.pins: dict[int, list[int]] = {}  # ref -> [mappings, writable mappings]
        self._free: list[int] = []
        self._next = GNTTAB_NR_RESERVED_ENTRIES

    # -- entries ---------------------------------------------------------------------
    def entry(self, ref: int) -> tuple[int, int, int]:
        """(flags, domid, frame) of ``ref``, copied once from shared memory."""
        if not 0 <= ref < self.nr_entries:
            raise grant_error(errno.EINVAL, GNTST_bad_gntref, f"grant ref {ref} out of range")
        flags, domid, frame = GRANT_ENTRY_V1.unpack_from(self.table, ref * GRANT_ENTRY_V1.size)
        return flags, domid, frame

    def write_entry(self, ref: int, flags: int, domid: int, frame: int) -> None:
        """Write an entry as the guest does: frame and domid first, then the flags."""
        offset = ref * GRANT_ENTRY_V1.size
        GRANT_ENTRY_V1.pack_into(self.table, offset, 0, domid, frame)
        self.table[offset : offset + 2] = flags.to_bytes(2, "little")

    def _set_flags(self, ref: int, set_bits: int, clear_bits: int) -> None:
        offset = ref * GRANT_ENTRY_V1.size
        flags = int.from_bytes(self.table[offset : offset + 2], "little")
        flags = (flags & ~clear_bits) | set_bits
        self.table[offset : offset + 2] = flags.to_bytes(2, "little")

    # -- mapping ---------------------------------------------------------------------
    def check_access(self, ref: int, mapper: int, writable: bool) -> int:
        """Validate ``ref`` for ``mapper``; returns the granted frame (GrantError if not)."""
        flags, domid, frame = self.entry(ref)
        if flags & GTF_type_mask != GTF_permit_access or flags & GTF_sub_page:
            raise grant_error(
                errno.EPERM, GNTST_general_error, f"grant ref {ref} does not permit access"
            )
        if domid != mapper:
            raise grant_error(
                errno.EPERM,
                GNTST_permission_denied,
                f"grant ref {ref} is granted to domain {domid}, not {mapper}",
            )
        if writable and flags & GTF_readonly:
            raise grant_error(errno.EPERM, GNTST_permission_denied, f"grant ref {ref} is read-only")
        if frame >= self.nr_frames:
            raise grant_error(errno.EINVAL, GNTST_general_error, f"grant ref {ref}: bad frame")
        return frame

    def pin(self, ref: int, writable: bool) -> None:
        counts = self.pins.setdefault(ref, [0, 0])
        counts[0] += 1
        counts[1] += int(writable)
        self._set_flags(ref, GTF_reading | (GTF_writing if writable else 0), 0)

    def unpin(self, ref: int, writable: bool) -> None:
        counts = self.pins.get(ref)
        if counts is None:
            return
        counts[0] -= 1
        counts[1] -= int(writable)
        if counts[0] <= 0:
            del self.pins[ref]
            self._set_flags(ref, 0, _BUSY)
        elif counts[1] <= 0:
            self._set_flags(ref, 0, GTF_writing)

    def in_use(self, ref: int) -> bool:
        return ref in self.pins

    def end_access(self, ref: int) -> None:
        """``gnttab_end_foreign_access_ref``: EBUSY while mapped, else invalidate."""
        self.entry(ref)
        if ref in self.pins:
            raise grant_error(errno.EBUSY, GNTST_general_error, f"grant ref {ref} is mapped")
        self.write_entry(ref, 0, 0, 0)

    # -- reference allocation ----------------------------------------------------------
    def alloc_refs(self, count: int) -> list[int]:
        available = len(self._free) + (self.nr_entries - self._next)
        if count > available:
            raise grant_error(errno.ENOSPC, GNTST_no_space, "grant table full")
        refs = [heapq.heappop(self._free) for _ in range(min(count, len(self._free)))]
        while len(refs) < count:
            refs.append(self._next)
            self._next += 1
        return refs

    def free_refs(self, refs: list[int]) -> None:
        for ref in refs:
            heapq.heappush(self._free, ref)
