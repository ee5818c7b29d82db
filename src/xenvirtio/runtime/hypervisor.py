"""Open the hypervisor: ``emu`` (the embedded default) or, later, ``xen``.

Everything above this layer takes a :class:`~xenvirtio.hv.api.Hypervisor` and never
knows which implementation it got.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from xenvirtio.hv.api.hypervisor import Hypervisor

RUN_DIR_ENV = "XENVIRTIO_RUN_DIR"
HypervisorKind = Literal["emu", "xen"]


def default_run_dir() -> Path:
    """``$XENVIRTIO_RUN_DIR``, else ``$XDG_RUNTIME_DIR/xenvirtio``, else /tmp/xenvirtio-$UID."""
    if os.environ.get(RUN_DIR_ENV):
        return Path(os.environ[RUN_DIR_ENV])
    if os.environ.get("XDG_RUNTIME_DIR"):
        return Path(os.environ["XDG_RUNTIME_DIR"]) / "xenvirtio"
    return Path(f"/tmp/xenvirtio-{os.getuid()}")


def open_hypervisor(
    kind: HypervisorKind = "emu",
    *,
    run_dir: str | os.PathLike[str] | None = None,
    xenstore: bool = True,
) -> Hypervisor:
    """dom0's hypervisor bundle for ``kind``; emu finds its host in ``run_dir``.
    ``xenstore=False``: no XenStore client (``store`` is None), e.g. when it is down."""
    if kind == "emu":
        from xenvirtio.hv.emu import open_emu

        where = Path(run_dir) if run_dir is not None else default_run_dir()
        return open_emu(where, xenstore=xenstore)
    raise NotImplementedError(f"hypervisor {kind!r} is not available yet")
