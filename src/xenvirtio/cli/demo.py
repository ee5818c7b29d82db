"""`xenvirtio demo`: our XenStore daemon, driven by Xen's own xenstore-* tools.

Starts ``xenvirtio xenstored`` on a temporary socket, talks to it with Xen's
xenstore-write/-read/-ls/-chmod/-exists/-rm, shows xenstore-watch receiving events,
runs racing transactions through our client, then stops the daemon and shows that
nothing is left behind. Any failed step stops the demo with exit status 1; the daemon
and the temporary directory are cleaned up whatever happens.
"""

from __future__ import annotations

import contextlib
import os
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator

import click

from xenvirtio.xenstore.client import Transaction, XenstoreClient

XEN_TOOLS = (
    "xenstore-write",
    "xenstore-read",
    "xenstore-ls",
    "xenstore-chmod",
    "xenstore-exists",
    "xenstore-rm",
    "xenstore-watch",
)


class DemoFailed(Exception):
    """A step did not do what it should."""


class Demo:
    """Numbered steps, each command shown with its output."""

    def __init__(self, socket_path: str) -> None:
        self.env = dict(os.environ, XENSTORED_PATH=socket_path)
        self.number = 0

    def step(self, title: str) -> None:
        self.number += 1
        click.secho(f"\n[{self.number}] {title}", bold=True)

    def run(self, *argv: str, expect: int = 0) -> str:
        click.echo(f"  $ {' '.join(_quote(a) for a in argv)}")
        proc = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=30)
        for line in (proc.stdout + proc.stderr).splitlines():
            click.echo(f"    {line}")
        if proc.returncode != expect:
            raise DemoFailed(f"{argv[0]} exited with {proc.returncode}, expected {expect}")
        if expect:
            click.echo(f"    (exit status {proc.returncode}, as expected)")
        return proc.stdout

    def check(self, ok: bool, what: str) -> None:
        if not ok:
            raise DemoFailed(what)
        click.secho(f"  ok: {what}", fg="green")


def _quote(arg: str) -> str:
    return shlex.quote(arg)


