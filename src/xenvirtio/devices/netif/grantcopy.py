"""Batched grant copies for whole packets: one hypercall batch for many packets, and a
per-packet verdict (a grant the frontend did not give spoils only its own packet)."""

from __future__ import annotations

from collections.abc import Sequence

from xenvirtio.hv.api.errors import HypervisorError
from xenvirtio.hv.api.gnttab import Gnttab, GrantCopySegment
from xenvirtio.spec.grant_table import GNTST_okay


def copy_packets(gnttab: Gnttab, packets: Sequence[list[GrantCopySegment]]) -> list[bool]:
    """Run every packet's segments; True for each packet whose segments all succeeded."""
    flat = [seg for segs in packets for seg in segs]
    if not flat:
        return [True] * len(packets)
    try:
        gnttab.grant_copy(flat)
    except HypervisorError:
        return [_copy_one(gnttab, segs) for segs in packets]  # find the culprit(s)
    return [all(s.status == GNTST_okay for s in segs) for segs in packets]


def _copy_one(gnttab: Gnttab, segs: list[GrantCopySegment]) -> bool:
    if not segs:
        return True
    try:
        gnttab.grant_copy(segs)
    except HypervisorError:
        return False
    return all(s.status == GNTST_okay for s in segs)
