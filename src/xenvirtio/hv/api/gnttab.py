"""libxengnttab (map other domains' grants) and libxengntshr (grant our own pages).

Grant references are untrusted numbers from another domain: every call validates them
in the hypervisor, and a refusal maps nothing (:class:`~xenvirtio.hv.api.errors.GrantError`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from xenvirtio.hv.api.mapping import GrantMapping, SharedPages
from xenvirtio.spec.grant_table import GNTST_okay


@dataclass(frozen=True)
class UnmapNotify:
    """What to do when a mapping or a share goes away (also when its process dies):
    ``UNMAP_NOTIFY_CLEAR_BYTE`` at ``offset`` and/or ``UNMAP_NOTIFY_SEND_EVENT`` on
    ``port`` (a port of the calling domain)."""

    offset: int | None = None
    port: int | None = None


@dataclass(frozen=True)
class GrantRef:
    """A foreign side of a grant copy: ``ref`` of ``domid``, at ``offset`` in the page."""

    domid: int
    ref: int
    offset: int = 0


@dataclass
class GrantCopySegment:
    """``xengnttab_grant_copy_segment_t``. Each side is a foreign :class:`GrantRef` or a
    local buffer (``bytes`` to read from, a writable ``memoryview``/``bytearray`` to
    write to); at least one side must be a grant. ``status`` is set to a ``GNTST_*``."""

    source: GrantRef | bytes | bytearray | memoryview
    dest: GrantRef | bytearray | memoryview
    len: int
    status: int = GNTST_okay


class Gnttab(Protocol):
    """A libxengnttab handle (``xengnttab_handle``, /dev/xen/gntdev)."""

    def map_grant_ref(self, domid: int, ref: int, writable: bool) -> GrantMapping:
        """``xengnttab_map_grant_ref``."""
        ...

    def map_grant_refs(
        self,
        domid: int,
        refs: Sequence[int],
        writable: bool,
        *,
        notify: UnmapNotify | None = None,
    ) -> GrantMapping:
        """``xengnttab_map_domain_grant_refs`` (and ``..._map_grant_ref_notify``): the
        pages of ``refs``, contiguous, in order. All or nothing."""
        ...

    def unmap(self, mapping: GrantMapping) -> None:
        """``xengnttab_unmap``: GTF_reading / GTF_writing are cleared on the granter."""
        ...

    def grant_copy(self, segments: Sequence[GrantCopySegment]) -> None:
        """``xengnttab_grant_copy``: copy each segment, setting its ``status``."""
        ...

    def set_max_grants(self, nr_grants: int) -> None:
        """``xengnttab_set_max_grants``: cap the pages this handle may map at once."""
        ...

    def close(self) -> None:
        """``xengnttab_close``: unmap everything this handle mapped."""
        ...


class Gntshr(Protocol):
    """A libxengntshr handle (``xengntshr_handle``, /dev/xen/gntalloc)."""

    def share_pages(
        self,
        domid: int,
        count: int,
        writable: bool,
        *,
        notify: UnmapNotify | None = None,
    ) -> SharedPages:
        """``xengntshr_share_pages``: ``count`` fresh zeroed pages granted to ``domid``."""
        ...

    def share_page_notify(
        self, domid: int, writable: bool, notify_offset: int | None, notify_port: int | None
    ) -> SharedPages:
        """``xengntshr_share_page_notify``: one page with an unmap notification."""
        ...

    def unshare(self, pages: SharedPages) -> None:
        """``xengntshr_unshare``: end the grants (deferred by the hypervisor until the
        peer has unmapped them, as gntalloc does) and free the pages."""
        ...

    def close(self) -> None: ...
