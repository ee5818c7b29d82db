"""The guest's disk exported over NBD: real clients (fio, nbdinfo, nbdcopy) through
NbdServer -> VirtioBlkDriver -> virtio-pci -> VirtioBlkDevice -> image file."""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
from pathlib import Path

import pytest
from blk_support import make_image

from xenvirtio.bench.fio import FioJob, run_fio
from xenvirtio.testing.blk_stack import BlkStack
from xenvirtio.testing.tools import require_tool

pytestmark = pytest.mark.interop

SIZE = 16 << 20


def run(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=True)


def test_fio_verifies_crc32c_through_the_guest_driver(tmp_path: Path) -> None:
    fio = require_tool("fio")
    image = make_image(tmp_path / "disk.img", SIZE)
    job = FioJob(rw="randrw", rwmixread=50, bs="4k", iodepth=16, runtime_s=None,
                 size="8M", verify="crc32c")  # fmt: skip
    with BlkStack(image, transport="pci", packed=True, engine="threads") as stack:
        uri = stack.serve_nbd(tmp_path / "nbd.sock")
        result = run_fio(uri, job, timeout=120, fio=fio)
        assert result.write.ios > 0 and result.read.ios > 0
        exported = stack.run(stack.driver.read(0, SIZE))
    # The image holds exactly what went through the guest driver.
    assert image.read_bytes() == bytes(exported)
    assert image.read_bytes()[: 8 << 20] != bytes(8 << 20)  # fio wrote its blocks


def test_nbdinfo_and_nbdcopy(tmp_path: Path) -> None:
    nbdinfo, nbdcopy = require_tool("nbdinfo"), require_tool("nbdcopy")
    image = make_image(tmp_path / "disk.img", SIZE)
    source = tmp_path / "source.img"
    source.write_bytes(random.Random(5).randbytes(SIZE))
    back = tmp_path / "back.img"
    with BlkStack(image, transport="mmio", engine="threads") as stack:
        uri = stack.serve_nbd(tmp_path / "nbd.sock")
        (export,) = json.loads(run(nbdinfo, "--json", uri).stdout)["exports"]
        run(nbdcopy, str(source), uri)
        run(nbdcopy, uri, str(back))
    assert export["export-size"] == SIZE
    assert export["is_read_only"] is False
    assert export["can_trim"] is True and export["can_zero"] is True
    assert export["block_size_minimum"] == 512
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert hashlib.sha256(back.read_bytes()).hexdigest() == digest
    assert hashlib.sha256(image.read_bytes()).hexdigest() == digest
