"""`xenvirtio xenstore ...`: Xen's xenstore-* tools, same options, output and exit codes.

The daemon is found as libxenstore finds it: ``$XENSTORED_PATH``, else
/var/run/xenstored/socket. ``-s`` (socket only) is accepted and changes nothing: this
client always uses the socket. Failures print ``<tool>: <what>`` on stderr and exit 1.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click

from xenvirtio.xenstore.client import Transaction, XenstoreClient
from xenvirtio.xenstore.client_protocol import XenstoreError
from xenvirtio.xenstore.operations import Operations
from xenvirtio.xenstore.perms import Perm, parse_perm
from xenvirtio.xenstore.text import sanitise, unsanitise
from xenvirtio.xenstore.wire import XsError

_TAG_LEN = len(' = "..."')
_SOCKET_FLAG = click.option(
    "-s", "--socket", "_socket", is_flag=True, help="Socket only (kept for compatibility)."
)


class _Failed(Exception):
    """The tool's own failure message; printed by ``_tool``."""


@contextmanager
def _tool(name: str) -> Iterator[XenstoreClient]:
    """Connect, run, and turn failures into Xen-style messages and exit status 1."""
    try:
        client = XenstoreClient.connect()
    except OSError as exc:
        click.echo(f"{name}: xs_open: {exc.strerror or exc}", err=True)
        sys.exit(1)
    try:
        with client:
            yield client
    except _Failed as exc:
        click.echo(f"{name}: {exc}", err=True)
        sys.exit(1)
    except ConnectionError as exc:
        click.echo(f"{name}: {exc}", err=True)
        sys.exit(1)


def _in_transaction(client: XenstoreClient, fn: Callable[[Operations], str], use: bool) -> str:
    """Run ``fn`` in a transaction (retried on EAGAIN) when the tool would use one."""
    if not use:
        return fn(client)

    def body(t: Transaction) -> str:
        return fn(t)

    try:
        return client.run_transaction(body)
    except XenstoreError as exc:
        raise _Failed("couldn't end transaction") from exc


@click.group("xenstore")
def xenstore() -> None:
    """Xen's xenstore-* tools: read, write, ls, list, rm, mkdir, chmod, watch, exists.

    \b
    Example:
      export XENSTORED_PATH=/tmp/xs.sock
      xenvirtio xenstore write /vm/name demo /vm/memory 512
      xenvirtio xenstore ls -f /vm
    """


@xenstore.command("read")
@click.option("-p", "--prefix", is_flag=True, help="Print 'key: ' before each value.")
@_SOCKET_FLAG
@click.argument("keys", nargs=-1, required=True)
def read_cmd(prefix: bool, _socket: bool, keys: tuple[str, ...]) -> None:
    """Print the value of each key (like xenstore-read).

    \b
    Example:
      xenvirtio xenstore read -p /vm/name /vm/memory
    """

    def body(ops: Operations) -> str:
        out = []
        for key in keys:
            try:
                value = ops.read(key)
            except XenstoreError as exc:
                if exc.name == "EAGAIN":
                    raise
                raise _Failed(f"couldn't read path {key}") from exc
            out.append(f"{key}: " * prefix + sanitise(value) + "\n")
        return "".join(out)

    with _tool("xenstore-read") as client:
        click.echo(_in_transaction(client, body, len(keys) > 1), nl=False)


@xenstore.command("write")
@_SOCKET_FLAG
@click.argument("pairs", nargs=-1, required=True)
def write_cmd(_socket: bool, pairs: tuple[str, ...]) -> None:
    """Write each key's value; values take xenstore-write's escapes (\\n, \\x41, \\101).

    \b
    Example:
      xenvirtio xenstore write /vm/name demo /vm/memory 512
    """
    if len(pairs) % 2:
        raise click.UsageError("needs key value pairs")

    def body(ops: Operations) -> str:
        for key, spec in zip(pairs[::2], pairs[1::2], strict=True):
            try:
                ops.write(key, unsanitise(spec))
            except XenstoreError as exc:
                if exc.name == "EAGAIN":
                    raise
                raise _Failed(f"could not write path {key}") from exc
        return ""

    with _tool("xenstore-write") as client:
        _in_transaction(client, body, len(pairs) > 2)


