"""The emulated hypervisor daemon: one thread, one selector, every domain's requests.

- ``hv.sock`` (SOCK_SEQPACKET) is the privileged dom0 entry point; a process that
  descends from a domain process is turned away there.
- Each domain process gets a pre-connected socket from the daemon at spawn time (the
  zygote forks it) and opens further handles through it (``open``).
- A malformed request gets an error reply; an oversized one, or a client that does not
  read its replies, loses its connection. Nothing a client sends stops the loop.

Run as ``python -m xenvirtio.hv.emu.daemon --run-dir DIR`` (``xenvirtio host start``).
"""

from __future__ import annotations

import argparse
import array
import contextlib
import errno
import json
import logging
import os
import resource
import select
import selectors
import signal
import socket
import struct
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xenvirtio.hv.api.errors import GrantError, HypervisorError, HypervisorPermissionError
from xenvirtio.hv.emu import ops_dm, ops_domctl, ops_evtchn, ops_grant, ops_irq, ops_mem
from xenvirtio.hv.emu.channels import EventfdOps
from xenvirtio.hv.emu.client import HV_SOCKET
from xenvirtio.hv.emu.domains import Domain
from xenvirtio.hv.emu.protocol import (
    MAX_FDS,
    MAX_MESSAGE,
    ProtocolError,
    Reply,
    Request,
    decode_request,
    encode_reply,
)
from xenvirtio.hv.emu.state import ConnState, HvState
from xenvirtio.hv.emu.zygote import send_fds, start_zygote

log = logging.getLogger("xenvirtio.hv.emu")
Handler = Callable[[HvState, ConnState, Request], Reply | None]
HANDLERS: dict[str, Handler] = {
    **ops_evtchn.HANDLERS,
    **ops_grant.HANDLERS,
    **ops_mem.HANDLERS,
    **ops_dm.HANDLERS,
    **ops_irq.HANDLERS,
    **ops_domctl.HANDLERS,
}
PID_FILE = "hv.pid"
KILL_WAIT = 5.0  # seconds a SIGKILLed domain process may take to exit


def _eventfd_ops() -> EventfdOps:
    def signal_efd(fd: int) -> None:
        with contextlib.suppress(BlockingIOError):
            os.eventfd_write(fd, 1)

    def drain(fd: int) -> None:
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(fd)

    return EventfdOps(
        new=lambda: os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC),
        close=os.close,
        signal=signal_efd,
        drain=drain,
    )


