"""virtio-rng on every emu transport: the device model in dom0, the guest's
`VirtioRngDriver` in a domain process over XenBus (grant DMA), virtio-pci (MSI-X) or
virtio-mmio through ioreqs."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from emu_dev_support import TRANSPORTS, DeviceHost, guest_domain

from xenvirtio.devices.rng.config import RngConfig
from xenvirtio.devices.rng.device import VirtioRngDevice
from xenvirtio.devices.rng.engine import LoopTimer, OsEntropy
from xenvirtio.devices.rng.ratelimit import RateLimit
from xenvirtio.hv.api import Hypervisor

SIZES = [1, 7, 4096, 4097, 20000]


class SeededSource:
    """Deterministic entropy: one fixed stream, however it is sliced into reads."""

    def __init__(self, seed: int) -> None:
        self.stream = random.Random(seed).randbytes(1 << 18)
        self.produced = 0

    def read(self, n: int) -> bytes:
        data = self.stream[self.produced : self.produced + n]
        self.produced += len(data)
        return data


@pytest.fixture(params=TRANSPORTS)
def host(request: pytest.FixtureRequest, run_dir: Path) -> Iterator[DeviceHost]:
    host = DeviceHost(run_dir, request.param)
    try:
        yield host
    finally:
        host.close()


@pytest.mark.parametrize("ring", ["split", "packed"])
def test_exact_bytes_from_a_deterministic_source(
    hv: Hypervisor, host: DeviceHost, ring: str
) -> None:
    source = SeededSource(seed=5)
    device = VirtioRngDevice(source)
    args = {"device": "rng", "ring": ring, "sizes": SIZES, "buffer_size": 1000}
    with guest_domain(hv, host, device, args, name=f"rng-{host.transport}") as guest:
        guest.wait_exit()
        result = guest.report("result")
    total = sum(SIZES)
    assert result["length"] == result["received"] == total
    assert result["packed"] is (ring == "packed")
    # Readers are served in order: the guest saw the source's stream exactly.
    assert result["sha256"] == hashlib.sha256(source.stream[:total]).hexdigest()
    assert device.delivered == source.produced == total


def test_host_csprng_bytes(hv: Hypervisor, host: DeviceHost) -> None:
    device = VirtioRngDevice(OsEntropy())
    args = {"device": "rng", "ring": "packed", "sizes": [64, 64, 65536]}
    with guest_domain(hv, host, device, args, name=f"rng-os-{host.transport}") as guest:
        guest.wait_exit()
        result = guest.report("result")
    assert result["length"] == device.delivered == 64 + 64 + 65536


@pytest.mark.parametrize("transport", ["pci-msix"])
def test_rate_limit_holds(hv: Hypervisor, run_dir: Path, transport: str) -> None:
    rate, burst, want = 20_000, 1024, 12_000
    host = DeviceHost(run_dir, transport)
    try:
        config = RngConfig(rate_limit=RateLimit(rate, burst))
        device = host.call(lambda: VirtioRngDevice(OsEntropy(), config, LoopTimer(host.loop)))
        args = {"device": "rng", "ring": "split", "sizes": [want], "buffer_size": 4096}
        with guest_domain(hv, host, device, args, name="rng-limit") as guest:
            guest.wait_exit()
            result = guest.report("result")
    finally:
        host.close()
    assert result["length"] == want
    # The bucket starts full: the rest came at no more than `rate` bytes per second.
    assert result["elapsed"] >= (want - burst) / rate * 0.95
    assert result["elapsed"] < (want - burst) / rate + 5.0
