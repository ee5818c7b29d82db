"""virtio-rng device model (virtio 1.2 5.4); see ``docs/virtio-rng.md``.

``config`` (settings, offer), ``request`` (pure: an entropy request), ``ratelimit``
(pure: the token bucket, ``now`` passed in), ``engine`` (the entropy source and timer
ports, the host CSPRNG, an asyncio timer), ``device`` (the `VirtioDevice`). This package
imports nothing itself, so importing the pure modules pulls in no I/O.
"""
