"""netback: the backend of Xen's network interface (``io/netif.h``) on a TAP (``vif``)."""
