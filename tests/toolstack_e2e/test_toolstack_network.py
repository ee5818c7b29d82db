"""network-attach into a domain that started without a NIC, while its disk does I/O:
ping from the domain's new namespace to a peer on the bridge through the NIC;
network-detach by MAC and by devid: the guest's and the backend's TAPs go and the ping
fails; destroy removes the namespaces the attach made."""

from __future__ import annotations

import secrets
from pathlib import Path

from ts_support import config, device, fio_background, image, listing, xv

from xenvirtio.bench.fio import FioJob, parse_fio_json
from xenvirtio.hv.emu.host import HostStatus
from xenvirtio.netif.netlink import Netlink, netns_exists, remove_netns
from xenvirtio.runtime.network import add_bridge_peer, backend_netns, guest_netns
from xenvirtio.testing.net_tools import ping
from xenvirtio.testing.tools import require_tool

MAC = "00:16:3e:00:00:31"
BUSY = FioJob(rw="randrw", rwmixread=50, bs="4k", iodepth=8, runtime_s=6, size="4M")


def taps(netns: str, *names: str) -> list[str]:
    """Which of ``names`` are links in ``netns``."""
    with Netlink(netns) as nl:
        return [name for name in names if nl.exists(name)]


def test_network_attach_ping_detach_during_disk_io(emu: HostStatus, tmp_path: Path) -> None:
    require_tool("ping")
    net = 1 + secrets.randbelow(250)
    image(tmp_path / "root.img")
    cfg = config(tmp_path / "nh.cfg", 'name = "nh"\nmemory = 64\ndisk = [ "root.img,,xvda" ]\n')
    assert xv(emu.run_dir, "create", str(cfg)).exit_code == 0
    (dom,) = listing(emu.run_dir)
    guest, backend = guest_netns(emu.run_dir, dom["domid"]), backend_netns(emu.run_dir)
    assert not netns_exists(guest)  # no NIC at create: no namespace
    peer = f"xvp-{secrets.token_hex(3)}"
    busy = fio_background(device(emu.run_dir, "nh", "xvda"), BUSY)
    try:
        vif = f"mac={MAC},bridge=xenbr0,ip=10.215.{net}.2/24"
        result = xv(emu.run_dir, "network-attach", "nh", vif)
        assert result.exit_code == 0, result.stderr
        assert busy.poll() is None, "the attach should happen while xvda is busy"
        nic = device(emu.run_dir, "nh", "eth0")
        assert (nic["state"], nic["transport"], nic["netns"]) == ("ready", "xenbus", guest)
        assert (nic["mac"], nic["ip"], nic["devid"]) == (MAC, f"10.215.{net}.2/24", 1)
        vif_tap = f"vif{dom['domid']}.1"
        with Netlink(guest) as nl:  # the guest driver's TAP, with the device's MAC
            assert nl.link("eth0").mac == MAC
        assert taps(backend, vif_tap) == [vif_tap]
        add_bridge_peer(emu.run_dir, "xenbr0", peer, f"10.215.{net}.1/24")
        assert ping(guest, f"10.215.{net}.1", count=5).lossless
        result = xv(emu.run_dir, "network-detach", "nh", MAC)
        assert result.exit_code == 0, result.stderr
        (dom,) = listing(emu.run_dir)
        assert [d["name"] for d in dom["devices"]] == ["xvda"]
        assert taps(guest, "eth0") == [] and taps(backend, vif_tap) == []
        assert ping(guest, f"10.215.{net}.1", count=2, wait=0.5).received == 0
        # defaults: the lowest free ethN and devid, a MAC under Xen's OUI; detach by devid
        result = xv(emu.run_dir, "network-attach", "nh", "")
        assert result.exit_code == 0, result.stderr
        nic = device(emu.run_dir, "nh", "eth0")
        assert nic["mac"].startswith("00:16:3e:") and nic["devid"] == 1 and nic["ip"] is None
        assert xv(emu.run_dir, "network-detach", "nh", "7").exit_code == 1  # no such devid
        result = xv(emu.run_dir, "network-detach", "nh", "1")
        assert result.exit_code == 0, result.stderr
        assert taps(guest, "eth0") == []
    finally:
        out, err = busy.communicate(timeout=60)
        remove_netns(peer)
    assert busy.returncode == 0, err  # xvda's I/O went on undisturbed
    figures = parse_fio_json(out)
    assert figures.read.ios > 0 and figures.write.ios > 0
    assert xv(emu.run_dir, "destroy", "nh").exit_code == 0
    assert not netns_exists(guest) and not netns_exists(backend)
