import click
from click.testing import CliRunner

from xenvirtio.cli import cli


def test_every_command_has_help_with_an_example() -> None:
    runner = CliRunner()
    ctx = click.Context(cli, info_name="xenvirtio")
    pending: list[list[str]] = [[]]
    seen = 0
    while pending:
        path = pending.pop()
        result = runner.invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Example" in result.output, f"`xenvirtio {' '.join(path)} --help` has no example"
        seen += 1
        command = cli
        for name in path:
            command = command.get_command(ctx, name)  # type: ignore[assignment]
        if hasattr(command, "list_commands"):
            for sub in command.list_commands(ctx):
                pending.append([*path, sub])
    assert seen >= 2
