"""A domain with a NIC, a console and an rng over XenBus, made from an xl.cfg: ping from
the guest's network namespace to an address on the host's bridge, a line through the
console pty (with `xenvirtio console`) and the guest's answer, random bytes from the
guest's rng socket; `list --json` says how to reach each; destroy removes the
namespaces, and with them the bridge and the TAPs."""

from __future__ import annotations

import os
import secrets
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

from ts_support import config, listing, xv

from xenvirtio.hv.emu.host import HostStatus
from xenvirtio.netif.netlink import Netlink, remove_netns
from xenvirtio.runtime.network import add_bridge_peer, backend_netns
from xenvirtio.testing.net_tools import ping
from xenvirtio.testing.tools import require_tool

MAC = "00:16:3e:00:00:21"


def netns_list() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def read_until(fd: int, end: bytes, timeout: float = 10.0) -> bytes:
    got = bytearray()
    deadline = time.monotonic() + timeout
    while end not in got:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"only {bytes(got)!r} came"
        if select.select([fd], [], [], remaining)[0]:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the other side of the pty closed
                break
            got += chunk
    return bytes(got)


def rng_bytes(path: str, count: int) -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(f"{count}\n".encode())
        data = b""
        while len(data) < count:
            chunk = s.recv(count - len(data))
            assert chunk, "the rng socket closed early"
            data += chunk
    return data


def console_round_trip(run_dir: Path, domain: str) -> bytes:
    """``xenvirtio console DOMAIN`` on a terminal of its own: a line, the answer, Ctrl-]."""
    user, term = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "xenvirtio", "console", domain,
                             "--run-dir", str(run_dir)], stdin=term, stdout=term,
                            stderr=subprocess.PIPE)  # fmt: skip
    os.close(term)
    try:
        time.sleep(0.5)  # attached (raw mode) before typing
        os.write(user, b"are you there?\r")
        answer = read_until(user, b"devs: are you there?\r\n")
        os.write(user, b"\x1d")
        assert proc.wait(timeout=10) == 0
        return answer
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()
        os.close(user)


def test_net_console_rng_over_xenbus(emu: HostStatus, tmp_path: Path) -> None:
    require_tool("ping")
    require_tool("ip")
    net = 1 + secrets.randbelow(250)
    cfg = config(tmp_path / "devs.cfg", f"""\
name = "devs"
memory = 64
vif = [ 'mac={MAC},bridge=xenbr0,ip=10.214.{net}.2/24' ]
virtio = [ "type=virtio,device3", "type=virtio,device4" ]
""")  # fmt: skip
    result = xv(emu.run_dir, "create", str(cfg))
    assert result.exit_code == 0, result.stderr
    peer = f"xvp-{secrets.token_hex(3)}"
    namespaces = {backend_netns(emu.run_dir)}
    try:
        (dom,) = listing(emu.run_dir)
        devices = {d["name"]: d for d in dom["devices"]}
        nic, con, rng = devices["eth0"], devices["console0"], devices["rng0"]
        assert all(d["state"] == "ready" and d["transport"] == "xenbus" for d in devices.values())
        assert (nic["ifname"], nic["ip"], nic["mac"]) == ("eth0", f"10.214.{net}.2/24", MAC)
        with Netlink(nic["netns"]) as nl:  # the guest driver's TAP, with the device's MAC
            assert nl.link("eth0").mac == MAC
        add_bridge_peer(emu.run_dir, "xenbr0", peer, f"10.214.{net}.1/24")
        assert ping(nic["netns"], f"10.214.{net}.1", count=5).lossless
        assert con["pty"].startswith("/dev/pts/")
        answer = console_round_trip(emu.run_dir, "devs")
        assert answer == b"are you there?\r\ndevs: are you there?\r\n"  # echo, answer
        first, second = rng_bytes(rng["socket"], 64), rng_bytes(rng["socket"], 64)
        assert len(first) == 64 and first != second
        namespaces.add(nic["netns"])
        assert namespaces <= netns_list()
    finally:
        remove_netns(peer)
        result = xv(emu.run_dir, "destroy", "devs")
    assert result.exit_code == 0, result.stderr
    assert not namespaces & netns_list()  # bridge and TAPs went with the backend's
