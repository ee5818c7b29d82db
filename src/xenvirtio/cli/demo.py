"""`xenvirtio demo`: the tour a newcomer runs first (`make demo`).

Starts an emu host in a temporary directory, shows Xen's xenstore-* tools against its
XenStore, creates the domain of examples/demo.cfg and shows its disk working (a file
system made, written and read through the guest's virtio-blk disk over NBD), its XenStore
tree, a disk hot-plugged and unplugged, its NIC (ping and iperf3 from the guest's
network namespace; needs root), its console and its entropy device, then a PV-on-HVM
domain with virtio-pci disks and a domain with classic PV devices (blkif, netif).
Everything is torn down at the end (also on failure); the exit status is 1 if any step
failed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

from xenvirtio.cli import demo_classic as classic
from xenvirtio.cli import demo_devices as devices
from xenvirtio.cli import demo_steps as steps
from xenvirtio.cli.demo_runner import Demo

TOOLS = ("xenstore-write", "xenstore-read", "xenstore-rm", "xenstore-exists", "nbdinfo",
         "nbdcopy", "mkfs.ext4", "debugfs", "e2fsck", "ip", "ping", "iperf3")  # fmt: skip
HOST = "Start an emu host: hypervisor and XenStore daemons"
CREATE = "Create the domain of examples/demo.cfg (PV, virtio over XenBus)"


@click.command("demo")
def demo() -> None:
    """Show xenvirtio working: an emu host, domains created from xl.cfg files, their
    virtio disks used through NBD, their NICs, consoles and rngs, hot-plug, XenStore,
    and a clean teardown.

    Needs the Debian packages `make setup` installs (Xen's xenstore-utils, libnbd-bin,
    e2fsprogs, iproute2, iperf3). Without root the virtio-net step (network namespaces)
    is explained and not run. Everything runs in a temporary directory that is removed
    at the end.

    \b
    Example:
      xenvirtio demo
    """
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        click.echo(f"demo: missing tools {', '.join(missing)}; run `make setup`", err=True)
        sys.exit(1)
    start = time.monotonic()
    tour = Demo(Path(tempfile.mkdtemp(prefix="xenvirtio-demo-")))
    try:
        _tour(tour)
    finally:
        _cleanup(tour)
    ok = tour.summary()
    click.echo(f"\n{time.monotonic() - start:.1f} s")
    if not ok:
        click.secho("demo failed", fg="red", bold=True, err=True)
        sys.exit(1)
    click.secho("Demo complete.", fg="green", bold=True)


def _tour(tour: Demo) -> None:
    click.secho("xenvirtio: VirtIO on Xen, on Xen emulated in user space", bold=True)
    if os.geteuid() != 0:
        click.echo(
            "(running without root: everything but virtio-net runs; it needs network namespaces)"
        )
    tour.step(HOST, steps.start_host)
    tour.step("Xen's xenstore-* tools against the host's XenStore", steps.xenstore_tools,
              needs=[HOST])  # fmt: skip
    tour.step(CREATE, steps.create_demo, needs=[HOST])
    tour.step("xenvirtio list: domains and devices as they are", steps.show_list, needs=[CREATE])
    tour.step("A file system on the guest's disk, through its NBD export", steps.filesystem,
              needs=[CREATE])  # fmt: skip
    tour.step("The domain's XenStore tree", steps.xenstore_tree, needs=[CREATE])
    tour.step("Hot-plug: block-attach, then block-detach", steps.hotplug, needs=[CREATE])
    if devices.has_root():
        tour.step("virtio-net: ping and iperf3 from the guest's network namespace",
                  devices.network, needs=[CREATE])  # fmt: skip
    else:
        tour.skip("virtio-net: ping and iperf3 from the guest's network namespace",
                  "needs root: the guest's NIC lives in a network namespace")  # fmt: skip
    tour.step("virtio-console: a line through the console pty, the guest answers",
              devices.console, needs=[CREATE])  # fmt: skip
    tour.step("virtio-rng: entropy from the guest's device", devices.entropy, needs=[CREATE])
    tour.step("A second domain: PV-on-HVM with virtio-pci disks (examples/hvm-pci.cfg)",
              steps.pci_domain, needs=[HOST])  # fmt: skip
    tour.step("A third domain: classic PV blkif and netif (examples/classic-pv.cfg)",
              classic.classic_domain, needs=[HOST])  # fmt: skip
    tour.step("Shut the domains down", steps.teardown, needs=[CREATE])
    tour.step("Stop the host: nothing left behind", steps.stop_host, needs=[HOST])


def _cleanup(tour: Demo) -> None:
    """Whatever happened: stop the host (destroys every domain), remove the directory."""
    if (tour.run_dir / "hv.pid").exists():
        subprocess.run([sys.executable, "-m", "xenvirtio", "host", "stop", "--run-dir",
                        str(tour.run_dir)], capture_output=True, timeout=60)  # fmt: skip
    shutil.rmtree(tour.dir, ignore_errors=True)
