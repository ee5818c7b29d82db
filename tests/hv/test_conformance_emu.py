"""The hypervisor conformance suites against emu: peers in this process and in domain processes."""

from xenvirtio.testing.hv_conformance import (
    EvtchnConformance,
    GntshrConformance,
    GnttabConformance,
)
from xenvirtio.testing.hv_conformance_dm import (
    DeviceModelConformance,
    DomctlConformance,
    ForeignMemoryConformance,
)


class TestEvtchn(EvtchnConformance):
    pass


class TestGnttab(GnttabConformance):
    pass


class TestGntshr(GntshrConformance):
    pass


class TestForeignMemory(ForeignMemoryConformance):
    pass


class TestDeviceModel(DeviceModelConformance):
    pass


class TestDomctl(DomctlConformance):
    pass
