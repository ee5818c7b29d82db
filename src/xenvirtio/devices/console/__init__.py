"""virtio-console device model (virtio 1.2 5.3), one port exposed as a pty, and the
attach helper; see ``docs/virtio-console.md``.

``config`` (settings, offer, configuration space with ``emerg_wr``), ``request`` (pure:
which buffers a queue may hold), ``device`` (the `VirtioDevice`, the `PortBackend`
port), ``engine`` (`PtyPort`, the pty edge), ``attach`` (`ConsoleAttach`, ``attach``:
a terminal on the pty, Ctrl-] detaches). This package imports nothing itself, so
importing the pure modules pulls in no I/O.
"""
