"""Parse one virtio-blk request from a descriptor chain (virtio 1.2 5.2.6). Pure: no I/O.

``Request.parse(chain, mem, limits)`` copies the header (and discard/write-zeroes
segments) out of guest memory once, validates the copy and the chain's shape, and returns

- a `Request` the engine may execute: its data area is a tuple of guest ``(addr, len)``
  pieces inside the chain's validated segments, so executing it touches nothing else;
- a `ParseError`: the request is answered with VIRTIO_BLK_S_IOERR or _UNSUPP in its status
  byte without touching the disk;
- or it raises `MissingStatusError` (a `VirtqueueError`) when the chain has no usable
  status byte: nothing can be answered, the driver broke the protocol and the transport
  sets DEVICE_NEEDS_RESET.

Layout rules (what Linux and QEMU drivers send, and what the spec's framing implies):
the first 16 device-readable bytes are the header; the last device-writable byte is the
status (its descriptor must have length >= 1). IN and GET_ID data is the writable part
before the status; OUT, DISCARD and WRITE_ZEROES data is the readable part after the
header. Data on the wrong side (a read into device-readable buffers, a write carrying
device-writable bytes) is IOERR.
"""

from __future__ import annotations

from dataclasses import dataclass

from xenvirtio.mem.api import GuestMemory, GuestMemoryError
from xenvirtio.spec import virtio_blk as B
from xenvirtio.virtio.queue import DescriptorAddressError, DescriptorChain, VirtqueueError

IOERR = B.VirtioBlkStatus.VIRTIO_BLK_S_IOERR
UNSUPP = B.VirtioBlkStatus.VIRTIO_BLK_S_UNSUPP
T = B.VirtioBlkType
_HDR = B.VIRTIO_BLK_REQ_HEADER_SIZE
_SEG = B.VIRTIO_BLK_DISCARD_WRITE_ZEROES_SIZE

Segments = tuple[tuple[int, int], ...]


class MissingStatusError(VirtqueueError):
    """The chain has no device-writable descriptor, or its last one is empty: there is
    no status byte to answer in (virtio 1.2 5.2.6: every request ends in ``u8 status``)."""


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """What a request is checked against: the disk and the negotiated features.

    ``capacity`` is in 512-byte sectors; ``blk_size`` is the logical block size in bytes
    (a power of two >= 512) that sector and length must be aligned to. ``seg_max`` /
    ``size_max`` are enforced only when negotiated (None otherwise). ``writethrough``:
    VIRTIO_BLK_F_FLUSH was offered but not negotiated, so writes must be stable when they
    complete (5.2.6.2, case 1).
    """

    capacity: int
    read_only: bool = False
    blk_size: int = B.SECTOR_SIZE
    flush: bool = True
    discard: bool = False
    write_zeroes: bool = False
    writethrough: bool = False
    seg_max: int | None = None
    size_max: int | None = None
    max_discard_sectors: int = 0
    max_discard_seg: int = 0
    max_write_zeroes_sectors: int = 0
    max_write_zeroes_seg: int = 0


@dataclass(frozen=True, slots=True)
class BlockRange:
    """One discard / write-zeroes segment, in bytes; ``unmap`` only for WRITE_ZEROES."""

    offset: int
    length: int
    unmap: bool = False


@dataclass(frozen=True, slots=True)
class ParseError:
    """A request answered with ``status`` (IOERR or UNSUPP) at ``status_addr``."""

    status: int
    status_addr: int
    reason: str


@dataclass(frozen=True, slots=True)
class Request:
    """A validated request. ``offset`` is in bytes (sector * 512); ``data`` lies inside
    the chain (writable for IN/GET_ID, readable for OUT); ``ranges`` for DISCARD and
    WRITE_ZEROES; ``fua``: make a write stable before completing it."""

    type: int
    offset: int
    data: Segments
    data_len: int
    status_addr: int
    ranges: tuple[BlockRange, ...] = ()
    fua: bool = False

    @staticmethod
    def parse(
        chain: DescriptorChain, mem: GuestMemory, limits: RequestLimits
    ) -> Request | ParseError:
        """Parse ``chain``; see the module docstring. Memory faults while copying the
        header raise `VirtqueueError` (`DescriptorAddressError`)."""
        status_addr = _status_addr(chain)
        if chain.readable_len < _HDR:
            return ParseError(IOERR, status_addr, "header shorter than 16 bytes")
        rtype, _reserved, sector = B.VIRTIO_BLK_REQ_HEADER.unpack(_read_header(chain, mem))
        ctx = _Ctx(chain, mem, limits, rtype, sector, status_addr)
        handler = _HANDLERS.get(rtype)
        if handler is None:  # 5.2.6.2: unknown (incl. zoned, legacy SCSI) types
            return ctx.error(UNSUPP, f"unsupported request type {rtype}")
        return handler(ctx)


