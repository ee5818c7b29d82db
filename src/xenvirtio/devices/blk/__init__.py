"""virtio-blk device model (virtio 1.2 5.2); see ``docs/virtio-blk.md``.

``config`` (settings, offer, configuration space), ``request`` (pure parse), ``engine``
(execution), ``backing`` (the image file), ``device`` (the `VirtioDevice`). This package
imports nothing itself, so importing the pure parser pulls in no threads or I/O.
"""
