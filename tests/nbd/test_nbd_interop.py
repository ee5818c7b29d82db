"""Our NBD server against the real NBD clients: nbdinfo, nbdcopy, fio, qemu-img, nbdfuse."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from nbd_support import make_image, served

from xenvirtio.testing.tools import require_tool

pytestmark = pytest.mark.interop

SIZE = 16 << 20


def run(*argv: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=check)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def random_file(path: Path, size: int, seed: int) -> Path:
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def test_nbdinfo_reports_size_flags_and_block_sizes(tmp_path: Path) -> None:
    nbdinfo = require_tool("nbdinfo")
    image = tmp_path / "disk.img"
    make_image(image, SIZE)
    with served(image, block_size=512, export_name="disk", description="a test disk") as server:
        uri = f"nbd+unix:///disk?socket={server.path}"
        (export,) = json.loads(run(nbdinfo, "--json", uri).stdout)["exports"]
        listed = json.loads(run(nbdinfo, "--list", "--json", uri).stdout)["exports"]
        missing = run(nbdinfo, f"nbd+unix:///other?socket={server.path}", check=False)
    assert export["export-name"] == "disk" and export["export-size"] == SIZE
    assert export["is_read_only"] is False
    for flag in ("can_flush", "can_fua", "can_trim", "can_zero", "can_multi_conn"):
        assert export[flag] is True, flag
    assert (export["block_size_minimum"], export["block_size_preferred"]) == (512, 4096)
    assert export["block_size_maximum"] == 32 << 20
    assert [e["export-name"] for e in listed] == ["disk"]
    assert listed[0].get("description") == "a test disk"
    assert missing.returncode != 0


def test_nbdinfo_sees_a_read_only_export(tmp_path: Path) -> None:
    nbdinfo = require_tool("nbdinfo")
    image = tmp_path / "disk.img"
    make_image(image, SIZE)
    with served(image, read_only=True) as server:
        (export,) = json.loads(run(nbdinfo, "--json", server.uri).stdout)["exports"]
    assert export["is_read_only"] is True and export["can_trim"] is False


def test_nbdcopy_in_and_out_preserves_every_byte(tmp_path: Path) -> None:
    nbdcopy = require_tool("nbdcopy")
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(SIZE))
    source = random_file(tmp_path / "source.img", SIZE, seed=1)
    back = tmp_path / "back.img"
    with served(image) as server:
        run(nbdcopy, str(source), server.uri)  # several connections: CAN_MULTI_CONN
        run(nbdcopy, server.uri, str(back))
    assert sha256(image) == sha256(source) == sha256(back)


def test_fio_random_read_write_verifies_crc32c_at_iodepth_16(tmp_path: Path) -> None:
    fio = require_tool("fio")
    image = tmp_path / "disk.img"
    make_image(image, SIZE)
    with served(image) as server:
        done = run(
            fio,
            "--name=verify",
            "--ioengine=nbd",
            f"--uri={server.uri}",
            "--rw=randrw",
            "--rwmixread=50",
            "--bs=4k",
            "--iodepth=16",
            "--size=8M",
            "--verify=crc32c",
            "--verify_fatal=1",
            "--verify_state_save=0",
            "--output-format=json",
            timeout=120,
        )
    doc = json.loads(done.stdout[done.stdout.index("{\n") :])
    (job,) = doc["jobs"]
    assert job["error"] == 0
    assert job["write"]["io_bytes"] > 0 and job["read"]["io_bytes"] > 0


def test_qemu_img_convert_and_compare(tmp_path: Path) -> None:
    qemu_img = require_tool("qemu-img")
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(SIZE))
    source = random_file(tmp_path / "source.img", SIZE, seed=2)
    copy = tmp_path / "copy.qcow2"
    with served(image) as server:
        uri = server.uri
        run(qemu_img, "convert", "-n", "-f", "raw", "-O", "raw", str(source), uri)
        run(qemu_img, "convert", "-f", "raw", "-O", "qcow2", uri, str(copy))
        same = run(qemu_img, "compare", "-f", "raw", "-F", "qcow2", uri, str(copy), check=False)
        with open(source, "r+b") as f:  # one byte differs now
            f.seek(SIZE - 100)
            f.write(b"\x00" if source.read_bytes()[SIZE - 100] else b"\x01")
        differs = run(qemu_img, "compare", "-f", "raw", "-F", "raw", str(source), uri, check=False)
    assert same.returncode == 0, same.stdout + same.stderr
    assert differs.returncode == 1 and "mismatch" in differs.stdout.lower()
    assert sha256(image) != sha256(source)


def test_nbdfuse_exposes_the_export_as_a_file(tmp_path: Path) -> None:
    nbdfuse = require_tool("nbdfuse")
    image = tmp_path / "disk.img"
    contents = make_image(image, SIZE)
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    with served(image) as server:
        fuse = subprocess.Popen([nbdfuse, str(mountpoint), server.uri], stderr=subprocess.PIPE)
        try:
            exposed = mountpoint / "nbd"
            deadline = time.monotonic() + 15
            while not exposed.exists():
                assert fuse.poll() is None, fuse.stderr.read() if fuse.stderr else ""
                assert time.monotonic() < deadline, "nbdfuse did not mount"
                time.sleep(0.05)
            assert exposed.stat().st_size == SIZE
            with open(exposed, "r+b") as f:
                assert f.read(4096) == contents[:4096]
                f.seek(1_000_001)  # unaligned: the file export has a block size of 1
                f.write(b"through fuse")
                f.flush()
                os.fsync(f.fileno())
        finally:
            fuse.send_signal(signal.SIGTERM)  # nbdfuse unmounts on SIGTERM
            fuse.wait(timeout=15)
            if fuse.stderr:
                fuse.stderr.close()
    assert image.read_bytes()[1_000_001:1_000_013] == b"through fuse"


def test_cli_serves_until_sigterm_and_cleans_up(tmp_path: Path) -> None:
    nbdinfo = require_tool("nbdinfo")
    image = tmp_path / "disk.img"
    make_image(image, SIZE)
    sock = tmp_path / "cli.sock"
    command = [sys.executable, "-m", "xenvirtio", "nbd-serve", "--socket", str(sock)]
    proc = subprocess.Popen(
        [*command, "--image", str(image), "--read-only"], text=True, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 20
        while not sock.exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "nbd-serve did not start"
            time.sleep(0.05)
        (export,) = json.loads(run(nbdinfo, "--json", f"nbd+unix:///?socket={sock}").stdout)[
            "exports"
        ]
        assert export["export-size"] == SIZE and export["is_read_only"] is True
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert f"socket={sock}" in err
    assert not sock.exists()
