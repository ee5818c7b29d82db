"""The VirtIO core (no I/O): features, device status, split and packed virtqueues."""
