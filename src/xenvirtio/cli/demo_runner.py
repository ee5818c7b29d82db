"""How `xenvirtio demo` runs its steps: numbered, each command shown with its output,
checks printed as ``ok:``, pending features printed as ``pending:`` (never as a
success), and a summary at the end."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import click

OUTPUT_LINES = 14  # of a command's output shown (the rest is summarised)


class DemoFailed(Exception):
    """A step did not do what it should."""


@dataclass
class Outcome:
    title: str
    status: str  # "ok", "FAILED", "skipped", "pending", "not run" (explained, e.g. no root)
    detail: str = ""
    seconds: float = 0.0


@dataclass
class Demo:
    dir: Path
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def run_dir(self) -> Path:
        return self.dir / "run"

    def step(self, title: str, fn: Callable[[Demo], None], *, needs: Sequence[str] = ()) -> bool:
        """Run one step; a failure is recorded (the demo goes on with what does not
        depend on it). Steps named in ``needs`` must have passed."""
        number = len([o for o in self.outcomes if o.status != "pending"]) + 1
        click.secho(f"\n[{number}] {title}", bold=True)
        missing = [n for n in needs if not self.passed(n)]
        if missing:
            click.secho(f"  skipped: needs {', '.join(missing)}", fg="yellow")
            self.outcomes.append(Outcome(title, "skipped", f"needs {missing[0]}"))
            return False
        start = time.monotonic()
        try:
            fn(self)
        except (DemoFailed, OSError, ValueError, KeyError, subprocess.SubprocessError) as exc:
            click.secho(f"  FAILED: {exc}", fg="red")
            self.outcomes.append(Outcome(title, "FAILED", str(exc), time.monotonic() - start))
            return False
        self.outcomes.append(Outcome(title, "ok", "", time.monotonic() - start))
        return True

    def passed(self, title: str) -> bool:
        return any(o.title == title and o.status == "ok" for o in self.outcomes)

    def run(self, *argv: str, expect: int = 0, show: Sequence[str] | None = ()) -> str:
        """Run a command, show it (``show``: as what; None: quietly), check its status."""
        shown = show if show else argv
        if show is not None:
            click.echo(f"  $ {' '.join(shlex.quote(a) for a in shown)}")
        merged = subprocess.STDOUT if show is not None else subprocess.PIPE  # in order
        proc = subprocess.run(argv, env=self.env, stdout=subprocess.PIPE, stderr=merged,
                              text=True, timeout=60)  # fmt: skip
        if show is not None:
            lines = proc.stdout.splitlines()
            for line in lines[:OUTPUT_LINES]:
                click.echo(f"    {line}")
            if len(lines) > OUTPUT_LINES:
                click.echo(f"    ... ({len(lines) - OUTPUT_LINES} more lines)")
        if proc.returncode != expect:
            tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:]
            raise DemoFailed(f"{shown[0]} exited with {proc.returncode}: {' '.join(tail)}")
        return proc.stdout

    def section(self, title: str) -> None:
        """A heading with no step of its own (what follows records itself)."""
        click.secho(f"\n{title}", bold=True)

    def note(self, text: str) -> None:
        click.echo(f"  $ {text}")

    def check(self, ok: bool, what: str) -> None:
        if not ok:
            raise DemoFailed(what)
        click.secho(f"  ok: {what}", fg="green")

    def skip(self, title: str, why: str) -> None:
        """A step that cannot run here, said so (it does not fail the demo)."""
        number = len([o for o in self.outcomes if o.status != "pending"]) + 1
        click.secho(f"\n[{number}] {title}", bold=True)
        click.secho(f"  not run: {why}", fg="yellow")
        self.outcomes.append(Outcome(title, "not run", why))

    def pending(self, what: str, detail: str) -> None:
        click.secho(f"  pending: {what}: {detail} (not built into the runtime yet)", fg="yellow")
        self.outcomes.append(Outcome(what, "pending", detail))

    def summary(self) -> bool:
        """Print the summary; True if no step failed or was skipped for a failure."""
        click.secho("\nSummary", bold=True)
        for o in self.outcomes:
            colour = {"ok": "green", "pending": "yellow", "not run": "yellow"}.get(o.status, "red")
            took = f" ({o.seconds:.1f} s)" if o.status in ("ok", "FAILED") else ""
            extra = f": {o.detail}" if o.detail and o.status != "ok" else ""
            click.secho(f"  {o.status:<8} {o.title}{took}{extra}", fg=colour)
        return all(o.status in ("ok", "pending", "not run") for o in self.outcomes)