@xenstore.command("rm")
@click.option("-t", "--tidy", is_flag=True, help="Also remove parents left empty.")
@_SOCKET_FLAG
@click.argument("keys", nargs=-1, required=True)
def rm_cmd(tidy: bool, _socket: bool, keys: tuple[str, ...]) -> None:
    """Remove each key and everything below it (like xenstore-rm).

    \b
    Example:
      xenvirtio xenstore rm -t /vm/name
    """

    def body(ops: Operations) -> str:
        for key in keys:
            _remove(ops, key, tidy)
        return ""

    with _tool("xenstore-rm") as client:
        _in_transaction(client, body, True)


def _remove(ops: Operations, path: str, tidy: bool) -> None:
    while True:
        try:
            ops.rm(path)
        except XenstoreError as exc:
            if exc.name == "EAGAIN":
                raise
            raise _Failed(f"could not remove path {path}") from exc
        parent = path.rpartition("/")[0]
        if not tidy or not parent:
            return
        try:
            if ops.read(parent) != b"" or ops.directory(parent):
                return
        except XenstoreError:
            return
        path = parent


@xenstore.command("mkdir")
@_SOCKET_FLAG
@click.argument("keys", nargs=-1, required=True)
def mkdir_cmd(_socket: bool, keys: tuple[str, ...]) -> None:
    """Create each key with an empty value, if it does not exist.

    \b
    Example:
      xenvirtio xenstore mkdir /vm/device/vbd
    """

    def body(ops: Operations) -> str:
        for key in keys:
            try:
                ops.mkdir(key)
            except XenstoreError as exc:
                if exc.name == "EAGAIN":
                    raise
                raise _Failed(f"could not create path {key}") from exc
        return ""

    with _tool("xenstore-mkdir") as client:
        _in_transaction(client, body, True)


@xenstore.command("exists")
@_SOCKET_FLAG
@click.argument("keys", nargs=-1, required=True)
def exists_cmd(_socket: bool, keys: tuple[str, ...]) -> None:
    """Exit 0 if every key can be read, 1 otherwise; prints nothing.

    \b
    Example:
      xenvirtio xenstore exists /vm/name && echo present
    """
    with _tool("xenstore-exists") as client:
        for key in keys:
            try:
                client.read(key)
            except XenstoreError:
                sys.exit(1)


@xenstore.command("list")
@click.option("-p", "--prefix", is_flag=True, help="Print each child as a full path.")
@_SOCKET_FLAG
@click.argument("keys", nargs=-1, required=True)
def list_cmd(prefix: bool, _socket: bool, keys: tuple[str, ...]) -> None:
    """Print the children of each key, one per line (like xenstore-list).

    \b
    Example:
      xenvirtio xenstore list -p /vm
    """

    def body(ops: Operations) -> str:
        out = []
        for key in keys:
            try:
                names = ops.directory(key)
            except XenstoreError as exc:
                if exc.name == "EAGAIN":
                    raise
                raise _Failed(f"could not list path {key}") from exc
            out += [f"{key}/" * prefix + name + "\n" for name in names]
        return "".join(out)

    with _tool("xenstore-list") as client:
        click.echo(_in_transaction(client, body, True), nl=False)


@xenstore.command("ls")
@click.option("-f", "--flat", is_flag=True, help="Full paths, no truncation.")
@click.option("-p", "--perms", is_flag=True, help="Show each node's permissions.")
@_SOCKET_FLAG
@click.argument("path", default="/")
def ls_cmd(flat: bool, perms: bool, _socket: bool, path: str) -> None:
    """Print the tree under PATH with values (like xenstore-ls).

    Lines are cut to the terminal width (80 columns when not a terminal) unless -f.

    \b
    Example:
      xenvirtio xenstore ls -p /local/domain/0
    """
    if flat:
        width, desired = sys.maxsize, 0
    elif sys.stdout.isatty():
        width, desired = os.get_terminal_size().columns - 2, 60
    else:
        width, desired = 80, 60
    with _tool("xenstore-ls") as client:
        lines: list[str] = []
        _ls(client, path, 0, _LsStyle(width, desired, flat, perms), lines)
        sys.stdout.write("".join(lines))


class _LsStyle:
    def __init__(self, width: int, desired: int, flat: bool, perms: bool) -> None:
        self.width, self.desired, self.flat, self.perms = width, desired, flat, perms


