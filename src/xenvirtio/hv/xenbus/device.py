"""One end of a XenBus device: the state table at the core, XenStore at the edge.

A transport (virtio over XenBus, blkif, netif) subclasses :class:`XenbusDriver` and
overrides the hooks it needs; :class:`XenbusDevice` decides with
:class:`~xenvirtio.hv.xenbus.state.XenbusStateMachine` and does the reads and writes.

Call order, for each end::

    dev = XenbusDevice.probe(xs, Role.BACKEND, nodename, driver)  # reads the other end
    dev.watch()                              # the daemon fires once at once
    dev.switch_state(XenbusState.INIT_WAIT)  # backend: once its own set-up is done
    for path, token in xs.watch_events(timeout):
        dev.handle_watch_event(path, token)  # hooks run from here

A hook that raises fails the device (``dev_fatal``: error node, Closing); so does a
protocol error of the other end. Nothing a peer writes makes this object raise.
"""

from __future__ import annotations

import errno
import logging
from typing import Final

from xenvirtio.hv.xenbus.client import (
    XenstoreClientOps,
    dev_error,
    gather,
    is_watch_for,
    read_optional,
    read_state,
    read_state_strict,
    switch_state,
    watch_otherend,
)
from xenvirtio.hv.xenbus.errors import (
    RemoteProtocolError,
    XenbusError,
    XenbusPathError,
    XenbusValueError,
)
from xenvirtio.hv.xenbus.paths import (
    DOMID_MAX,
    KEY_BACKEND,
    KEY_BACKEND_ID,
    KEY_FRONTEND,
    KEY_FRONTEND_ID,
    KEY_ONLINE,
    parse_backend_dir,
    parse_frontend_dir,
)
from xenvirtio.hv.xenbus.state import Action, Role, Step, XenbusStateMachine
from xenvirtio.hv.xenbus.values import parse_bool, parse_uint
from xenvirtio.spec.xenbus_state import XenbusState
from xenvirtio.xenstore.client_protocol import XenstoreError

log = logging.getLogger("xenvirtio.xenbus")

_OTHEREND_KEYS: Final = {
    Role.FRONTEND: (KEY_BACKEND, KEY_BACKEND_ID),
    Role.BACKEND: (KEY_FRONTEND, KEY_FRONTEND_ID),
}


class XenbusDriver:
    """Hooks a device end runs. Each runs inside :class:`XenbusDevice`'s handling of one
    input, before the new state is published; raising fails the device."""

    def setup(self, dev: XenbusDevice) -> None:
        """Make this end's resources and write their details (fe: rings, evtchn)."""

    def connect(self, dev: XenbusDevice) -> None:
        """Use the other end's details (be: map the rings, bind the event channel)."""

    def disconnect(self, dev: XenbusDevice) -> None:
        """Undo setup/connect. Called again on an already disconnected device."""

    def reconfigure(self, dev: XenbusDevice) -> None:
        """Re-read the other end's configuration."""

    def remove(self, dev: XenbusDevice) -> None:
        """The device is gone (other end removed, or closed while offline)."""

    def otherend_changed(self, dev: XenbusDevice, state: XenbusState) -> None:
        """Notification: the other end was seen in ``state`` (before the table acts)."""

    def state_changed(self, dev: XenbusDevice, old: XenbusState, new: XenbusState) -> None:
        """Notification: this end published ``new``."""


