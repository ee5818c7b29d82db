"""`xenvirtio backend`: serve one guest domain's virtio devices from a dom0 process."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from xenvirtio.hv.api import Hypervisor
    from xenvirtio.runtime.specs import DeviceSpec


def _load_specs(text: str) -> list[object]:
    """``--spec``: JSON text (a list of device objects, or one object) or a file of it."""
    stripped = text.lstrip()
    raw = stripped if stripped.startswith(("[", "{")) else Path(text).read_text()
    data = json.loads(raw)
    return data if isinstance(data, list) else [data]


@click.command("backend")
@click.option(
    "--run-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The host's run directory (default: $XENVIRTIO_RUN_DIR, ...).",
)
@click.option("--domid", type=click.IntRange(1, 0x7FEF), required=True, help="Guest domain.")
@click.option("--spec", "spec", required=True, help="Device specs: a JSON file or JSON text.")
@click.option("--workers", type=click.IntRange(1, 64), default=4, show_default=True,
              help="I/O threads shared by the disks.")  # fmt: skip
@click.option("--ready-fd", type=int, default=None, hidden=True,
              help="Write 'ready' to this descriptor once serving, then close it.")  # fmt: skip
@click.option("-v", "--verbose", is_flag=True, help="Log at debug level.")
def backend(
    run_dir: Path | None, domid: int, spec: str, workers: int, ready_fd: int | None, verbose: bool
) -> None:
    """Serve the virtio devices of guest DOMID until SIGTERM or the domain is gone.

    XenBus devices need their directories already plugged (the runtime's start_domain
    does that); pci and mmio devices are claimed through an ioreq server. Starting it
    again with the same spec after a crash picks the XenBus devices up again. With
    --spec FILE, SIGHUP reads FILE again and adds or removes XenBus devices (hot-plug);
    the result goes to backend.status beside FILE.

    \b
    Example:
      xenvirtio host start --run-dir /tmp/xv
      xenvirtio backend --run-dir /tmp/xv --domid 1 \\
        --spec '[{"kind": "disk", "devid": 0, "vdev": "xvda", "image": "/srv/a.img"}]'
    """
    from xenvirtio.runtime import open_hypervisor
    from xenvirtio.runtime.specs import SpecError, specs_from_json

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        specs = specs_from_json(_load_specs(spec))
    except (OSError, ValueError, SpecError) as exc:
        raise click.UsageError(f"--spec: {exc}") from None
    spec_file = Path(spec) if not spec.lstrip().startswith(("[", "{")) else None
    with open_hypervisor("emu", run_dir=run_dir) as hv:
        why = asyncio.run(_serve(hv, domid, specs, workers, ready_fd, spec_file, run_dir))
    click.echo(f"backend for domain {domid}: {why}", err=True)


async def _serve(hv: Hypervisor, domid: int, specs: list[DeviceSpec], workers: int,
                 ready_fd: int | None, spec_file: Path | None,
                 run_dir: Path | None) -> str:  # fmt: skip
    from xenvirtio.runtime.backend import SpecFileReloader, run_backend

    stop, reload = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    reloader = None
    if spec_file is not None:
        reloader = SpecFileReloader(spec_file, spec_file.with_name("backend.status"))
        loop.add_signal_handler(signal.SIGHUP, reload.set)

    def ready() -> None:
        if ready_fd is not None:
            os.write(ready_fd, b"ready\n")
            os.close(ready_fd)

    return await run_backend(hv, domid, specs, stop, ready=ready, workers=workers,
                             reload=reload, on_reload=reloader, run_dir=run_dir)  # fmt: skip
