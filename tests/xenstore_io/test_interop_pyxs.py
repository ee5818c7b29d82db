"""The PyPI client pyxs (an independent xs_wire implementation) against our daemon."""

from __future__ import annotations

import pytest
import pyxs  # a dev dependency: missing pyxs fails the test, never skips it

from xenvirtio.xenstore.client import XenstoreClient

from .xs_io_helpers import DaemonProcess

pytestmark = pytest.mark.interop


def test_pyxs_read_write_list(xenstored: DaemonProcess) -> None:
    with pyxs.Client(unix_socket_path=xenstored.socket) as c:
        c.write(b"/px/a", b"alpha")
        c.mkdir(b"/px/dir")
        assert c.read(b"/px/a") == b"alpha"
        assert sorted(c.list(b"/px")) == [b"a", b"dir"]
        assert c.exists(b"/px/a") and not c.exists(b"/px/nope")
        c.delete(b"/px/a")
        assert not c.exists(b"/px/a")
        with pytest.raises(pyxs.PyXSError):
            c.read(b"/px/a")
    with XenstoreClient.connect(xenstored.socket) as xs:
        assert xs.directory("/px") == ["dir"]


def test_pyxs_permissions_and_domains(xenstored: DaemonProcess) -> None:
    with pyxs.Client(unix_socket_path=xenstored.socket) as c:
        c.mkdir(b"/py/p")
        c.set_perms(b"/py/p", [b"n0", b"r5"])
        assert c.get_perms(b"/py/p") == [b"n0", b"r5"]
        assert c.get_domain_path(7) == b"/local/domain/7"
        assert c.is_domain_introduced(0)
        assert not c.is_domain_introduced(42)


def test_pyxs_transaction_commit_and_conflict(xenstored: DaemonProcess) -> None:
    with pyxs.Client(unix_socket_path=xenstored.socket) as c:
        c.write(b"/pt/x", b"0")
        c.transaction()
        c.write(b"/pt/x", b"1")
        assert c.commit() is True
        assert c.read(b"/pt/x") == b"1"
        c.transaction()
        assert c.read(b"/pt/x") == b"1"
        with XenstoreClient.connect(xenstored.socket) as other:
            other.write("/pt/x", "2")  # changes what the transaction read
        c.write(b"/pt/x", b"3")
        assert c.commit() is False  # EAGAIN
        assert c.read(b"/pt/x") == b"2"


def test_pyxs_monitor_gets_watch_events(xenstored: DaemonProcess) -> None:
    with pyxs.Client(unix_socket_path=xenstored.socket) as c:
        c.mkdir(b"/pw")
        m = c.monitor()
        m.watch(b"/pw", b"tok")
        events = m.wait()
        assert next(events) == (b"/pw", b"tok")
        with XenstoreClient.connect(xenstored.socket) as xs:
            xs.write("/pw/child", "v")
        assert next(events) == (b"/pw/child", b"tok")
        m.unwatch(b"/pw", b"tok")
