"""The demo's steps for the demo domain's NIC, console and entropy device, reached the
way `xenvirtio list --json` says: programs run in the NIC's network namespace, a line
typed into the console pty, bytes read from the rng socket.

The NIC needs root (network namespaces); without it the demo domain is created without
its vif and the network step says why it is skipped.
"""

from __future__ import annotations

import os
import secrets
import select
import socket
import subprocess
import time
from typing import Any

import click

from xenvirtio.cli.demo_runner import Demo, DemoFailed
from xenvirtio.cli.demo_steps import listing

PEER_ADDRESS = "10.0.0.1/24"  # dom0's side of xenbr0, in a namespace of the demo's own


def has_root() -> bool:
    return os.geteuid() == 0


def _device(demo: Demo, kind: str) -> dict[str, Any]:
    for dom in listing(demo):
        for dev in dom["devices"] if dom["name"] == "demo" else []:
            if dev["kind"] == kind and dev["state"] == "ready":
                found: dict[str, Any] = dev
                return found
    raise DemoFailed(f"demo: no ready {kind} in `xenvirtio list --json`")


def peer_netns(demo: Demo) -> str:
    """The namespace holding dom0's address on the bridge (named per demo run)."""
    return f"xvdemo-{demo.dir.name[-8:]}"


def network(demo: Demo) -> None:
    """ping and iperf3 from the guest's namespace to an address on the host's bridge."""
    from xenvirtio.runtime.network import add_bridge_peer

    nic = _device(demo, "net")
    demo.check(bool(nic["netns"]) and nic["mac"] == "00:16:3e:5a:00:01",
               f"eth0 {nic['ip']} {nic['mac']} in netns {nic['netns']}")  # fmt: skip
    peer = peer_netns(demo)
    add_bridge_peer(demo.run_dir, "xenbr0", peer, PEER_ADDRESS)
    try:
        _traffic(demo, nic["netns"], peer)
    finally:
        remove_peer(demo)


def _traffic(demo: Demo, netns: str, peer: str) -> None:
    demo.note(f"ip netns add {peer}  # a veth on xenbr0 with {PEER_ADDRESS}")
    out = demo.run("ip", "netns", "exec", netns, "ping", "-c", "3", "-i", "0.2", "10.0.0.1")
    demo.check(" 0% packet loss" in out, "the guest pings dom0's side of the bridge")
    server = subprocess.Popen(["ip", "netns", "exec", peer, "iperf3", "-s", "-1", "-B",
                               "10.0.0.1"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        out = _iperf(demo, netns)
    finally:
        _reap(server)
    demo.check("receiver" in out, "iperf3: TCP from the guest through virtio-net")


def _iperf(demo: Demo, netns: str) -> str:
    argv = ("ip", "netns", "exec", netns, "iperf3", "-c", "10.0.0.1", "-t", "1", "-f", "m")
    for _ in range(20):  # until the server listens
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        if done.returncode == 0:
            return _show(demo, argv, done.stdout)
        time.sleep(0.1)
    raise DemoFailed("iperf3 could not reach the server")


def _show(demo: Demo, argv: tuple[str, ...], out: str) -> str:
    demo.note(" ".join(argv))
    for line in out.splitlines()[-4:]:
        click.echo(f"    {line}")
    return out


def _reap(proc: subprocess.Popen[bytes]) -> None:
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def remove_peer(demo: Demo) -> None:
    from xenvirtio.netif.netlink import remove_netns

    remove_netns(peer_netns(demo))


def console(demo: Demo) -> None:
    """A line into the console pty (what `xenvirtio console demo` attaches to), and the
    guest's answer."""
    pty = _device(demo, "console")["pty"]
    line = f"hello, guest {secrets.token_hex(2)}"
    demo.note(f"echo '{line}' > {pty}   # or: xenvirtio console demo (Ctrl-] detaches)")
    fd = os.open(pty, os.O_RDWR | os.O_NOCTTY)
    try:
        os.write(fd, line.encode() + b"\r")
        answer = _read_until(fd, f"demo: {line}\r\n".encode())
    finally:
        os.close(fd)
    for shown in answer.decode(errors="replace").splitlines():
        click.echo(f"    {shown}")
    demo.check(f"demo: {line}" in answer.decode(errors="replace"),
               "the guest's getty answered through virtio-console")  # fmt: skip


def _read_until(fd: int, end: bytes, timeout: float = 10.0) -> bytes:
    got = bytearray()
    deadline = time.monotonic() + timeout
    while end not in got and time.monotonic() < deadline:
        if select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
            got += os.read(fd, 4096)
    return bytes(got)


def entropy(demo: Demo) -> None:
    """32 bytes from the guest's virtio-rng, through the socket it exposes."""
    path = _device(demo, "rng")["socket"]
    demo.note(f"printf '32\\n' | socat - UNIX-CONNECT:{path} | xxd")
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(b"32\n")
        data = b""
        while len(data) < 32 and (chunk := s.recv(32 - len(data))):
            data += chunk
    click.echo(f"    {data.hex()}")
    demo.check(len(data) == 32 and len(set(data)) > 8,
               "32 bytes of the host's entropy, as the guest's driver received them")  # fmt: skip
