"""Xen's own xenstore-* tools (libxenstore) against our daemon, and our CLI beside them."""

from __future__ import annotations

import select
import subprocess
import time

import pytest

from xenvirtio.testing.tools import require_tool
from xenvirtio.xenstore.client import XenstoreClient

from .xs_io_helpers import XENVIRTIO, DaemonProcess

pytestmark = pytest.mark.interop


def xen(daemon: DaemonProcess, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool(tool), *args], env=daemon.env, capture_output=True, text=True, timeout=30
    )


def ours(daemon: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [XENVIRTIO, "xenstore", *args], env=daemon.env, capture_output=True, text=True, timeout=30
    )


def test_write_then_read_with_xen_tools(xenstored: DaemonProcess) -> None:
    assert xen(xenstored, "xenstore-write", "/t1/a", "one", "/t1/b", "two").returncode == 0
    got = xen(xenstored, "xenstore-read", "/t1/a", "/t1/b")
    assert (got.returncode, got.stdout) == (0, "one\ntwo\n")
    got = xen(xenstored, "xenstore-read", "-p", "/t1/b")
    assert got.stdout == "/t1/b: two\n"
    with XenstoreClient.connect(xenstored.socket) as xs:
        assert xs.read("/t1/a") == b"one"


def test_binary_values_escape_like_xen(xenstored: DaemonProcess) -> None:
    spec = "tab\\tnl\\nbs\\\\oct\\001hex\\x7f"
    assert xen(xenstored, "xenstore-write", "/t2/v", spec).returncode == 0
    with XenstoreClient.connect(xenstored.socket) as xs:
        assert xs.read("/t2/v") == b"tab\tnl\nbs\\oct\x01hex\x7f"
        xs.write("/t2/w", bytes(range(0, 20)) + b"\xff")
    for key in ("/t2/v", "/t2/w"):
        theirs, mine = xen(xenstored, "xenstore-read", key), ours(xenstored, "read", key)
        assert theirs.returncode == mine.returncode == 0
        assert mine.stdout == theirs.stdout
    assert ours(xenstored, "write", "/t2/x", spec).returncode == 0
    assert (
        xen(xenstored, "xenstore-read", "/t2/x").stdout
        == xen(xenstored, "xenstore-read", "/t2/v").stdout
    )


def test_read_missing_fails_like_xen(xenstored: DaemonProcess) -> None:
    theirs = xen(xenstored, "xenstore-read", "/t3/missing")
    mine = ours(xenstored, "read", "/t3/missing")
    assert theirs.returncode == mine.returncode == 1
    assert "couldn't read path /t3/missing" in theirs.stderr
    assert "couldn't read path /t3/missing" in mine.stderr


def test_ls_output_matches_xen_byte_for_byte(xenstored: DaemonProcess) -> None:
    with XenstoreClient.connect(xenstored.socket) as xs:
        xs.write("/t4/vm/name", "guest")
        xs.write("/t4/vm/long", "x" * 120)
        xs.write("/t4/vm/dev/vbd/51712/state", "4")
        xs.set_perms("/t4/vm/name", ["n0", "r5", "b7"])
    for flags in ([], ["-p"], ["-f"], ["-f", "-p"]):
        theirs = xen(xenstored, "xenstore-ls", *flags, "/t4")
        mine = ours(xenstored, "ls", *flags, "/t4")
        assert theirs.returncode == mine.returncode == 0, (flags, mine.stderr)
        assert mine.stdout == theirs.stdout, flags
    assert "  (n0,r5,b7)" in xen(xenstored, "xenstore-ls", "-p", "/t4/vm").stdout
    assert "x" * 120 not in xen(xenstored, "xenstore-ls", "/t4").stdout  # cut at 80 columns


