"""XenStore: the xs_wire codec, the store, the daemon core, the daemon and the clients."""
