"""libxenforeignmemory on emu: privileged domains map guest frames or resource pages."""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Sequence
from typing import Any

from xenvirtio.hv.api.errors import HypervisorError
from xenvirtio.hv.api.foreignmemory import PROT_WRITE
from xenvirtio.hv.api.mapping import ForeignMapping
from xenvirtio.hv.emu.client import Connection, call_and_map


class EmuForeignMemory:
    """A libxenforeignmemory handle (:class:`xenvirtio.hv.api.ForeignMemory`)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._live: dict[int, ForeignMapping] = {}

    def _map(
        self, op: str, args: dict[str, Any], domid: int, frames: Sequence[int]
    ) -> ForeignMapping:
        writable = bool(args["writable"])
        handle, _value, pages = call_and_map(self._conn, op, args, writable)

        def release() -> None:
            pages.revoke()
            self._live.pop(handle, None)
            with contextlib.suppress(HypervisorError):
                self._conn.call("foreign.unmap", {"handle": handle})

        mapping = ForeignMapping(
            pages.memory, release, domid=domid, frames=frames, writable=writable
        )
        self._live[handle] = mapping
        return mapping

    def map(self, domid: int, prot: int, frames: Sequence[int]) -> ForeignMapping:
        args = {"domid": domid, "writable": bool(prot & PROT_WRITE), "frames": list(frames)}
        return self._map("foreign.map", args, domid, list(frames))

    def map_resource(
        self, domid: int, type: int, id: int, frame: int, nr_frames: int, prot: int
    ) -> ForeignMapping:
        args = {
            "domid": domid,
            "type": type,
            "id": id,
            "frame": frame,
            "nr_frames": nr_frames,
            "writable": bool(prot & PROT_WRITE),
        }
        return self._map("foreign.map_resource", args, domid, range(frame, frame + nr_frames))

    def unmap(self, mapping: ForeignMapping) -> None:
        if mapping not in self._live.values():
            raise HypervisorError(errno.EINVAL, "not a mapping of this handle")
        mapping.unmap()

    def close(self) -> None:
        for mapping in list(self._live.values()):
            mapping.unmap()
        self._conn.close()
