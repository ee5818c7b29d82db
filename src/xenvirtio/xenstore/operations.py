"""The XenStore operations, once for the blocking and once for the asyncio client.

Each method builds a :class:`~xenvirtio.xenstore.client_protocol.Request` and hands it to
``_call``; a client implements ``_call`` (send, wait, decode) and a transaction
implements it by forwarding with its own transaction id. ``tx=0`` means "no transaction".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from xenvirtio.xenstore import client_protocol as ops
from xenvirtio.xenstore.client_protocol import Request, XenstoreError
from xenvirtio.xenstore.perms import Perm

T = TypeVar("T")
_PART_RETRIES = 8


class Operations:
    """Blocking operations on top of ``_call``."""

    def _call(self, request: Request[T], tx: int = 0) -> T:
        raise NotImplementedError

    def read(self, path: str, tx: int = 0) -> bytes:
        return self._call(ops.read(path), tx)

    def write(self, path: str, value: bytes | str, tx: int = 0) -> None:
        self._call(ops.write(path, value), tx)

    def mkdir(self, path: str, tx: int = 0) -> None:
        self._call(ops.mkdir(path), tx)

    def rm(self, path: str, tx: int = 0) -> None:
        self._call(ops.rm(path), tx)

    def directory(self, path: str, tx: int = 0) -> list[str]:
        """Children of ``path``; falls back to XS_DIRECTORY_PART for long lists."""
        try:
            return self._call(ops.directory(path), tx)
        except XenstoreError as exc:
            if exc.name != "E2BIG":
                raise
        for _ in range(_PART_RETRIES):
            names: list[str] = []
            generation = None
            offset = 0
            while True:
                gen, part, done = self._call(ops.directory_part(path, offset), tx)
                if generation is not None and gen != generation:
                    break  # the node changed under us: start over
                generation = gen
                names += part
                offset += sum(len(n.encode()) + 1 for n in part)
                if done or not part:
                    return names
        raise XenstoreError("EAGAIN", f"{path} kept changing while being listed")

    def exists(self, path: str, tx: int = 0) -> bool:
        try:
            self._call(ops.read(path), tx)
        except XenstoreError as exc:
            if exc.name == "ENOENT":
                return False
            raise
        return True

    def get_perms(self, path: str, tx: int = 0) -> list[Perm]:
        return self._call(ops.get_perms(path), tx)

    def set_perms(self, path: str, perms: Sequence[Perm | str], tx: int = 0) -> None:
        self._call(ops.set_perms(path, perms), tx)


class AsyncOperations:
    """The same operations for the asyncio client."""

    async def _call(self, request: Request[T], tx: int = 0) -> T:
        raise NotImplementedError

    async def read(self, path: str, tx: int = 0) -> bytes:
        return await self._call(ops.read(path), tx)

    async def write(self, path: str, value: bytes | str, tx: int = 0) -> None:
        await self._call(ops.write(path, value), tx)

    async def mkdir(self, path: str, tx: int = 0) -> None:
        await self._call(ops.mkdir(path), tx)

    async def rm(self, path: str, tx: int = 0) -> None:
        await self._call(ops.rm(path), tx)

    async def directory(self, path: str, tx: int = 0) -> list[str]:
        """Children of ``path``; falls back to XS_DIRECTORY_PART for long lists."""
        try:
            return await self._call(ops.directory(path), tx)
        except XenstoreError as exc:
            if exc.name != "E2BIG":
                raise
        for _ in range(_PART_RETRIES):
            names: list[str] = []
            generation = None
            offset = 0
            while True:
                gen, part, done = await self._call(ops.directory_part(path, offset), tx)
                if generation is not None and gen != generation:
                    break
                generation = gen
                names += part
                offset += sum(len(n.encode()) + 1 for n in part)
                if done or not part:
                    return names
        raise XenstoreError("EAGAIN", f"{path} kept changing while being listed")

    async def exists(self, path: str, tx: int = 0) -> bool:
        try:
            await self._call(ops.read(path), tx)
        except XenstoreError as exc:
            if exc.name == "ENOENT":
                return False
            raise
        return True

    async def get_perms(self, path: str, tx: int = 0) -> list[Perm]:
        return await self._call(ops.get_perms(path), tx)

    async def set_perms(self, path: str, perms: Sequence[Perm | str], tx: int = 0) -> None:
        await self._call(ops.set_perms(path, perms), tx)
