"""`xenvirtio xenstored`: run the XenStore daemon in the foreground."""

from __future__ import annotations

import asyncio
import logging

import click

from xenvirtio.xenstore.channel import default_socket_path
from xenvirtio.xenstore.connection import Limits
from xenvirtio.xenstore.daemon import XenstoreDaemon


@click.command("xenstored")
@click.option(
    "--socket",
    "socket_path",
    default=None,
    metavar="PATH",
    help="Unix socket to listen on [default: $XENSTORED_PATH, else /var/run/xenstored/socket].",
)
@click.option("--pid-file", default=None, metavar="FILE", help="Write the daemon's pid here.")
@click.option(
    "--outstanding",
    default=20,
    show_default=True,
    type=click.IntRange(1, 1 << 16),
    help="Replies a connection may leave unread before it is throttled (Xen's -Q outstanding).",
)
@click.option(
    "--max-backlog",
    default=1 << 20,
    show_default=True,
    type=click.IntRange(4096),
    help="Bytes of unread output (watch events) after which a connection is dropped.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log every connection event.")
def xenstored(
    socket_path: str | None,
    pid_file: str | None,
    outstanding: int,
    max_backlog: int,
    verbose: bool,
) -> None:
    """Run the XenStore daemon in the foreground until SIGTERM or SIGINT.

    Wire-compatible with Xen's xenstored: Xen's xenstore-* tools, libxenstore and pyxs
    talk to it through XENSTORED_PATH. On exit the socket and pid files are removed.

    \b
    Example:
      xenvirtio xenstored --socket /tmp/xs.sock --pid-file /tmp/xs.pid &
      XENSTORED_PATH=/tmp/xs.sock xenstore-write /vm/name demo
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="xenstored: %(message)s",
    )
    path = socket_path or default_socket_path()
    limits = Limits(outstanding_max=outstanding, backlog_max=max_backlog)
    daemon = XenstoreDaemon(limits=limits)
    asyncio.run(daemon.run(path, pid_file))
