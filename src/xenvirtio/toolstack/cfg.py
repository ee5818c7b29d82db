"""The xl.cfg grammar (libxlu's ``libxlu_cfg_l.l``/``libxlu_cfg_y.y``), sans I/O.

A file is a sequence of statements, each ended by a newline or ``;``::

    name = "demo"              # strings in "double" (with escapes) or 'single' quotes
    memory = 512               # numbers as C's strtol(base 0): 0x1f hex, 017 octal
    disk = [ 'img,raw,xvda',   # lists in [ ], may span lines, may end with a comma,
             [ "nested" ], ]   #   may nest
    extra = "a" ; extra += "b" # += appends to a string or a list set earlier

Bare words are not values (``type = hvm`` is an error: quote it), and ``#`` starts a
comment that runs to the end of the line. A key set twice keeps its last value, as in
xl. Escapes in strings: ``\\" \\' \\\\ \\a \\b \\f \\n \\r \\t \\v``, ``\\xHH`` (two hex
digits) and ``\\ooo`` (one to three octal digits).

    parsed = parse_config(text, "demo.cfg")
    parsed["memory"].value, parsed["memory"].line      # 512, 2
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

from xenvirtio.toolstack.errors import ConfigError, ConfigWarning

__all__ = ["ConfigError", "Item", "ParsedConfig", "Setting", "Value", "parse_config", "plain"]

MAX_DEPTH = 32  # list nesting; xl has no limit, but a bound keeps recursion finite

Value = str | int | tuple["Item", ...]


@dataclass(frozen=True)
class Item:
    """One list element and the line it is on."""

    value: Value
    line: int


@dataclass(frozen=True)
class Setting:
    """``key = value`` (or ``key += value``, already combined) at ``line``."""

    key: str
    value: Value
    line: int


def plain(value: Value) -> str | int | list[object]:
    """The value without line numbers: strings, ints and (nested) lists."""
    if isinstance(value, tuple):
        return [plain(item.value) for item in value]
    return value


@dataclass(frozen=True)
class ParsedConfig(Mapping[str, Setting]):
    """The settings of one file, in first-set order, with their lines."""

    source: str
    settings: Mapping[str, Setting]
    warnings: tuple[ConfigWarning, ...] = ()

    def __getitem__(self, key: str) -> Setting:
        return self.settings[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.settings)

    def __len__(self) -> int:
        return len(self.settings)


# -- lexer -----------------------------------------------------------------------------
TokenKind = Literal["ident", "number", "string", "=", "+=", "[", "]", ",", ";", "newline", "eof"]


@dataclass(frozen=True)
class _Token:
    kind: TokenKind
    text: str
    line: int
    value: str | int = ""


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_NUMBER = re.compile(r"[0-9][0-9a-fA-FxX]*")
_PUNCT: dict[str, TokenKind] = {"=": "=", "[": "[", "]": "]", ",": ",", ";": ";"}
_SIMPLE_ESCAPES = {
    '"': '"', "'": "'", "\\": "\\", "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r",
    "t": "\t", "v": "\v",
}  # fmt: skip
_HEX2 = re.compile(r"[0-9a-fA-F]{2}")
_OCT = re.compile(r"[0-7]{1,3}")


def strtol0(text: str) -> int | None:
    """C's ``strtol(text, &end, 0)`` when it consumes all of ``text``, else None."""
    if re.fullmatch(r"0[xX][0-9a-fA-F]+", text):
        return int(text, 16)
    if re.fullmatch(r"0[0-7]*", text):
        return int(text, 8)
    if re.fullmatch(r"[1-9][0-9]*", text):
        return int(text)
    return None


class _Lexer:
    def __init__(self, text: str, source: str) -> None:
        self.text, self.source = text, source
        self.pos, self.line = 0, 1

    def error(self, message: str, line: int | None = None) -> ConfigError:
        return ConfigError(self.source, self.line if line is None else line, None, message)

    def tokens(self) -> Iterator[_Token]:
        while True:
            token = self._next()
            yield token
            if token.kind == "eof":
                return

    def _next(self) -> _Token:
        text = self.text
        while self.pos < len(text):
            ch = text[self.pos]
            if ch in " \t\r":
                self.pos += 1
            elif ch == "#":
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end
            else:
                return self._token(ch)
        return _Token("eof", "end of file", self.line)

    def _token(self, ch: str) -> _Token:
        line, start = self.line, self.pos
        if ch == "\n":
            self.pos += 1
            self.line += 1
            return _Token("newline", "newline", line)
        if ch in _PUNCT:
            self.pos += 1
            return _Token(_PUNCT[ch], ch, line)
        if self.text.startswith("+=", start):
            self.pos += 2
            return _Token("+=", "+=", line)
        if ch in "\"'":
            return self._string(ch)
        for kind, pattern in (("ident", _IDENT), ("number", _NUMBER)):
            match = pattern.match(self.text, start)
            if match:
                self.pos = match.end()
                return self._word(kind, match.group(), line)
        hint = (
            " (xl.cfg is not Python: only strings, numbers and lists)" if ch in "+-.():{}" else ""
        )
        raise self.error(f"unexpected character {ch!r}{hint}")

    def _word(self, kind: str, word: str, line: int) -> _Token:
        if kind == "ident":
            return _Token("ident", word, line, word)
        number = strtol0(word)
        if number is None:
            raise self.error(f"{word!r} is not a valid number")
        return _Token("number", word, line, number)

    def _string(self, quote: str) -> _Token:
        line, start = self.line, self.pos
        end = start + 1
        while end < len(self.text) and self.text[end] not in (quote, "\n"):
            # A double-quoted string may contain an escaped quote; a single-quoted one
            # ends at the next quote whatever precedes it (libxlu_cfg_l.l).
            end += 2 if quote == '"' and self.text[end] == "\\" else 1
        if end >= len(self.text) or self.text[end] != quote:
            raise self.error(f"unterminated string (opening {quote} has no closing one)", line)
        raw = self.text[start + 1 : end]
        self.pos = end + 1
        return _Token("string", self.text[start : end + 1], line, self._dequote(raw))

    def _dequote(self, raw: str) -> str:
        out: list[str] = []
        i = 0
        while i < len(raw):
            ch = raw[i]
            i += 1
            if ch != "\\":
                out.append(ch)
                continue
            if i >= len(raw):
                raise self.error("backslash at the end of a string")
            esc = raw[i]
            i += 1
            if esc in _SIMPLE_ESCAPES:
                out.append(_SIMPLE_ESCAPES[esc])
            elif esc == "x" and (hexm := _HEX2.match(raw, i)):
                out.append(chr(int(hexm.group(), 16)))
                i = hexm.end()
            elif (octm := _OCT.match(raw, i - 1)) and esc in "01234567":
                out.append(chr(int(octm.group(), 8)))
                i = octm.end()
            else:
                raise self.error(f"invalid escape '\\{esc}' in a quoted string")
        return "".join(out)


