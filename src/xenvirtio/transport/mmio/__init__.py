"""Virtio over MMIO, register layout version 2 (virtio 1.2 4.2): the device side
(`device.VirtioMmioDevice`) and the guest-side driver (`driver.VirtioMmioDriver`)."""
