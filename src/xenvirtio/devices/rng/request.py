"""One entropy request: a chain the driver posted for random bytes (virtio 1.2 5.4.6).
Pure: looks only at the chain's validated segments, touches no memory.

The driver MUST NOT place device-readable buffers into the queue (5.4.6.1, driver
side): such a chain is a protocol violation (`DeviceReadableBufferError`, a
`VirtqueueError`, so the transport sets DEVICE_NEEDS_RESET). A chain with no writable
bytes cannot receive the byte the device MUST place (5.4.6.2): it is returned unused.
"""

from __future__ import annotations

from dataclasses import dataclass

from xenvirtio.virtio.queue import DescriptorChain, VirtqueueError


class DeviceReadableBufferError(VirtqueueError):
    """An entropy request carries device-readable descriptors (virtio 1.2 5.4.6.1)."""


@dataclass(frozen=True, slots=True)
class EntropyRequest:
    """``chain`` asks for up to ``length`` bytes (already capped at ``max_fill``)."""

    chain: DescriptorChain
    length: int

    @staticmethod
    def parse(chain: DescriptorChain, max_fill: int) -> EntropyRequest:
        if chain.readable:
            raise DeviceReadableBufferError(
                f"entropy request {chain.head} has {len(chain.readable)} device-readable "
                "descriptors"
            )
        return EntropyRequest(chain, min(chain.writable_len, max_fill))

    @property
    def empty(self) -> bool:
        """No writable space: nothing can be delivered into it."""
        return self.length == 0
