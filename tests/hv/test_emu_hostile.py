"""Hostile domains against the emu hypervisor daemon: it answers or drops, never dies."""

from __future__ import annotations

import array
import os
import socket
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xenvirtio.hv.emu.client import Connection
from xenvirtio.hv.emu.host import HostStatus
from xenvirtio.hv.emu.protocol import MAX_MESSAGE, OPS, decode_reply, encode_request
from xenvirtio.runtime import open_hypervisor


@pytest.fixture(scope="module")
def domu(emu_host: HostStatus) -> Iterator[int]:
    hv = open_hypervisor(run_dir=emu_host.run_dir)
    domid = hv.domctl.create(4, name="hostile")
    try:
        yield domid
    finally:
        hv.domctl.destroy(domid)
        hv.close()


def domu_socket(run_dir: os.PathLike[str], domid: int) -> socket.socket:
    dom0 = Connection.connect(run_dir)
    try:
        return socket.socket(fileno=dom0.call("attach", {"domid": domid}).fds[0])
    finally:
        dom0.close()


def ask(sock: socket.socket, data: bytes) -> dict[str, object] | None:
    sock.sendall(data)
    raw, ancdata, _, _ = sock.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(64 * 4))
    for _level, _kind, payload in ancdata:
        for fd in array.array("i", payload[: len(payload) - len(payload) % 4]):
            os.close(fd)
    if not raw:
        return None
    reply = decode_reply(raw)
    return {"error": reply.error, "value": reply.value}


def assert_daemon_serves(emu_host: HostStatus) -> None:
    hv = open_hypervisor(run_dir=emu_host.run_dir)
    try:
        port = hv.evtchn.bind_unbound_port(0)
        hv.evtchn.unbind(port)
    finally:
        hv.close()


def frame(header: bytes) -> bytes:
    return len(header).to_bytes(4, "little") + header


def test_malformed_requests_get_error_replies(emu_host: HostStatus, domu: int) -> None:
    sock = domu_socket(emu_host.run_dir, domu)
    bad = [
        b"\x00",
        b"\xff\xff\xff\xff{}",
        frame(b"not json"),
        frame(b"[]"),
        frame(b'{"op": "ping"}'),
        frame(b'{"op": "no.such.op", "args": {}}'),
        frame(b'{"op": "evtchn.unbind", "args": {"port": -1}}'),
        frame(b'{"op": "evtchn.unbind", "args": {"port": 1, "extra": 2}}'),
        frame(b'{"op": "gnttab.map", "args": {"domid": 0, "refs": "x", "writable": 1}}'),
        frame(b"[" * 50000),
        encode_request(
            "gnttab.map",
            {
                "domid": 0,
                "refs": [2**32 - 1] * 1024,
                "writable": True,
                "notify_offset": None,
                "notify_port": None,
            },
        ),
        encode_request("gnttab.copy", {"segments": [[0] * 9]}),
        encode_request("foreign.map", {"domid": 0, "writable": True, "frames": [0]}),
        encode_request("dm.inject_msi", {"domid": 0, "addr": 0, "data": 0}),
        encode_request("shutdown_host"),
    ]
    for data in bad:
        reply = ask(sock, data)
        assert reply is not None and reply["error"] in ("EINVAL", "EPERM"), (data[:60], reply)
    assert ask(sock, encode_request("ping")) == {
        "error": None,
        "value": {"domid": domu, "privileged": False},
    }
    sock.close()
    assert_daemon_serves(emu_host)


def test_passed_descriptors_are_closed_and_oversize_drops(emu_host: HostStatus, domu: int) -> None:
    sock = domu_socket(emu_host.run_dir, domu)
    r, w = os.pipe()
    fds = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [w]))]
    sock.sendmsg([encode_request("ping")], fds)
    os.close(w)
    assert sock.recv(MAX_MESSAGE)  # answered as usual
    assert os.read(r, 1) == b""  # the daemon closed the write end it was sent
    os.close(r)
    sock.sendall(b"x" * (MAX_MESSAGE + 10))
    assert sock.recv(100) == b""  # dropped
    sock.close()
    assert_daemon_serves(emu_host)


def test_a_client_that_never_reads_is_dropped(emu_host: HostStatus, domu: int) -> None:
    sock = domu_socket(emu_host.run_dir, domu)
    sock.setblocking(False)
    ping = encode_request("ping")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            sock.send(ping)
        except BlockingIOError:
            time.sleep(0.001)
        except (BrokenPipeError, ConnectionResetError):
            break
    sock.setblocking(True)
    sock.settimeout(10)
    while sock.recv(4096):  # the replies it let pile up, then the end
        pass
    sock.close()
    assert_daemon_serves(emu_host)


_args = st.dictionaries(
    st.sampled_from(["domid", "port", "refs", "writable", "handle", "count", "type", "addr"]),
    st.one_of(
        st.integers(-5, 2**66),
        st.booleans(),
        st.none(),
        st.lists(st.integers(0, 2**33), max_size=4),
    ),
    max_size=5,
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(op=st.sampled_from(sorted(set(OPS) - {"shutdown_host", "sched.wait_start"})), args=_args)
def test_fuzzed_requests_are_answered(
    emu_host: HostStatus, domu: int, op: str, args: dict[str, object]
) -> None:
    sock = domu_socket(emu_host.run_dir, domu)
    try:
        reply = ask(sock, encode_request(op, args))
        assert reply is not None
        assert ask(sock, encode_request("ping")) is not None
    finally:
        sock.close()
