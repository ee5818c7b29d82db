"""Device models (backends): one package per virtio device type, each with the same
files: ``config`` (settings, offer, configuration space), ``request`` (pure parse),
``engine`` (execution), ``device`` (the `VirtioDevice` a transport drives)."""
