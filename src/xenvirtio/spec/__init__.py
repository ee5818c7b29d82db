"""Constants and wire layouts from the VirtIO and Xen specifications, and nothing else."""
