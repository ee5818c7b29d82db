"""The XenStore daemon of an emu host: ours, with emu's ``DomainConnector``.

Run as ``python -m xenvirtio.hv.emu.xenstored --run-dir DIR`` (``xenvirtio host start``
does it). It is a privileged dom0 process of the emu hypervisor: it maps each
introduced domain's XenStore page by foreign mapping and binds its port.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from xenvirtio.hv.emu.xenstore_link import EmuDomainConnector
from xenvirtio.xenstore.daemon import XenstoreDaemon

SOCKET = "xenstored.sock"
PID_FILE = "xenstored.pid"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m xenvirtio.hv.emu.xenstored")
    parser.add_argument("--run-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s xenstored: %(message)s", stream=sys.stderr
    )
    connector = EmuDomainConnector(args.run_dir)
    try:
        daemon = XenstoreDaemon(connector=connector)
        asyncio.run(daemon.run(str(args.run_dir / SOCKET), str(args.run_dir / PID_FILE)))
    finally:
        connector.close()


if __name__ == "__main__":
    main()
