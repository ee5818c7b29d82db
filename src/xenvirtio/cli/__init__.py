"""The `xenvirtio` command line.

Subcommands live in their own modules and are imported only when run, so
`xenvirtio --help` stays fast and a command's dependencies load only when needed.
"""

from __future__ import annotations

import importlib

import click

# name -> "module:attribute" of a click command or group.
COMMANDS: dict[str, str] = {
    "bench": "xenvirtio.cli.bench:bench",
    "nbd-serve": "xenvirtio.cli.nbd:nbd_serve",
    "xenstored": "xenvirtio.cli.xenstored:xenstored",
    "xenstore": "xenvirtio.cli.xenstore:xenstore",
    "demo": "xenvirtio.cli.demo:demo",
    "host": "xenvirtio.cli.host:host",
    "check-config": "xenvirtio.cli.check_config:check_config",
    "backend": "xenvirtio.cli.backend:backend",
    "create": "xenvirtio.cli.create:create",
    "destroy": "xenvirtio.cli.domains:destroy",
    "shutdown": "xenvirtio.cli.domains:shutdown",
    "list": "xenvirtio.cli.domains:list_",
    "console": "xenvirtio.cli.domains:console",
    "block-attach": "xenvirtio.cli.block:block_attach",
    "block-detach": "xenvirtio.cli.block:block_detach",
    "network-attach": "xenvirtio.cli.network:network_attach",
    "network-detach": "xenvirtio.cli.network:network_detach",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def __init__(self, *args: object, lazy: dict[str, str], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._lazy))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self._lazy:
            module_name, attr = self._lazy[cmd_name].split(":")
            command = getattr(importlib.import_module(module_name), attr)
            assert isinstance(command, click.Command)
            return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="xenvirtio")
def cli() -> None:
    """VirtIO on Xen: virtio devices for Xen guests, over XenBus, virtio-pci and virtio-mmio.

    \b
    Example:
      xenvirtio xenstored --socket /tmp/xs.sock &
      XENSTORED_PATH=/tmp/xs.sock xenvirtio xenstore write /vm/name demo
    """


def main() -> None:
    cli(prog_name="xenvirtio")


if __name__ == "__main__":
    main()
