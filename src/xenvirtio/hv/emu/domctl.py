"""Domain control on emu, with the XenStore wiring ``xl create`` / ``xl destroy`` do.

``create`` builds the domain in the hypervisor (RAM, grant table, XenStore page at the
top frame, an unbound port offered to dom0), writes ``/local/domain/<id>`` and
introduces the domain to XenStore (``XS_INTRODUCE``), whose daemon then maps the page
and binds the port. ``destroy`` tears the domain down, removes its XenStore directory
and sends ``XS_RELEASE`` so ``@releaseDomain`` watchers fire.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from xenvirtio.hv.api.domctl import DomainInfo, DomainState, DomainType
from xenvirtio.hv.emu.client import Connection
from xenvirtio.xenstore.client import XenstoreClient


def kernel_name(kernel: str | Callable[..., Any] | None) -> str | None:
    """``"package.module:function"`` for a kernel given as a string or a module-level callable."""
    if kernel is None or isinstance(kernel, str):
        return kernel
    if kernel.__module__ == "__main__" or "<locals>" in kernel.__qualname__:
        raise ValueError("a kernel must be a module-level function of an importable module")
    return f"{kernel.__module__}:{kernel.__qualname__}"


def _info(value: dict[str, Any]) -> DomainInfo:
    return DomainInfo(
        domid=value["domid"],
        name=value["name"],
        memory_mb=value["memory_mb"],
        vcpus=value["vcpus"],
        type=value["type"],
        privileged=value["privileged"],
        state=DomainState(value["state"]),
        exit_code=value["exit_code"],
        pid=value["pid"],
    )


class EmuDomctl:
    """Domain control (:class:`xenvirtio.hv.api.DomainControl`)."""

    def __init__(self, conn: Connection, store: XenstoreClient | None) -> None:
        self._conn = conn
        self.store = store

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
        args = {
            "memory_mb": memory_mb,
            "vcpus": vcpus,
            "type": type,
            "privileged": privileged,
            "name": name or "",  # the hypervisor names it domain-<domid>
            "kernel": kernel_name(kernel),
            "cmdline": cmdline,
        }
        value = self._conn.call("domctl.create", args).value
        domid = int(value["domid"])
        args["name"] = args["name"] or f"domain-{domid}"
        if self.store is not None:
            try:
                self._introduce(domid, args, value["store_gfn"], value["store_port"])
            except BaseException:
                self.destroy(domid)
                raise
        return domid

    def _introduce(self, domid: int, args: dict[str, Any], gfn: int, port: int) -> None:
        assert self.store is not None
        base = f"/local/domain/{domid}"
        kb = str(args["memory_mb"] * 1024)
        nodes = {
            "name": args["name"],
            "domid": str(domid),
            "memory/static-max": kb,
            "memory/target": kb,
            "store/ring-ref": str(gfn),
            "store/port": str(port),
            **{f"cpu/{n}/availability": "online" for n in range(args["vcpus"])},
        }
        with self.store.transaction() as t:
            t.write(base, "")
            t.set_perms(base, [f"n{domid}"])
            # As libxl: the domain owns its directory; device/ and control/ are dom0's,
            # readable by the domain.
            for sub in ("device", "control", "data", "drivers", "feature", "attr", "error"):
                t.write(f"{base}/{sub}", "")
                ro = sub in ("device", "control")
                t.set_perms(f"{base}/{sub}", ["n0", f"r{domid}"] if ro else [f"n{domid}"])
            for key, val in nodes.items():
                t.write(f"{base}/{key}", val)
        self.store.introduce(domid, gfn, port)

    def destroy(self, domid: int) -> None:
        self._conn.call("domctl.destroy", {"domid": domid})
        if self.store is not None:
            with contextlib.suppress(OSError, ConnectionError):
                self.store.rm(f"/local/domain/{domid}")
            with contextlib.suppress(OSError, ConnectionError):
                self.store.release(domid)

    def pause(self, domid: int) -> None:
        self._conn.call("domctl.pause", {"domid": domid})

    def unpause(self, domid: int) -> None:
        self._conn.call("domctl.unpause", {"domid": domid})

    def list(self) -> list[DomainInfo]:
        return [_info(v) for v in self._conn.call("domctl.list").value]

    def info(self, domid: int) -> DomainInfo:
        return _info(self._conn.call("domctl.info", {"domid": domid}).value)

    def close(self) -> None:
        self._conn.close()
