"""Xen's classic PV rings (``xen/include/public/io/ring.h``) and the drivers built on them."""
