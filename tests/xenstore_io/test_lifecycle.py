"""The daemon process: start, signals, files; the quick benchmark (the demo, which
also drives Xen's tools, is run by tests/toolstack_e2e/test_demo.py)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from xenvirtio.testing.tools import require_tool
from xenvirtio.xenstore.client import XenstoreClient

from .xs_io_helpers import XENVIRTIO, start_daemon


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_and_removes_files(tmp_path: Path, signum: int) -> None:
    daemon = start_daemon(tmp_path)
    with open(daemon.pid_file) as f:
        assert int(f.read()) == daemon.proc.pid
    with XenstoreClient.connect(daemon.socket) as xs:
        xs.write("/life", "1")
        idle = socket.socket(socket.AF_UNIX)
        idle.connect(daemon.socket)  # a client still connected at shutdown
        assert daemon.stop(signum) == 0
        with pytest.raises(ConnectionError):
            xs.read("/life")
        idle.close()
    assert not os.path.exists(daemon.socket)
    assert not os.path.exists(daemon.pid_file)
    assert sorted(os.listdir(tmp_path)) == []


def test_stale_socket_is_replaced(tmp_path: Path) -> None:
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(tmp_path / "socket"))  # left behind by a daemon that crashed
    stale.close()
    daemon = start_daemon(tmp_path)
    try:
        with XenstoreClient.connect(daemon.socket) as xs:
            assert xs.directory("/") == ["tool"]
    finally:
        assert daemon.stop() == 0


def test_default_socket_comes_from_xenstored_path(tmp_path: Path) -> None:
    path = str(tmp_path / "env.sock")
    env = dict(os.environ, XENSTORED_PATH=path)
    proc = subprocess.Popen([XENVIRTIO, "xenstored"], env=env, stderr=subprocess.DEVNULL)
    try:
        for _ in range(500):
            if os.path.exists(path):
                break
            assert proc.poll() is None
            time.sleep(0.02)
        out = subprocess.run(
            [require_tool("xenstore-ls")], env=env, capture_output=True, text=True, timeout=30
        )
        assert out.stdout == 'tool = ""\n xenstored = ""\n'
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    assert not os.path.exists(path)


def test_quick_benchmark_runs() -> None:
    out = subprocess.run(
        [XENVIRTIO, "bench", "xenstore", "--quick"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "== xenvirtio xenstored" in text and "== unix-socket echo (baseline)" in text
    assert "C xenstored" in text  # measured, or the reason it could not be
    rows = [line.split() for line in text.splitlines() if line[:1].isalpha()]
    rates = {(r[0], r[1]): r for r in rows if len(r) == 5 and r[1].isdigit()}
    for name in ("read", "write", "directory", "transaction"):
        for clients in ("1", "32"):
            assert float(rates[(name, clients)][2].replace(",", "")) > 100, (name, clients)
