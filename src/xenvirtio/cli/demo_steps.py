"""The steps of `xenvirtio demo`, each a function of the `Demo` it runs in.

Every command is run as a user would type it (``xenvirtio ...``, Xen's ``xenstore-*``,
e2fsprogs, libnbd's tools) and shown with its output; a step checks what came out.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from xenvirtio.cli.demo_runner import Demo, DemoFailed

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
HELLO = "hello from a file system made through a Xen guest's virtio-blk disk\n"


def xv(demo: Demo, *args: str) -> str:
    """``xenvirtio ARGS`` (run as ``python -m xenvirtio`` so no PATH is needed)."""
    return demo.run(sys.executable, "-m", "xenvirtio", *args, show=("xenvirtio", *args))


def examples_dir() -> Path:
    for candidate in (EXAMPLES, Path.cwd() / "examples"):
        if (candidate / "demo.cfg").exists():
            return candidate
    raise DemoFailed("examples/demo.cfg not found: run the demo from the source tree")


def copy_config(cfg: Path) -> bool:
    """examples/NAME to ``cfg``; without root its vif lines are left out (a NIC needs
    network namespaces). True if copied whole."""
    text = (examples_dir() / cfg.name).read_text()
    root = os.geteuid() == 0
    kept = [line for line in text.splitlines() if root or not line.startswith("vif")]
    cfg.write_text("\n".join(kept) + "\n")
    return root


def start_host(demo: Demo) -> None:
    out = xv(demo, "host", "start", "--run-dir", str(demo.run_dir))
    demo.check("emu host ready" in out, "hypervisor and XenStore daemons running")


def xenstore_tools(demo: Demo) -> None:
    demo.env["XENSTORED_PATH"] = str(demo.run_dir / "xenstored.sock")
    demo.note(f"export XENSTORED_PATH={demo.env['XENSTORED_PATH']}")
    demo.run("xenstore-write", "/vm/demo/name", "demo-guest", "/vm/demo/memory", "256")
    out = demo.run("xenstore-read", "-p", "/vm/demo/name", "/vm/demo/memory")
    demo.check("/vm/demo/name: demo-guest" in out, "Xen's tools read back what they wrote")
    demo.run("xenstore-rm", "/vm/demo")
    demo.run("xenstore-exists", "/vm/demo", expect=1)


def create_demo(demo: Demo) -> None:
    cfg = demo.dir / "demo.cfg"
    root = copy_config(cfg)
    _sparse(demo.dir / "demo.img", 64 << 20)
    demo.note(f"cp examples/demo.cfg {demo.dir}/; truncate -s 64M {demo.dir}/demo.img")
    if not root:
        demo.note("(without root the vif line is left out: a NIC needs network namespaces)")
    out = xv(demo, "create", "--run-dir", str(demo.run_dir), str(cfg))
    demo.check("xvda.nbd" in out, "domain demo created: disk xvda exported over NBD")
    demo.check("pty /dev/pts/" in out and "rng0.rng" in out,
               "its console on a pty, its rng behind a socket")  # fmt: skip
    if root:
        demo.check("in netns xvg-" in out, "its NIC in a network namespace of its own")


def listing(demo: Demo) -> list[dict[str, Any]]:
    out = demo.run(sys.executable, "-m", "xenvirtio", "list", "--json", "--run-dir",
                   str(demo.run_dir), show=None)  # fmt: skip
    data: list[dict[str, Any]] = json.loads(out)
    return data


def nbd_uri(demo: Demo, domain: str, disk: str) -> str:
    for dom in listing(demo):
        for dev in dom["devices"] if dom["name"] == domain else []:
            if dev["name"] == disk and dev["nbd_socket"]:
                return f"nbd+unix:///{disk}?socket={dev['nbd_socket']}"
    raise DemoFailed(f"{domain}: no NBD socket for {disk} in `xenvirtio list --json`")


def show_list(demo: Demo) -> None:
    out = xv(demo, "list", "--run-dir", str(demo.run_dir))
    demo.check("ready" in out, "every device is ready, with where to reach it")


def filesystem(demo: Demo) -> None:
    """mkfs.ext4 + debugfs on a scratch file, copied onto the guest's disk through its NBD
    export (virtio-blk in the guest, the backend in dom0), copied back and read."""
    uri = nbd_uri(demo, "demo", "xvda")
    size = demo.run("nbdinfo", "--size", uri).strip()
    scratch, back = demo.dir / "fs.img", demo.dir / "readback.img"
    _sparse(scratch, int(size))
    (demo.dir / "hello.txt").write_text(HELLO)
    demo.run("mkfs.ext4", "-q", "-F", "-L", "xenvirtio", str(scratch))
    demo.run("debugfs", "-w", "-R", f"write {demo.dir / 'hello.txt'} hello.txt", str(scratch))
    demo.run("nbdcopy", str(scratch), uri)
    demo.run("nbdcopy", uri, str(back))
    out = demo.run("debugfs", "-R", "cat hello.txt", str(back))
    demo.check(HELLO.strip() in out, "the file reads back through the guest's disk")
    demo.run("e2fsck", "-f", "-n", str(back))
    demo.check(_digest(back) == _digest(demo.dir / "demo.img"),
               "the backing image demo.img holds the same file system")  # fmt: skip


def xenstore_tree(demo: Demo) -> None:
    domid = next(d["domid"] for d in listing(demo) if d["name"] == "demo")
    out = xv(demo, "xenstore", "ls", f"/local/domain/{domid}")
    demo.check("xenvirtio" in out and "device" in out,
               "the guest's device/ and its published endpoints")  # fmt: skip
    out = xv(demo, "xenstore", "ls", f"/local/domain/0/backend/virtio/{domid}")
    demo.check("frontend-id" in out, "dom0's backend directory for the disk")


def hotplug(demo: Demo) -> None:
    _sparse(demo.dir / "extra.img", 16 << 20)
    out = xv(demo, "block-attach", "--run-dir", str(demo.run_dir), "demo",
             f"{demo.dir / 'extra.img'},raw,xvdb,rw")  # fmt: skip
    demo.check("xvdb.nbd" in out, "a disk hot-plugged over XenBus is served by the guest")
    demo.run("nbdinfo", "--size", nbd_uri(demo, "demo", "xvdb"))
    xv(demo, "block-detach", "--run-dir", str(demo.run_dir), "demo", "xvdb")
    names = [d["name"] for d in listing(demo)[0]["devices"]]
    demo.check("xvdb" not in names, "and unplugged again")


def pci_domain(demo: Demo) -> None:
    cfg = demo.dir / "hvm-pci.cfg"
    copy_config(cfg)
    for name in ("hvm.img", "data.img"):
        _sparse(demo.dir / name, 16 << 20)
    out = xv(demo, "create", "--run-dir", str(demo.run_dir), str(cfg))
    demo.check("(pci)" in out, "a PV-on-HVM domain with two virtio-pci disks")
    payload = demo.dir / "payload.bin"
    payload.write_bytes(os.urandom(4 << 20))
    uri = nbd_uri(demo, "hvm-pci", "xvda")
    demo.run("nbdcopy", str(payload), uri)
    demo.run("nbdcopy", uri, str(demo.dir / "payload.back"))
    back = (demo.dir / "payload.back").read_bytes()[: 4 << 20]
    demo.check(back == payload.read_bytes(), "4 MiB written and read back over virtio-pci")
    out = demo.run("nbdinfo", nbd_uri(demo, "hvm-pci", "xvdb"))
    demo.check("is_read_only: true" in out, "xvdb is read-only, as its config says")


def teardown(demo: Demo) -> None:
    out = xv(demo, "shutdown", "--run-dir", str(demo.run_dir), "demo")
    demo.check("shut down" in out, "demo powered off by itself (control/shutdown)")
    xv(demo, "destroy", "--run-dir", str(demo.run_dir), "hvm-pci")
    demo.check(listing(demo) == [], "no domain left")


def stop_host(demo: Demo) -> None:
    xv(demo, "host", "stop", "--run-dir", str(demo.run_dir))
    left = sorted(p.name for p in demo.run_dir.iterdir() if not p.name.endswith(".log"))
    demo.check(left in ([], ["domains"]), "no socket or pid file left")
    domains = demo.run_dir / "domains"
    demo.check(not domains.exists() or not any(domains.iterdir()), "no domain files left")


def _sparse(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
