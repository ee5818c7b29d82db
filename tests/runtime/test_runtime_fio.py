"""The acceptance matrix: fio with crc32c verification through a guest disk's NBD export,
on every transport and ring format, and over XenBus with grant DMA and with foreign
mapping. After each run the export and the image file hold the same bytes."""

from __future__ import annotations

from pathlib import Path

import pytest
from rt_support import export_digest, file_digest, fio, make_image

from xenvirtio.hv.api import Hypervisor
from xenvirtio.runtime.domain import start_domain
from xenvirtio.runtime.specs import DiskSpec, Ring, Transport

pytestmark = pytest.mark.interop

CASES = [
    ("xenbus", "split", True),
    ("xenbus", "packed", True),
    ("xenbus", "split", False),
    ("xenbus", "packed", False),
    ("pci", "split", None),
    ("pci", "packed", None),
    ("mmio", "split", None),
    ("mmio", "packed", None),
]


def _id(case: tuple[str, str, bool | None]) -> str:
    transport, ring, grants = case
    return f"{transport}-{ring}" + ("" if grants is None else f"-grants{int(grants)}")


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_fio_verifies_through_the_guest_disk(
    hv: Hypervisor, run_dir: Path, tmp_path: Path, case: tuple[Transport, Ring, bool | None]
) -> None:
    transport, ring, grants = case
    image = make_image(tmp_path / "disk.img")
    spec = DiskSpec(devid=1, vdev="xvdb", image=str(image), transport=transport, ring=ring,
                    grant_usage=grants, serial="rt-disk")  # fmt: skip
    with start_domain(hv, "fio", 64, 1, "hvm", [spec], run_dir=run_dir) as domain:
        endpoint = domain.endpoint("xvdb")
        assert endpoint.ring == ring
        assert endpoint.nbd == run_dir / "domains" / str(domain.domid) / "xvdb.nbd"
        if transport == "xenbus":
            assert hv.store is not None
            be = f"/local/domain/0/backend/virtio/{domain.domid}/1"
            assert hv.store.read(f"{be}/grant-usage") == (b"1" if grants else b"0")
        fio(endpoint)
        assert export_digest(endpoint, tmp_path) == file_digest(image)
    written = image.read_bytes()[: 4 << 20]
    assert written.count(0) < len(written) // 2  # fio's blocks are there
