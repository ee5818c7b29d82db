"""xl disk-spec strings (xl-disk-configuration(5)), sans I/O.

    parse_disk("/srv/guest.img,raw,xvda,rw")
    parse_disk("format=raw, vdev=xvda, access=rw, target=/srv/guest.img")
    parse_disk("phy:/dev/vg/guest,xvda,w")                # deprecated prefix form
    parse_disk("guest.img,,xvda,specification=virtio,transport=pci")

Fields are comma separated. Words without ``=`` fill the positional parameters in the
order target, format, vdev, access; ``key=value`` sets one by name. ``target=`` eats
the rest of the string (commas included), so it must come last. Beyond xl,
``transport=xenbus|pci|mmio`` picks the virtio transport.

Only raw images and block devices are served: other formats, cdroms, block scripts and
COLO are refused with a message; xl's advisory flags (``backendtype=``,
``direct-io-safe``, ``discard``, ``trusted``, ...) are accepted and noted as ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from xenvirtio.toolstack.errors import EntryError
from xenvirtio.toolstack.options import ChannelRequest, key_value, update_channel

# xen-vbd-interface(7): xvd<letters>, hd<letter>, sd<letters>, d<N>[p<M>], + partition.
_VDEV = re.compile(r"(xvd[a-z]{1,3}|hd[a-t]|sd[a-z]{1,3})[0-9]{0,2}|d[0-9]{1,4}(p[0-9]{1,2})?")
_KEY = re.compile(r"[a-z][-a-z0-9_]*")
_PREFIX = re.compile(r"([a-z][a-z0-9]*):")
_IGNORED_PREFIXES = frozenset({"tapdisk", "tap", "tap2", "aio", "ioemu", "file", "phy"})
_FORMAT_PREFIXES = frozenset({"raw", "qcow", "qcow2", "vhd"})
_SCRIPT_PREFIXES = frozenset({"iscsi", "nbd", "enbd", "drbd"})
_KNOWN_PREFIXES = _IGNORED_PREFIXES | _FORMAT_PREFIXES | _SCRIPT_PREFIXES
_OTHER_FORMATS = frozenset({"qcow", "qcow2", "vhd", "qed"})
_IGNORED_FLAGS = frozenset({"direct-io-safe", "discard", "no-discard", "trusted", "untrusted"})
_COLO = frozenset({"colo", "no-colo", "colo-host", "colo-port", "colo-export"})
_COLO |= {"active-disk", "hidden-disk"}
_BACKENDTYPES = frozenset({"phy", "qdisk", "tap", "standalone"})


@dataclass(frozen=True)
class DiskEntry:
    """One parsed disk string, before the domain fills in its defaults."""

    target: str
    vdev: str
    readonly: bool = False
    request: ChannelRequest = field(default_factory=ChannelRequest)
    notes: tuple[str, ...] = ()


@dataclass
class _State:
    target: str | None = None
    format: str | None = None
    vdev: str | None = None
    access: str | None = None
    had_prefix: bool = False
    request: ChannelRequest = field(default_factory=ChannelRequest)
    seen: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)

    def once(self, key: str) -> None:
        if key in self.seen:
            raise EntryError(f"{key} respecified")
        self.seen.add(key)


def parse_disk(text: str) -> DiskEntry:
    """One ``DISKSPEC``; `EntryError` naming the offending parameter."""
    state = _State()
    pos = 0
    while pos < len(text):
        while pos < len(text) and text[pos] in " \t\n":
            pos += 1
        if pos >= len(text):
            break
        if text.startswith("target=", pos):
            _set_target(state, text[pos + len("target=") :].removesuffix(","))
            break
        comma = text.find(",", pos)
        end = len(text) if comma < 0 else comma
        _field(state, text[pos:end])
        pos = end + 1
    return _finish(state)


def _field(state: _State, word: str) -> None:
    kv = key_value(word)
    if kv is not None and _KEY.fullmatch(kv[0]):
        _named(state, *kv)
    elif kv is not None:
        raise EntryError(f"{word!r}: unknown parameter")
    elif word in _IGNORED_FLAGS:
        state.notes.append(f"{word} is ignored")
    elif word == "cdrom":
        raise EntryError("cdrom: cdrom drives are not provided (virtio-blk serves disks)")
    elif word in _COLO:
        raise EntryError(f"{word}: COLO replication is not supported")
    elif (prefix := _prefix_of(word)) is not None:
        _prefix(state, prefix)
        _field(state, word[len(prefix) + 1 :])
    else:
        _positional(state, word)


def _named(state: _State, key: str, value: str) -> None:
    state.once(key)
    channel = update_channel(state.request, key, value)
    if channel is not None:
        state.request = channel
    elif key == "format":
        _set_format(state, value)
    elif key == "vdev":
        _set_vdev(state, value)
    elif key == "access":
        _set_access(state, value)
    elif key == "devtype":
        if value != "disk":
            raise EntryError(f"devtype={value}: only devtype=disk is provided (no cdrom)")
    elif key == "backendtype":
        if value not in _BACKENDTYPES:
            raise EntryError(f"backendtype={value}: must be one of phy|qdisk|tap|standalone")
        state.notes.append(f"backendtype={value} is ignored: xenvirtio serves the disk itself")
    elif key == "script":
        raise EntryError(f"script={value}: block scripts are not run; give the path as target")
    elif key in _COLO:
        raise EntryError(f"{key}: COLO replication is not supported")
    else:
        raise EntryError(f"{key}={value}: unknown parameter")


def _prefix_of(word: str) -> str | None:
    """A deprecated ``prefix:``: a known one whatever follows, else one before a non-alnum
    (so ``xvda:disk`` stays a vdev) as libxlu_disk_l.l matches them."""
    match = _PREFIX.match(word)
    if match is None:
        return None
    known = match.group(1) in _KNOWN_PREFIXES
    follows = word[match.end() : match.end() + 1]
    return match.group(1) if known or not (follows.isascii() and follows.isalnum()) else None


def _prefix(state: _State, prefix: str) -> None:
    if prefix in _FORMAT_PREFIXES:
        state.had_prefix = True
        _set_format(state, prefix)
    elif prefix in _IGNORED_PREFIXES:
        state.had_prefix = True
    elif prefix in _SCRIPT_PREFIXES:
        raise EntryError(f"{prefix}: block scripts are not run; give the path as target")
    else:
        raise EntryError(f"{prefix}: unknown deprecated disk prefix")


def _positional(state: _State, word: str) -> None:
    if state.target is None:
        _set_target(state, word)
    elif not state.had_prefix and state.format is None:
        if state.target == "" and ":" in word:
            raise EntryError(f"{word!r}: empty cdrom drives are not provided")
        _set_format(state, word)
    elif state.vdev is None:
        _set_vdev(state, word)
    elif state.access is None:
        _set_access(state, word)
    else:
        raise EntryError(f"{word!r}: too many positional parameters")


def _set_target(state: _State, value: str) -> None:
    if state.target:  # an empty positional target may be given again by name (xl)
        raise EntryError("target respecified")
    state.target = value


def _set_format(state: _State, value: str) -> None:
    if state.format not in (None, value or "raw"):
        raise EntryError(f"format={value}: format respecified")
    if value in _OTHER_FORMATS:
        raise EntryError(f"format={value}: only raw images are served (qemu-img convert -O raw)")
    if value == "empty":
        raise EntryError("format=empty: empty cdrom drives are not provided")
    if value not in ("", "raw"):
        raise EntryError(f"format={value}: unknown format")
    state.format = "raw"


def _set_vdev(state: _State, value: str) -> None:
    if state.vdev:
        raise EntryError("vdev respecified")
    name, colon, devtype = value.partition(":")  # deprecated vdev:devtype
    if colon and devtype != "disk":
        raise EntryError(f"{value}: only disks are provided (no {devtype or 'empty'} type)")
    state.vdev = name


def _set_access(state: _State, value: str) -> None:
    if value not in ("r", "ro", "w", "rw", ""):
        raise EntryError(f"access={value}: must be r, ro, w or rw")
    state.access = value


def _finish(state: _State) -> DiskEntry:
    if not state.target:
        raise EntryError("no target: give the image file or block device")
    if not state.vdev:
        raise EntryError("no vdev: name the guest's disk, e.g. xvda")
    if not _VDEV.fullmatch(state.vdev):
        raise EntryError(f"vdev={state.vdev}: not a Xen disk name (xvda, hda, sda, d0p1 ...)")
    if "\0" in state.target:
        raise EntryError("target contains a NUL character")
    entry = DiskEntry(state.target, state.vdev, state.access in ("r", "ro"), state.request)
    return replace(entry, notes=tuple(state.notes))
