"""netfront: the guest side of Xen's network interface; the guest's NIC is a TAP in
the guest's network namespace."""