def _read_header(chain: DescriptorChain, mem: GuestMemory) -> bytes:
    """The 16 header bytes, copied once: straight from the first segment when it holds
    them all (the usual layout), else through a `Reader` across segments."""
    addr, length = chain.readable[0]
    if length < _HDR:
        return chain.reader(mem).read(_HDR)
    try:
        return mem.read(addr, _HDR)
    except GuestMemoryError as err:
        raise DescriptorAddressError(str(err), err) from err


def _status_addr(chain: DescriptorChain) -> int:
    if not chain.writable:
        raise MissingStatusError("request has no device-writable status byte")
    addr, length = chain.writable[-1]
    if length < B.VIRTIO_BLK_STATUS_SIZE:
        raise MissingStatusError("the last device-writable descriptor is empty")
    return addr + length - 1


def slice_segments(segments: Segments, start: int, length: int) -> Segments:
    """The ``(addr, len)`` pieces covering bytes ``[start, start + length)`` of the
    concatenation of ``segments`` (which must hold them)."""
    out: list[tuple[int, int]] = []
    pos = 0
    end = start + length
    for addr, seg_len in segments:
        lo, hi = max(start, pos), min(end, pos + seg_len)
        if lo < hi:
            out.append((addr + lo - pos, hi - lo))
        pos += seg_len
        if pos >= end:
            break
    return tuple(out)


@dataclass(slots=True)  # internal to one parse; not frozen: cheaper to build
class _Ctx:
    chain: DescriptorChain
    mem: GuestMemory
    limits: RequestLimits
    type: int
    sector: int
    status_addr: int

    def error(self, status: int, reason: str) -> ParseError:
        return ParseError(status, self.status_addr, reason)

    @property
    def out_len(self) -> int:
        """Device-readable bytes after the header."""
        return self.chain.readable_len - _HDR

    @property
    def in_len(self) -> int:
        """Device-writable bytes before the status byte."""
        return self.chain.writable_len - B.VIRTIO_BLK_STATUS_SIZE

    def check_range(self, sector: int, nbytes: int) -> str | None:
        """Why ``[sector, + nbytes)`` is not a valid range, or None (5.2.6.1: nothing
        beyond capacity; 512-multiples; aligned to the logical block)."""
        lim = self.limits
        if nbytes % B.SECTOR_SIZE or nbytes % lim.blk_size:
            return f"length {nbytes} is not a multiple of the block size"
        if sector % (lim.blk_size >> B.SECTOR_SHIFT):
            return f"sector {sector} is not aligned to the block size"
        # Compare without adding first: sector is a guest le64, sector + n may be huge.
        if sector > lim.capacity or nbytes >> B.SECTOR_SHIFT > lim.capacity - sector:
            return f"sectors [{sector}, +{nbytes >> B.SECTOR_SHIFT}) beyond capacity"
        return None

    def check_segments(self, segments: Segments) -> str | None:
        """seg_max / size_max, when the driver negotiated them (5.2.3)."""
        lim = self.limits
        if lim.seg_max is not None and len(segments) > lim.seg_max:
            return f"{len(segments)} data segments exceed seg_max {lim.seg_max}"
        if lim.size_max is not None and any(n > lim.size_max for _, n in segments):
            return f"a data segment exceeds size_max {lim.size_max}"
        return None


def _parse_in(ctx: _Ctx) -> Request | ParseError:
    if ctx.out_len:
        return ctx.error(IOERR, "read request with device-readable data buffers")
    data = slice_segments(ctx.chain.writable, 0, ctx.in_len)
    why = ctx.check_range(ctx.sector, ctx.in_len) or ctx.check_segments(data)
    if why:
        return ctx.error(IOERR, why)
    return Request(
        T.VIRTIO_BLK_T_IN, ctx.sector << B.SECTOR_SHIFT, data, ctx.in_len, ctx.status_addr
    )