class XenbusDevice:
    """One end: role, own directory, the other end's directory and id, current state."""

    def __init__(
        self,
        xs: XenstoreClientOps,
        role: Role,
        nodename: str,
        otherend: str,
        otherend_id: int,
        driver: XenbusDriver | None = None,
        state: XenbusState = XenbusState.INITIALISING,
    ) -> None:
        self.xs = xs
        self.role = role
        self.nodename = nodename
        self.otherend = otherend
        self.otherend_id = otherend_id
        self.driver = driver or XenbusDriver()
        self.machine = XenbusStateMachine(role, state)
        self.token = f"xenbus:{nodename}"
        self.removed = False
        self._published = state
        self._watched: str | None = None
        self._depth = 0  # > 0 while hooks run: nested switches publish once, at the end

    @classmethod
    def probe(
        cls, xs: XenstoreClientOps, role: Role, nodename: str, driver: XenbusDriver | None = None
    ) -> XenbusDevice:
        """Read and check the other end's details (``xenbus_read_otherend_details``).

        The pointer must name the matching device of the domain its ``*-id`` key names;
        anything else raises XenbusPathError/XenbusValueError.
        """
        path_key, id_key = _OTHEREND_KEYS[role]
        values = gather(xs, nodename, path_key, id_key)
        other_id = parse_uint(values[id_key], id_key, DOMID_MAX)
        if role is Role.FRONTEND:
            fe, be = parse_frontend_dir(nodename), parse_backend_dir(values[path_key])
            other_domid = be.domid
        else:
            be, fe = parse_backend_dir(nodename), parse_frontend_dir(values[path_key])
            other_domid = fe.domid
        if other_domid != other_id or be.frontend_domid != fe.domid or be.devid != fe.devid:
            raise XenbusPathError(f"{nodename}: {path_key} {values[path_key]!r} does not match")
        own, other = (fe, be) if role is Role.FRONTEND else (be, fe)
        state = read_state(xs, str(own))
        return cls(xs, role, str(own), str(other), other_id, driver, state)

    @property
    def state(self) -> XenbusState:
        return self.machine.state

    @property
    def error(self) -> XenbusError | None:
        return self.machine.error

    # --- watches ------------------------------------------------------------------

    def watch(self) -> str:
        """Watch the other end's ``state``; returns the token events will carry."""
        self._watched = watch_otherend(self.xs, self.otherend, self.token)
        return self.token

    def unwatch(self) -> None:
        if self._watched is not None:
            path, self._watched = self._watched, None
            try:
                self.xs.unwatch(path, self.token)
            except XenstoreError as exc:
                log.debug("%s: unwatch: %s", self.nodename, exc)

    def handle_watch_event(self, path: str, token: str) -> Step | None:
        """Feed one watch event; None if it is not this device's."""
        if self.removed or token != self.token or self._watched is None:
            return None
        if not is_watch_for(path, self._watched):
            return None  # protects against events for an old other end
        return self._look_at_otherend()

    def _look_at_otherend(self) -> Step:
        """Read the other end's state now and react (garbage there is a protocol error)."""
        try:
            state = read_state_strict(self.xs, self.otherend)
        except XenbusValueError as exc:
            return self._fail(RemoteProtocolError(f"{self.otherend}/state: {exc}"))
        except XenstoreError as exc:
            log.warning("%s: reading %s/state: %s", self.nodename, self.otherend, exc)
            state = XenbusState.UNKNOWN
        return self.otherend_changed(state)

    # --- inputs -------------------------------------------------------------------

    def otherend_changed(self, state: XenbusState) -> Step:
        """The other end is in ``state``: decide with the table, run hooks, publish."""
        self.driver.otherend_changed(self, state)
        step = self.machine.otherend_changed(state)
        self._run(step)
        return step

    def switch_state(self, target: XenbusState) -> None:
        """This end's driver switches (LocalProtocolError if the table forbids it).

        Outside a hook the new state is published at once and, once watching, the other
        end's state is read again: what was a no-op may now be a step.
        """
        self.machine.switch(target)
        if self._depth:
            return
        self._publish()
        if self._watched is not None and not self.removed:
            self._look_at_otherend()

    def fatal(self, err: int, message: str) -> None:
        """``xenbus_dev_fatal``: report, tear down, go Closing."""
        self._fail(XenbusError(message), err)

    def report_error(self, err: int, message: str) -> None:
        """``xenbus_dev_error``: report only."""
        dev_error(self.xs, self.nodename, err, message)

    # --- the edge -----------------------------------------------------------------

    def _run(self, step: Step) -> None:
        if step.error is not None:
            self._report_and_disconnect(step.error, errno.EINVAL)
        else:
            self._run_actions(step.actions)
        if not self._depth:
            self._publish()

    def _run_actions(self, actions: tuple[Action, ...]) -> None:
        failed_before = self.machine.error
        self._depth += 1
        try:
            for action in actions:
                try:
                    self._run_action(action)
                except Exception as exc:  # containment: a failing device must not take
                    log.exception("%s: %s failed", self.nodename, action.value)  # us down
                    err = exc.errno if isinstance(exc, OSError) and exc.errno else errno.EIO
                    self._fail(XenbusError(f"{action.value}: {exc}"), err)
                    return
                if self.machine.error is not failed_before:
                    return  # a hook called fatal(): stop here
        finally:
            self._depth -= 1

    def _run_action(self, action: Action) -> None:
        hooks = {
            Action.SETUP: self.driver.setup,
            Action.CONNECT: self.driver.connect,
            Action.DISCONNECT: self.driver.disconnect,
            Action.RECONFIGURE: self.driver.reconfigure,
        }
        if action in hooks:
            hooks[action](self)
        elif action is Action.REMOVE or not self._online():
            self.removed = True
            self.unwatch()
            self.driver.remove(self)

    def _online(self) -> bool:
        """``xenbus_dev_is_online``: the toolstack's ``online`` key; missing means 0."""
        raw = read_optional(self.xs, f"{self.nodename}/{KEY_ONLINE}")
        try:
            return raw is not None and parse_bool(raw, KEY_ONLINE)
        except XenbusValueError:
            return False

    def _fail(self, error: XenbusError, err: int = errno.EINVAL) -> Step:
        step = self.machine.fail(error)
        self._report_and_disconnect(error, err)
        if not self._depth:
            self._publish()
        return step

    def _report_and_disconnect(self, error: XenbusError, err: int) -> None:
        dev_error(self.xs, self.nodename, err, str(error))
        self._depth += 1
        try:
            self.driver.disconnect(self)
        except Exception:
            log.exception("%s: disconnect after an error failed", self.nodename)
        finally:
            self._depth -= 1

    def _publish(self) -> None:
        new = self.machine.state
        if new is self._published:
            return
        try:
            switch_state(self.xs, self.nodename, new)
        except XenstoreError as exc:
            log.warning("%s: could not publish %s: %s", self.nodename, new.xen_name, exc)
            return
        old, self._published = self._published, new
        self.driver.state_changed(self, old, new)
