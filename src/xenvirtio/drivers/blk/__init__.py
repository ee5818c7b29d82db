"""virtio-blk guest driver (virtio 1.2 5.2) over any `VirtioTransport`; it implements the
NBD `BlockBackend` port. See ``docs/virtio-blk.md``.

``commands`` (pure: wire formats, limits), ``buffers`` (waiting for DMA memory),
``queues`` (rings, backlog, completion), ``driver`` (`VirtioBlkDriver`). This package
imports nothing itself.
"""