def _parse_out(ctx: _Ctx) -> Request | ParseError:
    if ctx.limits.read_only:  # 5.2.6.2: IOERR and write nothing
        return ctx.error(IOERR, "write to a read-only device")
    if ctx.in_len:
        return ctx.error(IOERR, "write request with device-writable data buffers")
    data = slice_segments(ctx.chain.readable, _HDR, ctx.out_len)
    why = ctx.check_range(ctx.sector, ctx.out_len) or ctx.check_segments(data)
    if why:
        return ctx.error(IOERR, why)
    offset = ctx.sector << B.SECTOR_SHIFT
    fua = ctx.limits.writethrough
    return Request(T.VIRTIO_BLK_T_OUT, offset, data, ctx.out_len, ctx.status_addr, fua=fua)


def _parse_flush(ctx: _Ctx) -> Request | ParseError:
    if not ctx.limits.flush:
        return ctx.error(UNSUPP, "VIRTIO_BLK_F_FLUSH not negotiated")
    # 5.2.6.1: sector 0 and no data are driver duties; neither matters to a flush.
    return Request(T.VIRTIO_BLK_T_FLUSH, 0, (), 0, ctx.status_addr)


def _parse_get_id(ctx: _Ctx) -> Request | ParseError:
    if ctx.out_len or ctx.in_len != B.VIRTIO_BLK_ID_BYTES:  # 5.2.6.1: exactly 20 bytes
        return ctx.error(IOERR, "GET_ID needs exactly 20 device-writable data bytes")
    data = slice_segments(ctx.chain.writable, 0, ctx.in_len)
    return Request(T.VIRTIO_BLK_T_GET_ID, 0, data, ctx.in_len, ctx.status_addr)


def _parse_ranges(ctx: _Ctx) -> Request | ParseError:
    lim = ctx.limits
    discard = ctx.type == T.VIRTIO_BLK_T_DISCARD
    if not (lim.discard if discard else lim.write_zeroes):
        return ctx.error(UNSUPP, "discard / write zeroes not negotiated")
    if lim.read_only:
        return ctx.error(IOERR, "discard / write zeroes on a read-only device")
    if ctx.in_len:
        return ctx.error(IOERR, "discard / write zeroes with device-writable data")
    max_seg = lim.max_discard_seg if discard else lim.max_write_zeroes_seg
    count, rem = divmod(ctx.out_len, _SEG)
    if rem or count == 0:  # 5.2.6.1: a multiple of the segment struct
        return ctx.error(IOERR, f"{ctx.out_len} data bytes are not whole segments")
    if count > max_seg:
        return ctx.error(IOERR, f"{count} segments exceed the limit {max_seg}")
    reader = ctx.chain.reader(ctx.mem)
    reader.skip(_HDR)
    raw = reader.read(count * _SEG)  # one copy; validated below
    segs = [B.VIRTIO_BLK_DISCARD_WRITE_ZEROES.unpack_from(raw, i * _SEG) for i in range(count)]
    return _check_ranges(ctx, discard, segs)


def _check_ranges(
    ctx: _Ctx, discard: bool, segs: list[tuple[int, int, int]]
) -> Request | ParseError:
    unmap_bit = B.VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP
    # 5.2.6.2: UNSUPP for any unknown flag, and for unmap on a discard.
    if any(flags & ~unmap_bit or (discard and flags & unmap_bit) for _, _, flags in segs):
        return ctx.error(UNSUPP, "unknown or invalid segment flags")
    lim = ctx.limits
    max_sectors = lim.max_discard_sectors if discard else lim.max_write_zeroes_sectors
    ranges: list[BlockRange] = []
    for sector, num_sectors, flags in segs:
        if num_sectors > max_sectors:
            return ctx.error(IOERR, f"segment of {num_sectors} sectors exceeds {max_sectors}")
        why = ctx.check_range(sector, num_sectors << B.SECTOR_SHIFT)
        if why:
            return ctx.error(IOERR, why)
        offset, length = sector << B.SECTOR_SHIFT, num_sectors << B.SECTOR_SHIFT
        ranges.append(BlockRange(offset, length, bool(flags & unmap_bit)))
    fua = lim.writethrough
    return Request(ctx.type, 0, (), 0, ctx.status_addr, tuple(ranges), fua)


_HANDLERS = {
    T.VIRTIO_BLK_T_IN: _parse_in,
    T.VIRTIO_BLK_T_OUT: _parse_out,
    T.VIRTIO_BLK_T_FLUSH: _parse_flush,
    T.VIRTIO_BLK_T_GET_ID: _parse_get_id,
    T.VIRTIO_BLK_T_DISCARD: _parse_ranges,
    T.VIRTIO_BLK_T_WRITE_ZEROES: _parse_ranges,
}
