"""virtio-rng guest driver (virtio 1.2 5.4) over any `VirtioTransport`; see
``docs/virtio-rng.md``.

``driver`` (`VirtioRngDriver`: ``read``, ``read_some``), ``hwrng`` (`HwRngReader`, a
blocking ``/dev/hwrng``-like file). This package imports nothing itself.
"""
