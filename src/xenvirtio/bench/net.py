"""virtio-net benchmark: two guests on one bridge, beside a plain veth pair.

    iperf3 / TCP_RR in guest 1's netns -> guest TAP -> VirtioNetDriver -> virtio-pci
    (in-process bus) -> VirtioNetDevice -> TAP -> bridge -> ... -> guest 2's netns

Both guests' drivers and device models run on one thread (`NetStack`), or each guest
with its device model in a process of its own (``processes=True``, `ProcessNetStack`).
Receive buffers are 64 KiB (one per GSO frame) with MRG_RXBUF.

The baseline is the kernel alone: a veth pair between two namespaces, measured in the
same run with the same programs. Figures: iperf3 TCP Gbit/s with 1 and 4 streams, and
TCP_RR transactions/s (1-byte request and response over one connection).
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from xenvirtio.netif.netlink import Netlink, create_netns, remove_netns
from xenvirtio.spec import virtio_net as N
from xenvirtio.testing.net_stack import GuestOptions, NetStack, ProcessNetStack, TransportKind
from xenvirtio.testing.net_tools import iperf3
from xenvirtio.testing.net_topology import ns_command

RR_PORT = 5301
RX_BUF_SIZE = (N.MIN_RX_BUFFER_GSO + 63) & ~63  # a whole GSO frame in one buffer


@dataclass(frozen=True)
class Row:
    test: str
    virtio: float
    netif: float  # Xen's classic PV network drivers, the baseline virtio is measured against
    veth: float


@dataclass(frozen=True)
class Endpoints:
    client_ns: str
    server_ns: str
    server_address: str


def tcp_rr(ends: Endpoints, seconds: float) -> float:
    """Transactions/s of `xenvirtio.bench.net_rr` between the two namespaces."""
    module = [sys.executable, "-m", "xenvirtio.bench.net_rr"]
    server = subprocess.Popen(
        ns_command(ends.server_ns, [*module, "server", ends.server_address, str(RR_PORT)])
    )
    try:
        done = subprocess.run(
            ns_command(
                ends.client_ns, [*module, "client", ends.server_address, str(RR_PORT), str(seconds)]
            ),
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=True,
        )
        return float(done.stdout.strip())
    finally:
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def measure(ends: Endpoints, seconds: float) -> dict[str, float]:
    return {
        "TCP 1 stream, Gbit/s": iperf3(
            ends.client_ns, ends.server_ns, ends.server_address, seconds=seconds
        ).gbits,
        "TCP 4 streams, Gbit/s": iperf3(
            ends.client_ns, ends.server_ns, ends.server_address, seconds=seconds, streams=4
        ).gbits,
        "TCP_RR, transactions/s": tcp_rr(ends, seconds),
    }


@contextlib.contextmanager
def veth_pair() -> Iterator[Endpoints]:
    """Two namespaces joined by a veth pair (the kernel-only baseline)."""
    tag = secrets.token_hex(3)
    a, b = f"xvva-{tag}", f"xvvb-{tag}"
    made: list[str] = []
    try:
        for name in (a, b):
            create_netns(name)
            made.append(name)
        with Netlink(a) as nl:
            nl.add_veth("eth0", "eth0b", peer_netns=b)
            nl.set_link("lo", up=True)
            nl.set_link("eth0", up=True)
            nl.add_address("eth0", "10.213.250.1", 24)
        with Netlink(b) as nl:
            nl.set_link("lo", up=True)
            nl.set_link("eth0b", up=True)
            nl.add_address("eth0b", "10.213.250.2", 24)
        yield Endpoints(a, b, "10.213.250.2")
    finally:
        for name in made:
            remove_netns(name)


def run(
    quick: bool,
    emit: Callable[[str], None] = print,
    *,
    transport: TransportKind = "pci",
    seconds: float | None = None,
    processes: bool = False,
) -> list[Row]:
    """Measure and print; returns the rows."""
    seconds = seconds or (1.0 if quick else 5.0)
    where = "a process per guest" if processes else "one thread"
    emit(f"virtio-net, two guests on a bridge; transport {transport} (in-process bus, {where});")
    emit(f"packed rings, MRG_RXBUF 64 KiB, TSO/checksum offload; {seconds:g} s per test")
    options = GuestOptions(transport=transport, packed=True, rx_buf_size=RX_BUF_SIZE)
    if processes:
        with ProcessNetStack(guests=2, options=options) as separate:
            p1, p2 = separate.guests
            virtio = measure(Endpoints(p1.netns, p2.netns, p2.address), seconds)
    else:
        with NetStack(guests=2, transport=transport, packed=True, rx_buf_size=RX_BUF_SIZE) as one:
            g1, g2 = one.guests
            virtio = measure(Endpoints(g1.netns, g2.netns, g2.address), seconds)
    # Imported here: bench.netif builds on this module's `measure`.
    from xenvirtio.bench.netif import measure_netif

    netif = measure_netif(seconds)
    with veth_pair() as ends:
        veth = measure(ends, seconds)
    rows = [Row(test, virtio[test], netif[test], veth[test]) for test in virtio]
    emit(f"{'test':<26}{'virtio-net':>12}{'netif':>12}{'veth pair':>12}{'virtio/veth':>12}")
    for row in rows:
        ratio = row.virtio / row.veth if row.veth else 0.0
        emit(
            f"{row.test:<26}{row.virtio:>12,.2f}{row.netif:>12,.2f}{row.veth:>12,.2f}{ratio:>12.3f}"
        )
    return rows
