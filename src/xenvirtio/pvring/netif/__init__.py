"""Xen's PV network protocol (``io/netif.h``) on the generic ring: codecs, packet
assembly and validation for both directions, checksum offsets. No I/O."""
