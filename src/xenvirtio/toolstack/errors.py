"""Errors and warnings that point at a place in a config file.

Every message a user sees names the file, the line and the key, as xl does
("demo.cfg:7: disk: ..."), so it can be found without reading the parser.
"""

from __future__ import annotations

from dataclasses import dataclass


class ConfigError(Exception):
    """A config file is malformed or asks for something impossible.

    ``str(err)`` is the one line to show: ``FILE:LINE: key: message`` (no ``key:`` for a
    syntax error outside any setting; no ``LINE:`` (0) for a file that cannot be read).
    """

    def __init__(self, file: str, line: int, key: str | None, message: str) -> None:
        self.file = file
        self.line = line
        self.key = key
        self.message = message
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:" if self.line > 0 else f"{self.file}:"
        return f"{where} {self.key}: {self.message}" if self.key else f"{where} {self.message}"


@dataclass(frozen=True)
class ConfigWarning:
    """Something accepted but ignored or changed; shown, never fatal."""

    file: str
    line: int
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.key}: warning: {self.message}"


class EntryError(ValueError):
    """One device string (a ``disk``/``vif``/``virtio`` list item) is malformed.

    The string parsers know no file or line; the domain builder turns this into a
    `ConfigError` at the item's line.
    """
