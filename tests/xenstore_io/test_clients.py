"""Our blocking and asyncio clients against our daemon (a real subprocess)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from xenvirtio.xenstore import aio
from xenvirtio.xenstore.client import Transaction, XenstoreClient, XenstoreError
from xenvirtio.xenstore.perms import Perm, PermKind

from .xs_io_helpers import DaemonProcess


def test_blocking_basic_operations(xenstored: DaemonProcess) -> None:
    with XenstoreClient.connect(xenstored.socket) as xs:
        xs.write("/c1/a", b"\x00binary\xff")
        xs.write("/c1/b", "text")
        xs.mkdir("/c1/d")
        assert xs.read("/c1/a") == b"\x00binary\xff"
        assert xs.directory("/c1") == ["a", "b", "d"]
        assert xs.exists("/c1/d") and not xs.exists("/c1/zz")
        xs.set_perms("/c1/a", [Perm(0, PermKind.NONE), Perm(3, PermKind.READ)])
        assert xs.get_perms("/c1/a") == [Perm(0, PermKind.NONE), Perm(3, PermKind.READ)]
        xs.rm("/c1/b")
        with pytest.raises(XenstoreError) as err:
            xs.read("/c1/b")
        assert err.value.name == "ENOENT" and err.value.errno == 2
        assert xs.get_domain_path(3) == "/local/domain/3"


def test_domain_requests_without_a_connector(xenstored: DaemonProcess) -> None:
    with XenstoreClient.connect(xenstored.socket) as xs:
        assert not xs.is_domain_introduced(9)
        xs.introduce(9, 0x1234, 11)  # no hypervisor: the domain is only recorded
        assert xs.is_domain_introduced(9)
        xs.set_target(9, 0)
        xs.release(9)
        assert not xs.is_domain_introduced(9)
        xs.reset_watches()
        with pytest.raises(XenstoreError) as err:
            xs.control("no-such-command")
        assert err.value.name == "EINVAL"


def test_long_directory_falls_back_to_directory_part(xenstored: DaemonProcess) -> None:
    names = [f"child-with-a-long-name-{n:04d}" for n in range(300)]  # ~9 KB of names
    with XenstoreClient.connect(xenstored.socket) as xs:
        with xs.transaction() as t:
            for name in names:
                t.write(f"/c2/{name}", "")
        assert sorted(xs.directory("/c2")) == names


def test_transaction_commit_abort_and_conflict(xenstored: DaemonProcess) -> None:
    with (
        XenstoreClient.connect(xenstored.socket) as xs,
        XenstoreClient.connect(xenstored.socket) as other,
    ):
        with xs.transaction() as t:
            t.write("/c3/x", "1")
            assert not other.exists("/c3/x")  # not visible before commit
        assert other.read("/c3/x") == b"1"
        with pytest.raises(RuntimeError), xs.transaction() as t:
            t.write("/c3/x", "aborted")
            raise RuntimeError
        assert xs.read("/c3/x") == b"1"
        with pytest.raises(XenstoreError) as err, xs.transaction() as t:
            t.read("/c3/x")
            other.write("/c3/x", "2")
            t.write("/c3/x", "3")
        assert err.value.name == "EAGAIN"
        assert xs.read("/c3/x") == b"2"


def test_run_transaction_retries_under_real_concurrency(xenstored: DaemonProcess) -> None:
    threads, rounds = 4, 25
    attempts = [0] * threads
    with XenstoreClient.connect(xenstored.socket) as xs:
        xs.write("/c4/counter", "0")

    def worker(k: int) -> None:
        with XenstoreClient.connect(xenstored.socket) as mine:

            def increment(t: Transaction) -> None:
                attempts[k] += 1
                t.write("/c4/counter", str(int(t.read("/c4/counter")) + 1))

            for _ in range(rounds):
                mine.run_transaction(increment, retries=1000)

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=60)
    with XenstoreClient.connect(xenstored.socket) as xs:
        assert int(xs.read("/c4/counter")) == threads * rounds
    assert sum(attempts) > threads * rounds, "no commit ever conflicted: not concurrent"


def test_watch_iterator_and_callback(xenstored: DaemonProcess) -> None:
    got: list[tuple[str, str]] = []
    arrived = threading.Event()

    def callback(path: str, token: str) -> None:
        got.append((path, token))
        if len(got) == 2:
            arrived.set()

    with XenstoreClient.connect(xenstored.socket) as xs:
        xs.write("/c5/it", "")
        xs.write("/c5/cb", "")
        xs.watch("/c5/it", "iter")
        xs.watch("/c5/cb", "call", callback)
        events = xs.watch_events(timeout=5)
        assert next(events) == ("/c5/it", "iter")
        xs.write("/c5/it/x", "1")
        xs.write("/c5/cb/y", "1")
        assert next(events) == ("/c5/it/x", "iter")
        assert arrived.wait(5)
        assert got == [("/c5/cb", "call"), ("/c5/cb/y", "call")]
        xs.unwatch("/c5/it", "iter")
        xs.write("/c5/it/z", "1")
        assert list(xs.watch_events(timeout=0.3)) == []


def test_watch_thread_and_request_thread_share_a_client(xenstored: DaemonProcess) -> None:
    seen: list[str] = []
    with XenstoreClient.connect(xenstored.socket) as xs:
        xs.write("/c6", "")
        xs.watch("/c6", "t")

        def consume() -> None:
            for path, _token in xs.watch_events(timeout=5):
                seen.append(path)
                if path == "/c6/k49":
                    return

        consumer = threading.Thread(target=consume)
        consumer.start()
        for n in range(50):  # requests from this thread while the other one reads events
            xs.write(f"/c6/k{n}", str(n))
            assert xs.read(f"/c6/k{n}") == str(n).encode()
        consumer.join(timeout=10)
        assert not consumer.is_alive()
    assert seen[0] == "/c6" and seen[1:] == [f"/c6/k{n}" for n in range(50)]


def test_closed_client_raises(xenstored: DaemonProcess) -> None:
    xs = XenstoreClient.connect(xenstored.socket)
    xs.close()
    with pytest.raises(ConnectionError):
        xs.read("/")


def test_connect_uses_xenstored_path(
    xenstored: DaemonProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XENSTORED_PATH", xenstored.socket)
    with XenstoreClient.connect() as xs:
        assert xs.directory("/").count("tool") == 1


async def _aio_scenario(path: str) -> None:
    async with await aio.XenstoreClient.connect(path) as xs:
        await xs.write("/c7/a", "1")
        assert await xs.read("/c7/a") == b"1"
        values = await asyncio.gather(*(xs.read("/c7/a") for _ in range(64)))  # pipelined
        assert values == [b"1"] * 64
        assert await xs.directory("/c7") == ["a"]
        assert not await xs.exists("/c7/b")
        with pytest.raises(XenstoreError):
            await xs.read("/c7/b")
        async with xs.transaction() as t:
            await t.write("/c7/b", await t.read("/c7/a"))
        assert await xs.read("/c7/b") == b"1"
        got: list[tuple[str, str]] = []

        async def callback(p: str, token: str) -> None:
            got.append((p, token))

        await xs.watch("/c7/a", "cb", callback)
        await xs.watch("/c7/b", "it")
        events = xs.watch_events(timeout=5)
        assert await anext(events) == ("/c7/b", "it")
        await xs.write("/c7/b", "2")
        assert await anext(events) == ("/c7/b", "it")
        await xs.write("/c7/a", "2")
        for _ in range(100):
            if len(got) == 2:
                break
            await asyncio.sleep(0.01)
        assert got == [("/c7/a", "cb"), ("/c7/a", "cb")]


def test_asyncio_client(xenstored: DaemonProcess) -> None:
    asyncio.run(_aio_scenario(xenstored.socket))


async def _aio_increment(path: str, tasks: int, rounds: int) -> int:
    clients = [await aio.XenstoreClient.connect(path) for _ in range(tasks)]
    await clients[0].write("/c8/counter", "0")
    tries = 0

    async def increment(t: aio.Transaction) -> None:
        nonlocal tries
        tries += 1
        value = int(await t.read("/c8/counter"))
        await asyncio.sleep(0)  # let the others interleave
        await t.write("/c8/counter", str(value + 1))

    async def worker(c: aio.XenstoreClient) -> None:
        for _ in range(rounds):
            await c.run_transaction(increment, retries=1000)

    await asyncio.gather(*(worker(c) for c in clients))
    assert int(await clients[0].read("/c8/counter")) == tasks * rounds
    for c in clients:
        await c.close()
    return tries


def test_asyncio_run_transaction_retries(xenstored: DaemonProcess) -> None:
    tries = asyncio.run(_aio_increment(xenstored.socket, 4, 20))
    assert tries > 80, "no conflict happened: the test did not exercise EAGAIN"
