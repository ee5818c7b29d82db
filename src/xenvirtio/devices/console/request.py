"""What a console buffer may look like (virtio 1.2 5.3.6). Pure: looks only at a
chain's validated segments, touches no memory.

5.3.6.1: the driver MUST NOT put a device-readable buffer in a receiveq, nor a
device-writable buffer in a transmitq. Either is a protocol violation
(`MisplacedBufferError`, a `VirtqueueError`: the transport sets DEVICE_NEEDS_RESET).
A receive buffer without writable bytes can take no input: it is returned unused.
"""

from __future__ import annotations

from dataclasses import dataclass

from xenvirtio.virtio.queue import DescriptorChain, VirtqueueError


class MisplacedBufferError(VirtqueueError):
    """A device-readable buffer on a receiveq or a device-writable one on a transmitq
    (virtio 1.2 5.3.6.1)."""


@dataclass(frozen=True, slots=True)
class ReceiveBuffer:
    """A receiveq chain: room for ``length`` bytes of input."""

    chain: DescriptorChain
    length: int

    @staticmethod
    def parse(chain: DescriptorChain) -> ReceiveBuffer:
        if chain.readable:
            raise MisplacedBufferError(
                f"receiveq buffer {chain.head} has {len(chain.readable)} device-readable "
                "descriptors"
            )
        return ReceiveBuffer(chain, chain.writable_len)

    @property
    def empty(self) -> bool:
        return self.length == 0


@dataclass(frozen=True, slots=True)
class TransmitBuffer:
    """A transmitq chain: ``length`` bytes of output."""

    chain: DescriptorChain
    length: int

    @staticmethod
    def parse(chain: DescriptorChain) -> TransmitBuffer:
        if chain.writable:
            raise MisplacedBufferError(
                f"transmitq buffer {chain.head} has {len(chain.writable)} device-writable "
                "descriptors"
            )
        return TransmitBuffer(chain, chain.readable_len)