def _ancestors(pid: int, limit: int = 64) -> list[int]:
    chain: list[int] = []
    while pid > 1 and len(chain) < limit:
        chain.append(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return chain


class Daemon:
    """Owns the sockets and processes; :class:`HvState` owns the hypervisor state."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.zygote_pid, self.zygote = start_zygote()
        self.selector = selectors.DefaultSelector()
        self.socks: dict[int, socket.socket] = {}  # conn id -> socket
        self.hv = HvState(self, _eventfd_ops())
        self.running = True
        self.listener = self._listen()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        signal.set_wakeup_fd(self._wake_w.fileno())
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        self.selector.register(self._wake_r, selectors.EVENT_READ, ("wake", None))

    def _on_signal(self, signum: int, frame: object) -> None:
        self.running = False

    def _listen(self) -> socket.socket:
        path = self.run_dir / HV_SOCKET
        tmp = self.run_dir / f".{HV_SOCKET}.{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        sock.bind(str(tmp))
        os.chmod(tmp, 0o600)
        sock.listen(128)
        sock.setblocking(False)
        os.replace(tmp, path)  # the socket appears only once it accepts connections
        self.selector.register(sock, selectors.EVENT_READ, ("listen", None))
        return sock

    # -- Platform (called by HvState) -------------------------------------------------
    def connect(self, conn: ConnState) -> int:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._serve(conn, ours)
        return theirs.detach()

    def _serve(self, conn: ConnState, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.socks[conn.id] = sock
        self.selector.register(sock, selectors.EVENT_READ, ("conn", conn.id))

    def start_process(self, domain: Domain) -> None:
        conn = self.hv.new_conn(domain.domid, domain.privileged)
        boot_fd = self.connect(conn)
        try:
            request = {"domid": domain.domid, "kernel": domain.kernel}
            send_fds(self.zygote, json.dumps(request).encode(), [boot_fd])
        finally:
            os.close(boot_fd)
        self.zygote.settimeout(30)
        answer = self.zygote.recv(4096)
        reply = json.loads(answer) if answer else {}
        if "pid" not in reply:
            raise HypervisorError(errno.EAGAIN, f"could not start the domain: {reply}")
        domain.pid = int(reply["pid"])
        try:
            domain.pidfd = os.pidfd_open(domain.pid)
        except ProcessLookupError:
            self.hv.process_exited(domain)
            return
        self.selector.register(domain.pidfd, selectors.EVENT_READ, ("exit", domain))

    def kill_process(self, domain: Domain) -> None:
        if domain.pidfd is None:
            return
        with contextlib.suppress(OSError):
            self.selector.unregister(domain.pidfd)
        assert domain.pid is not None
        with contextlib.suppress(OSError):
            os.killpg(domain.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            signal.pidfd_send_signal(domain.pidfd, signal.SIGKILL)
        # Destroy returns once the process is gone (the zygote reaps it at exit).
        select.select([domain.pidfd], [], [], KILL_WAIT)

    def signal_process(self, domain: Domain, pause: bool) -> None:
        if domain.pidfd is not None and domain.pid is not None:
            with contextlib.suppress(OSError):
                os.killpg(domain.pid, signal.SIGSTOP if pause else signal.SIGCONT)

    def drop_connection(self, conn_id: int) -> None:
        sock = self.socks.pop(conn_id, None)
        if sock is not None:
            self.selector.unregister(sock)
            sock.close()

    # -- the loop ----------------------------------------------------------------------
    def run(self) -> None:
        (self.run_dir / PID_FILE).write_text(f"{os.getpid()}\n")
        log.info("emu hypervisor ready at %s (zygote %d)", self.run_dir, self.zygote_pid)
        while self.running:
            for key, _events in self.selector.select():
                try:
                    self._event(*key.data)
                except Exception:  # never let one event take the daemon down
                    log.error("event %s failed:\n%s", key.data, traceback.format_exc())
            self._flush_outbox()
        self.shutdown()

    def _event(self, kind: str, data: Any) -> None:
        if kind == "listen":
            self._accept()
        elif kind == "conn":
            self._readable(data)
        elif kind == "exit":
            self._exited(data)
        else:
            with contextlib.suppress(OSError):
                self._wake_r.recv(4096)

    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except OSError:
            return
        pid, uid, _gid = struct.unpack(
            "3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        )
        domain_pids = {d.pid for d in self.hv.domains.values() if d.pid} | {self.zygote_pid}
        if uid not in (0, os.getuid()) or domain_pids.intersection(_ancestors(pid)):
            log.warning("refused a dom0 connection from pid %d (a domain's process)", pid)
            sock.close()
            return
        try:
            conn = self.hv.new_conn(0, privileged=True)
        except HypervisorError:
            sock.close()
            return
        self._serve(conn, sock)

    def _exited(self, domain: Domain) -> None:
        if self.hv.domains.get(domain.domid) is not domain:
            return
        if domain.pidfd is not None:
            self.selector.unregister(domain.pidfd)
            os.close(domain.pidfd)
            domain.pidfd = None
        self.hv.process_exited(domain)

    def _readable(self, conn_id: int) -> None:
        sock = self.socks.get(conn_id)
        if sock is None:
            return
        try:
            data, ancdata, flags, _ = sock.recvmsg(MAX_MESSAGE + 1, socket.CMSG_SPACE(MAX_FDS * 4))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, ancdata, flags = b"", [], 0
        _close_passed_fds(ancdata)  # clients never send descriptors
        if not data or flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            self._drop(conn_id)
            return
        reply = self._dispatch(conn_id, data)
        if reply is not None:
            self._send(conn_id, reply)

    def _dispatch(self, conn_id: int, data: bytes) -> Reply | None:
        conn = self.hv.conns[conn_id]
        try:
            request = decode_request(data)
            return self._handle(conn, request)
        except ProtocolError as exc:
            return Reply(error="EINVAL", message=f"malformed request: {exc}")
        except GrantError as exc:
            return Reply(error=exc.name, message=str(exc.strerror), gntst=exc.status)
        except HypervisorError as exc:
            return Reply(error=exc.name, message=str(exc.strerror))
        except Exception:  # a bug must not take every domain down with it
            log.error("request from conn %d failed:\n%s", conn_id, traceback.format_exc())
            return Reply(error="EIO", message="internal hypervisor error")

    def _handle(self, conn: ConnState, request: Request) -> Reply | None:
        op = request.op
        if op == "ping":
            return Reply(value={"domid": conn.domid, "privileged": conn.privileged})
        if op == "open":
            fd = self.connect(self.hv.new_conn(conn.domid, conn.privileged))
            return Reply(value=None, fds=(fd,), close_fds=(fd,))
        if op == "attach":
            if not conn.privileged:
                raise HypervisorPermissionError(errno.EPERM, "attach is for dom0")
            target = self.hv.domain(request.args["domid"])
            fd = self.connect(self.hv.new_conn(target.domid, target.privileged))
            return Reply(value=None, fds=(fd,), close_fds=(fd,))
        if op == "status":
            return Reply(value=self._status())
        if op == "shutdown_host":
            if conn.domid != 0:
                raise HypervisorPermissionError(errno.EPERM, "only dom0 stops the host")
            self.running = False
            return Reply(value=None)
        return HANDLERS[op](self.hv, conn, request)

    def _status(self) -> dict[str, object]:
        return {
            "pid": os.getpid(),
            "zygote_pid": self.zygote_pid,
            "domains": [ops_domctl.domain_info(d) for d in self.hv.domains.values()],
            "connections": len(self.hv.conns),
            "ports": self.hv.channels.count(),
            "ioreq_servers": len(self.hv.servers),
            "fds": len(os.listdir("/proc/self/fd")),
        }

    def _send(self, conn_id: int, reply: Reply) -> None:
        sock = self.socks.get(conn_id)
        try:
            if sock is not None:
                data = encode_reply(reply)
                fds = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", reply.fds))]
                sock.sendmsg([data], fds if reply.fds else [], socket.MSG_DONTWAIT)
        except ProtocolError as exc:
            self._send(conn_id, Reply(error="E2BIG", message=str(exc)))
        except OSError:
            self._drop(conn_id)  # not reading its replies, or gone
        finally:
            for fd in reply.close_fds:
                os.close(fd)

    def _flush_outbox(self) -> None:
        while self.hv.outbox:
            conn_id, reply = self.hv.outbox.pop(0)
            self._send(conn_id, reply)

    def _drop(self, conn_id: int) -> None:
        self.drop_connection(conn_id)
        self.hv.close_conn(conn_id)

    def shutdown(self) -> None:
        for domid in sorted(self.hv.domains, reverse=True):
            if domid:
                self.hv.destroy_domain(domid)
        for conn_id in list(self.socks):
            self._drop(conn_id)
        self.zygote.close()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.zygote_pid, 0)
        for name in (HV_SOCKET, PID_FILE):
            with contextlib.suppress(FileNotFoundError):
                (self.run_dir / name).unlink()
        log.info("emu hypervisor stopped")


def _close_passed_fds(ancdata: list[tuple[int, int, bytes]]) -> None:
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            for fd in array.array("i", payload[: len(payload) - len(payload) % 4]):
                with contextlib.suppress(OSError):
                    os.close(fd)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m xenvirtio.hv.emu.daemon")
    parser.add_argument("--run-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s hv: %(message)s", stream=sys.stderr)
    args.run_dir.mkdir(parents=True, exist_ok=True)
    # Every live domain holds a few descriptors here (RAM, grant table, eventfds).
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    Daemon(args.run_dir).run()


if __name__ == "__main__":
    main()
