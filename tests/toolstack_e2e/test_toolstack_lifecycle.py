"""create / list / destroy / shutdown from xl.cfg files on an emu host: devices work
through the endpoints `list --json` gives, and nothing is left afterwards; a bad config
or a device that fails while the domain is made leaves nothing either."""

from __future__ import annotations

from pathlib import Path

from ts_support import config, device, fio_verify, image, listing, xv

from xenvirtio.hv.emu.host import HostStatus

TWO_DISKS = """\
name = "two-disks"
type = "hvm"
memory = 64
disk = [ 'a.img,raw,xvda,rw,transport=xenbus',
         'b.img,raw,xvdb,rw,transport=pci' ]
vif = [ 'bridge=xenbr0,specification=xen' ]   # classic netif, beside virtio disks
"""


def test_create_fio_destroy(emu: HostStatus, tmp_path: Path) -> None:
    image(tmp_path / "a.img")
    image(tmp_path / "b.img")
    cfg = config(tmp_path / "two.cfg", TWO_DISKS)
    result = xv(emu.run_dir, "create", str(cfg))
    assert result.exit_code == 0, result.stderr
    assert "domain two-disks: domid " in result.stdout
    assert "xvda.nbd" in result.stdout and "xvdb.nbd" in result.stdout
    assert "pending" not in result.stdout
    (dom,) = listing(emu.run_dir)
    assert (dom["name"], dom["type"], dom["state"]) == ("two-disks", "hvm", "running")
    disks = {d["name"]: d for d in dom["devices"] if d["kind"] == "disk"}
    assert {n: (d["transport"], d["specification"]) for n, d in disks.items()} == {
        "xvda": ("xenbus", "virtio"), "xvdb": ("pci", "virtio")}  # fmt: skip
    (nic,) = [d for d in dom["devices"] if d["kind"] == "net"]
    assert (nic["name"], nic["state"], nic["specification"]) == ("eth0", "ready", "xen")
    for disk in disks.values():
        fio_verify(disk)
    result = xv(emu.run_dir, "destroy", "two-disks")
    assert result.exit_code == 0, result.stderr
    assert listing(emu.run_dir) == []


def test_shutdown_is_graceful(emu: HostStatus, tmp_path: Path) -> None:
    image(tmp_path / "s.img")
    cfg = config(tmp_path / "s.cfg", 'name = "sd"\nmemory = 32\ndisk = [ "s.img,,xvda" ]\n')
    assert xv(emu.run_dir, "create", str(cfg)).exit_code == 0
    fio_verify(device(emu.run_dir, "sd", "xvda"))
    result = xv(emu.run_dir, "shutdown", "sd", "--timeout", "20")
    assert result.exit_code == 0, result.stdout + result.stderr  # 2: had to destroy it
    assert "shut down" in result.stdout


def test_bad_config_names_file_line_key(emu: HostStatus, tmp_path: Path) -> None:
    image(tmp_path / "x.img")
    cfg = config(tmp_path / "bad.cfg",
                 'name = "bad"\n\ndisk = [ "x.img,,xvda" ]\nmemory = "lots"\n')  # fmt: skip
    result = xv(emu.run_dir, "create", str(cfg))
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {cfg}:4: memory: ")
    assert listing(emu.run_dir) == []


def test_failed_device_rolls_everything_back(emu: HostStatus, tmp_path: Path) -> None:
    """The second disk's image is missing: the backend fails to open it after the domain,
    its nodes and the first disk were made; all of that goes again."""
    image(tmp_path / "ok.img")
    cfg = config(tmp_path / "rb.cfg", 'name = "rb"\ndisk = [ "ok.img,,xvda", "gone.img,,xvdb" ]\n')
    result = xv(emu.run_dir, "create", str(cfg))
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()[-1:]
    assert line.startswith("error: ") and "rb" in line
    assert listing(emu.run_dir) == []  # and the fixture checks nodes, processes, files


def test_unknown_domain_and_console_fail_clearly(emu: HostStatus) -> None:
    result = xv(emu.run_dir, "destroy", "nosuch")
    assert result.exit_code == 1 and result.stderr.startswith("error: no domain 'nosuch'")
    result = xv(emu.run_dir, "console", "nosuch")
    assert result.exit_code == 1


def test_no_host_is_one_line(tmp_path: Path) -> None:
    result = xv(tmp_path / "nohost", "list")
    assert result.exit_code == 1
    assert result.stderr.strip() == (f"error: no emu host running in {tmp_path / 'nohost'}: "
                                     f"start one with `xenvirtio host start --run-dir "
                                     f"{tmp_path / 'nohost'}`")  # fmt: skip
