"""The netif column of the network benchmark: the same iperf3 (1 and 4 streams) and
TCP_RR workloads as `bench.net`, between two guests with netif NICs:

    iperf3 / TCP_RR in guest 1's netns -> TAP -> netfront -> tx ring, grant copy ->
    netback (dom0) -> vif1.0 -> bridge -> vif2.0 -> netback -> grant copy, rx ring ->
    netfront -> TAP -> guest 2's netns

on an emu host started for the run. Hook into ``bench/net.py``'s ``run`` with
``netif = measure_netif(seconds)`` beside ``virtio = measure(...)``: the keys are the
same test names, so it becomes one more column.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from xenvirtio.bench.net import Endpoints, measure
from xenvirtio.devices.netif.vif import VifConfig
from xenvirtio.drivers.netif.frontend import NetfrontConfig
from xenvirtio.hv.emu.host import start_host, stop_host
from xenvirtio.testing.netif_stack import NetifStack

DEFAULT_FRONT = NetfrontConfig(num_queues=1, split_event_channels=True)


def measure_netif(
    seconds: float,
    *,
    front: NetfrontConfig = DEFAULT_FRONT,
    back: VifConfig | None = None,
    workdir: Path | None = None,
) -> dict[str, float]:
    """`bench.net.measure` between two netif guests on a fresh emu host."""
    with tempfile.TemporaryDirectory(prefix="xv-netif-", dir=workdir) as tmp:
        run_dir = Path(tmp)
        start_host(run_dir)
        try:
            with NetifStack(run_dir, guests=2, front=front, back=back) as stack:
                g1, g2 = stack.guests
                return measure(Endpoints(g1.netns, g2.netns, g2.address), seconds)
        finally:
            stop_host(run_dir)
