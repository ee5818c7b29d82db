"""block-attach while another disk's I/O runs, block-detach while idle, through the XenBus
handshake; pci hot-plug is refused with a reason."""

from __future__ import annotations

from pathlib import Path

from ts_support import config, device, fio_background, fio_verify, image, listing, xv

from xenvirtio.bench.fio import FioJob
from xenvirtio.hv.emu.host import HostStatus
from xenvirtio.runtime import open_hypervisor

LONG_VERIFY = FioJob(rw="randrw", rwmixread=50, bs="4k", iodepth=8, runtime_s=None,
                     size="6M", verify="crc32c")  # fmt: skip


def test_attach_during_io_detach_idle(emu: HostStatus, tmp_path: Path) -> None:
    image(tmp_path / "root.img")
    image(tmp_path / "hot.img")
    cfg = config(tmp_path / "hp.cfg", 'name = "hp"\ntype = "hvm"\nmemory = 64\n'
                 "disk = [ 'root.img,,xvda,transport=xenbus' ]\n")  # fmt: skip
    assert xv(emu.run_dir, "create", str(cfg)).exit_code == 0
    busy = fio_background(device(emu.run_dir, "hp", "xvda"), LONG_VERIFY)
    try:
        result = xv(emu.run_dir, "block-attach", "hp", f"{tmp_path / 'hot.img'},raw,xvdb,rw")
        assert result.exit_code == 0, result.stderr
        assert busy.poll() is None, "the attach should happen while xvda is busy"
        hot = device(emu.run_dir, "hp", "xvdb")
        assert (hot["transport"], hot["state"]) == ("xenbus", "ready")
        fio_verify(hot)
    finally:
        _out, err = busy.communicate(timeout=120)
    assert busy.returncode == 0, err  # xvda's verified I/O was not disturbed
    result = xv(emu.run_dir, "block-detach", "hp", "xvdb")
    assert result.exit_code == 0, result.stderr
    (dom,) = listing(emu.run_dir)
    assert [d["name"] for d in dom["devices"]] == ["xvda"]
    assert not (emu.run_dir / "domains" / str(dom["domid"]) / "xvdb.nbd").exists()
    with open_hypervisor(run_dir=emu.run_dir) as hv:
        assert hv.store is not None
        fe = f"/local/domain/{dom['domid']}/device/virtio"
        assert hv.store.directory(fe) == ["0"]
        assert not hv.store.exists(f"/local/domain/{dom['domid']}/data/xenvirtio/xvdb")
    fio_verify(device(emu.run_dir, "hp", "xvda"))
    result = xv(emu.run_dir, "block-attach", "hp", f"{tmp_path / 'hot.img'},,xvdc,transport=pci")
    assert result.exit_code == 1 and "pci devices cannot be added" in result.stderr
    assert xv(emu.run_dir, "destroy", "hp").exit_code == 0
