"""A domain with classic PV devices (``specification=xen``) made from an xl.cfg: its
disk is blkback + blkfront exported over NBD (fio verify through the socket `list
--json` gives), its NIC netback + netfront (ping from the domain's namespace to an
address on the host's bridge); destroy leaves no vbd/vif node, namespace or process."""

from __future__ import annotations

import secrets
from pathlib import Path

from test_toolstack_devices import netns_list
from ts_support import config, fio_verify, image, listing, xv

from xenvirtio.hv.emu.host import HostStatus
from xenvirtio.netif.netlink import Netlink, remove_netns
from xenvirtio.runtime import open_hypervisor
from xenvirtio.runtime.network import add_bridge_peer, backend_netns
from xenvirtio.testing.net_tools import ping
from xenvirtio.testing.tools import require_tool

MAC = "00:16:3e:00:00:31"


def classic_nodes(run_dir: Path) -> list[str]:
    with open_hypervisor(run_dir=run_dir) as hv:
        assert hv.store is not None
        return [f"{kind}/{fe}" for kind in ("vbd", "vif")
                if hv.store.exists(f"/local/domain/0/backend/{kind}")
                for fe in hv.store.directory(f"/local/domain/0/backend/{kind}")]  # fmt: skip


def test_classic_pv_disk_and_nic(emu: HostStatus, tmp_path: Path) -> None:
    require_tool("ping")
    disk = image(tmp_path / "classic.img")
    net = 1 + secrets.randbelow(250)
    cfg = config(tmp_path / "classic.cfg", f"""\
name = "classic"
memory = 64
disk = [ 'format=raw,vdev=xvda,access=rw,specification=xen,target={disk}' ]
vif = [ 'mac={MAC},bridge=xenbr0,ip=10.215.{net}.2/24,specification=xen' ]
""")  # fmt: skip
    result = xv(emu.run_dir, "create", str(cfg))
    assert result.exit_code == 0, result.stderr
    peer = f"xvp-{secrets.token_hex(3)}"
    namespaces = {backend_netns(emu.run_dir)}
    try:
        (dom,) = listing(emu.run_dir)
        devices = {d["name"]: d for d in dom["devices"]}
        xvda, nic = devices["xvda"], devices["eth0"]
        for dev, ring in ((xvda, "blkif"), (nic, "netif")):
            assert (dev["specification"], dev["state"], dev["ring"]) == ("xen", "ready", ring)
        assert classic_nodes(emu.run_dir) == [f"vbd/{dom['domid']}", f"vif/{dom['domid']}"]
        fio_verify(xvda)
        assert (nic["ifname"], nic["ip"], nic["mac"]) == ("eth0", f"10.215.{net}.2/24", MAC)
        with Netlink(nic["netns"]) as nl:  # netfront's TAP, with the vif's MAC
            assert nl.link("eth0").mac == MAC
        add_bridge_peer(emu.run_dir, "xenbr0", peer, f"10.215.{net}.1/24")
        assert ping(nic["netns"], f"10.215.{net}.1", count=3).lossless
        namespaces.add(nic["netns"])
        assert namespaces <= netns_list()
    finally:
        remove_netns(peer)
        result = xv(emu.run_dir, "destroy", "classic")
    assert result.exit_code == 0, result.stderr
    assert classic_nodes(emu.run_dir) == []
    assert not namespaces & netns_list()
