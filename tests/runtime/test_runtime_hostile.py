"""A hostile HVM guest (random configuration and BAR accesses, BARs moved over its
virtio-mmio window, scribbled rings, queues outside its RAM) attacks the disks its
backend serves it over virtio-pci and virtio-mmio, while a second guest, with a
backend of the same design, runs fio with verification the whole time. The good guest
never sees an error, every hostile access is answered, and the hostile guest's
backend survives."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from rt_support import export_digest, file_digest, fio, make_image

from xenvirtio.hv.api import Hypervisor
from xenvirtio.runtime.devices import mmio_place
from xenvirtio.runtime.domain import start_domain
from xenvirtio.runtime.specs import DiskSpec

pytestmark = pytest.mark.interop

HOSTILE_KERNEL = "xenvirtio.testing.ioreq_guest_hostile:hostile_kernel"
HOSTILE_SECONDS = 3.0


def _report(hv: Hypervisor, domid: int, key: str) -> object:
    assert hv.store is not None
    path = f"/local/domain/{domid}/data/ioreq/{key}"
    return json.loads(hv.store.read(path)) if hv.store.exists(path) else None


def test_hostile_guest_does_not_disturb_another(
    hv: Hypervisor, run_dir: Path, tmp_path: Path
) -> None:
    pci = DiskSpec(devid=0, vdev="xvda", image=str(make_image(tmp_path / "a.img")), transport="pci")
    mmio = DiskSpec(devid=0, vdev="xvdb", image=str(make_image(tmp_path / "b.img")),
                    transport="mmio")  # fmt: skip
    good_image = make_image(tmp_path / "good.img")
    good_spec = DiskSpec(devid=0, vdev="xvda", image=str(good_image), transport="pci")
    args = {"seed": 77, "duration": HOSTILE_SECONDS, "base": mmio_place(mmio).base}
    with (
        start_domain(hv, "good", 64, 1, "hvm", [good_spec], run_dir=run_dir) as good,
        start_domain(
            hv,
            "hostile",
            32,
            1,
            "hvm",
            [pci, mmio],
            run_dir=run_dir,
            kernel=HOSTILE_KERNEL,
            cmdline=json.dumps(args),
        ) as bad,  # fmt: skip
    ):
        endpoint = good.endpoint("xvda")
        runs = 0
        deadline = time.monotonic() + 60
        while _report(hv, bad.domid, "result") is None and time.monotonic() < deadline:
            assert _report(hv, bad.domid, "error") is None
            fio(endpoint)
            runs += 1
        result = _report(hv, bad.domid, "result")
        assert isinstance(result, dict), "the hostile guest never finished"
        assert result.get("timeouts", 0) == 0  # every access was answered
        assert result["accesses"] > 100 and runs >= 1
        assert bad.inspect().backend_alive and good.inspect().backend_alive
        assert export_digest(endpoint, tmp_path) == file_digest(good_image)