# -- parser ----------------------------------------------------------------------------
class _Parser:
    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.lexer = _Lexer(text, source)
        self.stream = self.lexer.tokens()
        self.token = next(self.stream)
        self.settings: dict[str, Setting] = {}
        self.warnings: list[ConfigWarning] = []

    def kind(self) -> TokenKind:
        return self.token.kind  # a call, so checks are not narrowed across advance()

    def advance(self) -> _Token:
        token = self.token
        if token.kind != "eof":
            self.token = next(self.stream)
        return token

    def fail(self, message: str, key: str | None = None) -> ConfigError:
        return ConfigError(self.source, self.token.line, key, message)

    def skip_newlines(self) -> None:
        while self.kind() == "newline":
            self.advance()

    def parse(self) -> ParsedConfig:
        while self.kind() != "eof":
            if self.kind() in ("newline", ";"):
                self.advance()
            elif self.kind() == "ident":
                self.statement()
            else:
                raise self.fail(f"expected a setting (key = value), found {self._found()}")
        return ParsedConfig(self.source, dict(self.settings), tuple(self.warnings))

    def statement(self) -> None:
        name = self.advance()
        key = name.text
        if self.kind() not in ("=", "+="):
            raise self.fail(f"expected '=' or '+=' after the key, found {self._found()}", key)
        op = self.advance().kind
        value = self.value(key, depth=0)
        if self.kind() not in ("newline", ";", "eof"):
            raise self.fail(
                f"expected the end of the line after the value, found {self._found()}", key
            )
        self.store(key, op, value, name.line)

    def value(self, key: str, depth: int) -> Value:
        token = self.token
        if token.kind in ("string", "number"):
            self.advance()
            return token.value
        if token.kind == "[":
            return self.list_value(key, depth + 1)
        if token.kind == "ident":
            raise self.fail(f'bare word {token.text!r}: quote strings ("{token.text}")', key)
        raise self.fail(f"expected a value, found {self._found()}", key)

    def list_value(self, key: str, depth: int) -> Value:
        if depth > MAX_DEPTH:
            raise self.fail(f"lists nested deeper than {MAX_DEPTH}", key)
        opening = self.advance()
        items: list[Item] = []
        self.skip_newlines()
        while self.kind() != "]":
            if self.kind() == "eof":
                raise ConfigError(self.source, opening.line, key, "unterminated list: no ']'")
            line = self.token.line
            items.append(Item(self.value(key, depth), line))
            self.skip_newlines()
            if self.kind() == ",":
                self.advance()
                self.skip_newlines()
            elif self.kind() not in ("]", "eof"):
                raise self.fail(f"expected ',' or ']' in the list, found {self._found()}", key)
        self.advance()
        return tuple(items)

    def store(self, key: str, op: str, value: Value, line: int) -> None:
        previous = self.settings.get(key)
        if previous is not None and op == "+=":
            value = self.concat(key, previous.value, value, line)
        elif previous is not None:
            self.warnings.append(
                ConfigWarning(self.source, line, key, f"set again; replaces line {previous.line}")
            )
        self.settings[key] = Setting(key, value, line)

    def concat(self, key: str, old: Value, new: Value, line: int) -> Value:
        if isinstance(old, int) or isinstance(new, int):
            raise ConfigError(self.source, line, key, "+= does not apply to numbers")
        if isinstance(old, str) and isinstance(new, str):
            return old + new
        if isinstance(old, tuple) and isinstance(new, tuple):
            return old + new
        raise ConfigError(self.source, line, key, "+= cannot add a list to a string or vice versa")

    def _found(self) -> str:
        token = self.token
        return token.text if token.kind in ("newline", "eof", "string") else repr(token.text)


def parse_config(text: str, source: str = "<config>") -> ParsedConfig:
    """Parse xl.cfg ``text``; `ConfigError` ("SOURCE:LINE: ...") on the first error."""
    return _Parser(text, source).parse()
