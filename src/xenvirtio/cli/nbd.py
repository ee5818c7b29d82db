"""`xenvirtio nbd-serve`: export a raw image file over NBD."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import click


def _power_of_two(ctx: click.Context, param: click.Parameter, value: int) -> int:
    if not 1 <= value <= 65536 or value & (value - 1):
        raise click.BadParameter("must be a power of 2 from 1 to 65536")
    return value


@click.command("nbd-serve")
@click.option(
    "--socket",
    "socket_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Unix socket to listen on (removed again on exit).",
)
@click.option(
    "--image",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Raw image file to export; its size is the export size.",
)
@click.option("--read-only", is_flag=True, help="Export read-only (writes get EPERM).")
@click.option("--name", "export_name", default="", help="Export name (default: empty).")
@click.option(
    "--tcp-port", type=int, default=None, help="Also listen on 127.0.0.1:PORT (0 picks one)."
)
@click.option(
    "--block-size",
    type=int,
    default=1,
    show_default=True,
    callback=_power_of_two,
    help="Minimum block size to advertise and enforce (a power of 2; 512 mimics a disk).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log every rejected request.")
def nbd_serve(
    socket_path: Path,
    image: Path,
    read_only: bool,
    export_name: str,
    tcp_port: int | None,
    block_size: int,
    verbose: bool,
) -> None:
    """Serve a raw image file as an NBD export until interrupted (Ctrl-C or SIGTERM).

    Any NBD client works on it: nbdinfo, nbdcopy, nbdfuse, qemu-img, fio's nbd engine.

    \b
    Example:
      truncate -s 1G disk.img
      xenvirtio nbd-serve --socket /tmp/disk.sock --image disk.img &
      nbdinfo 'nbd+unix:///?socket=/tmp/disk.sock'
      qemu-img convert -p -O raw 'nbd+unix:///?socket=/tmp/disk.sock' copy.img
    """
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING)
    asyncio.run(_serve(socket_path, image, read_only, export_name, tcp_port, block_size))


async def _serve(
    socket_path: Path,
    image: Path,
    read_only: bool,
    export_name: str,
    tcp_port: int | None,
    block_size: int,
) -> None:
    from xenvirtio.nbd.file_backend import FileBackend
    from xenvirtio.nbd.server import NbdServer

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    with FileBackend(image, read_only=read_only, block_size=block_size) as backend:
        async with NbdServer(backend, export_name=export_name) as server:
            await server.start_unix(socket_path)
            click.echo(f"nbd: serving {image} ({backend.size} bytes)", err=True)
            click.echo(f"nbd: nbd+unix:///{export_name}?socket={socket_path}", err=True)
            if tcp_port is not None:
                port = await server.start_tcp("127.0.0.1", tcp_port)
                click.echo(f"nbd: nbd://127.0.0.1:{port}/{export_name}", err=True)
            await stop.wait()
