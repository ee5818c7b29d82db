"""The XenBus helpers of :mod:`xenvirtio.hv.xenbus.client` for the asyncio client.

Same behaviour, same pure halves (:func:`~.client.state_update`,
:func:`~.client.error_report`, :func:`~.client.gathered`); only the waiting differs. Works
with :class:`xenvirtio.xenstore.aio.XenstoreClient` or anything of its shape.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol, TypeVar

from xenvirtio.hv.xenbus.client import (
    CLOSING_UNLESS_CLOSED,
    error_report,
    gathered,
    log,
    otherend_watch_path,
    state_update,
)
from xenvirtio.hv.xenbus.errors import XenbusError, XenbusValueError
from xenvirtio.hv.xenbus.ops import TRANSACTION_RETRIES
from xenvirtio.hv.xenbus.paths import KEY_STATE
from xenvirtio.hv.xenbus.values import check_key, encode_value, parse_state
from xenvirtio.spec.xenbus_state import XenbusState
from xenvirtio.xenstore.client_protocol import XenstoreError
from xenvirtio.xenstore.perms import Perm

T = TypeVar("T")


class AsyncXenstoreOps(Protocol):
    """The operations used, on an asyncio connection or inside one of its transactions."""

    async def read(self, path: str) -> bytes: ...
    async def write(self, path: str, value: bytes | str) -> None: ...
    async def get_perms(self, path: str) -> list[Perm]: ...
    async def set_perms(self, path: str, perms: Sequence[Perm]) -> None: ...


class AsyncXenstoreClientOps(AsyncXenstoreOps, Protocol):
    def transaction(self) -> AbstractAsyncContextManager[AsyncXenstoreOps]: ...
    async def watch(self, path: str, token: str) -> None: ...


async def in_transaction(
    xs: AsyncXenstoreClientOps,
    fn: Callable[[AsyncXenstoreOps], Awaitable[T]],
    retries: int = TRANSACTION_RETRIES,
) -> T:
    """Run ``await fn(t)`` in a transaction; again while the commit says ``EAGAIN``."""
    for attempt in range(retries + 1):
        try:
            async with xs.transaction() as t:
                result = await fn(t)
            return result
        except XenstoreError as exc:
            if exc.name != "EAGAIN" or attempt == retries:
                raise
    raise AssertionError("unreachable")


async def read_optional(xs: AsyncXenstoreOps, path: str) -> bytes | None:
    try:
        return await xs.read(path)
    except XenstoreError as exc:
        if exc.name == "ENOENT":
            return None
        raise


async def read_state_strict(xs: AsyncXenstoreOps, directory: str) -> XenbusState:
    raw = await read_optional(xs, f"{directory}/{KEY_STATE}")
    return XenbusState.UNKNOWN if raw is None else parse_state(raw)


async def read_state(xs: AsyncXenstoreOps, directory: str) -> XenbusState:
    try:
        return await read_state_strict(xs, directory)
    except XenbusValueError:
        return XenbusState.UNKNOWN


async def switch_state(
    xs: AsyncXenstoreClientOps,
    directory: str,
    state: XenbusState,
    keep: frozenset[XenbusState] = frozenset(),
) -> bool:
    path = f"{directory}/{KEY_STATE}"

    async def attempt(t: AsyncXenstoreOps) -> bool:
        update = state_update(await read_optional(t, path), state, keep)
        if update is not None:
            await t.write(path, update)
        return update is not None

    return await in_transaction(xs, attempt)


async def dev_error(xs: AsyncXenstoreOps, directory: str, err: int, message: str) -> bool:
    try:
        await xs.write(*error_report(directory, err, message))
    except (XenstoreError, XenbusError) as exc:
        log.warning("%s: could not write the error node: %s", directory, exc)
        return False
    return True


async def dev_fatal(xs: AsyncXenstoreClientOps, directory: str, err: int, message: str) -> None:
    await dev_error(xs, directory, err, message)
    try:
        await switch_state(xs, directory, *CLOSING_UNLESS_CLOSED)
    except XenstoreError as exc:
        log.warning("%s: could not switch to Closing: %s", directory, exc)


async def watch_otherend(xs: AsyncXenstoreClientOps, otherend_dir: str, token: str) -> str:
    path = otherend_watch_path(otherend_dir)
    await xs.watch(path, token)
    return path


async def gather(xs: AsyncXenstoreClientOps, directory: str, *keys: str) -> dict[str, str]:
    for key in keys:
        check_key(key)

    async def attempt(t: AsyncXenstoreOps) -> dict[str, str]:
        return {
            key: gathered(directory, key, await read_optional(t, f"{directory}/{key}"))
            for key in keys
        }

    return await in_transaction(xs, attempt)


async def scatter(
    xs: AsyncXenstoreClientOps, directory: str, entries: Mapping[str, str | int | bytes]
) -> None:
    encoded = {check_key(key): encode_value(value) for key, value in entries.items()}

    async def attempt(t: AsyncXenstoreOps) -> None:
        for key, raw in encoded.items():
            await t.write(f"{directory}/{key}", raw)

    await in_transaction(xs, attempt)
