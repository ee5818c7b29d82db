"""Guest memory: the GuestMemory interface, its implementations, and address translation."""
