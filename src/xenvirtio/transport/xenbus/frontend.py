"""`XenbusVirtioFrontend`: a guest driver's `VirtioTransport` over XenBus.

The driver's status writes become the handshake of docs/xenbus-transport.md: reset is
Closed, then Initialising once the backend answers Closed; FEATURES_OK is the backend's
``features-ok`` for our ``driver-features``; DRIVER_OK publishes the queues (one unbound
event channel each) with Initialised and waits for Connected; FAILED is Closed. Kicks
and used-buffer interrupts travel on each queue's event channel. DEVICE_NEEDS_RESET is
the backend's ``needs-reset`` key or the backend leaving Connected (closed, failed or
restarted); both raise a configuration interrupt, as a config change does.

All state lives on the calling thread: watch events and event channel signals are
collected by a `Reactor` and applied whenever a method runs (or `wait`/`attach`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TypeVar

from xenvirtio.hv.api import Guest
from xenvirtio.hv.xenbus.client import switch_state
from xenvirtio.hv.xenbus.device import XenbusDevice
from xenvirtio.hv.xenbus.errors import XenbusError
from xenvirtio.hv.xenbus.paths import frontend_dir
from xenvirtio.hv.xenbus.state import Role
from xenvirtio.spec.virtio import DeviceStatus
from xenvirtio.spec.xenbus_state import XenbusState
from xenvirtio.transport.api import InterruptFlags
from xenvirtio.transport.xenbus import frontend_io as io
from xenvirtio.transport.xenbus import keys as K
from xenvirtio.transport.xenbus.frontend_dma import GuestDmaPages
from xenvirtio.transport.xenbus.frontend_queues import QueueRegisters
from xenvirtio.transport.xenbus.frontend_state import (
    Reaction,
    react,
    reset_complete,
    reset_needs_handshake,
)
from xenvirtio.transport.xenbus.negotiation import driver_accepts, refusal
from xenvirtio.transport.xenbus.reactor import Reactor
from xenvirtio.transport.xenbus.records import (
    BackendOffer,
    BackendStatus,
)
from xenvirtio.transport.xenbus.store import ReactorStore

log = logging.getLogger("xenvirtio.xenbus.virtio")
S = XenbusState
T = TypeVar("T")
DEFAULT_DMA_PAGES = 256
DEFAULT_TIMEOUT = 10.0


class XenbusTransportError(OSError):
    """The backend did not answer in time, published garbage, or the driver asked for
    something this transport does not do."""


class XenbusVirtioFrontend:
    """Device ``devid`` of ``guest`` (``/local/domain/<domid>/device/virtio/<devid>``)."""

    def __init__(
        self,
        guest: Guest,
        devid: int,
        *,
        dma_pages: int = DEFAULT_DMA_PAGES,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        hv = guest.hypervisor
        if hv.store is None:
            raise XenbusTransportError("no XenStore connection")
        self.guest, self.timeout, self.dma_pages = guest, timeout, dma_pages
        self.nodename = frontend_dir(guest.domid, K.DEVTYPE, devid)
        self.reactor = Reactor()
        self.store = ReactorStore(hv.store, self.reactor)
        probed = XenbusDevice.probe(self.store, Role.FRONTEND, self.nodename)
        self.backend, self.backend_id = probed.otherend, probed.otherend_id
        self.own = probed.state
        self.evtchn = hv.open_evtchn()
        self.reactor.register(self.evtchn.fd(), self._on_evtchn)
        self.reactor.watch_handler = self._on_watch
        self.on_interrupt: Callable[[], None] | None = None
        self._token = f"virtio-fe:{self.nodename}"
        self._be: BackendStatus | None = None
        self._be_state = S.UNKNOWN
        self._offer: BackendOffer | None = None
        self._dma: GuestDmaPages | None = None
        self._status = 0
        self._needs_reset = False
        self._pending = InterruptFlags.NONE
        self._chosen = 0
        self._negotiated = 0
        self._queues = QueueRegisters()
        self._ports: dict[int, int] = {}
        self._config = b""
        self._generation = 0
        self._config_seq = 0
        self.store.watch(self.backend, self._token)  # the whole directory
        self._refresh()

    # -- events ------------------------------------------------------------------------
    def _on_watch(self, path: str, token: str) -> None:
        if token == self._token:
            self._refresh()

    def _refresh(self) -> None:
        """Re-read the backend and react (a hostile backend's garbage loses the device)."""
        try:
            be = io.read_status(self.store, self.backend)
        except (XenbusError, OSError) as exc:
            self._be_state = S.UNKNOWN
            if self.own in (S.INITIALISED, S.CONNECTED):
                self._lose(f"backend directory unreadable: {exc}")
            return
        self._be, self._be_state = be, be.state
        reaction = react(self.own, be.state)
        if reaction is Reaction.CONNECT:
            self._switch(S.CONNECTED)
        elif reaction is Reaction.LOST:
            self._lose(f"backend went {be.state.xen_name}")
        if be.needs_reset and self.own is S.CONNECTED and not self._needs_reset:
            self._needs_reset = True
            self._raise(InterruptFlags.CONFIG)
        if be.config is None or be.config_generation is None:
            return  # nothing published yet
        if be.config_generation != self._generation or be.config != self._config:
            self._generation, self._config = be.config_generation, be.config
            if self._status & DeviceStatus.DRIVER_OK:
                self._raise(InterruptFlags.CONFIG)

    def _lose(self, why: str) -> None:
        log.warning("%s: device lost: %s", self.nodename, why)
        self._switch(S.CLOSED)
        if not self._needs_reset:
            self._needs_reset = True
            self._raise(InterruptFlags.CONFIG)

    def _on_evtchn(self) -> None:
        ours = set(self._ports.values())
        while (port := self.evtchn.pending()) is not None:
            self.evtchn.unmask(port)
            if port in ours:
                self._raise(InterruptFlags.QUEUE)

    def _raise(self, flags: InterruptFlags) -> None:
        self._pending |= flags
        if self.on_interrupt is not None:
            self.on_interrupt()

    def _switch(self, state: XenbusState) -> None:
        if self.own is not state:
            switch_state(self.store, self.nodename, state)
            self.own = state

    def _pump(self) -> None:
        self.reactor.run_once(0)

    def _wait(self, ready: Callable[[], bool], what: str, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        self._pump()
        while not ready():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise XenbusTransportError(f"{self.nodename}: timed out waiting for {what}")
            self.reactor.run_once(min(remaining, 0.5))

    def fileno(self) -> int:
        """Readable when interrupts may be pending (then call `ack_interrupt`)."""
        return self.reactor.fileno()

    def attach(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Collect events from an asyncio loop's thread (the only thread that may use
        this transport from then on); ``on_interrupt`` runs there for each interrupt."""
        self.reactor.attach(loop)

    def wait(self, timeout: float | None = None) -> InterruptFlags:
        """Block until an interrupt is pending (or ``timeout``); returns and clears it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._pump()
        while not self._pending:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            self.reactor.run_once(remaining)
        return self.ack_interrupt()

    # -- VirtioTransport: device and status ----------------------------------------------
    def _poll(self, read: Callable[[], T | None], what: str) -> T:
        """The first value ``read`` returns that is not None (bounded, like `_wait`)."""
        found: list[T] = []

        def ready() -> bool:
            with contextlib.suppress(XenbusError):
                value = read()
                if value is not None:
                    found.append(value)
            return bool(found)

        self._wait(ready, what)
        return found[0]

    @property
    def device_id(self) -> int:
        if self._offer is not None:
            return self._offer.device_id
        return self._poll(lambda: io.read_device_id(self.store, self.backend), "device-id")

    def get_status(self) -> int:
        self._pump()
        return self._status | (DeviceStatus.DEVICE_NEEDS_RESET if self._needs_reset else 0)

    def set_status(self, status: int) -> None:
        self._pump()
        if status == 0:
            self.reset()
            return
        new = status & ~self._status
        if new & DeviceStatus.FAILED:
            self._status |= DeviceStatus.FAILED
            if self.own is not S.INITIALISING:
                self._switch(S.CLOSED)  # the driver gave up (3.1.1)
            return
        self._status |= status & (DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER)
        if new & DeviceStatus.FEATURES_OK:
            self._features_ok()
        if new & DeviceStatus.DRIVER_OK:
            self._driver_ok()

    def reset(self) -> None:
        """virtio reset: make the backend let go, then start a fresh negotiation."""
        self._pump()
        if reset_needs_handshake(self.own, self._be_state):
            self._switch(S.CLOSED)
            self._wait(lambda: reset_complete(self._be_state), "the backend to close")
        self._unbind_ports()
        io.publish_reset(self.store, self.nodename)
        self.own = S.INITIALISING
        self._status = self._chosen = self._negotiated = 0
        self._needs_reset = False
        self._pending = InterruptFlags.NONE
        self._offer = None
        self._queues.clear()

    def _unbind_ports(self) -> None:
        for port in self._ports.values():
            with contextlib.suppress(OSError):
                self.evtchn.unbind(port)
        self._ports.clear()

    # -- features --------------------------------------------------------------------------
    def get_features(self) -> int:
        return self._ensure_offer().features

    def _ensure_offer(self) -> BackendOffer:
        if self._offer is None:
            self._wait(lambda: self._be_state is S.INIT_WAIT, "the backend's InitWait")
            try:
                offer = io.read_offer(self.store, self.backend)
            except XenbusError as exc:
                raise XenbusTransportError(f"{self.backend}: bad offer: {exc}") from exc
            if self._ensure_dma().grant_usage != offer.grant_usage:
                raise XenbusTransportError(f"{self.backend}: grant-usage changed")
            self._offer = offer
        return self._offer

    def _ensure_dma(self) -> GuestDmaPages:
        """DMA memory, addressed and bounded by what the backend published (it does so as
        soon as it starts, before any handshake)."""
        if self._dma is None:
            params = self._poll(lambda: io.read_dma_params(self.store, self.backend), "grant-usage")
            grant_usage, max_pages = params
            if self.dma_pages > max_pages:
                raise XenbusTransportError(f"{self.dma_pages} DMA pages > max-mapped-pages")
            self._dma = GuestDmaPages(self.guest, self.backend_id, self.dma_pages, grant_usage)
        return self._dma

    @property
    def negotiated(self) -> int:
        """The features FEATURES_OK fixed, transport bits (ACCESS_PLATFORM) included."""
        return self._negotiated

    def set_features(self, features: int) -> None:
        if self._status & DeviceStatus.FEATURES_OK:
            raise XenbusTransportError("features are fixed once FEATURES_OK is set")
        self._chosen = features

    def _features_ok(self) -> None:
        """FEATURES_OK: the generic checks here, then the backend's verdict."""
        offer = self._ensure_offer()
        accepted = driver_accepts(self._chosen, offer.features, offer.grant_usage)
        if refusal(offer.features, accepted, offer.grant_usage) is not None:
            return  # 2.2.2: the bit stays clear
        io.write_key(self.store, self.nodename, K.KEY_DRIVER_FEATURES, K.encode_hex64(accepted))

        def answered() -> bool:
            be = self._be
            return self._needs_reset or (be is not None and be.features_checked == accepted)

        self._wait(answered, "the backend's features-ok")
        if not self._needs_reset and self._be is not None and self._be.features_ok:
            self._negotiated = accepted
            self._status |= DeviceStatus.FEATURES_OK

    # -- queues ------------------------------------------------------------------------------
    @property
    def num_queues(self) -> int:
        return len(self._ensure_offer().queue_max_sizes)

    def queue_max_size(self, index: int) -> int:
        sizes = self._ensure_offer().queue_max_sizes
        return sizes[index] if 0 <= index < len(sizes) else 0

    def _check_queue(self, index: int) -> None:
        if not self._status & DeviceStatus.FEATURES_OK or self._status & DeviceStatus.DRIVER_OK:
            raise XenbusTransportError("queues are set up between FEATURES_OK and DRIVER_OK")
        if not self.queue_max_size(index):
            raise XenbusTransportError(f"queue {index} does not exist")

    def setup_queue(self, index: int, size: int, desc: int, driver: int, device: int) -> None:
        self._check_queue(index)
        self._queues.setup(index, size, desc, driver, device)

    def enable_queue(self, index: int) -> None:
        self._check_queue(index)
        self._queues.enable(index)

    def reset_queue(self, index: int) -> None:
        raise XenbusTransportError("VIRTIO_F_RING_RESET is not offered over XenBus")

    def _driver_ok(self) -> None:
        """DRIVER_OK: publish the queues with fresh ports, go Initialised, wait for the
        backend to connect (or to refuse: then DEVICE_NEEDS_RESET shows)."""
        if not self._status & DeviceStatus.FEATURES_OK:
            raise XenbusTransportError("DRIVER_OK before FEATURES_OK")
        self._unbind_ports()
        for index in self._queues.enabled():
            self._ports[index] = self.evtchn.bind_unbound_port(self.backend_id)
        setup = self._queues.publishable(self._negotiated, self._ports)
        io.publish_setup(self.store, self.nodename, setup)
        self.own = S.INITIALISED
        self._status |= DeviceStatus.DRIVER_OK
        self._wait(lambda: self.own is not S.INITIALISED, "the backend to connect")

    def notify(self, index: int, data: int | None = None) -> None:
        """Kick queue ``index`` (an event channel carries no data)."""
        port = self._ports.get(index)
        if port is not None and self.own is S.CONNECTED:
            self.evtchn.notify(port)

    def ack_interrupt(self) -> InterruptFlags:
        self._pump()
        flags, self._pending = self._pending, InterruptFlags.NONE
        return flags

    # -- configuration ---------------------------------------------------------------------
    @property
    def config_generation(self) -> int:
        self._pump()
        return self._generation

    def read_config(self, offset: int, size: int) -> bytes:
        """From the snapshot the last `config_generation` read saw (virtio 1.2 2.5.1)."""
        if offset < 0 or size < 0 or offset + size > len(self._config):
            raise ValueError(f"config [{offset}, +{size}) outside {len(self._config)} bytes")
        return self._config[offset : offset + size]

    def write_config(self, offset: int, data: bytes) -> None:
        """Each piece of at most 8 bytes is one acknowledged ``config-write``."""
        for at in range(0, len(data), K.CONFIG_WRITE_MAX):
            self._config_seq = (self._config_seq + 1) & K.U32_MAX
            seq = self._config_seq
            piece = K.ConfigWrite(seq, offset + at, bytes(data[at : at + K.CONFIG_WRITE_MAX]))
            io.write_key(self.store, self.nodename, K.KEY_CONFIG_WRITE, piece.encode())

            def acked(seq: int = seq) -> bool:
                be = self._be
                return self._needs_reset or (be is not None and be.config_write_ack == seq)

            self._wait(acked, "the backend's config-write-ack")

    # -- DMA and teardown --------------------------------------------------------------------
    @property
    def dma(self) -> GuestDmaPages:
        """The pages shared with the backend, by DMA address: where the driver puts rings
        and buffers. Available before probing (a driver builds its pool first)."""
        return self._ensure_dma()

    def close(self, timeout: float = 5.0) -> None:
        """Leave the device: Closed, wait (bounded) for the backend to let go, end grants."""
        with contextlib.suppress(XenbusError, OSError):
            if self.own is not S.INITIALISING:
                self._switch(S.CLOSED)
                self._wait(lambda: reset_complete(self._be_state), "the backend", timeout)
        self._unbind_ports()
        with contextlib.suppress(OSError):
            self.store.unwatch(self.backend, self._token)
        if self._dma is not None:
            self._dma.close()
            self._dma = None
        self.reactor.unregister(self.evtchn.fd())
        self.evtchn.close()
        self.reactor.close()
