"""A domain kernel that runs virtio-net, virtio-console or virtio-rng inside an emu guest,
over whichever transport it is given (`guest_link`): the unchanged guest drivers, doing
their device's job in the domain process.

- net: the driver's NIC is a TAP ``ifname`` in the network namespace ``netns`` (made by
  the caller), so programs run in that namespace send and receive across the
  virtqueues. Serves until dom0 writes ``stop``.
- console: answers every line it receives in upper case, prefixed ``GUEST: ``, until
  ``stop``.
- rng: reads ``sizes`` bytes one read after the other, reports their length, SHA-256
  and the time it took, and ends.

Command line: JSON, ``{"device": "net" | "console" | "rng", "transport": ..., "ring":
"split" | "packed", ...}`` (transport keys as in `open_link`). Reports go to XenStore
under ``/local/domain/<id>/data/ioreq/`` (``ready``, ``result``, ``error``), as the
other ioreq-guest kernels do; dom0 ends a serving guest with the key ``stop`` there.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from xenvirtio.drivers.console.driver import VirtioConsoleDriver
from xenvirtio.drivers.net import TapNic, VirtioNetDriver
from xenvirtio.drivers.net.driver import DEFAULT_RING_FEATURES as NET_RINGS
from xenvirtio.drivers.rng.driver import VirtioRngDriver
from xenvirtio.hv.api.guest import Guest
from xenvirtio.spec import virtio as S
from xenvirtio.testing.guest_link import GuestLink, open_link
from xenvirtio.testing.ioreq_guest import Report, run_reported
from xenvirtio.virtio.features import bit

STOP_KEY = "stop"
STOP_POLL = 0.1  # seconds between looks at the stop key
RNG_TIMEOUT = 60.0
SMALL_RINGS = bit(S.VIRTIO_RING_F_EVENT_IDX) | bit(S.VIRTIO_F_RING_PACKED)

Job = Callable[[GuestLink, dict[str, Any], Report], Awaitable[None]]


def ring_features(allowed: int, ring: str) -> int:
    """``allowed`` without RING_PACKED unless ``ring`` is "packed"."""
    return allowed if ring == "packed" else allowed & ~bit(S.VIRTIO_F_RING_PACKED)


def device_kernel(guest: Guest, cmdline: str) -> int:
    """Kernel entry point: the device job the command line names."""
    args = json.loads(cmdline)
    job = JOBS[args["device"]]
    return run_reported(guest, lambda report: asyncio.run(_run(guest, job, args, report)))


async def _run(guest: Guest, job: Job, args: dict[str, Any], report: Report) -> None:
    link = open_link(guest, {"device_id": int(DEVICE_IDS[args["device"]]), **args})
    try:
        await job(link, args, report)
    finally:
        link.close()


async def wait_stop(report: Report) -> None:
    """Until dom0 writes ``stop`` in our report directory."""
    path = f"{report.base}/{STOP_KEY}"
    while not report.store.exists(path):
        await asyncio.sleep(STOP_POLL)


async def net_job(link: GuestLink, args: dict[str, Any], report: Report) -> None:
    nic = TapNic(args.get("ifname", "eth0"), args["netns"])
    try:
        driver = VirtioNetDriver(
            link.transport,
            link.dma,
            nic,
            ring_features=ring_features(NET_RINGS, args["ring"]),
            queue_size=int(args.get("queue_size", 128)),
            tx_buffers=int(args.get("tx_buffers", 32)),
        )
        link.start(driver.interrupt)
        await driver.start()
        report.put("ready", {"features": driver.features, "mtu": driver.mtu})
        await wait_stop(report)
        report.put("result", {**driver.stats(), "link_up": driver.link_up})
        driver.close()
    finally:
        nic.close()


async def console_job(link: GuestLink, args: dict[str, Any], report: Report) -> None:
    driver = VirtioConsoleDriver(
        link.transport, link.dma, ring_features=ring_features(SMALL_RINGS, args["ring"])
    )
    link.start(driver.interrupt)
    lines = 0

    async def shout() -> None:
        nonlocal lines
        while line := await driver.reader.readline():
            driver.writer.write(b"GUEST: " + line.upper())
            await driver.writer.drain()
            lines += 1

    answering = asyncio.create_task(shout())
    report.put("ready", {"features": driver.features, "size": driver.size})
    await wait_stop(report)
    answering.cancel()
    report.put("result", {"lines": lines})
    driver.close()


async def rng_job(link: GuestLink, args: dict[str, Any], report: Report) -> None:
    driver = VirtioRngDriver(
        link.transport,
        link.dma,
        ring_features=ring_features(SMALL_RINGS, args["ring"]),
        buffer_size=int(args.get("buffer_size", 4096)),
    )
    link.start(driver.interrupt)
    digest, total = hashlib.sha256(), 0
    start = time.monotonic()
    for size in args["sizes"]:
        data = await asyncio.wait_for(driver.read(int(size)), RNG_TIMEOUT)
        digest.update(data)
        total += len(data)
    elapsed = time.monotonic() - start
    report.put(
        "result",
        {
            "length": total,
            "sha256": digest.hexdigest(),
            "elapsed": elapsed,
            "received": driver.received,
            "packed": bool(driver.features >> S.VIRTIO_F_RING_PACKED & 1),
        },
    )
    driver.close()


JOBS: dict[str, Job] = {"net": net_job, "console": console_job, "rng": rng_job}
DEVICE_IDS = {
    "net": S.VirtioDeviceId.NET,
    "console": S.VirtioDeviceId.CONSOLE,
    "rng": S.VirtioDeviceId.ENTROPY,
}
