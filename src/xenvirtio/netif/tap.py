"""TAP devices through ``/dev/net/tun`` (Linux ``include/uapi/linux/if_tun.h``).

A `Tap` is opened with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR and a 12-byte vnet header
(``TUNSETVNETHDRSZ``), so every frame read or written is preceded by the virtio 1.x
``struct virtio_net_hdr`` and GSO super-frames (up to 64 KiB) pass through whole, as
Linux's vhost-net and QEMU use it. ``TUNSETOFFLOAD`` says what the reader of this TAP
accepts (partial checksums, TSO); frames written to it may always carry offloads.

With ``queues > 1`` the device is IFF_MULTI_QUEUE: one file descriptor per queue, the
kernel steering flows between them; `set_queue_enabled` attaches or detaches one queue
(``TUNSETQUEUE``). Every descriptor is non-blocking.
"""

from __future__ import annotations

import fcntl
import os
import struct
from typing import Final

from xenvirtio.netif.netns import run_in_netns

# ioctls: _IOW('T', n, int) = 0x40045400 | n, _IOR('T', n, int) = 0x80045400 | n
TUNSETIFF: Final = 0x400454CA
TUNSETOFFLOAD: Final = 0x400454D0
TUNGETIFF: Final = 0x800454D2
TUNSETVNETHDRSZ: Final = 0x400454D8
TUNSETQUEUE: Final = 0x400454D9
TUNSETCARRIER: Final = 0x400454E2

IFF_TAP: Final = 0x0002
IFF_NO_PI: Final = 0x1000
IFF_VNET_HDR: Final = 0x4000
IFF_MULTI_QUEUE: Final = 0x0100
IFF_ATTACH_QUEUE: Final = 0x0200
IFF_DETACH_QUEUE: Final = 0x0400

TUN_F_CSUM: Final = 0x01
TUN_F_TSO4: Final = 0x02
TUN_F_TSO6: Final = 0x04
TUN_F_TSO_ECN: Final = 0x08
TUN_F_UFO: Final = 0x10

VNET_HDR_SIZE: Final = 12
IFNAMSIZ: Final = 16
_IFREQ = struct.Struct("16sH22x")  # struct ifreq: name, ifr_flags, union padding
_INT = struct.Struct("i")


class TapError(OSError):
    """A TAP device could not be created or configured."""


def _ifreq(name: str, flags: int) -> bytes:
    raw = name.encode()
    if not raw or len(raw) >= IFNAMSIZ:
        raise ValueError(f"interface name {name!r} must be 1..15 bytes")
    return _IFREQ.pack(raw, flags)


class Tap:
    """An open TAP device: ``fds[i]`` is queue ``i``. Create with `Tap.open`."""

    def __init__(self, name: str, fds: list[int], vnet_hdr: bool) -> None:
        self.name = name
        self.fds = fds
        self.vnet_hdr = vnet_hdr
        self.offload = 0
        self.attached = [True] * len(fds)

    @classmethod
    def open(
        cls, name: str, *, queues: int = 1, vnet_hdr: bool = True, netns: str | None = None
    ) -> Tap:
        """Create (or attach to) TAP ``name`` inside network namespace ``netns``."""
        if queues < 1:
            raise ValueError("a TAP needs at least one queue")
        flags = IFF_TAP | IFF_NO_PI | (IFF_VNET_HDR if vnet_hdr else 0)
        if queues > 1:
            flags |= IFF_MULTI_QUEUE

        def create() -> list[int]:
            fds: list[int] = []
            try:
                for _ in range(queues):
                    fds.append(_open_queue(name, flags, vnet_hdr))
            except BaseException:
                for fd in fds:
                    os.close(fd)
                raise
            return fds

        return cls(name, run_in_netns(netns, create), vnet_hdr)

    @property
    def queues(self) -> int:
        return len(self.fds)

    def set_offload(self, flags: int) -> None:
        """TUN_F_* the reader accepts (must match the virtio features negotiated)."""
        _ioctl(self.fds[0], TUNSETOFFLOAD, flags, f"TUNSETOFFLOAD {flags:#x} on {self.name}")
        self.offload = flags

    def set_carrier(self, on: bool) -> None:
        """Link carrier as the stack sees it (operstate LOWER_UP / NO-CARRIER)."""
        _ioctl(self.fds[0], TUNSETCARRIER, _INT.pack(int(on)), f"TUNSETCARRIER on {self.name}")

    def set_queue_enabled(self, queue: int, enabled: bool) -> None:
        """Attach or detach one queue of a multi-queue TAP (detached: no frames to it)."""
        if self.attached[queue] == enabled:
            return  # the kernel answers EINVAL to a repeated attach or detach
        flag = IFF_ATTACH_QUEUE if enabled else IFF_DETACH_QUEUE
        _ioctl(self.fds[queue], TUNSETQUEUE, _ifreq(self.name, flag), f"TUNSETQUEUE {self.name}")
        self.attached[queue] = enabled

    def close(self) -> None:
        """Close every queue; the kernel removes the (non-persistent) device."""
        fds, self.fds = self.fds, []
        for fd in fds:
            os.close(fd)

    def __enter__(self) -> Tap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ioctl(fd: int, request: int, arg: int | bytes, what: str) -> None:
    try:
        fcntl.ioctl(fd, request, arg)
    except OSError as err:
        raise TapError(err.errno, f"{what}: {err.strerror}") from err


def _open_queue(name: str, flags: int, vnet_hdr: bool) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        _ioctl(fd, TUNSETIFF, _ifreq(name, flags), f"TUNSETIFF {name}")
        if vnet_hdr:
            _ioctl(fd, TUNSETVNETHDRSZ, _INT.pack(VNET_HDR_SIZE), f"TUNSETVNETHDRSZ {name}")
    except BaseException:
        os.close(fd)
        raise
    return fd
