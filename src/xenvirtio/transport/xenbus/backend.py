"""`XenbusVirtioBackend`: one virtio device served to one frontend over XenBus.

The XenBus handshake runs on `XenbusDevice` (the backend table of
`xenvirtio.hv.xenbus.state`); this class is its driver:

- a new backend instance publishes Closed first, whatever an earlier instance left
  (a frontend still Connected to a dead backend sees Closed and resets);
- ``setup`` (entering InitWait): publish the `BackendOffer`, clear the answers of an
  earlier connection;
- while InitWait: answer each ``driver-features`` the frontend writes with
  ``features-checked`` / ``features-ok`` (its FEATURES_OK);
- ``connect`` (frontend Initialised): parse and check the frontend's keys, build a
  `BackendLink` (maps, binds, activates the device); any failure is ``dev_fatal``;
- while Connected: kicks arrive on the event channels, used-buffer interrupts leave on
  them; configuration changes and DEVICE_NEEDS_RESET are published as keys;
- ``disconnect``: tear the link down (device reset, ports unbound, pages unmapped).

Handlers run on the reactor's thread; a failure in one of them fails this device only.
"""

from __future__ import annotations

import contextlib
import errno
import logging
from collections.abc import Callable
from typing import Final

from xenvirtio.hv.api import Hypervisor
from xenvirtio.hv.xenbus.client import dev_error
from xenvirtio.hv.xenbus.device import XenbusDevice, XenbusDriver
from xenvirtio.hv.xenbus.errors import XenbusPathError
from xenvirtio.hv.xenbus.ops import XenstoreOps, in_transaction, read_optional
from xenvirtio.hv.xenbus.paths import KEY_STATE
from xenvirtio.hv.xenbus.state import Role
from xenvirtio.spec.xenbus_state import XenbusState
from xenvirtio.transport.api import VirtioDevice, bind_poll
from xenvirtio.transport.events import EventQueue, NeedsReset
from xenvirtio.transport.xenbus import keys as K
from xenvirtio.transport.xenbus.backend_link import BackendLink, ConnectError, LinkParams
from xenvirtio.transport.xenbus.negotiation import device_view, refusal, transport_offer
from xenvirtio.transport.xenbus.reactor import Reactor
from xenvirtio.transport.xenbus.records import BackendOffer, FrontendSetup, parse_num_queues
from xenvirtio.transport.xenbus.store import ReactorStore
from xenvirtio.virtio.config import ConfigAccessError

log = logging.getLogger("xenvirtio.xenbus.virtio")

DEFAULT_MAX_MAPPED_PAGES: Final = 1024
_EVTCHN_ROUNDS: Final = 64  # ports handled per dispatch round: a kick storm cannot starve


