"""Real programs run inside network namespaces: ``ping`` and ``iperf3``, with their
output parsed. Every run is bounded in time and talks only to addresses inside the
namespaces of one `NetTopology`."""

from __future__ import annotations

import json
import re
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from xenvirtio.testing.net_topology import ns_command, ns_run

_LOSS = re.compile(r"(\d+) packets transmitted, (\d+) received")


@dataclass(frozen=True)
class PingResult:
    sent: int
    received: int
    output: str

    @property
    def lossless(self) -> bool:
        return self.sent > 0 and self.sent == self.received


def ping(
    netns: str,
    address: str,
    *,
    count: int = 10,
    interval: float = 0.02,
    size: int | None = None,
    dont_fragment: bool = False,
    wait: float = 2.0,
) -> PingResult:
    argv = ["ping", "-n", "-c", str(count), "-i", str(interval), "-W", str(wait)]
    if size is not None:
        argv += ["-s", str(size)]
    if dont_fragment:
        argv += ["-M", "do"]
    done = ns_run(netns, [*argv, address], timeout=count * (interval + wait) + 10)
    match = _LOSS.search(done.stdout)
    if match is None:
        return PingResult(0, 0, done.stdout + done.stderr)
    return PingResult(int(match[1]), int(match[2]), done.stdout)


@dataclass(frozen=True)
class IperfResult:
    gbits: float
    retransmits: int


def iperf3(
    client_ns: str,
    server_ns: str,
    server_address: str,
    *,
    seconds: float = 2.0,
    streams: int = 1,
    port: int = 5201,
) -> IperfResult:
    """TCP from ``client_ns`` to an iperf3 server started in ``server_ns``."""
    server = subprocess.Popen(
        ns_command(server_ns, ["iperf3", "-s", "-1", "-B", server_address, "-p", str(port)]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        argv = ["iperf3", "-c", server_address, "-p", str(port), "-t", str(seconds), "-J"]
        argv += ["-P", str(streams)]
        report: dict[str, Any] = {}
        for _ in range(30):  # the server needs a moment to listen
            done = ns_run(client_ns, argv, timeout=seconds + 30)
            try:
                report = json.loads(done.stdout)
            except json.JSONDecodeError:
                report = {"error": done.stderr[-500:]}
            if "error" not in report:  # iperf3 -J may exit 0 after "Connection refused"
                break
            time.sleep(0.1)
        if "error" in report:
            raise RuntimeError(f"iperf3 failed: {report['error']}")
        end = report["end"]
        return IperfResult(
            end["sum_received"]["bits_per_second"] / 1e9, int(end["sum_sent"].get("retransmits", 0))
        )
    finally:
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