@contextlib.contextmanager
def daemon(directory: str) -> Iterator[tuple[subprocess.Popen[bytes], str, str]]:
    """``xenvirtio xenstored`` as a child process; always stopped on the way out."""
    sock, pid_file = os.path.join(directory, "socket"), os.path.join(directory, "xenstored.pid")
    argv = [sys.executable, "-m", "xenvirtio", "xenstored", "--socket", sock]
    proc = subprocess.Popen([*argv, "--pid-file", pid_file], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while not os.path.exists(sock):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise DemoFailed("the daemon did not start")
            time.sleep(0.05)
        yield proc, sock, pid_file
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def tools_steps(demo: Demo) -> None:
    demo.step("Xen's xenstore-write and xenstore-read against our daemon")
    demo.run("xenstore-write", "/vm/demo/name", "demo-guest", "/vm/demo/memory", "512")
    demo.run("xenstore-write", "/vm/demo/note", "tab\\there, byte \\x01")
    out = demo.run("xenstore-read", "-p", "/vm/demo/name", "/vm/demo/memory", "/vm/demo/note")
    demo.check("/vm/demo/name: demo-guest" in out, "values read back as written")
    demo.check("tab\\there, byte \\001" in out, "escapes round-trip like Xen's tools")

    demo.step("xenstore-chmod and xenstore-ls -p: permissions on the wire")
    demo.run("xenstore-chmod", "/vm/demo/name", "n0", "r5")
    out = demo.run("xenstore-ls", "-p", "/vm/demo")
    demo.check("(n0,r5)" in out, "domain 5 may now read /vm/demo/name")

    demo.step("xenstore-exists and xenstore-rm")
    demo.run("xenstore-exists", "/vm/demo/memory")
    demo.run("xenstore-rm", "/vm/demo/memory")
    demo.run("xenstore-exists", "/vm/demo/memory", expect=1)
    demo.run("xenstore-read", "/vm/demo/memory", expect=1)


def watch_step(demo: Demo) -> None:
    demo.step("xenstore-watch sees changes made by other clients")
    click.echo("  $ xenstore-watch /vm/demo   (in the background)")
    watcher = subprocess.Popen(["xenstore-watch", "/vm/demo"], env=demo.env, stdout=subprocess.PIPE)
    try:
        assert watcher.stdout is not None
        lines = _Lines(watcher.stdout.fileno())
        seen = [lines.next(10)]  # the event every new watch fires
        for key, value in (("state", "initialising"), ("state", "connected")):
            demo.run("xenstore-write", f"/vm/demo/{key}", value)
            seen.append(lines.next(10))
        demo.run("xenstore-rm", "/vm/demo/state")
        seen.append(lines.next(10))
        for line in seen:
            click.echo(f"    xenstore-watch printed: {line}")
        demo.check(seen[0] == "/vm/demo", "the watch fired once when registered")
        demo.check(seen[1:] == ["/vm/demo/state"] * 3, "one event per write and remove")
    finally:
        watcher.terminate()
        watcher.wait(timeout=10)
        if watcher.stdout is not None:
            watcher.stdout.close()


class _Lines:
    """Lines from a pipe, each waited for with a timeout."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""

    def next(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([self.fd], [], [], max(0.0, remaining))
            chunk = os.read(self.fd, 4096) if ready else b""
            if not chunk:
                raise DemoFailed("xenstore-watch printed nothing")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode()


def transaction_step(demo: Demo, sock: str) -> None:
    demo.step("Transactions through our client: 4 threads increment one counter")
    rounds, threads = 50, 4
    retries = [0]
    lock = threading.Lock()
    with XenstoreClient.connect(sock) as xs:
        xs.write("/vm/demo/counter", "0")
        click.echo(f"  {threads} clients x {rounds} read-modify-write transactions")

        def increment(t: Transaction) -> None:
            value = int(t.read("/vm/demo/counter"))
            t.write("/vm/demo/counter", str(value + 1))

        def worker() -> None:
            attempts = [0]

            def counted(t: Transaction) -> None:
                attempts[0] += 1
                increment(t)

            with XenstoreClient.connect(sock) as mine:
                for _ in range(rounds):
                    mine.run_transaction(counted, retries=1000)
            with lock:
                retries[0] += attempts[0] - rounds

        pool = [threading.Thread(target=worker) for _ in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        final = int(xs.read("/vm/demo/counter"))
    click.echo(f"  commits that hit EAGAIN and were retried: {retries[0]}")
    click.echo(f"  counter: {final}")
    demo.check(final == rounds * threads, "no increment lost: conflicting commits retried")


@click.command("demo")
def demo() -> None:
    """Show our XenStore daemon working with Xen's own xenstore-* tools.

    Needs Xen's xenstore-utils (installed by `make setup`). Everything runs in a
    temporary directory that is removed at the end.

    \b
    Example:
      xenvirtio demo
    """
    missing = [tool for tool in XEN_TOOLS if shutil.which(tool) is None]
    if missing:
        click.echo(f"demo: missing Xen tools {', '.join(missing)}; run `make setup`", err=True)
        sys.exit(1)
    directory = tempfile.mkdtemp(prefix="xenvirtio-demo-")
    try:
        _run(directory)
    except (DemoFailed, OSError, subprocess.SubprocessError) as exc:
        click.secho(f"\ndemo failed: {exc}", fg="red", err=True)
        sys.exit(1)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    click.secho("\nDemo complete.", fg="green", bold=True)


def _run(directory: str) -> None:
    click.secho("XenStore demo: xenvirtio's daemon, Xen's tools", bold=True)
    with daemon(directory) as (proc, sock, pid_file):
        demo = Demo(sock)
        demo.step("Start the daemon")
        click.echo(f"  $ xenvirtio xenstored --socket {sock} --pid-file {pid_file}")
        click.echo(f"  daemon pid {proc.pid}; export XENSTORED_PATH={sock}")
        tools_steps(demo)
        watch_step(demo)
        transaction_step(demo, sock)
        demo.step("Stop the daemon with SIGTERM")
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
        demo.check(code == 0, f"the daemon exited cleanly (status {code})")
        left = [p for p in (sock, pid_file) if os.path.exists(p)]
        demo.check(not left, "socket and pid file removed")
        demo.check(os.listdir(directory) == [], "nothing left in the daemon's directory")