def _ls(client: XenstoreClient, path: str, depth: int, style: _LsStyle, lines: list[str]) -> None:
    try:
        names = client.directory(path)
    except XenstoreError as exc:
        raise _Failed(f"xs_directory ({path}): {os.strerror(exc.errno or 0)}") from exc
    for name in names:
        child = path + ("" if path.endswith("/") else "/") + name
        lines.append(_ls_line(client, child, name, depth, style))
        _ls(client, child, depth + 1, style, lines)


def _ls_line(client: XenstoreClient, child: str, name: str, depth: int, style: _LsStyle) -> str:
    """One xenstore-ls line, with its column arithmetic (xenstore_client.c do_ls)."""
    if style.flat:
        line, width = child, 0
    else:
        head = " " * depth + name[: max(0, style.width - _TAG_LEN - depth)]
        line, width = head, len(head)
    try:
        value: bytes | None = client.read(child)
    except XenstoreError:
        value = None
    if value is None:
        line += ":\n"
    elif style.width < width + len(value) + _TAG_LEN:
        line += ' = "' + sanitise(value)[: max(0, style.width - _TAG_LEN - width)] + '\\..."'
    else:
        shown = ' = "' + sanitise(value) + '"'
        line, width = line + shown, width + len(shown)
        if style.perms:
            line += " " + "".join(
                "." if col & 1 else " " for col in range(width + 1, min(style.desired, style.width))
            )
    if style.perms:
        try:
            line += "  (" + ",".join(str(p) for p in client.get_perms(child)) + ")"
        except XenstoreError:
            click.echo(f"\ncould not access permissions for {name}", err=True)
    return line + "\n"


@xenstore.command("chmod")
@click.option("-r", "--recurse", is_flag=True, help="Apply to every node below too.")
@click.option("-u", "--upto", is_flag=True, help="Apply to every parent too.")
@_SOCKET_FLAG
@click.argument("key")
@click.argument("modes", nargs=-1, required=True)
def chmod_cmd(recurse: bool, upto: bool, _socket: bool, key: str, modes: tuple[str, ...]) -> None:
    """Set KEY's permissions: owner entry first, then n/r/w/b + domid (like xenstore-chmod).

    \b
    Example:
      xenvirtio xenstore chmod /vm/name n0 r5
    """
    perms = []
    for mode in modes:
        try:
            perms.append(parse_perm(mode))
        except XsError:
            click.echo(f"xenstore-chmod: Invalid permission specification: '{mode}'", err=True)
            sys.exit(1)

    def body(ops: Operations) -> str:
        _chmod(ops, key, perms, upto, recurse)
        return ""

    with _tool("xenstore-chmod") as client:
        _in_transaction(client, body, True)


def _chmod(ops: Operations, path: str, perms: list[Perm], upto: bool, recurse: bool) -> None:
    if not path:
        return
    try:
        ops.set_perms(path, perms)
    except XenstoreError as exc:
        if exc.name == "EAGAIN":
            raise
        raise _Failed(f"Error occurred setting permissions on '{path}'") from exc
    if upto:
        _chmod(ops, path.rpartition("/")[0], perms, True, False)
    if recurse:
        try:
            names = ops.directory(path)
        except XenstoreError:
            names = []
        for name in names:
            _chmod(ops, f"{path}/{name}", perms, False, True)


@xenstore.command("watch")
@click.option("-n", "--number", type=int, default=-1, help="Exit after this many events.")
@_SOCKET_FLAG
@click.argument("keys", nargs=-1, required=True)
def watch_cmd(number: int, _socket: bool, keys: tuple[str, ...]) -> None:
    """Watch each key and print the path of every event (like xenstore-watch).

    The first event of each watch fires at once, as XenStore always does.

    \b
    Example:
      xenvirtio xenstore watch -n 3 /vm
    """
    with _tool("xenstore-watch") as client:
        for key in keys:
            try:
                client.watch(key, key)
            except XenstoreError as exc:
                raise _Failed(f"Unable to add watch on {key}") from exc
        if number == 0:
            return
        try:
            for seen, (path, _token) in enumerate(client.watch_events(), start=1):
                click.echo(path)
                sys.stdout.flush()
                if seen == number:
                    break
        except (KeyboardInterrupt, BrokenPipeError):  # ^C, or the reader went away
            sys.exit(130)
