"""A dom0 backend process serving one device over XenBus (for restart tests).

Usage: backend_proc.py RUN_DIR BACKEND_DIR GRANT_USAGE DEVICE, DEVICE being ``echo`` or
``blk:<image>``. Serves from an asyncio loop; prints ``ready`` once it serves; exits when
its stdin closes.
"""

from __future__ import annotations

import asyncio
import os
import sys

from xenvirtio.devices.blk.backing import BlockFile
from xenvirtio.devices.blk.device import VirtioBlkDevice
from xenvirtio.devices.blk.engine import ThreadPoolEngine
from xenvirtio.hv.emu import open_emu
from xenvirtio.testing.echo_device import EchoDevice
from xenvirtio.transport.api import VirtioDevice
from xenvirtio.transport.xenbus import BackendRunner


async def main() -> int:
    run_dir, backend, grant_usage, spec = sys.argv[1:5]
    hv = open_emu(run_dir)
    engine = None
    device: VirtioDevice
    if spec.startswith("blk:"):
        engine = ThreadPoolEngine(4)
        device = VirtioBlkDevice(BlockFile(spec[4:]), engine=engine)
    else:
        device = EchoDevice()
    runner = BackendRunner(hv)
    runner.add(backend, device, grant_usage=grant_usage == "1")
    loop = asyncio.get_running_loop()
    stdin_closed = asyncio.Event()
    loop.add_reader(sys.stdin.fileno(), lambda: os.read(0, 4096) or stdin_closed.set())
    serving = asyncio.create_task(runner.serve())
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    await stdin_closed.wait()
    serving.cancel()
    runner.close()
    if engine is not None:
        engine.close()
    hv.close()
    return 0


if __name__ == "__main__":
    code = asyncio.run(main())
    sys.stdout.flush()
    os._exit(code)
