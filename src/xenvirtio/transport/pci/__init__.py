"""Virtio over PCI, modern layout (virtio 1.2 4.1): the device-side function
(`device.VirtioPciFunction`) and the guest-side driver (`driver.VirtioPciDriver`), with
firmware-style enumeration in `bios`."""