def test_list_exists_rm_and_mkdir(xenstored: DaemonProcess) -> None:
    with XenstoreClient.connect(xenstored.socket) as xs:
        for name in ("a", "b", "c"):
            xs.write(f"/t5/d/{name}", "")
    theirs = xen(xenstored, "xenstore-list", "-p", "/t5/d")
    assert theirs.stdout == "/t5/d/a\n/t5/d/b\n/t5/d/c\n"
    assert ours(xenstored, "list", "-p", "/t5/d").stdout == theirs.stdout
    assert xen(xenstored, "xenstore-exists", "/t5/d/a").returncode == 0
    assert xen(xenstored, "xenstore-exists", "/t5/d/zz").returncode == 1
    assert ours(xenstored, "exists", "/t5/d/zz").returncode == 1
    assert xen(xenstored, "xenstore-rm", "/t5/d/a").returncode == 0
    assert xen(xenstored, "xenstore-exists", "/t5/d/a").returncode == 1
    assert ours(xenstored, "mkdir", "/t5/made").returncode == 0
    assert xen(xenstored, "xenstore-read", "/t5/made").stdout == "\n"


def test_rm_tidy_removes_empty_parents(xenstored: DaemonProcess) -> None:
    with XenstoreClient.connect(xenstored.socket) as xs:
        xs.write("/t6/keep", "v")
        xs.write("/t6/p/q/r", "")
        assert xen(xenstored, "xenstore-rm", "-t", "/t6/p/q/r").returncode == 0
        assert not xs.exists("/t6/p")
        assert xs.read("/t6/keep") == b"v"
        xs.write("/t6/m/n/o", "")
        assert ours(xenstored, "rm", "-t", "/t6/m/n/o").returncode == 0
        assert not xs.exists("/t6/m")


def test_chmod_recursive_and_upto(xenstored: DaemonProcess) -> None:
    with XenstoreClient.connect(xenstored.socket) as xs:
        xs.write("/t7/a/b/c", "")
        assert xen(xenstored, "xenstore-chmod", "-r", "/t7/a", "n0", "r3").returncode == 0
        assert [str(p) for p in xs.get_perms("/t7/a/b/c")] == ["n0", "r3"]
        assert ours(xenstored, "chmod", "-u", "/t7/a/b", "b0", "w4").returncode == 0
        assert [str(p) for p in xs.get_perms("/t7/a")] == ["b0", "w4"]
        assert [str(p) for p in xs.get_perms("/t7/a/b/c")] == ["n0", "r3"]
    assert xen(xenstored, "xenstore-chmod", "/t7/a", "x1").returncode == 1
    assert ours(xenstored, "chmod", "/t7/a", "x1").returncode == 1


def _lines(proc: subprocess.Popen[str], count: int, timeout: float = 10) -> list[str]:
    assert proc.stdout is not None
    out: list[str] = []
    deadline = time.monotonic() + timeout
    while len(out) < count:
        ready, _, _ = select.select([proc.stdout], [], [], max(0, deadline - time.monotonic()))
        assert ready, f"watcher printed only {out}"
        out.append(proc.stdout.readline().rstrip("\n"))
    return out


@pytest.mark.parametrize("watcher", ["xen", "ours"])
def test_watch_events_reach_xenstore_watch(xenstored: DaemonProcess, watcher: str) -> None:
    base = f"/t8/{watcher}"
    with XenstoreClient.connect(xenstored.socket) as xs:
        xs.write(base, "")
        argv = (
            [require_tool("xenstore-watch"), "-n", "4", base]
            if watcher == "xen"
            else [XENVIRTIO, "xenstore", "watch", "-n", "4", base]
        )
        proc = subprocess.Popen(
            argv, env=xenstored.env, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        try:
            assert _lines(proc, 1) == [base]  # every watch fires once when set
            xs.write(f"{base}/x", "1")
            assert _lines(proc, 1) == [f"{base}/x"]
            xs.write("/t8/elsewhere", "1")  # not under the watch: no event
            xs.rm(f"{base}/x")
            xs.set_perms(base, ["n0"])
            assert _lines(proc, 2) == [f"{base}/x", base]
            assert proc.wait(timeout=10) == 0  # -n 4: exits after four events
        finally:
            proc.kill()
            proc.wait()
