"""A hostile guest on the same bridge: it writes its own transmit chains (oversized
frames, bad vnet headers, descriptors outside its memory). Its frames are dropped and
counted, or its device latches DEVICE_NEEDS_RESET; the other guests' traffic keeps
flowing throughout."""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from collections.abc import Callable

import pytest

from xenvirtio.spec import virtio as S
from xenvirtio.spec import virtio_net as N
from xenvirtio.spec.virtio_net import VirtioNetHdr as H
from xenvirtio.testing.net_stack import Guest, NetStack
from xenvirtio.testing.tools import require_tool
from xenvirtio.transport.events import NeedsReset
from xenvirtio.transport.probe import kick

ETH = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x66" + b"\x08\x00"
TCP4 = N.VIRTIO_NET_HDR_GSO_TCPV4
BAD_FRAMES = [  # (header, frame length, expected drop reason)
    (H(), 9000, "OVERSIZED"),  # larger than mtu + Ethernet header
    (H(flags=1, gso_type=TCP4, gso_size=1448, csum_start=34, csum_offset=16), 65600, "OVERSIZED"),
    (H(flags=1, gso_type=2, gso_size=1448), 2000, "GSO_TYPE"),
    (H(flags=0, gso_type=TCP4, gso_size=1448), 2000, "GSO_FIELDS"),
    (H(flags=1, csum_start=1000, csum_offset=16), 100, "CSUM_RANGE"),
    (H(hdr_len=4000), 100, "HDR_LEN"),
    (H(), 8, "RUNT"),
]


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def post_tx(guest: Guest, chains: list[tuple[int, int]]) -> None:
    """Put raw (address, length) buffers on the guest's transmitq1 and kick (loop thread)."""
    queue = guest.driver.tx[0].queue
    for n, (addr, length) in enumerate(chains):
        queue.add(guest.mem, [(addr, length)], (), f"hostile-{n}")
    kick(guest.slot.transport, queue, guest.mem)


def bad_frames(guest: Guest) -> None:
    chains = []
    for hdr, length, _ in BAD_FRAMES:
        buf = guest.dma.alloc(N.VIRTIO_NET_HDR_SIZE + length)
        buf.view[: N.VIRTIO_NET_HDR_SIZE] = hdr.pack()
        buf.view[N.VIRTIO_NET_HDR_SIZE : N.VIRTIO_NET_HDR_SIZE + 14] = ETH[: min(14, length)]
        chains.append((buf.addr, buf.size))
    short = guest.dma.alloc(4)
    post_tx(guest, [*chains, (short.addr, 4)])


def start_ping(stack: NetStack) -> subprocess.Popen[str]:
    g1, g2 = stack.guests[:2]
    argv = g1.command(["ping", "-n", "-c", "60", "-i", "0.02", "-W", "2", g2.address])
    return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)


def lossless(proc: subprocess.Popen[str]) -> bool:
    out, _ = proc.communicate(timeout=30)
    return " 0% packet loss" in out


def test_bad_frames_are_dropped_and_counted() -> None:
    require_tool("ping")
    with NetStack(guests=3) as stack:
        good, hostile = stack.guests[0], stack.guests[2]
        pinger = start_ping(stack)
        for _ in range(3):
            stack.call(bad_frames, hostile)
        assert lossless(pinger)
        dropped = hostile.device.stats.tx_dropped
        expected = Counter(reason for _, _, reason in BAD_FRAMES for _ in range(3))
        assert dropped == expected + Counter(SHORT_CHAIN=3)
        assert not hostile.device.broken and not good.device.stats.tx_dropped
        # Dropping frames hurt nobody, the hostile guest included.
        proc = subprocess.run(
            hostile.command(["ping", "-n", "-c", "3", "-i", "0.05", good.address]),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert " 0% packet loss" in proc.stdout


def test_descriptor_outside_memory_needs_reset_alone() -> None:
    require_tool("ping")
    with NetStack(guests=3) as stack:
        good, other, hostile = stack.guests
        pinger = start_ping(stack)
        stack.call(post_tx, hostile, [(hostile.mem.regions[0].end + 0x1000, 1500)])
        assert lossless(pinger)
        assert hostile.device.broken and not good.device.broken and not other.device.broken
        status = stack.call(hostile.slot.transport.get_status)
        assert status & S.VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET
        assert any(
            slot is hostile.slot and isinstance(ev, NeedsReset) for slot, ev in stack.bus.events
        )
        assert hostile.driver.broken  # it saw the configuration change and stopped
        assert not stack.call(good.slot.transport.get_status) & S.VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET


def scribble_rx_descriptors(guest: Guest, how: str) -> None:
    """Rewrite every descriptor of receiveq1's split ring: the buffers the device has not
    popped yet become too short for a header, or point outside the guest's memory."""
    cfg = guest.driver.rx[0].queue.config
    for i in range(cfg.size):
        at = cfg.desc_addr + i * S.VIRTQ_DESC_SIZE
        addr, length, flags, nxt = S.VIRTQ_DESC.unpack(guest.mem.read(at, S.VIRTQ_DESC_SIZE))
        if how == "short":
            length = 4
        else:
            addr = guest.mem.regions[0].end + 0x1000
        guest.mem.write(at, S.VIRTQ_DESC.pack(addr, length, flags, nxt))


@pytest.mark.parametrize("how", ["short", "outside"])
def test_bad_receive_buffers_need_reset_alone(how: str) -> None:
    require_tool("ping")
    with NetStack(guests=3) as stack:
        g1, g2, hostile = stack.guests
        stack.call(scribble_rx_descriptors, hostile, how)
        pinger = start_ping(stack)
        for _ in range(2):  # frames to the hostile guest make its device pop more buffers
            subprocess.run(
                g1.command(["ping", "-n", "-c", "3", "-i", "0.05", "-W", "1", hostile.address]),
                capture_output=True,
                timeout=30,
            )
        assert lossless(pinger)
        assert hostile.device.broken and not g1.device.broken and not g2.device.broken
        status = stack.call(hostile.slot.transport.get_status)
        assert status & S.VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET


def test_driver_resets_the_device_and_comes_back() -> None:
    require_tool("ping")
    with NetStack(guests=2, auto_reconnect=True) as stack:
        good, hostile = stack.guests
        stack.call(post_tx, hostile, [(hostile.mem.regions[0].end + 0x1000, 1500)])
        assert wait_for(lambda: hostile.driver.reconnects == 1 and not hostile.driver.broken)
        assert not hostile.device.broken  # reset, set up again by the driver
        done = subprocess.run(
            hostile.command(["ping", "-n", "-c", "5", "-i", "0.05", "-W", "2", good.address]),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert " 0% packet loss" in done.stdout, done.stdout
