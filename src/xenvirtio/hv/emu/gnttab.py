"""libxengnttab and libxengntshr on emu.

The hypervisor validates and pins the grants, then hands over the granter's RAM memfd
and page offsets; the pages are mapped side by side here (:class:`PageMap`). Unmapping
revokes the pages locally first, then lets the hypervisor clear GTF_reading/GTF_writing.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Sequence

from xenvirtio.hv.api.errors import HypervisorError
from xenvirtio.hv.api.gnttab import GrantCopySegment, GrantRef, UnmapNotify
from xenvirtio.hv.api.mapping import GrantMapping, SharedPages
from xenvirtio.hv.emu.client import Connection, call_and_map
from xenvirtio.spec.grant_table import XEN_PAGE_SIZE, GNTST_okay

COPY_BATCH = 16


def _notify_args(notify: UnmapNotify | None) -> dict[str, int | None]:
    return {
        "notify_offset": notify.offset if notify else None,
        "notify_port": notify.port if notify else None,
    }


class EmuGnttab:
    """A libxengnttab handle (:class:`xenvirtio.hv.api.Gnttab`)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._live: dict[int, GrantMapping] = {}

    def map_grant_ref(self, domid: int, ref: int, writable: bool) -> GrantMapping:
        return self.map_grant_refs(domid, [ref], writable)

    def map_grant_refs(
        self,
        domid: int,
        refs: Sequence[int],
        writable: bool,
        *,
        notify: UnmapNotify | None = None,
    ) -> GrantMapping:
        args = {"domid": domid, "refs": list(refs), "writable": writable, **_notify_args(notify)}
        handle, _value, pages = call_and_map(self._conn, "gnttab.map", args, writable)

        def release() -> None:
            pages.revoke()
            self._live.pop(handle, None)
            with contextlib.suppress(HypervisorError):
                self._conn.call("gnttab.unmap", {"handle": handle})

        mapping = GrantMapping(pages.memory, release, domid=domid, refs=refs, writable=writable)
        self._live[handle] = mapping
        return mapping

    def unmap(self, mapping: GrantMapping) -> None:
        if mapping not in self._live.values():
            raise HypervisorError(errno.EINVAL, "not a mapping of this handle")
        mapping.unmap()

    def grant_copy(self, segments: Sequence[GrantCopySegment]) -> None:
        for start in range(0, len(segments), COPY_BATCH):
            self._copy_batch(segments[start : start + COPY_BATCH])

    def _copy_batch(self, segments: Sequence[GrantCopySegment]) -> None:
        wire: list[list[int]] = []
        blob = bytearray()
        for seg in segments:
            src, dst = seg.source, seg.dest
            if (
                not (isinstance(src, GrantRef) or isinstance(dst, GrantRef))
                or not 0 <= seg.len <= XEN_PAGE_SIZE
            ):
                raise HypervisorError(errno.EINVAL, "a segment needs a grant side and len <= 4096")
            row = [0, 0, 0, 0, 0, 0, 0, 0, seg.len]
            if isinstance(src, GrantRef):
                row[0:4] = [1, src.domid, src.ref, src.offset]
            else:
                if len(src) < seg.len:
                    raise HypervisorError(errno.EINVAL, "local source shorter than len")
                row[2] = len(blob)
                blob += bytes(memoryview(src)[: seg.len])
            if isinstance(dst, GrantRef):
                row[4:8] = [1, dst.domid, dst.ref, dst.offset]
            elif len(dst) < seg.len:
                raise HypervisorError(errno.EINVAL, "local destination shorter than len")
            wire.append(row)
        result = self._conn.call("gnttab.copy", {"segments": wire}, bytes(blob))
        data = memoryview(result.blob)
        at = 0
        for seg, status in zip(segments, result.value["status"], strict=True):
            seg.status = int(status)
            if not isinstance(seg.dest, GrantRef):
                if status == GNTST_okay:
                    seg.dest[: seg.len] = data[at : at + seg.len]
                at += seg.len

    def set_max_grants(self, nr_grants: int) -> None:
        self._conn.call("gnttab.set_max_grants", {"nr_grants": nr_grants})

    def close(self) -> None:
        for mapping in list(self._live.values()):
            mapping.unmap()
        self._conn.close()


class EmuGntshr:
    """A libxengntshr handle (:class:`xenvirtio.hv.api.Gntshr`)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._live: dict[int, SharedPages] = {}

    def share_pages(
        self,
        domid: int,
        count: int,
        writable: bool,
        *,
        notify: UnmapNotify | None = None,
    ) -> SharedPages:
        args = {"domid": domid, "count": count, "writable": writable, **_notify_args(notify)}
        handle, value, pages = call_and_map(self._conn, "gntshr.share", args, True)

        def release() -> None:
            pages.revoke()
            self._live.pop(handle, None)
            with contextlib.suppress(HypervisorError):
                self._conn.call("gntshr.unshare", {"handle": handle})

        shared = SharedPages(
            pages.memory, release, domid=domid, refs=value["refs"], writable=writable
        )
        self._live[handle] = shared
        return shared

    def share_page_notify(
        self, domid: int, writable: bool, notify_offset: int | None, notify_port: int | None
    ) -> SharedPages:
        return self.share_pages(domid, 1, writable, notify=UnmapNotify(notify_offset, notify_port))

    def unshare(self, pages: SharedPages) -> None:
        if pages not in self._live.values():
            raise HypervisorError(errno.EINVAL, "not pages of this handle")
        pages.unmap()

    def close(self) -> None:
        for pages in list(self._live.values()):
            pages.unmap()
        self._conn.close()
