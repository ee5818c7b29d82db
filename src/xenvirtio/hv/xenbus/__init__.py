"""XenBus: the XenStore handshake every paravirtual device uses (Linux's drivers/xen/xenbus).

- :mod:`.state`: the allowed state transitions per role, as data (sans-I/O).
- :mod:`.paths`: frontend/backend directory names, built and parsed (sans-I/O).
- :mod:`.values`: strict decoding of key values (sans-I/O).
- :mod:`.client`: helpers over a XenStore connection (``switch_state``, ``dev_fatal``,
  ``gather``/``scatter``, ``create_device`` ...).
- :mod:`.device`: :class:`XenbusDevice`, one end driven by the table, with driver hooks.
"""

from xenvirtio.hv.xenbus.device import XenbusDevice, XenbusDriver
from xenvirtio.hv.xenbus.state import Action, Role, Step, XenbusStateMachine
from xenvirtio.spec.xenbus_state import XenbusState

__all__ = [
    "Action",
    "Role",
    "Step",
    "XenbusDevice",
    "XenbusDriver",
    "XenbusState",
    "XenbusStateMachine",
]
