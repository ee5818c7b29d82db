"""Execute one validated NBD request on a :class:`BlockBackend` and build its reply."""

from __future__ import annotations

import errno

from xenvirtio.nbd.backend import BlockBackend, BlockIOError
from xenvirtio.nbd.events import Reply, Request
from xenvirtio.nbd.protocol import nbd_error
from xenvirtio.spec.nbd import NbdCmd

_Data = bytes | bytearray | memoryview


async def execute(backend: BlockBackend, request: Request) -> Reply:
    """Run ``request``; a :class:`BlockIOError` becomes an error reply. Any other exception
    is a bug of the backend and propagates (the server answers it with NBD_EIO)."""
    try:
        data = await _run(backend, request)
    except BlockIOError as exc:
        return Reply(request.handle, nbd_error(exc.errno))
    return Reply(request.handle, data=data)


async def _run(backend: BlockBackend, request: Request) -> _Data:
    command, offset, length = request.command, request.offset, request.length
    # Zero-length requests: unspecified by proto.md save that the server SHOULD NOT
    # disconnect; they succeed without touching the backend.
    if command == NbdCmd.NBD_CMD_READ:
        return await _read(backend, offset, length) if length else b""
    if command == NbdCmd.NBD_CMD_WRITE and length:
        await backend.write(offset, request.data, request.fua)
        return b""
    if command == NbdCmd.NBD_CMD_TRIM and length:
        await backend.trim(offset, length)
    elif command == NbdCmd.NBD_CMD_WRITE_ZEROES and length:
        # proto.md NBD_CMD_WRITE_ZEROES: without NO_HOLE the server MAY trim to zero.
        await backend.write_zeroes(offset, length, may_trim=not request.no_hole)
    # FLUSH, and FUA on a command that wrote without its own FUA path: make it stable.
    if command == NbdCmd.NBD_CMD_FLUSH or request.fua:
        await backend.flush()
    return b""


async def _read(backend: BlockBackend, offset: int, length: int) -> _Data:
    data = await backend.read(offset, length)
    if memoryview(data).nbytes != length:
        # A simple reply carries exactly the length asked for; never send a short one.
        raise BlockIOError(errno.EIO, f"backend returned a short read at {offset:#x}")
    return data
