"""blkfront: the guest side of Xen's block interface, an NBD `BlockBackend`."""
