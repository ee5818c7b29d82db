"""virtio-console guest driver (virtio 1.2 5.3), port 0, over any `VirtioTransport`;
see ``docs/virtio-console.md``.

``driver`` (`VirtioConsoleDriver`, ``emergency_write``), ``stream`` (the driver as an
asyncio transport, under ``StreamReader``/``StreamWriter``). This package imports
nothing itself.
"""
