"""XenStore wire protocol constants, from Xen's public header ``io/xs_wire.h`` (Xen 4.17).

Nothing here does anything: names and numbers only, so code can be held beside the header.
"""

from __future__ import annotations

import errno
from enum import IntEnum
from typing import Final


class XsdSockmsgType(IntEnum):
    """``enum xsd_sockmsg_type``: the ``type`` field of ``struct xsd_sockmsg``."""

    XS_CONTROL = 0  # a.k.a. XS_DEBUG
    XS_DIRECTORY = 1
    XS_READ = 2
    XS_GET_PERMS = 3
    XS_WATCH = 4
    XS_UNWATCH = 5
    XS_TRANSACTION_START = 6
    XS_TRANSACTION_END = 7
    XS_INTRODUCE = 8
    XS_RELEASE = 9
    XS_GET_DOMAIN_PATH = 10
    XS_WRITE = 11
    XS_MKDIR = 12
    XS_RM = 13
    XS_SET_PERMS = 14
    XS_WATCH_EVENT = 15
    XS_ERROR = 16
    XS_IS_DOMAIN_INTRODUCED = 17
    XS_RESUME = 18
    XS_SET_TARGET = 19
    # 20 was XS_RESTRICT, removed; xs_wire.h: XS_RESET_WATCHES = XS_SET_TARGET + 2
    XS_RESET_WATCHES = 21
    XS_DIRECTORY_PART = 22
    XS_TYPE_COUNT = 23  # number of valid types
    XS_INVALID = 0xFFFF  # guaranteed to remain an invalid type


XS_DEBUG: Final = XsdSockmsgType.XS_CONTROL

# Errors travel as their names ("EINVAL\0"). xs_wire.h's xsd_errors[] in its order; new
# errors are only ever appended. Values are the Linux errno numbers.
XSD_ERRORS: Final[dict[str, int]] = {
    "EINVAL": errno.EINVAL,
    "EACCES": errno.EACCES,
    "EEXIST": errno.EEXIST,
    "EISDIR": errno.EISDIR,
    "ENOENT": errno.ENOENT,
    "ENOMEM": errno.ENOMEM,
    "ENOSPC": errno.ENOSPC,
    "EIO": errno.EIO,
    "ENOTEMPTY": errno.ENOTEMPTY,
    "ENOSYS": errno.ENOSYS,
    "EROFS": errno.EROFS,
    "EBUSY": errno.EBUSY,
    "EAGAIN": errno.EAGAIN,
    "EISCONN": errno.EISCONN,
    "E2BIG": errno.E2BIG,
    "EPERM": errno.EPERM,
}

# XS_WRITE flags of the old (pre-3.0) protocol; kept because the header still defines them.
XS_WRITE_NONE: Final = "NONE"
XS_WRITE_CREATE: Final = "CREATE"
XS_WRITE_CREATE_EXCL: Final = "CREATE|EXCL"

# enum xs_watch_type: field indices of an XS_WATCH_EVENT payload.
XS_WATCH_PATH: Final = 0
XS_WATCH_TOKEN: Final = 1

# struct xsd_sockmsg: type, req_id, tx_id, len (all uint32_t, native = little endian on x86/Arm).
XSD_SOCKMSG_SIZE: Final = 16

# Violating this is "very bad" (the peer drops the connection); docs/misc/xenstore.txt.
XENSTORE_PAYLOAD_MAX: Final = 4096
# Violating these "just gets you an error back".
XENSTORE_ABS_PATH_MAX: Final = 3072
XENSTORE_REL_PATH_MAX: Final = 2048

# struct xenstore_domain_interface: the shared ring page.
XENSTORE_RING_SIZE: Final = 1024
XENSTORE_RING_IDX_MASK: Final = XENSTORE_RING_SIZE - 1  # MASK_XENSTORE_IDX(idx)
XENSTORE_IFACE_REQ: Final = 0  # char req[XENSTORE_RING_SIZE]: requests to the daemon
XENSTORE_IFACE_RSP: Final = XENSTORE_RING_SIZE  # char rsp[...]: replies and watch events
XENSTORE_IFACE_REQ_CONS: Final = 2 * XENSTORE_RING_SIZE  # uint32_t each from here on
XENSTORE_IFACE_REQ_PROD: Final = XENSTORE_IFACE_REQ_CONS + 4
XENSTORE_IFACE_RSP_CONS: Final = XENSTORE_IFACE_REQ_CONS + 8
XENSTORE_IFACE_RSP_PROD: Final = XENSTORE_IFACE_REQ_CONS + 12
XENSTORE_IFACE_SERVER_FEATURES: Final = XENSTORE_IFACE_REQ_CONS + 16
XENSTORE_IFACE_CONNECTION: Final = XENSTORE_IFACE_REQ_CONS + 20
XENSTORE_IFACE_ERROR: Final = XENSTORE_IFACE_REQ_CONS + 24
XENSTORE_IFACE_SIZE: Final = XENSTORE_IFACE_REQ_CONS + 28  # sizeof(struct ...)

# server_features bits.
XENSTORE_SERVER_FEATURE_RECONNECTION: Final = 1  # the ability to reconnect a ring
XENSTORE_SERVER_FEATURE_ERROR: Final = 2  # the "error" field is present

# Valid values of the connection field.
XENSTORE_CONNECTED: Final = 0  # the steady state
XENSTORE_RECONNECT: Final = 1  # reconnect in progress

# Valid values of the error field.
XENSTORE_ERROR_NONE: Final = 0
XENSTORE_ERROR_COMM: Final = 1  # communication problem
XENSTORE_ERROR_RINGIDX: Final = 2  # invalid ring index
XENSTORE_ERROR_PROTO: Final = 3  # protocol violation (payload too long)

# Special watch paths (docs/misc/xenstore.txt "Special watches").
XS_SPECIAL_INTRODUCE_DOMAIN: Final = "@introduceDomain"
XS_SPECIAL_RELEASE_DOMAIN: Final = "@releaseDomain"
XS_SPECIAL_WATCH_PATHS: Final = (XS_SPECIAL_INTRODUCE_DOMAIN, XS_SPECIAL_RELEASE_DOMAIN)
