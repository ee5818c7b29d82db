"""How blkback reaches the frontend's data pages: grant copy, or persistent mappings.

With ``feature-persistent`` each page is mapped on first use and kept until the
connection ends (as Linux blkback does, up to `MAX_PERSISTENT_GRANTS`): `views` gives
zero-copy views of a request's pieces, for ``preadv``/``pwritev`` straight into guest
pages. Without it (or beyond the cap) `copy_from`/`copy_to` move the bytes with one
``grant_copy`` batch (as QEMU's qdisk does). A grant the frontend did not give raises
`GrantAccessError` before anything is written.

Threads: `views` (it maps, and keeps the table of mappings) runs on the backend's
thread only; the copies may run on I/O workers (a hypervisor handle serialises its own
calls).
"""

from __future__ import annotations

from collections.abc import Sequence

from xenvirtio.hv.api.errors import HypervisorError
from xenvirtio.hv.api.gnttab import Gnttab, GrantCopySegment, GrantRef
from xenvirtio.hv.api.mapping import GrantMapping
from xenvirtio.spec.grant_table import GNTST_okay

MAX_PERSISTENT_GRANTS = 1056  # Linux xen_blkif_max_pgrants

Piece = tuple[int, int, int]  # gref, offset in the page, length


class GrantAccessError(Exception):
    """A data page the frontend named cannot be reached (not granted, out of range)."""


class GrantAccess:
    """Data access for one connection to domain ``domid`` through ``gnttab``."""

    def __init__(self, gnttab: Gnttab, domid: int, persistent: bool) -> None:
        self.gnttab = gnttab
        self.domid = domid
        self.persistent = persistent
        self.mapped: dict[int, GrantMapping] = {}

    def views(self, pieces: Sequence[Piece]) -> list[memoryview] | None:
        """Views of every piece through persistent mappings, or None (copy instead)."""
        if not self.persistent:
            return None
        new = {g for g, _, _ in pieces if g not in self.mapped}
        if len(self.mapped) + len(new) > MAX_PERSISTENT_GRANTS:
            return None
        for gref in sorted(new):
            try:
                self.mapped[gref] = self.gnttab.map_grant_ref(self.domid, gref, True)
            except HypervisorError as exc:
                raise GrantAccessError(f"grant {gref}: {exc}") from exc
        return [self.mapped[g].memory[off : off + n] for g, off, n in pieces]

    def copy_from(self, pieces: Sequence[Piece]) -> bytes:
        """The bytes of ``pieces``, concatenated (one grant copy batch)."""
        out = [bytearray(length) for _, _, length in pieces]
        self._copy([
            GrantCopySegment(GrantRef(self.domid, gref, off), buf, length)
            for (gref, off, length), buf in zip(pieces, out, strict=True)
        ])  # fmt: skip
        return b"".join(out)

    def copy_to(self, pieces: Sequence[Piece], data: bytes | bytearray | memoryview) -> None:
        """Scatter ``data`` over ``pieces`` (one grant copy batch)."""
        segs: list[GrantCopySegment] = []
        at = 0
        for gref, off, length in pieces:
            segs.append(GrantCopySegment(bytes(data[at : at + length]),
                                         GrantRef(self.domid, gref, off), length))  # fmt: skip
            at += length
        self._copy(segs)

    def _copy(self, segs: list[GrantCopySegment]) -> None:
        try:
            self.gnttab.grant_copy(segs)
        except HypervisorError as exc:
            raise GrantAccessError(str(exc)) from exc
        bad = [s for s in segs if s.status != GNTST_okay]
        if bad:
            raise GrantAccessError(f"grant copy status {bad[0].status}")

    def close(self) -> None:
        for mapping in self.mapped.values():
            self.gnttab.unmap(mapping)
        self.mapped.clear()
