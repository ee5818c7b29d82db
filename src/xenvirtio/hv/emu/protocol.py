"""The hypervisor daemon's request codec, sans-I/O.

One request or reply is one ``SOCK_SEQPACKET`` message: a little-endian ``u32`` length,
that many bytes of JSON, then an optional binary blob (page data of a grant copy).
File descriptors (eventfds, memfds, sockets) travel beside it as ``SCM_RIGHTS``.

Requests come from domains, so they are hostile: :func:`decode_request` checks the
message against the operation's schema (every argument present, of its type and in its
range; nothing extra) and raises :class:`ProtocolError` otherwise. Nothing here does I/O.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_MESSAGE = 128 * 1024
MAX_FDS = 16
MAX_LIST = 1024
_LEN = struct.Struct("<I")

Validator = Callable[[Any], Any]


class ProtocolError(Exception):
    """A request that does not follow the protocol (answered with EPROTO / EINVAL)."""


def _uint(bits: int) -> Validator:
    top = (1 << bits) - 1

    def check(value: Any) -> int:
        if type(value) is not int or not 0 <= value <= top:
            raise ProtocolError(f"expected u{bits}, got {value!r:.40}")
        return value

    return check


def _sint(bits: int) -> Validator:
    low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1

    def check(value: Any) -> int:
        if type(value) is not int or not low <= value <= high:
            raise ProtocolError(f"expected s{bits}, got {value!r:.40}")
        return value

    return check


def _bool(value: Any) -> bool:
    if type(value) is not bool:
        raise ProtocolError(f"expected bool, got {value!r:.40}")
    return value


def _string(max_len: int) -> Validator:
    def check(value: Any) -> str:
        if type(value) is not str or len(value) > max_len:
            raise ProtocolError(f"expected a string of at most {max_len} characters")
        return value

    return check


def _optional(inner: Validator) -> Validator:
    def check(value: Any) -> Any:
        return None if value is None else inner(value)

    return check


def _list(inner: Validator, max_len: int = MAX_LIST, exact: int | None = None) -> Validator:
    def check(value: Any) -> list[Any]:
        if type(value) is not list or len(value) > max_len:
            raise ProtocolError(f"expected a list of at most {max_len} items")
        if exact is not None and len(value) != exact:
            raise ProtocolError(f"expected a list of {exact} items")
        return [inner(item) for item in value]

    return check


U8, U16, U32, U64 = _uint(8), _uint(16), _uint(32), _uint(64)
BOOL = _bool
DOMID = U16
PORT = U32
# A grant copy segment: [src_is_gref, src_domid, src_ref_or_blob_off, src_off,
#                        dst_is_gref, dst_domid, dst_ref, dst_off, len]
SEGMENT = _list(U32, exact=9)

OPS: dict[str, dict[str, Validator]] = {
    # connection / handles
    "ping": {},
    "open": {},
    "attach": {"domid": DOMID},
    "status": {},
    "shutdown_host": {},
    # event channels (libxenevtchn)
    "evtchn.bind_unbound_port": {"remote_domid": DOMID},
    "evtchn.bind_interdomain": {"remote_domid": DOMID, "remote_port": PORT},
    "evtchn.bind_virq": {"virq": U32},
    "evtchn.unbind": {"port": PORT},
    "evtchn.status": {"port": PORT},
    "evtchn.claim": {"port": PORT},
    "evtchn.bind_pirq": {"pirq": U32},
    # grant tables (libxengnttab, libxengntshr, the guest's own table)
    "gnttab.map": {
        "domid": DOMID,
        "refs": _list(U32),
        "writable": BOOL,
        "notify_offset": _optional(U32),
        "notify_port": _optional(PORT),
    },
    "gnttab.unmap": {"handle": U32},
    "gnttab.copy": {"segments": _list(SEGMENT, max_len=64)},
    "gnttab.set_max_grants": {"nr_grants": U32},
    "gntshr.share": {
        "domid": DOMID,
        "count": U32,
        "writable": BOOL,
        "notify_offset": _optional(U32),
        "notify_port": _optional(PORT),
    },
    "gntshr.unshare": {"handle": U32},
    "grant.alloc_refs": {"count": U32},
    "grant.free_refs": {"refs": _list(U32)},
    "grant.end_access": {"ref": U32},
    "grant.table": {},
    # guest memory
    "mem.start_info": {},
    "mem.alloc_pages": {"count": U32},
    "mem.free_pages": {"gfns": _list(U64)},
    "mem.decrease_reservation": {"gfns": _list(U64)},
    # foreign memory (libxenforeignmemory)
    "foreign.map": {"domid": DOMID, "writable": BOOL, "frames": _list(U64)},
    "foreign.map_resource": {
        "domid": DOMID,
        "type": U32,
        "id": U32,
        "frame": U64,
        "nr_frames": U32,
        "writable": BOOL,
    },
    "foreign.unmap": {"handle": U32},
    # device model (libxendevicemodel)
    "dm.create_ioreq_server": {"domid": DOMID, "handle_bufioreq": U8},
    "dm.get_ioreq_server_info": {"domid": DOMID, "id": U16},
    "dm.map_io_range": {
        "domid": DOMID,
        "id": U16,
        "type": U32,
        "start": U64,
        "end": U64,
        "map": BOOL,
    },
    "dm.set_ioreq_server_state": {"domid": DOMID, "id": U16, "enabled": BOOL},
    "dm.destroy_ioreq_server": {"domid": DOMID, "id": U16},
    "dm.inject_msi": {"domid": DOMID, "addr": U64, "data": U32},
    "dm.set_irq_level": {"domid": DOMID, "kind": _string(8), "irq": U32, "level": U8},
    "dm.set_pci_intx_level": {"domid": DOMID, "sbdf": U32, "intx": U8, "level": U8},
    "dm.nr_vcpus": {"domid": DOMID},
    # the guest's view of ioreqs and interrupts
    "ioreq.route": {"type": U8, "addr": U64},
    "ioreq.attach": {"token": U32},
    "irq.attach": {},
    "irq.take": {},
    "irq.get_free_pirq": {},
    "irq.map_pirq_gsi": {"gsi": U32},
    "irq.unmap_pirq": {"pirq": U32},
    # domain control
    "domctl.create": {
        "memory_mb": _uint(20),
        "vcpus": _uint(8),
        "type": _string(8),
        "privileged": BOOL,
        "name": _string(64),
        "kernel": _optional(_string(256)),
        "cmdline": _string(4096),
    },
    "domctl.destroy": {"domid": DOMID},
    "domctl.pause": {"domid": DOMID},
    "domctl.unpause": {"domid": DOMID},
    "domctl.list": {},
    "domctl.info": {"domid": DOMID},
    # the domain's own life (a kernel's boot and SCHEDOP_shutdown)
    "sched.wait_start": {},
    "sched.shutdown": {"code": _sint(32)},
}


@dataclass(frozen=True)
class Request:
    op: str
    args: Mapping[str, Any]
    blob: bytes = b""


@dataclass(frozen=True)
class Reply:
    """``value`` on success; ``error`` (an errno name) with ``message`` on failure."""

    value: Any = None
    error: str | None = None
    message: str = ""
    gntst: int | None = None
    blob: bytes = b""
    fds: tuple[int, ...] = field(default=())
    close_fds: tuple[int, ...] = field(default=())  # the sender closes these once sent


def _frame(header: Any, blob: bytes) -> bytes:
    body = json.dumps(header, separators=(",", ":")).encode()
    data = _LEN.pack(len(body)) + body + blob
    if len(data) > MAX_MESSAGE:
        raise ProtocolError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE}")
    return data


def _unframe(data: bytes) -> tuple[Any, bytes]:
    if len(data) < _LEN.size or len(data) > MAX_MESSAGE:
        raise ProtocolError("message too short or too long")
    (length,) = _LEN.unpack_from(data)
    if length > len(data) - _LEN.size:
        raise ProtocolError("header length runs past the message")
    try:
        header = json.loads(data[_LEN.size : _LEN.size + length])
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"header is not JSON: {exc}") from None
    return header, data[_LEN.size + length :]


def encode_request(op: str, args: Mapping[str, Any] | None = None, blob: bytes = b"") -> bytes:
    return _frame({"op": op, "args": dict(args or {})}, blob)


def decode_request(data: bytes) -> Request:
    """Parse and validate one request (ProtocolError if anything is off)."""
    header, blob = _unframe(data)
    if type(header) is not dict or set(header) != {"op", "args"}:
        raise ProtocolError("a request is {op, args}")
    op, args = header["op"], header["args"]
    schema = OPS.get(op) if type(op) is str else None
    if schema is None:
        raise ProtocolError(f"unknown operation {op!r:.40}")
    if type(args) is not dict or set(args) != set(schema):
        raise ProtocolError(f"{op} takes exactly {sorted(schema)}")
    return Request(op, {name: check(args[name]) for name, check in schema.items()}, blob)


def encode_reply(reply: Reply) -> bytes:
    if reply.error is not None:
        header: dict[str, Any] = {"err": reply.error, "msg": reply.message[:512]}
        if reply.gntst is not None:
            header["gntst"] = reply.gntst
    else:
        header = {"ok": reply.value}
    return _frame(header, reply.blob)


def decode_reply(data: bytes, fds: tuple[int, ...] = ()) -> Reply:
    """Parse a reply from the daemon (trusted, but still checked for shape)."""
    header, blob = _unframe(data)
    if type(header) is not dict:
        raise ProtocolError("a reply is an object")
    if "err" in header:
        gntst = header.get("gntst")
        return Reply(
            error=str(header["err"]),
            message=str(header.get("msg", "")),
            gntst=gntst if type(gntst) is int else None,
            blob=blob,
            fds=fds,
        )
    if "ok" not in header:
        raise ProtocolError("a reply carries ok or err")
    return Reply(value=header["ok"], blob=blob, fds=fds)