class XenbusVirtioBackend(XenbusDriver):
    """Serves ``device`` at backend directory ``nodename``. Call `start` once."""

    def __init__(
        self,
        hv: Hypervisor,
        store: ReactorStore,
        nodename: str,
        device: VirtioDevice,
        *,
        grant_usage: bool = True,
        max_mapped_pages: int = DEFAULT_MAX_MAPPED_PAGES,
    ) -> None:
        if not 1 <= max_mapped_pages <= K.MAPPED_PAGES_LIMIT:
            raise ValueError("max_mapped_pages out of range")
        self.hv, self.store, self.nodename, self.device = hv, store, nodename, device
        self.grant_usage = grant_usage
        self.max_mapped_pages = max_mapped_pages
        self.reactor: Reactor = store.reactor
        self.events = EventQueue(wakeup=self.reactor.wake)
        self.evtchn = hv.open_evtchn()
        self.reactor.register(self.evtchn.fd(), self._guarded(self._on_evtchn))
        bind_poll(device, lambda poll: self.reactor.call_soon(self._guarded(poll)))
        self.link: BackendLink | None = None
        self.dev: XenbusDevice | None = None
        self.removed = False
        self._tokens = {f"virtio:{kind}:{nodename}": kind for kind in ("features", "config")}
        self._watched: list[tuple[str, str]] = []
        self._config: bytes | None = None
        self._generation = 0
        self._needs_reset_published = False
        self._reasons: list[str] = []
        self._acked: int | None = None

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Publish the offer and Closed (a new instance holds nothing), then follow the
        frontend: a frontend can size its DMA memory before any handshake."""
        self._publish_offer(XenbusState.CLOSED)
        dev = XenbusDevice.probe(self.store, Role.BACKEND, self.nodename, self)
        self.dev = dev
        for token, kind in self._tokens.items():
            key = K.KEY_DRIVER_FEATURES if kind == "features" else K.KEY_CONFIG_WRITE
            path = f"{dev.otherend}/{key}"
            self.store.watch(path, token)
            self._watched.append((path, token))
        dev.watch()

    @property
    def state(self) -> XenbusState:
        return self.dev.state if self.dev is not None else XenbusState.UNKNOWN

    @property
    def fe_domid(self) -> int:
        assert self.dev is not None
        return self.dev.otherend_id

    def close(self) -> None:
        """Stop serving (the directory stays; a new instance may take over)."""
        self._teardown()
        if self.dev is not None:
            self.dev.unwatch()
        self.reactor.unregister(self.evtchn.fd())
        self.evtchn.close()

    def _teardown(self) -> None:
        for path, token in self._watched:
            try:
                self.store.unwatch(path, token)
            except OSError as exc:
                log.debug("%s: unwatch %s: %s", self.nodename, path, exc)
        self._watched.clear()
        self._drop_link()

    # -- XenbusDriver hooks --------------------------------------------------------------
    def setup(self, dev: XenbusDevice) -> None:
        """Entering InitWait: publish the offer; forget the last connection's answers."""
        self._reasons.clear()
        self._acked = None
        self._needs_reset_published = False
        self._publish_offer(None)
        self._answer_features()

    def _publish_offer(self, state: XenbusState | None) -> None:
        """The offer, no answers from an earlier connection, and ``state`` if given."""
        self._config_entries()
        offer = self.offer()

        def publish(t: XenstoreOps) -> None:
            if read_optional(t, f"{self.nodename}/{KEY_STATE}") is None:
                raise XenbusPathError(f"{self.nodename} is gone")  # do not resurrect it
            for key, value in offer.entries().items():
                t.write(f"{self.nodename}/{key}", value)
            t.write(f"{self.nodename}/{K.KEY_NEEDS_RESET}", "0")
            for key in (K.KEY_FEATURES_CHECKED, K.KEY_FEATURES_OK, K.KEY_CONFIG_WRITE_ACK):
                if read_optional(t, f"{self.nodename}/{key}") is not None:
                    t.rm(f"{self.nodename}/{key}")
            if state is not None:
                t.write(f"{self.nodename}/{KEY_STATE}", str(int(state)))

        in_transaction(self.store, publish)

    def offer(self) -> BackendOffer:
        """What this backend publishes (the configuration as last published)."""
        config = self._config if self._config is not None else self.device.config.snapshot()
        return BackendOffer(
            device_id=self.device.device_id,
            features=transport_offer(self.device.avail_features, self.grant_usage),
            queue_max_sizes=tuple(self.device.queue_max_sizes),
            config=config,
            config_generation=self._generation,
            grant_usage=self.grant_usage,
            max_mapped_pages=self.max_mapped_pages,
        )

    def connect(self, dev: XenbusDevice) -> None:
        """The frontend is Initialised: check its keys, map, bind, activate."""
        self._drop_link()
        offer = self.offer()
        setup = self._read_setup(offer)
        reason = refusal(offer.features, setup.features, self.grant_usage)
        if reason is None and not self.device.accept_features(
            device_view(setup.features, self.device.avail_features)
        ):
            reason = "the device refuses them"
        if reason is not None:
            raise ConnectError(f"driver-features {setup.features:#x} refused: {reason}")
        params = LinkParams(self.fe_domid, self.grant_usage, self.max_mapped_pages)
        link = BackendLink(self.hv, self.evtchn, self.device, params, self.events, self._dirty)
        self.link = link
        link.connect(setup)
        log.info("%s: connected, %d queue(s)", self.nodename, len(setup.queues))

    def _read_setup(self, offer: BackendOffer) -> FrontendSetup:
        fe = self.dev.otherend if self.dev is not None else ""

        def read(t: XenstoreOps) -> FrontendSetup:
            count = parse_num_queues(
                read_optional(t, f"{fe}/{K.KEY_NUM_QUEUES}"), len(offer.queue_max_sizes)
            )
            raw = {key: read_optional(t, f"{fe}/{key}") for key in FrontendSetup.keys(count)}
            return FrontendSetup.parse(raw, offer)

        return in_transaction(self.store, read)

    def disconnect(self, dev: XenbusDevice) -> None:
        self._drop_link()

    def remove(self, dev: XenbusDevice) -> None:
        self.removed = True
        self._teardown()

    def _drop_link(self) -> None:
        link, self.link = self.link, None
        if link is not None:
            link.close()
            self.events.take()

    # -- events --------------------------------------------------------------------------
    def handle_watch(self, path: str, token: str) -> bool:
        """Feed one watch event; False if it is not this device's."""
        kind = self._tokens.get(token)
        if kind is not None and not self.removed:
            handler = self._answer_features if kind == "features" else self._apply_config_write
            self._guarded(handler)()
            return True
        if self.dev is not None and token == self.dev.token:
            self.dev.handle_watch_event(path, token)
            return True
        return False

    def _on_evtchn(self) -> None:
        for _ in range(_EVTCHN_ROUNDS):
            port = self.evtchn.pending()
            if port is None:
                return
            self.evtchn.unmask(port)  # before serving: a kick meanwhile is not lost
            if self.link is not None:
                self.link.kick(port)

    def _guarded(self, fn: Callable[[], None]) -> Callable[[], None]:
        """Containment: whatever a frontend provokes fails its own device only."""

        def run() -> None:
            try:
                fn()
            except Exception as exc:
                log.exception("%s: %s failed", self.nodename, getattr(fn, "__name__", fn))
                if self.dev is not None and not self.removed:
                    err = exc.errno if isinstance(exc, OSError) and exc.errno else errno.EIO
                    self.dev.fatal(err, f"{exc}")

        return run

    def _dirty(self) -> None:
        """The device changed its configuration or needs a reset (any thread)."""
        self.reactor.wake()

    # -- FEATURES_OK and configuration writes --------------------------------------------
    def _fe_key(self, key: str) -> bytes | None:
        assert self.dev is not None
        return read_optional(self.store, f"{self.dev.otherend}/{key}")

    def _answer_features(self) -> None:
        """FEATURES_OK: judge the frontend's ``driver-features`` while in InitWait."""
        if self.state is not XenbusState.INIT_WAIT:
            return  # connect judges again; before InitWait there is no offer
        raw = self._fe_key(K.KEY_DRIVER_FEATURES)
        if raw is None:
            return
        features = K.parse_hex64(raw, K.KEY_DRIVER_FEATURES)
        offer = self.offer()
        reason = refusal(offer.features, features, self.grant_usage)
        if reason is None and not self.device.accept_features(
            device_view(features, self.device.avail_features)
        ):
            reason = "the device refuses them"
        if reason is not None:
            dev_error(self.store, self.nodename, errno.EINVAL, f"features refused: {reason}")
        entries = {
            K.KEY_FEATURES_CHECKED: K.encode_hex64(features),
            K.KEY_FEATURES_OK: str(int(reason is None)),
        }
        self._write(entries)

    def _apply_config_write(self) -> None:
        """A driver write of the configuration space: apply once, acknowledge."""
        if self.state not in (XenbusState.INIT_WAIT, XenbusState.CONNECTED):
            return
        raw = self._fe_key(K.KEY_CONFIG_WRITE)
        if raw is None:
            return
        write = K.ConfigWrite.parse(raw)
        if write.seq == self._acked:
            return
        with contextlib.suppress(ConfigAccessError):  # outside the space: ignored, as a
            self.device.config.driver_write(write.offset, write.data)  # device would
        self._acked = write.seq
        self._write({**self._config_entries(), K.KEY_CONFIG_WRITE_ACK: str(write.seq)})

    # -- publishing (reactor thread, after every dispatch round) -------------------------
    def flush(self) -> None:
        """Publish a changed configuration and a new DEVICE_NEEDS_RESET."""
        if self.removed or self.dev is None:
            return
        self._reasons += [e.reason for e in self.events.take() if isinstance(e, NeedsReset)]
        entries: dict[str, str] = {}
        if self.state in (XenbusState.INIT_WAIT, XenbusState.CONNECTED):
            entries.update(self._config_entries())  # also changes nobody signalled
        needs = self.link is not None and self.link.needs_reset
        if needs and not self._needs_reset_published:
            self._needs_reset_published = True
            entries[K.KEY_NEEDS_RESET] = "1"
            reason = "; ".join(self._reasons) or "device error"
            dev_error(self.store, self.nodename, errno.EIO, f"needs reset: {reason}")
        if entries:
            self._guarded(lambda: self._write(entries))()

    def _config_entries(self) -> dict[str, str]:
        config = self.device.config.snapshot()
        if config == self._config:
            return {}
        self._config = config
        self._generation = (self._generation + 1) & K.U32_MAX
        return {
            K.KEY_CONFIG: K.encode_bytes(config),
            K.KEY_CONFIG_GENERATION: str(self._generation),
        }

    def _write(self, entries: dict[str, str]) -> None:
        def attempt(t: XenstoreOps) -> None:
            for key, value in entries.items():
                t.write(f"{self.nodename}/{key}", value)

        in_transaction(self.store, attempt)
