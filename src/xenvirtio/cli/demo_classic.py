"""The demo's classic PV step: a domain of examples/classic-pv.cfg whose disk is
blkback + blkfront and whose NIC is netback + netfront, reached as virtio devices are
(`xenvirtio list --json`): data copied through the disk's NBD export and back, and a
ping from the domain's network namespace to dom0's side of the bridge (root only: the
vif line is left out without it).
"""

from __future__ import annotations

import hashlib
import os

from xenvirtio.cli.demo_runner import Demo, DemoFailed
from xenvirtio.cli.demo_steps import copy_config, listing, nbd_uri, xv

PAYLOAD = 4 << 20
PEER_ADDRESS = "10.0.0.1/24"  # dom0's side of xenbr0


def classic_domain(demo: Demo) -> None:
    cfg = demo.dir / "classic-pv.cfg"
    root = copy_config(cfg)
    with open(demo.dir / "classic.img", "wb") as f:
        f.truncate(16 << 20)
    demo.note(f"cp examples/classic-pv.cfg {demo.dir}/; truncate -s 16M {demo.dir}/classic.img")
    if not root:
        demo.note("(without root the vif line is left out: a NIC needs network namespaces)")
    out = xv(demo, "create", "--run-dir", str(demo.run_dir), str(cfg))
    demo.check("xvda.nbd" in out, "blkfront's disk exported over NBD, as a virtio disk is")
    _disk(demo)
    if root:
        _ping(demo)
    xv(demo, "destroy", "--run-dir", str(demo.run_dir), "classic-pv")


def _disk(demo: Demo) -> None:
    payload, back = demo.dir / "classic.bin", demo.dir / "classic.back"
    payload.write_bytes(os.urandom(PAYLOAD))
    uri = nbd_uri(demo, "classic-pv", "xvda")
    demo.run("nbdcopy", str(payload), uri)
    demo.run("nbdcopy", uri, str(back))
    sent = hashlib.sha256(payload.read_bytes()).hexdigest()
    came = hashlib.sha256(back.read_bytes()[:PAYLOAD]).hexdigest()
    stored = hashlib.sha256((demo.dir / "classic.img").read_bytes()[:PAYLOAD]).hexdigest()
    demo.note(f"sha256 {sent[:16]}... written, {came[:16]}... read back")
    demo.check(sent == came == stored, "4 MiB through blkfront/blkback, on classic.img")


def _ping(demo: Demo) -> None:
    from xenvirtio.netif.netlink import remove_netns
    from xenvirtio.runtime.network import add_bridge_peer

    nics = [d for dom in listing(demo) if dom["name"] == "classic-pv"
            for d in dom["devices"] if d["kind"] == "net"]  # fmt: skip
    if not nics or nics[0]["state"] != "ready" or nics[0]["specification"] != "xen":
        raise DemoFailed(f"classic-pv: no ready classic NIC in `xenvirtio list --json`: {nics}")
    nic = nics[0]
    demo.check(nic["mac"] == "00:16:3e:5a:00:20",
               f"netfront's eth0 {nic['ip']} {nic['mac']} in netns {nic['netns']}")  # fmt: skip
    peer = f"xvdemoc-{demo.dir.name[-8:]}"
    add_bridge_peer(demo.run_dir, "xenbr0", peer, PEER_ADDRESS)
    try:
        out = demo.run("ip", "netns", "exec", nic["netns"], "ping", "-c", "3", "-i", "0.2",
                       "10.0.0.1")  # fmt: skip
    finally:
        remove_netns(peer)
    demo.check(" 0% packet loss" in out, "the guest pings dom0's side of the bridge via netif")
