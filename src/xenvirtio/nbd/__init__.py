"""NBD export of a block device: a guest's disk served to the host's NBD clients.

``protocol`` is the sans-I/O server state machine (bytes in, events and bytes out);
``server`` runs it on asyncio sockets against a :class:`~xenvirtio.nbd.backend.BlockBackend`.
This package imports nothing on purpose, so importing the pure core pulls in no I/O.
"""
