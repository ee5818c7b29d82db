"""Typed errors of the XenBus layer.

A :class:`RemoteProtocolError` is the other end's fault (a hostile or broken peer): the
device takes the fatal path (``dev_fatal``) and the process carries on. A
:class:`LocalProtocolError` is this end's own driver asking for something the protocol does
not allow: a bug, raised to the caller.
"""

from __future__ import annotations


class XenbusError(Exception):
    """Base class of every error this package raises on purpose."""


class XenbusProtocolError(XenbusError):
    """A (state, input) pair that the XenBus state table does not allow."""


class LocalProtocolError(XenbusProtocolError):
    """This end asked for a state switch the table does not allow."""


class RemoteProtocolError(XenbusProtocolError):
    """The other end did something the table does not allow, or published garbage."""


class XenbusPathError(XenbusError, ValueError):
    """A XenStore path, domid, device type or device id that is not well formed."""


class XenbusValueError(XenbusError, ValueError):
    """A value read from XenStore that is missing, too long or not of the expected form."""
